"""Swin V2 (swin_fused.model_v2) against ``tests/official_swin_v2.py``, a transcription of Microsoft's code.

- Outputs and all gradients equal the official code's with the same (perturbed) weights, on the PyTorch and the
  fused (Triton) backends, at sizes the official code accepts, including stages whose window is clamped.
- The official state-dict layout (buffers included) loads with ``strict=True``; parameter counts and ``flops()``
  are the official ones for every named config.
- The official module interfaces ([B, L, C] blocks and merging, [B*nW, N, C] attention) and initialisation.
- Other sizes: "official" at a larger size is the official code built there; "detection" runs anywhere.
"""
import copy
import math

import official_swin_v2 as official_v2
import pytest
import torch
import torch.nn as nn

import swin_fused
from swin_fused.model_v2 import V2_CONFIGS, PatchMergingV2, SwinTransformerBlockV2, SwinTransformerV2

# The official configs/swinv2/*.yaml (the fine-tuned ones are named ..._22kto1k_ft there).
OFFICIAL_YAML = {
    "swinv2_tiny_patch4_window8_256": (256, 96, (2, 2, 6, 2), (3, 6, 12, 24), 8, None),
    "swinv2_tiny_patch4_window16_256": (256, 96, (2, 2, 6, 2), (3, 6, 12, 24), 16, None),
    "swinv2_small_patch4_window8_256": (256, 96, (2, 2, 18, 2), (3, 6, 12, 24), 8, None),
    "swinv2_small_patch4_window16_256": (256, 96, (2, 2, 18, 2), (3, 6, 12, 24), 16, None),
    "swinv2_base_patch4_window8_256": (256, 128, (2, 2, 18, 2), (4, 8, 16, 32), 8, None),
    "swinv2_base_patch4_window16_256": (256, 128, (2, 2, 18, 2), (4, 8, 16, 32), 16, None),
    "swinv2_base_patch4_window12to16_192to256": (256, 128, (2, 2, 18, 2), (4, 8, 16, 32), 16, (12, 12, 12, 6)),
    "swinv2_base_patch4_window12to24_192to384": (384, 128, (2, 2, 18, 2), (4, 8, 16, 32), 24, (12, 12, 12, 6)),
    "swinv2_large_patch4_window12to16_192to256": (256, 192, (2, 2, 18, 2), (6, 12, 24, 48), 16, (12, 12, 12, 6)),
    "swinv2_large_patch4_window12to24_192to384": (384, 192, (2, 2, 18, 2), (6, 12, 24, 48), 24, (12, 12, 12, 6)),
}


def official_kwargs(name):
    img, embed_dim, depths, heads, window, pretrained = OFFICIAL_YAML[name]
    cfg = dict(img_size=img, embed_dim=embed_dim, depths=list(depths), num_heads=list(heads), window_size=window)
    if pretrained is not None:
        cfg["pretrained_window_sizes"] = list(pretrained)
    return cfg


def assert_close_to(actual, expected, rtol=1e-5, what="output"):
    """fp32: max abs difference within ``rtol`` of the expected tensor's magnitude."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = expected.abs().max().clamp_min(1e-6)
    err = (actual - expected).abs().max()
    assert err <= rtol * scale, f"{what}: max abs error {err.item():.3e} > {rtol:g} * {scale.item():.3e}"


@pytest.fixture
def no_weight_init(monkeypatch):
    """Skip the random initialisers: counting 200M parameters should not cost 200M trunc_normal draws."""
    monkeypatch.setattr(nn.init, "trunc_normal_", lambda tensor, *args, **kwargs: tensor)
    monkeypatch.setattr(nn.Linear, "reset_parameters", lambda self: None)
    monkeypatch.setattr(nn.Conv2d, "reset_parameters", lambda self: None)


# --------------------------------------------------------------------------------------------------------------
# Named configs: parameters, FLOPs, state-dict layout
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OFFICIAL_YAML))
def test_named_configs_have_the_official_layout_parameters_and_flops(name, no_weight_init):
    official = official_v2.SwinTransformerV2(**official_kwargs(name))
    ours = getattr(swin_fused.model_v2, name)()
    assert {k: V2_CONFIGS[name][k] for k in ("img_size", "embed_dim", "window_size")} == {
        k: official_kwargs(name)[k] for k in ("img_size", "embed_dim", "window_size")}
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in official.parameters())
    assert ours.flops() == int(official.flops())

    theirs, mine = official.state_dict(), ours.state_dict()
    assert list(mine) == list(theirs)  # same keys, same order: official checkpoints load with strict=True
    for key, value in theirs.items():
        assert mine[key].shape == value.shape, key
        if key.endswith(("relative_coords_table", "relative_position_index", "attn_mask")):
            assert torch.equal(mine[key], value), key  # derived buffers built the official way
    assert {k for k, _ in ours.named_buffers()} == {k for k, _ in official.named_buffers()}


def test_named_constructors_and_overrides():
    with torch.device("meta"):
        model = swin_fused.model_v2.swinv2_base_patch4_window12to16_192to256(num_classes=0)
    assert model.num_classes == 0 and isinstance(model.head, nn.Identity)
    assert model.layers[3].blocks[0].attn.pretrained_window_size == (6, 6)
    assert swin_fused.model_v2.swinv2_tiny_patch4_window8_256.__name__ == "swinv2_tiny_patch4_window8_256"
    assert set(V2_CONFIGS) == set(OFFICIAL_YAML)
    assert set(V2_CONFIGS) <= set(swin_fused.model_v2.__all__)


# --------------------------------------------------------------------------------------------------------------
# Equality with the official code (forward and every gradient), both backends
# --------------------------------------------------------------------------------------------------------------

# Sized for Triton's interpreter (whole_window_tiles: each window one tile; still about a second a launch).
SMALL_CONFIGS = {
    # res 8 -> 4: stage 1 shifted 4x4 windows, stage 2 one 4x4 window, unshifted (the official clamp)
    "w4-32px": dict(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4),
    # window 8 on res 8 -> 4: both stages clamped (8, then 4), coordinates normalised by pretrained windows
    "w8-32px-pretrained": dict(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=8,
                               pretrained_window_sizes=(6, 3)),
}
TORCH_ONLY_CONFIGS = {
    # res 16 -> 8 -> 4 with window 8: stage 1 shifted 8x8 windows, stage 2 clamps to 8, stage 3 to 4
    "w8-64px-pretrained": dict(img_size=64, embed_dim=16, depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=8,
                               pretrained_window_sizes=(6, 6, 3)),
    # non-square (res 16x8 -> 8x4: the clamp looks at min(H, W)), ape, no patch norm, no q/v bias, 1 channel
    "w4-64x32-ape-nobias": dict(img_size=(64, 32), in_chans=1, num_classes=10, embed_dim=16, depths=(2, 2),
                                num_heads=(2, 4), window_size=4, ape=True, patch_norm=False, qkv_bias=False),
    "w4-64px-hd16": dict(img_size=64, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=4),
}


def perturb_(model):
    """Move every parameter away from its init, where the post-norms are 0 (every block the identity), q/v
    biases 0, logit_scale log(10) and the cpb_mlp's output tiny: else most of V2 would be untested."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                p.copy_(math.log(10) + 0.8 * torch.randn_like(p))
            elif "cpb_mlp.0" in name:
                p.normal_(0.0, 1.0)
            elif "cpb_mlp.2" in name:
                p.normal_(0.0, 0.1)
            elif "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.3)
            else:
                p.add_(0.05 * torch.randn_like(p))
        # one head above the official clamp (log 100 = 4.605): its temperature is 100 and gets no gradient
        model.layers[0].blocks[0].attn.logit_scale[0].fill_(5.0)


def official_and_ours(cfg):
    official = official_v2.SwinTransformerV2(**cfg, drop_path_rate=0.0)
    perturb_(official)
    ours = SwinTransformerV2(**cfg, drop_path_rate=0.0)
    ours.load_state_dict(official.state_dict(), strict=True)
    return official.eval(), ours.eval()


def outputs_and_gradients(model, x, weight, names):
    """``[logits, d/dx, d/dparam for each name]`` of ``(model(x) * weight).sum()``, in the model's dtype."""
    x = x.to(next(model.parameters()).dtype).requires_grad_(True)
    out = model(x)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad((out * weight.to(out.dtype)).sum(), [x, *(params[n] for n in names)])
    return [out.detach(), *grads]


def check_equal_to_official(cfg, backend, batch=2):
    """Logits within 1e-5 of the official code's (fp32); logits and every gradient at most 2x as far from the
    official code run in float64 as the official code in float32 is, plus 1e-5 of the magnitude (fp32 sums
    in another order: the logit_scale gradient sums over every pair of every window)."""
    official, ours = official_and_ours(cfg)
    names = [n for n, _ in official.named_parameters()]
    img = swin_fused.geometry.to_2tuple(cfg["img_size"])
    x = torch.randn(batch, cfg.get("in_chans", 3), *img)
    weight = torch.randn(batch, cfg.get("num_classes", 1000))
    reference = outputs_and_gradients(copy.deepcopy(official).double(), x, weight, names)
    theirs = outputs_and_gradients(official, x, weight, names)
    with swin_fused.use_backend(backend):
        mine = outputs_and_gradients(ours, x, weight, names)
    assert_close_to(mine[0], theirs[0], rtol=1e-5, what="logits")
    for what, got, fp32, fp64 in zip(["logits", "input", *names], mine, theirs, reference):
        err, err_official = ((t.double() - fp64).abs().max().item() for t in (got, fp32))
        bound = 2 * err_official + 1e-5 * fp64.abs().max().item()
        assert err <= bound, f"gradient of {what}: error {err:.3e} > {bound:.3e} (official fp32: {err_official:.3e})"
    assert mine[2 + names.index("layers.0.blocks.0.attn.logit_scale")][0] == 0  # the clamped head


@pytest.mark.parametrize("config", [*SMALL_CONFIGS, *TORCH_ONLY_CONFIGS])
def test_equals_official_torch_backend(config):
    check_equal_to_official({**SMALL_CONFIGS, **TORCH_ONLY_CONFIGS}[config], "torch")


@pytest.mark.parametrize("config", list(SMALL_CONFIGS))
def test_equals_official_triton_backend(config, whole_window_tiles):
    check_equal_to_official(SMALL_CONFIGS[config], "triton", batch=1)


def test_official_module_interfaces():
    """The official [B, L, C] block / merging and [B*nW, N, C] attention interfaces still work."""
    dim, res, heads = 16, (8, 8), 2
    for shift, pretrained in ((0, 0), (2, 6)):
        official = official_v2.SwinTransformerBlock(dim, res, heads, window_size=4, shift_size=shift,
                                                    pretrained_window_size=pretrained)
        with torch.no_grad():
            official.norm1.weight.normal_(1.0, 0.3)
            official.norm2.weight.normal_(1.0, 0.3)
            official.attn.q_bias.normal_()
            official.attn.v_bias.normal_()
            official.attn.cpb_mlp[0].weight.normal_()
        ours = SwinTransformerBlockV2(dim, res, heads, window_size=4, shift_size=shift,
                                      pretrained_window_size=pretrained)
        ours.load_state_dict(official.state_dict(), strict=True)
        x = torch.randn(2, 64, dim)
        with torch.no_grad():
            assert_close_to(ours(x), official(x))
            assert_close_to(ours(x.view(2, 8, 8, dim)).view(2, -1, dim), official(x))
            windows = torch.randn(8, 16, dim)
            mask = official.attn_mask if shift else None
            assert_close_to(ours.attn(windows, mask), official.attn(windows, mask))

    official = official_v2.PatchMerging(res, dim)
    with torch.no_grad():
        official.norm.weight.normal_()
        official.norm.bias.normal_()
    ours = PatchMergingV2(res, dim)
    ours.load_state_dict(official.state_dict(), strict=True)
    x = torch.randn(2, 64, dim)
    assert_close_to(ours(x), official(x))
    assert ours.norm.normalized_shape == (2 * dim,)  # V2 normalises the reduced 2C channels
    assert ours.flops() == official.flops()


def test_initialisation_is_the_official_one():
    cfg = dict(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4)
    official, ours = official_v2.SwinTransformerV2(**cfg), SwinTransformerV2(**cfg)
    for (name, p), (_, q) in zip(official.named_parameters(), ours.named_parameters()):
        deterministic = name.endswith(("logit_scale", "q_bias", "v_bias", ".bias")) or "norm" in name
        if deterministic and not name.startswith("patch_embed.proj"):  # the conv keeps PyTorch's random init
            assert torch.equal(p, q), name  # deterministic: log 10, zeros, (0, 0) post-norms, (1, 0) others
        else:
            assert abs(p.std().item() - q.std().item()) < 0.5 * p.std().item() + 1e-3, name
    assert all((blk.norm1.weight == 0).all() and (blk.norm2.weight == 0).all()
               for layer in ours.layers for blk in layer.blocks)
    x = torch.randn(1, 8, 8, 16)
    with torch.no_grad():  # the post-norms start at 0: every block is the identity
        assert torch.equal(ours.layers[0].forward_blocks(x), x)


def test_a_one_token_window_is_finite_where_the_official_code_gives_nan():
    # res 4 -> 2 -> 1: the last stage's window is 1x1, whose coordinates the official code divides by 1 - 1 = 0
    cfg = dict(img_size=16, embed_dim=16, depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=4)
    official, _ = official_and_ours(cfg)
    ours = SwinTransformerV2(**cfg).eval()
    derived = ("relative_coords_table", "relative_position_index", "attn_mask")  # ours, not the NaN ones
    ours.load_state_dict({k: v for k, v in official.state_dict().items() if not k.endswith(derived)})
    assert official.layers[2].blocks[0].attn.relative_coords_table.isnan().all()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert official(x).isnan().all()
        assert ours(x).isfinite().all()
        assert_close_to(ours.layers[0](ours._embed(x)).flatten(1, 2),
                        official.layers[0](official.patch_embed(x)))


# --------------------------------------------------------------------------------------------------------------
# Constructor errors
# --------------------------------------------------------------------------------------------------------------


def test_unknown_keywords_are_type_errors_naming_them():
    with pytest.raises(TypeError, match=r"'num_clases'.*did you mean 'num_classes'"):
        SwinTransformerV2(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, num_clases=10)
    with pytest.raises(TypeError, match=r"'qk_scale'.*logit_scale"):
        SwinTransformerV2(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, qk_scale=0.1)
    with pytest.raises(TypeError, match="fused_window_process"):
        SwinTransformerV2(fused_window_process=True)
    with pytest.raises(ValueError, match="pretrained_window_sizes"):
        SwinTransformerV2(img_size=32, embed_dim=16, depths=(2, 2, 2), num_heads=(1, 2, 4), window_size=4,
                          pretrained_window_sizes=(8, 8))
    with pytest.raises(ValueError, match="pretrained_window_size must be 0"):
        SwinTransformerV2(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                          pretrained_window_sizes=(1, 0))


# --------------------------------------------------------------------------------------------------------------
# Sizes other than the built one
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_detection_semantics_runs_at_other_sizes(backend, whole_window_tiles):
    model = SwinTransformerV2(img_size=64, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                              drop_path_rate=0.0, semantics="detection")
    perturb_(model)
    x = torch.randn(1, 3, 48, 80, requires_grad=True)  # stages 12x20 and 6x10: padded, shifted windows
    with swin_fused.use_backend(backend):
        out = model.eval()(x)
        assert out.shape == (1, 1000) and out.isfinite().all()
        out.sum().backward()
    assert x.grad.isfinite().all()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())
    if backend == "torch":
        with torch.no_grad():
            pyramid = model.forward_pyramid(x)
        assert [tuple(f.shape) for f in pyramid] == [(1, 16, 12, 20), (1, 32, 6, 10)]


def test_official_semantics_at_a_larger_size_is_the_official_code_built_there():
    cfg = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4)
    official_64, ours = official_and_ours(dict(cfg, img_size=64))
    official_128 = official_v2.SwinTransformerV2(**cfg, img_size=128).eval()
    state = {k: v for k, v in official_64.state_dict().items() if not k.endswith("attn_mask")}
    state.update({k: v for k, v in official_128.state_dict().items() if k.endswith("attn_mask")})
    official_128.load_state_dict(state, strict=True)  # same windows at 128: only the masks are per-size
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert_close_to(ours(x), official_128(x))
        # and at a size the official code cannot run: padded windows, finite
        assert ours(torch.randn(1, 3, 72, 88)).isfinite().all()


def test_absolute_position_embedding_is_an_error_at_another_size():
    model = SwinTransformerV2(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, ape=True)
    with pytest.raises(ValueError, match="absolute position embedding is built for"):
        model(torch.randn(1, 3, 64, 64))


def test_semantics_is_fixed_at_construction():
    model = SwinTransformerV2(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                              semantics="mmdet")
    assert model.semantics == "detection" and model.layers[0].blocks[1].semantics == "detection"
    with pytest.raises(AttributeError, match="fixed at construction"):
        model.semantics = "official"


# ------------------------------------------------------------------------ checkpoints of the V2 libraries


def _v2_sources():
    """(layout, semantics, a library V2 model): timm, torchvision and HF transformers, tiny, off their init."""
    from numerics import perturb_ as move_off_init

    sources = []
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    sources.append(("timm-v2", "timm", timm.create_model(
        "swinv2_tiny_window8_256", pretrained=False, img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2),
        window_size=4, num_classes=5)))
    tv = pytest.importorskip("torchvision.models.swin_transformer")
    sources.append(("torchvision-v2", "torchvision", tv.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=[4, 4], num_classes=5,
        block=tv.SwinTransformerBlockV2, downsample_layer=tv.PatchMergingV2)))
    transformers = pytest.importorskip("transformers")
    sources.append(("transformers-v2", "transformers-v2", transformers.Swinv2ForImageClassification(
        transformers.Swinv2Config(image_size=32, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=4,
                                  num_labels=5))))
    return [(layout, semantics, move_off_init(model)) for layout, semantics, model in sources]


def test_library_v2_checkpoints_load_strictly_and_reproduce_the_library():
    """timm, torchvision (one qkv bias, k part zeroed per call) and HF (separate query/key/value, a bias-free key)
    V2 dicts convert onto the official V2 keys, load strictly, are named, and the model built with the library's
    semantics gives the library's logits, at the built size and at one that pads."""
    for layout, semantics, source in _v2_sources():
        ours = SwinTransformerV2(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                                 num_classes=5, semantics=semantics).eval()
        result = swin_fused.load_checkpoint(ours, source.state_dict())
        assert result.source == layout and not result.missing_keys and not result.unexpected_keys
        # The model's load hook renames the same dict for plain load_state_dict, into a built or a meta model.
        for assign in (False, True):
            with torch.device("meta" if assign else "cpu"):
                plain = SwinTransformerV2(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                                          num_classes=5, semantics=semantics)
            plain.load_state_dict(source.state_dict(), strict=True, assign=assign)
            assert plain.state_dict().keys() == ours.state_dict().keys()
            assert all(torch.equal(v, ours.state_dict()[k]) for k, v in plain.state_dict().items()), layout
        for size in ((32, 32),) if layout == "timm-v2" else ((32, 32), (36, 44)):  # timm asserts its size
            x = torch.randn(2, 3, *size)
            with torch.no_grad():
                ref = source(x)
                ref = getattr(ref, "logits", ref)
                got = ours(x)
            assert_close_to(got, ref, rtol=1e-5, what=f"{layout} at {size}")


def test_a_v2_checkpoint_in_a_v1_model_is_a_clear_error():
    _, _, source = _v2_sources()[0]
    v1 = swin_fused.SwinTransformer(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                                    num_classes=5)
    with pytest.raises(swin_fused.CheckpointError, match="Swin V2 checkpoint"):
        swin_fused.load_checkpoint(v1, source.state_dict())
    v2 = SwinTransformerV2(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, num_classes=5)
    with pytest.raises(swin_fused.CheckpointError, match="Swin V1 checkpoint"):
        swin_fused.load_checkpoint(v2, v1.state_dict())
