"""``swin_fused.optimize`` on HF transformers' Swin V1 models: ``SwinForImageClassification``, ``SwinModel``,
``SwinBackbone`` (``always_partition``), with both of HF's attention implementations (eager, SDPA).

The oracle is the HF model itself: a deep copy runs HF's code, the optimized one must give the same outputs and
gradients (fp32, max-abs error <= 2e-4 of the outputs' scale, <= 1e-3 of each gradient's plus 1e-6 of the
largest gradient's, for the k bias, whose gradient is exactly zero: a constant added to every key leaves the
softmax alone), at 224 (stage 4 is one 7x7 window, unshifted) and 256x320 (stage 4 8x10, padded and shifted);
through the kernels (the interpreter on the CPU) with window 4 at 128 and 160x192, which has the same cases at a
fraction of the interpreter's time. No feature map is rolled: with the fused op no ``torch.roll`` runs at all; the PyTorch path rolls only the int64 token-id map
from which it derives its (cached) gather order. What HF must keep doing itself: returning attention
probabilities (``output_attentions=True``), and calls with hooks on a module the patched layer skips.
"""
import copy

import pytest
import torch
from conftest import HAS_CUDA
from numerics import perturb_, relative_error

import swin_fused

hf_swin = pytest.importorskip("transformers.models.swin.modeling_swin")
transformers = pytest.importorskip("transformers")

DEVICE = "cuda" if HAS_CUDA else "cpu"
BACKENDS = ["torch", "triton"]
SIZES = [(224, 224), (256, 320)]
NUM_LAYERS = 8


def config(attn_implementation="eager", **overrides):
    kw = dict(image_size=224, patch_size=4, embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=7,
              num_labels=10, attn_implementation=attn_implementation)
    return transformers.SwinConfig(**{**kw, **overrides})






class RollCounter:
    """Counts ``torch.roll`` calls, and those on floating-point tensors (feature maps)."""

    def __init__(self, monkeypatch):
        self.calls, self.float_calls = 0, 0
        real = torch.roll

        def counting(x, *args, **kwargs):
            self.calls += 1
            self.float_calls += x.is_floating_point()
            return real(x, *args, **kwargs)

        monkeypatch.setattr(torch, "roll", counting)


def optimized(model, **kwargs):
    fast = copy.deepcopy(model)
    report = swin_fused.optimize(fast, verbose=False, **kwargs)
    return fast, report


@pytest.fixture(scope="module", params=["eager", "sdpa"])
def classifier(request):
    torch.manual_seed(6)
    return perturb_(hf_swin.SwinForImageClassification(config(request.param))).to(DEVICE)


@pytest.fixture(scope="module")
def classifier_window4():
    torch.manual_seed(6)
    return perturb_(hf_swin.SwinForImageClassification(config("sdpa", window_size=4, image_size=128))).to(DEVICE)


def grads(model, x):
    model.zero_grad()
    out = model(x).logits
    (out * torch.linspace(-1, 1, out.shape[-1], device=out.device)).sum().backward()
    return out.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def check_outputs_and_gradients(monkeypatch, model, size, backend, batch):
    fast, report = optimized(model, backend=backend)
    assert report.family == "transformers" and len(report.patched) == NUM_LAYERS and not report.left_alone
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    ref_out, ref_grads = grads(copy.deepcopy(model), x)  # a fresh HF copy per size (HF's rule sticks)
    rolls = RollCounter(monkeypatch)
    out, fast_grads = grads(fast, x)
    assert relative_error(out, ref_out) <= 2e-4
    assert ref_grads.keys() == fast_grads.keys()
    scale = max(g.abs().max().item() for g in ref_grads.values())
    for name, ref in ref_grads.items():
        err = (fast_grads[name].double() - ref.double()).abs().max().item()
        assert err <= 1e-3 * ref.abs().max().item() + 1e-6 * scale, f"{name}: {err:.2e}"
    assert rolls.float_calls == 0, "a feature map was rolled"
    if backend == "triton":
        assert rolls.calls == 0


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_classifier_outputs_and_gradients_unchanged(monkeypatch, classifier, size):
    check_outputs_and_gradients(monkeypatch, classifier, size, "torch", batch=2)


@pytest.mark.parametrize("size", [(128, 128), (160, 192)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_classifier_outputs_and_gradients_unchanged_through_the_kernels(monkeypatch, classifier_window4, size):
    check_outputs_and_gradients(monkeypatch, classifier_window4, size, "triton", batch=1)


def test_swin_model_and_backbone_unchanged():
    torch.manual_seed(7)
    x = torch.randn(1, 3, 200, 264).to(DEVICE)
    model = perturb_(hf_swin.SwinModel(config())).to(DEVICE)
    fast, report = optimized(model)
    assert len(report.patched) == NUM_LAYERS
    with torch.no_grad():
        ref, out = model(x), fast(x)
    assert relative_error(out.last_hidden_state, ref.last_hidden_state) <= 2e-4
    assert relative_error(out.pooler_output, ref.pooler_output) <= 2e-4
    # The backbone passes always_partition=True: every stage keeps window 7 and its shift, even 4x5 maps.
    stages = ["stage1", "stage2", "stage3", "stage4"]
    backbone = perturb_(hf_swin.SwinBackbone(config(out_features=stages))).to(DEVICE)
    fast, report = optimized(backbone)
    assert len(report.patched) == NUM_LAYERS
    with torch.no_grad():
        ref, out = backbone(x).feature_maps, fast(x).feature_maps
    assert len(out) == 4 and [o.shape for o in out] == [r.shape for r in ref]
    for o, r in zip(out, ref):
        assert relative_error(o, r) <= 2e-4


def test_attention_probabilities_come_from_hf():
    """output_attentions=True needs the probabilities the fused op never builds: those calls run HF's code and
    return HF's attentions; the next plain call is fused again."""
    torch.manual_seed(8)
    model = perturb_(hf_swin.SwinForImageClassification(config("eager"))).to(DEVICE)
    fast, _ = optimized(model)
    x = torch.randn(1, 3, 224, 224).to(DEVICE)
    with torch.no_grad():
        ref, out = model(x, output_attentions=True), fast(x, output_attentions=True)
    assert len(out.attentions) == len(ref.attentions) == 4
    for a, r in zip(out.attentions, ref.attentions):
        torch.testing.assert_close(a, r)
    assert relative_error(out.logits, ref.logits) <= 2e-4


def test_hooks_on_skipped_modules_send_calls_to_hf(monkeypatch):
    torch.manual_seed(9)
    model = perturb_(hf_swin.SwinForImageClassification(config())).to(DEVICE)
    hooked = copy.deepcopy(model)
    seen = []
    hooked.swin.encoder.layers[0].blocks[0].attention.q_proj.register_forward_hook(lambda *a: seen.append(1))
    with pytest.warns(UserWarning, match="hooks on attention.q_proj"):
        report = swin_fused.optimize(hooked, verbose=False)
    assert len(report.patched) == NUM_LAYERS - 1 and list(report.left_alone) == ["swin.encoder.layers.0.blocks.0"]
    # A hook added after optimize(): that call takes HF's path, so the hook runs and the output is HF's.
    fast, _ = optimized(model)
    fast.swin.encoder.layers[1].blocks[1].attention.register_forward_hook(lambda *a: seen.append(2))
    x = torch.randn(1, 3, 224, 224).to(DEVICE)
    with torch.no_grad():
        assert relative_error(fast(x).logits, model(x).logits) <= 2e-4
        hooked(x)
    assert seen.count(1) == 1 and seen.count(2) == 1


def test_undo_and_models_that_reuse_swin(monkeypatch):
    torch.manual_seed(10)
    model = perturb_(hf_swin.SwinForImageClassification(config())).to(DEVICE)
    fast, _ = optimized(model)
    undone = swin_fused.optimize(fast, undo=True, verbose=False)
    assert len(undone.restored) == NUM_LAYERS
    assert all("forward" not in layer.__dict__ for layer in fast.modules() if isinstance(layer, hf_swin.SwinLayer))
    # An HF layer named like Swin's that optimize() does not know (the known copies: test_optimize_transformers_copies)
    other = type("FutureSwinLayer", (torch.nn.Module,), {"__module__": "transformers.models.future.modeling_future"})
    with pytest.warns(UserWarning, match="FutureSwinLayer .* is not transformers' SwinLayer, Swinv2Layer or a copy"):
        report = swin_fused.optimize(torch.nn.Sequential(other(), other()), verbose=False)
    assert report.family == "transformers" and not report.patched and len(report.left_alone) == 2


class CallCounter:
    """Counts calls of swin_fused.window_attention (one per fused layer call)."""

    def __init__(self, monkeypatch):
        import swin_fused.functional as functional

        self.calls = 0
        real = functional.window_attention

        def counting(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(functional, "window_attention", counting)


def test_keywords_hf_passes_through_stay_fused(monkeypatch):
    """A Trainer's num_items_in_batch and UperNet's output_attentions=False reach every SwinLayer; they concern HF's
    attention function, which the fused path replaces, so the layers stay fused."""
    torch.manual_seed(11)
    model = perturb_(hf_swin.SwinForImageClassification(config())).to(DEVICE)
    fast, _ = optimized(model)
    x = torch.randn(1, 3, 224, 224).to(DEVICE)
    counter = CallCounter(monkeypatch)
    with torch.no_grad():
        out = fast(x, output_attentions=False).logits
        assert counter.calls == NUM_LAYERS
        fast(x, num_items_in_batch=torch.tensor(8))
        assert counter.calls == 2 * NUM_LAYERS
        assert relative_error(out, model(x).logits) <= 2e-4


class Adapter(torch.nn.Module):
    """What peft's LoRA does to a projection: a wrapper module (not an nn.Linear) adding a low-rank term."""

    def __init__(self, base: torch.nn.Linear):
        super().__init__()
        self.base = base
        self.down = torch.nn.Linear(base.in_features, 2, bias=False)
        self.up = torch.nn.Linear(2, base.out_features, bias=False)
        torch.nn.init.normal_(self.up.weight, std=0.5)

    @property
    def weight(self):  # as peft exposes the base layer's weight
        return self.base.weight

    @property
    def bias(self):
        return self.base.bias

    def forward(self, x):
        return self.base(x) + self.up(self.down(x))


def test_projections_wrapped_after_optimize_take_hfs_path(monkeypatch):
    torch.manual_seed(12)
    model = perturb_(hf_swin.SwinForImageClassification(config())).to(DEVICE)
    fast, _ = optimized(model)
    for m in (model, fast):  # the same adapters (same seed) on both
        torch.manual_seed(13)
        for layer in m.modules():
            if isinstance(layer, hf_swin.SwinLayer):
                layer.attention.q_proj = Adapter(layer.attention.q_proj).to(DEVICE)
    x = torch.randn(1, 3, 224, 224).to(DEVICE)
    counter = CallCounter(monkeypatch)
    with torch.no_grad():
        assert relative_error(fast(x).logits, model(x).logits) <= 2e-4
    assert counter.calls == 0


def test_absolute_position_embeddings_convert():
    torch.manual_seed(14)
    theirs = perturb_(hf_swin.SwinForImageClassification(config(use_absolute_embeddings=True))).to(DEVICE)
    ours = swin_fused.SwinTransformer(img_size=224, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                                      window_size=7, num_classes=10, ape=True, semantics="transformers")
    swin_fused.load_checkpoint(ours, theirs.state_dict())
    x = torch.randn(1, 3, 224, 224).to(DEVICE)
    with torch.no_grad():
        assert relative_error(ours.eval().to(DEVICE)(x), theirs(x).logits) <= 2e-4
