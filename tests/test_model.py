"""The model (swin_fused.model / configs / flops) against the official code and the paper.

- Parameter counts are the official ones and FLOPs the official ``flops()`` formulas (recomputed here) and the
  paper's column.
- Outputs and gradients equal ``tests/official_swin.py`` (an independent transcription of Microsoft's code)
  with the same weights, at sizes the official code accepts.
- Any other size is checked against a pad-then-shift oracle written here from official pieces (official
  WindowAttention, official attn_mask, official partition), block by block and for the whole model.
- The module API: pyramid, pooling, checkpointing, dropout modes, ape, qk_scale, errors.
"""
import math

import official_swin
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import swin_fused
from swin_fused import SwinTransformer, SwinTransformerBlock

# The official numbers (microsoft/Swin-Transformer, 1000 classes) and the paper's GFLOPs column.
OFFICIAL_PARAMS = {
    "swin_tiny_patch4_window7_224": 28_288_354,
    "swin_small_patch4_window7_224": 49_606_258,
    "swin_base_patch4_window7_224": 87_768_224,
    "swin_base_patch4_window12_384": 87_903_584,
    "swin_large_patch4_window7_224": 196_532_476,
    "swin_large_patch4_window12_384": 196_735_516,
}
PAPER_GFLOPS = {
    "swin_tiny_patch4_window7_224": 4.5,
    "swin_small_patch4_window7_224": 8.7,
    "swin_base_patch4_window7_224": 15.4,
    "swin_base_patch4_window12_384": 47.0,
    "swin_large_patch4_window7_224": 34.5,
    "swin_large_patch4_window12_384": 103.9,
}
OFFICIAL_CONFIGS = {  # the official YAML configs
    "swin_tiny_patch4_window7_224": dict(img_size=224, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                                         window_size=7),
    "swin_small_patch4_window7_224": dict(img_size=224, embed_dim=96, depths=(2, 2, 18, 2),
                                          num_heads=(3, 6, 12, 24), window_size=7),
    "swin_base_patch4_window7_224": dict(img_size=224, embed_dim=128, depths=(2, 2, 18, 2),
                                         num_heads=(4, 8, 16, 32), window_size=7),
    "swin_base_patch4_window12_384": dict(img_size=384, embed_dim=128, depths=(2, 2, 18, 2),
                                          num_heads=(4, 8, 16, 32), window_size=12),
    "swin_large_patch4_window7_224": dict(img_size=224, embed_dim=192, depths=(2, 2, 18, 2),
                                          num_heads=(6, 12, 24, 48), window_size=7),
    "swin_large_patch4_window12_384": dict(img_size=384, embed_dim=192, depths=(2, 2, 18, 2),
                                           num_heads=(6, 12, 24, 48), window_size=12),
}
NAMES = list(OFFICIAL_PARAMS)


def ceil_div(a, b):
    return -(-a // b)


def assert_close_to(actual, expected, rtol=1e-5, what="output"):
    """fp32: max abs difference within ``rtol`` of the expected tensor's magnitude."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = expected.abs().max().clamp_min(1e-6)
    err = (actual - expected).abs().max()
    assert err <= rtol * scale, f"{what}: max abs error {err.item():.3e} > {rtol:g} * {scale.item():.3e}"


# --------------------------------------------------------------------------------------------------------------
# Parameter counts and FLOPs
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_weight_init(monkeypatch):
    """Skip the random initialisers: counting 200M parameters should not cost 200M trunc_normal draws."""
    monkeypatch.setattr(nn.init, "trunc_normal_", lambda tensor, *args, **kwargs: tensor)
    monkeypatch.setattr(nn.Linear, "reset_parameters", lambda self: None)
    monkeypatch.setattr(nn.Conv2d, "reset_parameters", lambda self: None)


def official_flops(img_size, embed_dim, depths, num_heads, window_size, patch_size=4, in_chans=3,
                   num_classes=1000, mlp_ratio=4.0):
    """The official ``SwinTransformer.flops()``, formula by formula (float, as the official code computes it)."""
    Ho = Wo = img_size // patch_size
    flops = Ho * Wo * embed_dim * in_chans * patch_size * patch_size + Ho * Wo * embed_dim  # PatchEmbed
    for i, depth in enumerate(depths):
        dim, H, W, heads = embed_dim * 2**i, Ho // 2**i, Wo // 2**i, num_heads[i]
        ws = window_size if min(H, W) > window_size else min(H, W)
        N = ws * ws
        attn = (N * dim * 3 * dim + heads * N * (dim // heads) * N + heads * N * N * (dim // heads)
                + N * dim * dim)
        block = dim * H * W + (H * W / ws / ws) * attn + 2 * H * W * dim * dim * mlp_ratio + dim * H * W
        flops += depth * block
        if i < len(depths) - 1:
            flops += H * W * dim + (H // 2) * (W // 2) * 4 * dim * 2 * dim  # PatchMerging
    num_features = embed_dim * 2 ** (len(depths) - 1)
    flops += num_features * Ho * Wo // (2 ** len(depths))
    flops += num_features * num_classes
    return flops


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_and_flops_are_the_official_ones(name, no_weight_init):
    model = swin_fused.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_PARAMS[name]
    assert swin_fused.PAPER_TABLE[name].params == OFFICIAL_PARAMS[name]

    flops = model.flops()
    assert flops == int(official_flops(**OFFICIAL_CONFIGS[name]))
    # The paper prints one decimal and rounds inconsistently (8.75 -> 8.7, 103.95 -> 103.9; Swin-B-384 is
    # 47.1 in the official README, 47.0 in the paper), hence 0.6% rather than half a unit of the last digit.
    assert flops / 1e9 == pytest.approx(PAPER_GFLOPS[name], rel=6e-3)
    assert swin_fused.PAPER_TABLE[name].gflops == PAPER_GFLOPS[name]


def test_named_constructors_match_the_official_configs():
    for name, cfg in OFFICIAL_CONFIGS.items():
        ours = swin_fused.MODEL_CONFIGS[name]
        assert {k: ours[k] for k in cfg} == cfg
        assert getattr(swin_fused, name).__name__ == name
    assert swin_fused.list_models()[:len(NAMES)] == NAMES and all(n.startswith("swinv2_") for n in swin_fused.list_models()[len(NAMES):])
    with pytest.raises(ValueError, match="swin_huge"):
        swin_fused.create_model("swin_huge")


@pytest.mark.parametrize("alias, name", [
    ("swin_t", "swin_tiny_patch4_window7_224"), ("Swin-T", "swin_tiny_patch4_window7_224"),
    ("swin-s", "swin_small_patch4_window7_224"), ("swin_b", "swin_base_patch4_window7_224"),
    ("swin-b-384", "swin_base_patch4_window12_384"), ("swin_l", "swin_large_patch4_window7_224"),
    ("SWIN_TINY_PATCH4_WINDOW7_224", "swin_tiny_patch4_window7_224"),
])
def test_short_model_names_resolve_to_the_configs(alias, name):
    assert swin_fused.resolve_model_name(alias) == name
    with torch.device("meta"):
        assert swin_fused.create_model(alias).flops() == swin_fused.create_model(name).flops()


def test_unknown_model_names_suggest_the_closest():
    with pytest.raises(ValueError, match=r"unknown model 'swin_tiny_patch4_window7_22'.*did you mean "
                                         r"'swin_tiny_patch4_window7_224'"):
        swin_fused.resolve_model_name("swin_tiny_patch4_window7_22")


def test_flops_at_other_divisible_sizes_follow_the_official_formula():
    model = swin_fused.create_model("swin_tiny_patch4_window7_224", num_classes=10)
    assert model.flops((448, 448)) == int(official_flops(448, 96, (2, 2, 6, 2), (3, 6, 12, 24), 7, num_classes=10))
    # Padded windows are counted: a 232 x 232 image has more windows than 224 x 224, not fewer.
    assert model.flops((232, 232)) > model.flops((224, 224))


# --------------------------------------------------------------------------------------------------------------
# Equality with the official code at the sizes it accepts
# --------------------------------------------------------------------------------------------------------------

SMALL_CONFIGS = {
    "w7-4stages": dict(img_size=224, embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7),
    "w4-2stages": dict(img_size=64, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=4),
    "w4-HneW": dict(img_size=(128, 64), embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4), window_size=4),
    "w5-odd-depth-hd8": dict(img_size=80, embed_dim=24, depths=(1, 3), num_heads=(3, 6), window_size=5),
    "w6-patch2-1chan": dict(img_size=48, patch_size=2, in_chans=1, num_classes=10, embed_dim=16, depths=(2, 2, 2),
                            num_heads=(2, 2, 4), window_size=6),
    "qk_scale": dict(img_size=64, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=4, qk_scale=0.05),
    "ape-no-patch-norm-no-qkv-bias": dict(img_size=56, embed_dim=16, depths=(2, 2), num_heads=(2, 4),
                                          window_size=7, ape=True, patch_norm=False, qkv_bias=False),
}


def official_and_ours(cfg):
    """An official model with its own random init, and ours loaded from its state dict (strict)."""
    official = official_swin.SwinTransformer(**cfg)
    with torch.no_grad():  # official init leaves norms at (1, 0) and the bias table at std 0.02: make them count
        for name, p in official.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            elif "relative_position_bias_table" in name:
                p.normal_()
    ours = SwinTransformer(**cfg)
    buffers_before = {k: v.clone() for k, v in ours.state_dict().items()
                      if k.endswith(("relative_position_index", "attn_mask"))}
    ours.load_state_dict(official.state_dict(), strict=True)
    for key, value in buffers_before.items():  # the buffers we build are the official ones
        assert torch.equal(value, official.state_dict()[key]), key
    return official.eval(), ours.eval()


@pytest.mark.parametrize("config", list(SMALL_CONFIGS))
def test_small_models_equal_official(config):
    cfg = SMALL_CONFIGS[config]
    official, ours = official_and_ours(cfg)
    img = swin_fused.geometry.to_2tuple(cfg["img_size"])
    x = torch.randn(2, cfg.get("in_chans", 3), *img, requires_grad=True)
    expected = official(x)
    got = ours(x)
    assert_close_to(got, expected)

    weight = torch.randn_like(expected)
    grads_official = torch.autograd.grad((expected * weight).sum(), [x, *official.parameters()])
    grads_ours = torch.autograd.grad((got * weight).sum(), [x, *ours.parameters()])
    for (name, _), g_ours, g_official in zip([("input", x), *ours.named_parameters()], grads_ours, grads_official):
        assert_close_to(g_ours, g_official, rtol=1e-4, what=f"gradient of {name}")


def test_swin_tiny_equals_official():
    cfg = OFFICIAL_CONFIGS["swin_tiny_patch4_window7_224"]
    official, ours = official_and_ours(cfg)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert_close_to(ours(x), official(x))


def test_official_module_interfaces():
    """The official [B, L, C] block / merging and [B*nW, N, C] attention interfaces still work."""
    dim, res, heads = 32, (14, 14), 2
    for shift in (0, 3):
        official = official_swin.SwinTransformerBlock(dim, res, heads, window_size=7, shift_size=shift).eval()
        ours = SwinTransformerBlock(dim, res, heads, window_size=7, shift_size=shift).eval()
        ours.load_state_dict(official.state_dict(), strict=True)
        x = torch.randn(2, 14 * 14, dim)
        with torch.no_grad():
            assert_close_to(ours(x), official(x))
            assert_close_to(ours(x.view(2, 14, 14, dim)).view(2, -1, dim), official(x))
            windows = torch.randn(8, 49, dim)
            mask = official.attn_mask[:4] if shift else None
            assert_close_to(ours.attn(windows, mask), official.attn(windows, mask))

    official = official_swin.PatchMerging(res, dim)
    ours = swin_fused.PatchMerging(res, dim)
    ours.load_state_dict(official.state_dict(), strict=True)
    x = torch.randn(2, 14 * 14, dim)
    assert_close_to(ours(x), official(x))


# --------------------------------------------------------------------------------------------------------------
# Any size: a pad-then-shift oracle built from the official pieces
# --------------------------------------------------------------------------------------------------------------


def oracle_block(block, x, window_size, shift_size, qk_scale=None):
    """What the spec says a block does to a ``[B, H, W, C]`` map of any size.

    Official rule (window = min(H, W), shift 0 when the map is not larger than the window), then norm1 -> zero
    pad to window multiples -> roll -> official partition -> official WindowAttention with the official -100
    mask of the padded map (padded tokens are not masked; the qkv Linear of a zero token is its bias) ->
    reverse -> roll back -> crop -> residual -> MLP. The weights are the block's; a table built for a larger
    window is cropped to its centre (the same relative offsets).
    """
    B, H, W, C = x.shape
    heads = block.num_heads
    if min(H, W) <= window_size:
        window_size, shift_size = min(H, W), 0
    ws, s = window_size, shift_size
    Hp, Wp = ceil_div(H, ws) * ws, ceil_div(W, ws) * ws
    official = official_swin.SwinTransformerBlock(C, (Hp, Wp), heads, window_size=ws, shift_size=s,
                                                  qkv_bias=block.attn.qkv.bias is not None, qk_scale=qk_scale)
    th, tw = block.attn.window_size  # the table's window
    table = block.attn.relative_position_bias_table.view(2 * th - 1, 2 * tw - 1, heads)
    derived = ("relative_position_index", "attn_mask")  # the official block's own buffers, built its way
    state = {k: v for k, v in block.state_dict().items() if not k.endswith(derived)}
    state.update({k: v for k, v in official.state_dict().items() if k.endswith(derived)})
    state["attn.relative_position_bias_table"] = table[th - ws:th + ws - 1, tw - ws:tw + ws - 1].reshape(-1, heads)
    official.load_state_dict(state, strict=True)
    official.eval()

    h = official.norm1(x)
    h = F.pad(h, (0, 0, 0, Wp - W, 0, Hp - H))
    if s:
        h = torch.roll(h, shifts=(-s, -s), dims=(1, 2))
    windows = official_swin.window_partition(h, ws).view(-1, ws * ws, C)
    windows = official.attn(windows, mask=official.attn_mask)
    h = official_swin.window_reverse(windows.view(-1, ws, ws, C), ws, Hp, Wp)
    if s:
        h = torch.roll(h, shifts=(s, s), dims=(1, 2))
    x = x + h[:, :H, :W]
    return x + official.mlp(official.norm2(x))


def randomize_(module):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * (0.1 if p.dim() > 1 else 0.5) + (1.0 if p.dim() == 1 else 0.0))
    return module


BLOCK_SIZES = [
    (14, 14),  # divisible
    (15, 20),  # padded both ways, H != W
    (9, 23),
    (8, 8),  # one more than the window: padded to 2 x 2 windows
    (7, 7),  # equal to the window: W-MSA, no padding
    (7, 19),  # one side equal to the window
    (5, 11),  # smaller than the window: window 5, padded
    (3, 3),
    (1, 6),
]


@pytest.mark.parametrize("H, W", BLOCK_SIZES)
@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("built_for", ["nominal", "actual"])
def test_block_matches_pad_then_shift_oracle(H, W, shifted, built_for):
    dim, heads, window = 24, 3, 7  # head_dim 8
    shift = window // 2 if shifted else 0
    resolution = (56, 56) if built_for == "nominal" else (H, W)  # table of the configured or the clamped window
    block = randomize_(SwinTransformerBlock(dim, resolution, heads, window_size=window, shift_size=shift)).eval()
    x = torch.randn(2, H, W, dim)
    with torch.no_grad():
        assert_close_to(block(x), oracle_block(block, x, window, shift))


@pytest.mark.parametrize("H, W", [(10, 6), (4, 9), (17, 5), (6, 6), (2, 3)])
@pytest.mark.parametrize("qk_scale", [None, 0.3])
def test_block_window4_matches_oracle(H, W, qk_scale):
    dim, heads, window = 32, 2, 4
    block = randomize_(SwinTransformerBlock(dim, (32, 32), heads, window_size=window, shift_size=2,
                                            qk_scale=qk_scale)).eval()
    x = torch.randn(1, H, W, dim)
    with torch.no_grad():
        assert_close_to(block(x), oracle_block(block, x, window, 2, qk_scale=qk_scale))


@pytest.mark.parametrize("H, W", [(15, 20), (8, 8), (5, 11)])
def test_block_on_triton_backend_matches_oracle(H, W):
    """The same oracle through the fused op (Triton interpreter on the CPU)."""
    pytest.importorskip("swin_fused.ops")
    dim, heads, window = 32, 2, 7
    block = randomize_(SwinTransformerBlock(dim, (56, 56), heads, window_size=window, shift_size=3)).eval()
    x = torch.randn(1, H, W, dim)
    with torch.no_grad(), swin_fused.use_backend("triton"):
        got = block(x)
    with torch.no_grad():
        assert_close_to(got, oracle_block(block, x, window, 3), rtol=1e-4)


def oracle_model(model, images):
    """The whole model on any image size, from the block oracle and the spec's zero padding."""
    p = model.patch_embed.patch_size
    H, W = images.shape[2:]
    x = F.pad(images, (0, ceil_div(W, p[1]) * p[1] - W, 0, ceil_div(H, p[0]) * p[0] - H))
    x = F.conv2d(x, model.patch_embed.proj.weight, model.patch_embed.proj.bias, stride=p).permute(0, 2, 3, 1)
    x = model.patch_embed.norm(x)
    pyramid = []
    for layer in model.layers:
        for j, block in enumerate(layer.blocks):
            x = oracle_block(block, x, model.window_size, 0 if j % 2 == 0 else model.window_size // 2)
        pyramid.append(x.permute(0, 3, 1, 2))
        if layer.downsample is not None:
            x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
            x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
            x = layer.downsample.reduction(layer.downsample.norm(x))
    features = model.norm(x).mean(dim=(1, 2))
    return model.head(features), pyramid


@pytest.mark.parametrize("size", [(200, 232), (97, 131), (64, 40), (29, 30), (5, 3)])
def test_model_on_any_image_size_matches_oracle(size):
    model = randomize_(SwinTransformer(img_size=224, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 4),
                                       window_size=7, num_classes=10)).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        logits, pyramid = oracle_model(model, x)
        got_pyramid = model.forward_pyramid(x)
        got = model(x)
    assert got.shape == (1, 10) and torch.isfinite(got).all()
    assert_close_to(got, logits, rtol=1e-4)
    for got_map, expected_map in zip(got_pyramid, pyramid):
        assert_close_to(got_map, expected_map, rtol=1e-4)


@pytest.mark.parametrize("size", [(224, 224), (200, 232), (97, 131)])
def test_swin_tiny_runs_on_any_size(size):
    model = swin_fused.swin_tiny_patch4_window7_224().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------------------------
# Module API
# --------------------------------------------------------------------------------------------------------------


def small_model(**overrides):
    cfg = dict(img_size=64, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=4,
               num_classes=7)
    return SwinTransformer(**{**cfg, **overrides})


def test_forward_pyramid_and_features():
    model = small_model().eval()
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        pyramid = model.forward_pyramid(x)
        features = model.forward_features(x)
        logits = model(x)
    h, w = ceil_div(97, 4), ceil_div(131, 4)
    assert len(pyramid) == 4
    for i, fmap in enumerate(pyramid):
        assert fmap.shape == (2, 16 * 2**i, h, w)  # NCHW, sizes rounded up
        assert fmap.is_contiguous()
        h, w = ceil_div(h, 2), ceil_div(w, 2)
    assert features.shape == (2, model.num_features) == (2, 128)
    # forward_features = final norm of the last stage, averaged over tokens; forward = head of that.
    expected = model.norm(pyramid[-1].permute(0, 2, 3, 1)).mean(dim=(1, 2))
    assert_close_to(features, expected)
    assert_close_to(logits, model.head(features))
    backbone = small_model(num_classes=0).eval()
    assert isinstance(backbone.head, nn.Identity)
    with torch.no_grad():
        assert backbone(x).shape == (2, 128)


@pytest.mark.parametrize("train", [False, True])
def test_use_checkpoint_gives_same_outputs_and_gradients(train):
    rates = dict(drop_path_rate=0.3, drop_rate=0.1, attn_drop_rate=0.1) if train else {}
    plain = small_model(**rates)
    checkpointed = small_model(use_checkpoint=True, **rates)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 50, 45)
    results = []
    for model in (plain, checkpointed):
        model.train(train)
        torch.manual_seed(1)  # the same dropout masks (checkpoint replays the RNG state)
        out = model(x)
        grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
        results.append((out, grads))
    (out_a, grads_a), (out_b, grads_b) = results
    assert torch.equal(out_a, out_b)
    for g_a, g_b in zip(grads_a, grads_b):
        assert torch.allclose(g_a, g_b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("rates", [dict(drop_path_rate=0.5), dict(drop_rate=0.3), dict(attn_drop_rate=0.3)])
def test_drop_path_and_dropout_act_only_in_training(rates):
    reference = small_model(drop_path_rate=0.0)
    model = small_model(**rates)
    model.load_state_dict(reference.state_dict())
    x = torch.randn(4, 3, 32, 32)
    model.eval(), reference.eval()
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))
        model.train()
        torch.manual_seed(1)
        first = model(x)
        torch.manual_seed(2)
        second = model(x)
        torch.manual_seed(1)
        again = model(x)
    assert not torch.allclose(first, reference(x))
    assert not torch.allclose(first, second)
    assert torch.equal(first, again)


def test_drop_path_drops_whole_samples():
    x = torch.ones(1000, 3, 4)
    out = swin_fused.model.drop_path(x, 0.25, training=True)
    per_sample = out.flatten(1)
    assert ((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1)).all()
    assert 150 < (per_sample == 0).all(1).sum() < 350
    assert swin_fused.model.drop_path(x, 0.25, training=False) is x


def test_ape_works_at_nominal_size_only():
    model = small_model(ape=True).eval()
    assert model.absolute_pos_embed.shape == (1, 16 * 16, 16)
    with torch.no_grad():
        plain = small_model().eval()
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "absolute_pos_embed"})
        assert not torch.allclose(model(torch.ones(1, 3, 64, 64)), plain(torch.ones(1, 3, 64, 64)))
        with pytest.raises(ValueError, match=r"absolute position embedding .*\(16, 16\).* 12x16"):
            model(torch.randn(1, 3, 48, 64))
    assert "absolute_pos_embed" in model.no_weight_decay()


def test_qk_scale_is_honoured():
    default = small_model()
    scaled = small_model(qk_scale=0.05)
    scaled.load_state_dict(default.state_dict())
    assert all(blk.attn.scale == 0.05 for layer in scaled.layers for blk in layer.blocks)
    assert all(blk.attn.scale == (blk.attn.dim // blk.attn.num_heads) ** -0.5
               for layer in default.layers for blk in layer.blocks)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(default.eval()(x), scaled.eval()(x))


@pytest.mark.parametrize("kwargs, match", [
    (dict(embed_dim=32, num_heads=(3, 6, 12, 24)), r"num_heads=3 must divide .*32"),
    (dict(embed_dim=32, depths=(2, 2), num_heads=(2, 4, 8)), r"depths \(2, 2\) and num_heads \(2, 4, 8\)"),
    (dict(window_size=0), r"window_size must be a positive int, got 0"),
    (dict(window_size=-7), r"window_size must be a positive int, got -7"),
    (dict(embed_dim=0), r"embed_dim must be a positive int, got 0"),
    (dict(num_classes=-1), r"num_classes must be an int >= 0, got -1"),
    (dict(in_chans=0), r"in_chans must be a positive int, got 0"),
])
def test_model_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SwinTransformer(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(shift_size=7), r"shift_size must be an int in \[0, window_size=7\), got 7"),
    (dict(shift_size=9), r"got 9"),
    (dict(shift_size=-1), r"got -1"),
    (dict(window_size=0), r"window_size must be a positive int, got 0"),
    (dict(num_heads=5), r"num_heads=5 must divide dim=32"),
])
def test_block_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SwinTransformerBlock(**{**dict(dim=32, input_resolution=14, num_heads=2, window_size=7), **kwargs})


def test_window_attention_constructor_errors():
    with pytest.raises(ValueError, match=r"num_heads=3 must divide dim=32"):
        swin_fused.WindowAttention(32, 7, 3)
    with pytest.raises(ValueError, match=r"window_size must be positive, got \(0, 7\)"):
        swin_fused.WindowAttention(32, (0, 7), 2)


def test_bad_inputs_are_clear_errors():
    model = small_model()
    with pytest.raises(ValueError, match=r"expected images \[B, 3, H, W\], got shape \(1, 4, 32, 32\)"):
        model(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r"got shape \(3, 32, 32\)"):
        model(torch.randn(3, 32, 32))
    block = SwinTransformerBlock(32, 14, 2)
    with pytest.raises(ValueError, match=r"\[B, H, W, C=32\].*got shape \(1, 8, 8, 16\)"):
        block(torch.randn(1, 8, 8, 16))
    with pytest.raises(ValueError, match=r"input has 100 tokens, expected H\*W = 14\*14 = 196"):
        block(torch.randn(1, 100, 32))
    with pytest.raises(ValueError, match=r"got shape \(8, 32\)"):
        block(torch.randn(8, 32))


def test_tiny_images_and_single_token_maps():
    """An image smaller than one patch still runs: every stage is a 1 x 1 map (window 1, no shift)."""
    model = small_model().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 3, 2))
        pyramid = model.forward_pyramid(torch.randn(2, 3, 3, 2))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert [tuple(f.shape[2:]) for f in pyramid] == [(1, 1)] * 4
    assert math.isfinite(model.flops((3, 2)))
