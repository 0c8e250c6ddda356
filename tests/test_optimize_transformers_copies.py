"""``swin_fused.optimize`` on the HF models whose Swin layer is a copy of transformers < 5's SwinLayer:
Donut's encoder (``DonutSwinModel``), MaskFormer's backbone (``MaskFormerSwinModel`` / ``MaskFormerSwinBackbone``,
which always partition) and CLAP's audio encoder (HTSAT, ``ClapAudioModel``).

The oracle is the HF model itself, run from a fresh deep copy for every input (Donut and CLAP write a clamped
window and a zero shift back into their layers after a small map, as SwinLayer does): outputs and gradients in
fp32 within the bounds of tests/test_optimize_transformers.py, on maps the window does not divide (padding) with
shifted stages, through both backends (the kernels on the interpreter with window 4 and small maps). What stays
HF's: ``output_attentions=True`` and calls with hooks on the modules the fused path skips.
"""
import copy

import pytest
import torch
from conftest import HAS_CUDA
from numerics import perturb_, relative_error

import swin_fused

transformers = pytest.importorskip("transformers")
donut = pytest.importorskip("transformers.models.donut.modeling_donut_swin")
maskformer = pytest.importorskip("transformers.models.maskformer.modeling_maskformer_swin")
clap = pytest.importorskip("transformers.models.clap.modeling_clap")

DEVICE = "cuda" if HAS_CUDA else "cpu"
GEOMETRY = dict(embed_dim=16, depths=[2, 2, 2], num_heads=[1, 2, 4], window_size=4)


def donut_model():
    return donut.DonutSwinModel(transformers.DonutSwinConfig(image_size=64, **GEOMETRY))


def maskformer_model():
    return maskformer.MaskFormerSwinModel(transformers.MaskFormerSwinConfig(image_size=64, **GEOMETRY))


def maskformer_backbone():
    config = transformers.MaskFormerSwinConfig(image_size=64, out_features=["stage1", "stage2", "stage3"], **GEOMETRY)
    return maskformer.MaskFormerSwinBackbone(config)


def clap_model():
    config = clap.ClapAudioConfig(spec_size=64, num_mel_bins=64, window_size=4, patch_embeds_hidden_size=16,
                                  hidden_size=64, depths=[2, 2, 2], num_attention_heads=[1, 2, 4], enable_fusion=False)
    return clap.ClapAudioModel(config)


def outputs(model, x):
    """Every tensor the model returns for ``x``: the final map, or each feature map of a backbone."""
    out = model(x)
    return list(out.feature_maps) if hasattr(out, "feature_maps") else [out.last_hidden_state]


# (model, input shapes): padded maps in every stage, shifted windows; 64 ends in a 4x4 map, one window (Donut clamps
# there without changing the window, which HF's own bias lookup needs); MaskFormer partitions maps of any size.
CASES = {
    "donut": (donut_model, [(2, 3, 64, 64), (2, 3, 72, 100)]),
    "maskformer": (maskformer_model, [(2, 3, 72, 100), (2, 3, 20, 28), (1, 3, 5, 7)]),
    "maskformer-backbone": (maskformer_backbone, [(1, 3, 83, 129)]),
    "clap": (clap_model, [(2, 1, 64, 64), (2, 1, 40, 64)]),
}
NUM_LAYERS = 6


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    build, shapes = CASES[request.param]
    torch.manual_seed(20)
    return request.param, perturb_(build()).to(DEVICE), shapes


def count_fused_calls(monkeypatch):
    """A list that grows by one on every call of swin_fused.window_attention (one per fused layer call)."""
    calls = []
    real = swin_fused.functional.window_attention
    monkeypatch.setattr(swin_fused.functional, "window_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def optimized(model, **kwargs):
    fast = copy.deepcopy(model)
    return fast, swin_fused.optimize(fast, verbose=False, **kwargs)


def outputs_and_grads(model, x):
    model.zero_grad()
    outs = outputs(model, x)
    weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i)).to(o.device) for i, o in
               enumerate(outs)]
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
    return [o.detach() for o in outs], {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(fast, model, x):
    ref_outs, ref_grads = outputs_and_grads(copy.deepcopy(model), x)  # a fresh HF copy: its clamp sticks
    outs, grads = outputs_and_grads(fast, x)
    for out, ref in zip(outs, ref_outs, strict=True):
        assert out.shape == ref.shape and relative_error(out, ref) <= 2e-4
    assert grads.keys() == ref_grads.keys()
    scale = max(g.abs().max().item() for g in ref_grads.values())
    for name, ref in ref_grads.items():
        err = (grads[name].double() - ref.double()).abs().max().item()
        assert err <= 1e-3 * ref.abs().max().item() + 1e-6 * scale, f"{name}: {err:.2e}"


def test_every_layer_is_patched_and_outputs_and_gradients_are_hfs(case):
    _, model, shapes = case
    fast, report = optimized(model, backend="torch")
    assert report.family == "transformers" and len(report.patched) == NUM_LAYERS and not report.left_alone
    assert len(report.norms) == 2 * NUM_LAYERS + 2  # each layer's two, and the two mergings'
    for shape in shapes:
        assert_same(fast, model, torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(DEVICE))


@pytest.mark.parametrize("name", ["donut", "maskformer"])
def test_through_the_kernels(name, monkeypatch):
    torch.manual_seed(21)
    model = perturb_(CASES[name][0]()).to(DEVICE)
    fast, report = optimized(model, backend="triton")
    assert len(report.patched) == NUM_LAYERS
    calls = count_fused_calls(monkeypatch)
    assert_same(fast, model, torch.randn(1, 3, 72, 100, generator=torch.Generator().manual_seed(2)).to(DEVICE))
    assert len(calls) == NUM_LAYERS


def test_the_window_is_the_configured_one_after_a_small_input():
    """HF's Donut writes shift 0 back into a layer after a map no larger than its window; the patched layer keeps
    the shift it was built with, so a later larger map gives what a fresh HF model gives."""
    torch.manual_seed(22)
    model = perturb_(donut_model()).to(DEVICE)
    fast, _ = optimized(model)
    small, large = (torch.randn(1, 3, *s).to(DEVICE) for s in [(64, 64), (72, 100)])
    sticky = copy.deepcopy(model)
    with torch.no_grad():
        fast(small), sticky(small)
        assert sticky.encoder.layers[2].blocks[1].shift_size == 0  # HF's write-back
        out, fresh, stale = fast(large), copy.deepcopy(model)(large), sticky(large)
    assert relative_error(out.last_hidden_state, fresh.last_hidden_state) <= 2e-4
    assert relative_error(stale.last_hidden_state, fresh.last_hidden_state) > 1e-3


def test_attention_probabilities_and_hooks_take_hfs_path(monkeypatch):
    torch.manual_seed(23)
    model = perturb_(donut_model()).to(DEVICE)  # MaskFormer's own output_attentions=True fails (transformers 5.24)
    fast, _ = optimized(model)
    x = torch.randn(1, 3, 72, 100).to(DEVICE)
    with torch.no_grad():
        ref, out = model(x, output_attentions=True), fast(x, output_attentions=True)
    assert len(out.attentions) == len(ref.attentions) == 3
    for a, r in zip(out.attentions, ref.attentions):
        torch.testing.assert_close(a, r)

    hooked = copy.deepcopy(model)
    seen = []
    hooked.encoder.layers[0].blocks[1].attention.self.query.register_forward_hook(lambda *a: seen.append(1))
    with pytest.warns(UserWarning, match=r"hooks on attention\.self\.query"):
        report = swin_fused.optimize(hooked, verbose=False)
    assert len(report.patched) == NUM_LAYERS - 1 and list(report.left_alone) == ["encoder.layers.0.blocks.1"]
    # After optimize(): a hook on the attention, one on its dropout (where HF's probabilities pass), a wrapper
    # around attention.self's forward (accelerate's kind): each such call takes HF's path.
    fast.encoder.layers[1].blocks[0].attention.register_forward_hook(lambda *a: seen.append(2))
    fast.encoder.layers[1].blocks[1].attention.self.dropout.register_forward_hook(lambda *a: seen.append(3))
    inner = fast.encoder.layers[2].blocks[0].attention.self
    inner.forward = lambda *a, wrapped=inner.forward, **k: seen.append(4) or wrapped(*a, **k)
    with torch.no_grad():
        assert relative_error(fast(x).last_hidden_state, model(x).last_hidden_state) <= 2e-4
        hooked(x)
    assert seen == [2, 3, 4, 1]
    # What accelerate's remove_hook_from_module leaves: the class's forward bound in the instance. Fused again.
    inner.forward = type(inner).forward.__get__(inner)
    fast.encoder.layers[1].blocks[0].attention._forward_hooks.clear()
    fast.encoder.layers[1].blocks[1].attention.self.dropout._forward_hooks.clear()
    calls = count_fused_calls(monkeypatch)
    with torch.no_grad():
        assert relative_error(fast(x).last_hidden_state, model(x).last_hidden_state) <= 2e-4
    assert len(calls) == NUM_LAYERS


def test_undo_restores_hfs_layers():
    torch.manual_seed(24)
    model = perturb_(donut_model()).to(DEVICE)
    fast, _ = optimized(model)
    undone = swin_fused.optimize(fast, undo=True, verbose=False)
    assert len(undone.restored) == NUM_LAYERS
    assert all("forward" not in m.__dict__ for m in fast.modules() if isinstance(m, donut.DonutSwinLayer))


def test_a_layer_the_fused_op_cannot_reproduce_is_left_alone():
    torch.manual_seed(25)
    model = perturb_(maskformer_model()).to(DEVICE)
    attn = model.encoder.layers[1].blocks[1].attention.self
    attn.relative_position_index = attn.relative_position_index.t().contiguous()  # keys and queries swapped
    model.encoder.layers[2].blocks[0].attention.self.dropout = torch.nn.Identity()  # no p to apply
    fast = copy.deepcopy(model)
    with pytest.warns(UserWarning, match="relative_position_index .* Identity, not nn.Dropout"):
        report = swin_fused.optimize(fast, verbose=False)
    assert len(report.patched) == NUM_LAYERS - 2
    assert sorted(report.left_alone) == ["encoder.layers.1.blocks.1", "encoder.layers.2.blocks.0"]
    x = torch.randn(1, 3, 72, 100).to(DEVICE)
    with torch.no_grad():
        assert relative_error(fast(x).last_hidden_state, model(x).last_hidden_state) <= 2e-4
