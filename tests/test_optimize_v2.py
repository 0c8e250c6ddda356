"""``swin_fused.optimize`` on Swin V2 models of timm, torchvision and HF transformers: same outputs, same gradients,
no ``torch.roll``, with the fused kernels (interpreted on the CPU).

The released architectures themselves (timm ``swinv2_tiny_window8_256`` / ``swinv2_tiny_window16_256``, torchvision
``swin_v2_t``, HF's SwinV2-T with window 8 at 256), on random weights moved off their init (``perturb_``: the
logit scales, the continuous-position-bias MLPs and the q/v biases all matter), at 256x256 and, for torchvision,
256x320 (a width that pads). What each library does that the op must reproduce: timm rolls before it pads,
torchvision zeroes the k part of its qkv bias on each call, HF adds its shift mask twice; see the adapters in
``swin_fused/interop``.
"""
import copy

import pytest
import torch
from conftest import HAS_CUDA
from numerics import perturb_, relative_error

import swin_fused

DEVICE = "cuda" if HAS_CUDA else "cpu"


class RollCounter:
    """Counts ``torch.roll`` calls."""

    def __init__(self, monkeypatch):
        self.calls = 0
        real = torch.roll

        def counting(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(torch, "roll", counting)


def _logits(out):
    return out.logits if hasattr(out, "logits") else out


def _outputs_and_grads(model, x):
    model.zero_grad()
    out = _logits(model(x))
    (out * torch.linspace(-1, 1, out.shape[-1], device=out.device)).sum().backward()
    return out.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(autouse=True)
def _fast_interpreter(whole_window_tiles):
    """Whole models through the interpreter: one tile per window (see conftest.whole_window_tiles)."""


def check_optimized(monkeypatch, model, size, family, blocks):
    """optimize() patches every block, and the model keeps its outputs (2e-4) and gradients (1e-3 of each
    parameter's gradient, relative) with no torch.roll left."""
    model = perturb_(model).to(DEVICE)
    fast = copy.deepcopy(model)
    report = swin_fused.optimize(fast, backend="triton", verbose=False)
    assert report.family == family and len(report.patched) == blocks and not report.left_alone, str(report)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    ref_out, ref_grads = _outputs_and_grads(model, x)
    rolls = RollCounter(monkeypatch)
    out, grads = _outputs_and_grads(fast, x)
    assert rolls.calls == 0, "torch.roll ran on the fused path"
    assert relative_error(out, ref_out) <= 2e-4, relative_error(out, ref_out)
    assert grads.keys() == ref_grads.keys()
    scale = max(g.abs().max().item() for g in ref_grads.values())
    for name, ref in ref_grads.items():
        err = (grads[name].double() - ref.double()).abs().max().item()
        assert err <= 1e-3 * ref.abs().max().item() + 1e-6 * scale, f"{name}: {err:.2e}"
    for name in ("logit_scale", "cpb_mlp.0.weight", "continuous_position_bias_mlp.0.weight"):
        assert not any(name in key for key in ref_grads) or any(
            name in key and g.abs().max() > 0 for key, g in grads.items()), f"no gradient reached {name}"


@pytest.mark.parametrize("name", ["swinv2_tiny_window8_256", "swinv2_tiny_window16_256"])
def test_timm(monkeypatch, name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    check_optimized(monkeypatch, timm.create_model(name, pretrained=False), (256, 256), "timm", 12)


@pytest.mark.parametrize("size", [(256, 256), (256, 320)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_torchvision(monkeypatch, size):
    tv = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    check_optimized(monkeypatch, tv.swin_v2_t(), size, "torchvision", 12)


def _hf_v2(**overrides):
    transformers = pytest.importorskip("transformers")
    config = dict(image_size=256, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=8,
                  num_labels=1000, attn_implementation="eager")  # HF's Swin V2 has no SDPA implementation
    config.update(overrides)
    torch.manual_seed(0)
    return transformers.Swinv2ForImageClassification(transformers.Swinv2Config(**config))


def test_transformers(monkeypatch):
    check_optimized(monkeypatch, _hf_v2(), (256, 256), "transformers", 12)


def _small_hf_v2():
    return perturb_(_hf_v2(image_size=32, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=4,
                           num_labels=5))


def test_transformers_attention_probabilities_come_from_hf():
    """output_attentions=True needs the probabilities, which the fused op never builds: HF computes the call."""
    model = _small_hf_v2()
    fast = copy.deepcopy(model)
    swin_fused.optimize(fast, backend="triton", verbose=False)
    x = torch.randn(1, 3, 32, 32)
    ref, got = model(x, output_attentions=True), fast(x, output_attentions=True)
    assert len(got.attentions) == len(ref.attentions) > 0
    assert all(torch.equal(a, b) for a, b in zip(got.attentions, ref.attentions))
    torch.testing.assert_close(got.logits, ref.logits)


def test_hf_backbone_and_undo():
    transformers = pytest.importorskip("transformers")
    config = transformers.Swinv2Config(image_size=32, embed_dim=16, depths=[2, 2], num_heads=[1, 2], window_size=4,
                                       out_features=["stage1", "stage2"])
    torch.manual_seed(0)
    model = perturb_(transformers.Swinv2Backbone(config))
    x = torch.randn(1, 3, 36, 28)  # pads at the first stage
    ref = model(x).feature_maps
    report = swin_fused.optimize(model, backend="triton", verbose=False)
    assert len(report.patched) == 4 and not report.left_alone
    for a, b in zip(model(x).feature_maps, ref):
        assert relative_error(a, b) <= 2e-5
    swin_fused.optimize(model, undo=True, verbose=False)
    assert all(torch.equal(a, b) for a, b in zip(model(x).feature_maps, ref))


def test_timm_v2_cr_is_named_and_left_alone():
    cr = pytest.importorskip("timm.models.swin_transformer_v2_cr")
    model = cr.SwinTransformerV2Cr(img_size=(32, 32), embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                                   num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32)
    ref = model(x)
    with pytest.warns(UserWarning, match="swin_transformer_v2_cr"):
        report = swin_fused.optimize(model, verbose=False)
    assert report.patched == [] and len(report.left_alone) == 4
    assert torch.equal(model(x), ref)


def test_small_maps_and_hooks_torch_backend():
    """The PyTorch backend too (the one a CPU user gets), on a small timm V2 whose last stage's window is clamped;
    a hook added after optimize() on the attention module the fused path skips sends the call to timm."""
    v2 = pytest.importorskip("timm.models.swin_transformer_v2")
    torch.manual_seed(0)
    model = perturb_(v2.SwinTransformerV2(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=8,
                                          num_classes=5))
    x = torch.randn(2, 3, 32, 32)
    ref = model(x)
    fast = copy.deepcopy(model)
    report = swin_fused.optimize(fast, backend="torch", verbose=False)
    assert len(report.patched) == 4
    assert relative_error(fast(x), ref) <= 2e-5
    seen = []
    fast.layers[0].blocks[0].attn.register_forward_hook(lambda *args: seen.append(1))
    assert relative_error(fast(x), ref) <= 2e-5 and seen == [1]
