"""``swin_fused.optimize(model)`` also routes the routed blocks' and the libraries' merges' LayerNorms to the fused
norm kernel.

On the CPU the kernel runs in Triton's interpreter through the norm module's seams (``_on_gpu``, and
``resolve_backend`` for the norms alone), on a GPU compiled; the attention stays on the PyTorch path, so only the
norms differ from the library's model. The oracle is the library's own model, unoptimized: outputs and every
parameter gradient in fp32; under autocast within twice the autocast error of the library's model and of the
optimized one with PyTorch's norms. What the kernel hands on in the Linear's dtype (the MLP's and a V1 merge's norm,
the attention's norm only where the adapter's own forward feeds it to the qkv) is checked call by call, and a
forward hook on a norm sees what the library's norm would give it, as does anything else that could see the output
(backward hooks, global hooks, hooks on the MLP or its Linear, a Linear replaced after optimize(), a block subclass,
a wrapped norm). Also: which norms are routed (V1 and V2: timm, torchvision, HF; the official classification and
detection code; mmdet), each norm's own eps, the report, idempotence, routing order, undo (whole, partial, under a
wrapper set later), deep copies and pickles, ``nn.DataParallel`` replicas, norms that are not plain
``nn.LayerNorm``s, blocks left alone, ``use_fused_norms(False)``, a pinned backend, torch.compile of a block and of
whole models (fullgraph), torch.jit.script.
"""
import copy
import functools
import io
import sys
import types

import pytest
import torch

import mmdet_swin
import official_swin_detection as det
import swin_fused
from conftest import HAS_CUDA
from numerics import perturb_
from official_swin import SwinTransformer as OfficialSwin
from test_optimize import optimized  # a deep copy, optimized; every block must be routed
from swin_fused import norm as norm_module
from swin_fused.interop._patching import MARK

timm_swin = pytest.importorskip("timm.models.swin_transformer")
timm_v2 = pytest.importorskip("timm.models.swin_transformer_v2")
tv_swin = pytest.importorskip("torchvision.models.swin_transformer")

SMALL = dict(embed_dim=24, depths=(2, 2), num_heads=(2, 3), window_size=4, num_classes=5)
TV = dict(patch_size=[4, 4], embed_dim=24, depths=[2, 2], num_heads=[2, 3], window_size=[4, 4], num_classes=5,
          stochastic_depth_prob=0.0)
DEVICE = "cuda" if HAS_CUDA else "cpu"  # on a GPU the kernel runs compiled (and the GPU report runs these)
IMAGE = {"official": 32}  # the official code needs window multiples; the others pad 10x10 maps to 12x12


def _hf_model(v2=False):
    transformers = pytest.importorskip("transformers")
    config = dict(image_size=40, patch_size=4, embed_dim=24, depths=[2, 2], num_heads=[2, 3], window_size=4,
                  num_labels=5, attn_implementation="eager")
    if v2:
        return transformers.Swinv2ForImageClassification(transformers.Swinv2Config(**config))
    return transformers.SwinForImageClassification(transformers.SwinConfig(**config))


BUILDERS = {
    "timm": lambda: timm_swin.SwinTransformer(img_size=40, drop_path_rate=0.0, **SMALL),
    "timm-v2": lambda: timm_v2.SwinTransformerV2(img_size=40, drop_path_rate=0.0, **SMALL),
    "torchvision": lambda: tv_swin.SwinTransformer(**TV),
    "torchvision-v2": lambda: tv_swin.SwinTransformer(**TV, block=tv_swin.SwinTransformerBlockV2,
                                                      downsample_layer=tv_swin.PatchMergingV2),
    "official": lambda: OfficialSwin(img_size=32, drop_path_rate=0.0, **SMALL),
    "transformers": _hf_model,
    "transformers-v2": lambda: _hf_model(v2=True),
    "detection": lambda: det.SwinTransformer(embed_dim=24, depths=(2, 2), num_heads=(2, 3), window_size=4,
                                             drop_path_rate=0.0, out_indices=(0, 1)),
}
FAMILIES = list(BUILDERS)
#: The norm after the attention (post-norm, V2) goes into the residual sum: never in the Linear's dtype. Pre-norm:
#: the MLP's norm where the MLP is the library's own (not the official code's, which its users copy), the
#: attention's where the adapter's own forward feeds it to the qkv Linear (official, detection, HF).
#: (block norms' names, whether the patched forward has a Linear reader, the Linear's dtype in the routed call)
BLOCK_NORMS = {
    "timm": (("norm1", False, False), ("norm2", True, True)),
    "torchvision": (("norm1", False, False), ("norm2", True, True)),
    "official": (("norm1", False, True), ("norm2", False, False)),
    "transformers": (("layernorm_before", False, True), ("layernorm_after", True, True)),
    "transformers-v2": (("layernorm_before", False, False), ("layernorm_after", False, False)),
    "detection": (("norm1", False, True), ("norm2", False, False)),
    "timm-v2": (("norm1", False, False), ("norm2", False, False)),
    "torchvision-v2": (("norm1", False, False), ("norm2", False, False)),
}
#: The libraries' merging layers (V1: norm, then reduction; V2: reduction, then norm); the official code's (and its
#: detection backbone's) are its users' copies, left alone.
MERGES = {"PatchMerging": True, "PatchMergingV2": False, "SwinPatchMerging": True, "Swinv2PatchMerging": False}


def build(family):
    torch.manual_seed(3)
    model = perturb_(BUILDERS[family]())
    with torch.no_grad():  # norms far from (1, 0), so a swapped weight and bias or a lost affine shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_((1 if name.endswith("weight") else 0) + 0.3 * torch.randn_like(p))
    for i, norm in enumerate(m for m in model.modules() if type(m) is torch.nn.LayerNorm):
        norm.eps = (1e-5, 0.5, 1e-3)[i % 3]  # the kernel must take each norm's own eps
    return model.eval().to(DEVICE)


def images(family, batch=2):
    size = IMAGE.get(family, 40)
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(DEVICE)


def expected_norms(family, model, report):
    """``{name: (has a Linear reader, in the Linear's dtype)}`` in the model's module order: each routed block's two norms
    (torchvision routes the attention inside its block) and the libraries' merges' norms."""
    blocks = [name.rpartition(".")[0] if family.startswith("torchvision") else name for name in report.patched]
    norms = {f"{block}.{norm}": (feeds, in_linear) for block in blocks for norm, feeds, in_linear in BLOCK_NORMS[family]}
    merges = {f"{name}.norm": (MERGES[type(m).__name__],) * 2 for name, m in model.named_modules()
              if type(m).__name__ in MERGES and family not in ("official", "detection")}
    if family.endswith("v2"):
        merges = {name: (False, False) for name in merges}
    return {name: norms.get(name) or merges[name] for name, _ in model.named_modules() if name in {**norms, **merges}}


def logits(out):
    """A classifier's logits, or a backbone's maps side by side."""
    if isinstance(out, (tuple, list)):
        return torch.cat([o.flatten(1) for o in out], 1)
    return out.logits if hasattr(out, "logits") else out


class FusedNorms:
    """The fused norm kernel, on the CPU, for the norms only; records each call's input shape and output dtype."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = norm_module._FusedLayerNorm.apply
        monkeypatch.setattr(norm_module, "_on_gpu", lambda x: True)
        monkeypatch.setattr(norm_module, "resolve_backend", lambda x, backend: "triton" if backend != "torch"
                            else "torch")
        monkeypatch.setattr(norm_module._FusedLayerNorm, "apply",
                            lambda x, w, b, eps, out_dtype: self.calls.append(out_dtype) or real(x, w, b, eps,
                                                                                                   out_dtype))


def run(model, x, autocast=None):
    """The model's output and its parameters' gradients (attention on the PyTorch path), under autocast to the
    dtype ``autocast`` if given."""
    model.zero_grad(set_to_none=True)
    with swin_fused.use_backend("torch"), torch.autocast(DEVICE, autocast or torch.float16,
                                                         enabled=autocast is not None):
        out = logits(model(x))
        (out.float() * torch.linspace(-1, 1, out.shape[-1], device=DEVICE)).sum().backward()
    return [out.detach().float()] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_routed_blocks_norms_and_the_report(family):
    model = build(family)
    fast, report = optimized(model)
    modules = dict(fast.named_modules())
    expected = expected_norms(family, model, report)
    assert report.norms == list(expected) and len(report.norms) == 8 + (family not in ("official", "detection"))
    for name, (has_reader, _) in expected.items():
        norm = modules[name]
        assert type(norm) is torch.nn.LayerNorm and norm.forward.args == (norm,)
        reader = getattr(norm, MARK).state["reader"]
        assert (reader is not None) == has_reader, name
        assert reader is None or type(getattr(reader[0], reader[1])) is torch.nn.Linear
    assert f"LayerNorms on the fused norm kernel (eager CUDA calls): {len(report.norms)}" in str(report)
    assert list(fast.state_dict()) == list(model.state_dict())
    unrouted = [n for n, m in modules.items() if type(m) is torch.nn.LayerNorm and n not in report.norms]
    assert unrouted and all(MARK not in modules[n].__dict__ for n in unrouted)  # the embedding's, the final norm


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_norms_give_the_librarys_outputs_and_gradients(monkeypatch, family):
    model = build(family)
    x = images(family)
    want = run(model, x)
    fast, report = optimized(model)
    fused = FusedNorms(monkeypatch)
    got = run(fast, x)
    assert len(fused.calls) == len(report.norms), "a routed norm did not take the fused kernel"
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * w.abs().max().item() + 1e-8)


def autocast_error(run_, exact):
    """(the output's, the gradients') error against the fp32 run, relative, in norm: the gradients' as one (root of
    the sum of squares over every parameter), since a 24-entry bias's error is a few bf16 roundings' luck."""
    rel = [(torch.linalg.vector_norm(t - w) / torch.linalg.vector_norm(w).clamp_min(1e-30)).item()
           for t, w in zip(run_, exact)]
    return rel[0], sum(r * r for r in rel[1:]) ** 0.5


@pytest.mark.parametrize("family", ["timm", "official", "transformers", "detection", "timm-v2"])
def test_under_autocast_the_linears_dtype_only_where_a_linear_reads_it(monkeypatch, family):
    """Each call's output dtype, and the model within twice the larger autocast error of the library's model and of
    the optimized one with PyTorch's norms (against the library's fp32 run); a forward hook on a norm gets the fp32
    output PyTorch's norm would give it. fp16 (the interpreter truncates bf16), but bf16 for timm's V2, whose own
    model overflows fp16 here (its norms hand on fp32 anyway)."""
    model = build(family)
    x = images(family)
    half = torch.bfloat16 if family == "timm-v2" else torch.float16
    exact = run(model, x)
    plain = run(model, x, autocast=half)
    fast, report = optimized(model)
    fused = FusedNorms(monkeypatch)
    with norm_module.use_fused_norms(False):
        unfused = run(fast, x, autocast=half)
    assert not fused.calls
    got = run(fast, x, autocast=half)
    wanted = [half if in_linear else torch.float32 for _, in_linear in expected_norms(family, model, report).values()]
    assert fused.calls == wanted
    err, base = autocast_error(got, exact), [max(pair) for pair in zip(autocast_error(plain, exact),
                                                                         autocast_error(unfused, exact))]
    assert err[0] <= 2 * base[0] + 1e-6 and err[1] <= 2 * base[1] + 1e-6, (err, base)

    seen = []
    modules = dict(fast.named_modules())
    for name in report.norms:
        modules[name].register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    fused.calls.clear()
    run(fast, x, autocast=half)
    assert seen == [torch.float32] * len(report.norms) and fused.calls == seen


def test_optimize_twice_undo_copies_and_replicas(monkeypatch):
    model = build("timm")
    x = images("timm")
    fast, first = optimized(model)
    second = swin_fused.optimize(fast, backend="torch", verbose=False)
    modules = dict(fast.named_modules())
    assert second.norms == first.norms
    for name in first.norms:
        assert modules[name].forward.args == (modules[name],), "the second call wrapped the first patch"
        assert getattr(modules[name], MARK).backend == "torch"
    fused = FusedNorms(monkeypatch)
    run(fast, x)
    assert not fused.calls, "a norm pinned to the torch backend took the kernel"
    swin_fused.optimize(fast, verbose=False)

    buffer = io.BytesIO()
    torch.save(fast, buffer)
    buffer.seek(0)
    for twin in (copy.deepcopy(fast), torch.load(buffer, weights_only=False)):
        norm = twin.layers[1].blocks[0].norm2
        assert norm.forward.args == (norm,), "patch still bound to the original model"
        fused.calls.clear()
        for g, w in zip(run(twin, x), run(model, x)):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * w.abs().max().item() + 1e-8)
        assert len(fused.calls) == len(first.norms)

    norm = fast.layers[0].blocks[1].norm1
    replica = norm._replicate_for_data_parallel()  # what nn.DataParallel's replicate() calls
    assert replica is not norm and replica.forward.args == (replica,)
    assert replica._replicate_for_data_parallel.args == (replica,)

    undone = swin_fused.optimize(fast, undo=True, verbose=False)
    assert undone.norms == [] and "LayerNorms" not in str(undone)
    assert not [n for n, m in fast.named_modules() if {MARK, "forward", "_replicate_for_data_parallel"} & set(m.__dict__)]
    fused.calls.clear()
    run(fast, x)
    assert not fused.calls


class _LayerNorm(torch.nn.LayerNorm):
    pass


def test_norms_left_as_they_are(monkeypatch):
    """Not plain nn.LayerNorms (a subclass; an instance-level forward), the norms of a block left alone; and the
    switch that turns the fused norms off."""
    model = timm_swin.SwinTransformer(img_size=40, drop_path_rate=0.0, norm_layer=_LayerNorm, **SMALL).to(DEVICE)
    fast, report = optimized(model)
    assert len(report.patched) == 4 and report.norms == []

    model = build("timm")
    wrapped = model.layers[0].blocks[0].norm2
    wrapped.forward = lambda x: torch.nn.LayerNorm.forward(wrapped, x)
    with torch.no_grad():
        model.layers[1].blocks[1].attn.relative_position_index.view(-1)[0] += 1  # that block is left alone
    with pytest.warns(UserWarning, match="left 1 of 4"):
        report = swin_fused.optimize(model, verbose=False)
    assert "layers.0.blocks.0.norm2" not in report.norms and "layers.0.blocks.0.norm1" in report.norms
    assert not [n for n in report.norms if n.startswith("layers.1.blocks.1.")] and len(report.norms) == 6

    fused = FusedNorms(monkeypatch)
    with norm_module.use_fused_norms(False):
        run(model, images("timm"))
    assert not fused.calls
    run(model, images("timm"))
    assert len(fused.calls) == 6  # 5 block norms, the merge's


def test_mmdet_blocks_norms(monkeypatch):
    """mmdet's / mmseg's SwinBlock around the routed ShiftWindowMSA (the transcription standing in for mmdet)."""
    module = types.ModuleType("mmdet.models.backbones.swin")
    module.ShiftWindowMSA, module.SwinBlock = mmdet_swin.ShiftWindowMSA, mmdet_swin.SwinBlock
    monkeypatch.setitem(sys.modules, "mmdet.models.backbones.swin", module)
    torch.manual_seed(5)
    model = perturb_(mmdet_swin.SwinTransformer(embed_dims=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                                                strides=(4, 2), out_indices=(0, 1))).eval().to(DEVICE)
    fast, report = optimized(model)
    assert report.norms == [f"stages.{s}.blocks.{b}.norm{i}" for s in range(2) for b in range(2) for i in (1, 2)]
    assert all(getattr(dict(fast.named_modules())[n], MARK).state == {"reader": None} for n in report.norms)
    x = torch.randn(2, 3, 40, 40, device=DEVICE)
    want = run(model, x)
    fused = FusedNorms(monkeypatch)
    got = run(fast, x)
    assert len(fused.calls) == len(report.norms)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * w.abs().max().item() + 1e-8)


def test_compiled_optimized_block_keeps_pytorchs_norms(monkeypatch):
    """Under torch.compile (fullgraph) the patched norms trace nn.LayerNorm's forward: inductor fuses norms itself."""
    block = build("timm").layers[0].blocks[1]
    x = torch.randn(2, 10, 10, 24, device=DEVICE)
    want = block(x)
    swin_fused.optimize(block, verbose=False)
    fused = FusedNorms(monkeypatch)
    torch._dynamo.reset()
    with swin_fused.use_backend("torch"):
        got = torch.compile(block, backend="eager", fullgraph=True)(x)
        assert not fused.calls
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        block(x)
    assert len(fused.calls) == 2  # the same block, eager


# --------------------------------------------------------------------------------------------------------
# What else may read a norm's output, or wrap its call: then PyTorch's dtype, or the wrapper's own code.

def _observers(fast):
    """Each way (name, installer) something other than the MLP's Linear sees timm's block norm2's call."""
    block = fast.layers[0].blocks[0]
    return [
        ("norm backward hook", lambda: block.norm2.register_full_backward_hook(lambda m, gi, go: None)),
        ("norm forward pre-hook", lambda: block.norm2.register_forward_pre_hook(lambda m, args: None)),
        ("mlp forward pre-hook", lambda: block.mlp.register_forward_pre_hook(lambda m, args: None)),
        ("fc1 forward pre-hook", lambda: block.mlp.fc1.register_forward_pre_hook(lambda m, args: None)),
        ("global backward hook",
         lambda: torch.nn.modules.module.register_module_full_backward_hook(lambda m, gi, go: None)),
    ]


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_anything_else_seeing_the_output_gets_pytorchs_dtype(monkeypatch):
    model = build("timm")
    x = images("timm")
    fast, report = optimized(model)
    fused = FusedNorms(monkeypatch)
    run(fast, x, autocast=torch.float16)
    in_linear = fused.calls[:2]
    assert in_linear == [torch.float32, torch.float16], "the first block: norm1 fp32, norm2 the Linear's dtype"
    for what, register in _observers(fast):
        handle = register()
        fused.calls.clear()
        run(fast, x, autocast=torch.float16)
        handle.remove()
        assert fused.calls[1] == torch.float32, what
    block = fast.layers[0].blocks[0]
    fc1 = block.mlp.fc1
    block.mlp.fc1 = torch.nn.Sequential(fc1)  # replaced after optimize() (a LoRA wrapper, a quantized layer)
    fused.calls.clear()
    run(fast, x, autocast=torch.float16)
    assert fused.calls[1] == torch.float32
    block.mlp.fc1 = fc1


class _ParallelAdapterBlock(timm_swin.SwinTransformerBlock):
    """A subclass whose forward also reads norm2's output beside the MLP."""

    def forward(self, x):
        B, H, W, C = x.shape
        x = x + self._attn(self.norm1(x))
        y = self.norm2(x.reshape(B, -1, C))
        return (x.reshape(B, -1, C) + self.mlp(y) + 0.5 * y).reshape(B, H, W, C)


def test_a_block_subclass_or_a_copied_mlp_gets_no_reader():
    block = _ParallelAdapterBlock(dim=24, input_resolution=(8, 8), num_heads=2, window_size=4, shift_size=2)
    swin_fused.optimize(block, verbose=False)
    assert getattr(block.norm2, MARK).state == {"reader": None}
    official = build("official")
    swin_fused.optimize(official, verbose=False)  # the official code's Mlp is its users' copy
    assert getattr(official.layers[0].blocks[0].norm2, MARK).state == {"reader": None}


def _doubled(norm, x):
    return 2 * torch.nn.LayerNorm.forward(norm, x)


@pytest.mark.parametrize("family", ["official", "transformers"])
def test_a_wrapped_norm_keeps_its_wrapper(monkeypatch, family):
    """An instance-level forward set on a norm before optimize() (a user's wrapper, accelerate's hook): the norm is
    left unpatched and the adapters' own forwards call it as it is, so the wrapper runs, as in the library."""
    model = build(family)
    norm_name = f"{'layers.0.blocks.0' if family == 'official' else 'swin.encoder.layers.0.blocks.0'}." \
                f"{BLOCK_NORMS[family][0][0]}"
    norm = dict(model.named_modules())[norm_name]
    norm.forward = functools.partial(_doubled, norm)  # a partial: deep copies bind it to the copy
    x = images(family)
    want = run(model, x)
    fast, report = optimized(model)
    assert norm_name not in report.norms and len(report.norms) == len(expected_norms(family, model, report)) - 1
    FusedNorms(monkeypatch)
    for g, w in zip(run(fast, x), want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * w.abs().max().item() + 1e-8)


def test_undo_under_a_wrapper_set_later_keeps_the_wrapper(monkeypatch):
    model = build("timm")
    x = images("timm")
    fast, _ = optimized(model)
    norm = fast.layers[0].blocks[0].norm2
    patched, seen = norm.forward, []
    norm.forward = lambda x: seen.append(1) or patched(x)  # as accelerate's add_hook_to_module wraps a forward
    with pytest.warns(UserWarning, match=r"left 1 modules routed \(layers.0.blocks.0.norm2\)"):
        report = swin_fused.optimize(fast, undo=True, verbose=False)
    assert len(report.restored) == 4 and MARK in norm.__dict__
    for g, w in zip(run(fast, x), run(model, x)):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * w.abs().max().item() + 1e-8)
    assert seen


def test_routing_order_partial_undo_and_replicas(monkeypatch):
    model = build("torchvision")
    attn = model.features[1][0].attn
    swin_fused.optimize(attn, verbose=False)  # the attention alone (its norms are its block's), then the model
    report = swin_fused.optimize(model, verbose=False)
    assert report.already_optimized == ["features.1.0.attn"] and len(report.norms) == 9
    undone = swin_fused.optimize(model.features[1][0], undo=True, verbose=False)
    assert undone.restored == ["attn"]
    assert not [n for n, m in model.features[1][0].named_modules() if MARK in m.__dict__]
    assert len(swin_fused.optimize(model, verbose=False).norms) == 9

    fused = FusedNorms(monkeypatch)
    x = torch.randn(2, 10, 10, 24, device=DEVICE)
    block = model.features[1][1]
    replica = block._replicate_for_data_parallel()  # nn.DataParallel: plain-tensor weights, patches re-bound
    for key in ("norm1", "norm2"):
        replica._modules[key] = getattr(block, key)._replicate_for_data_parallel()
        for pname, p in getattr(block, key)._parameters.items():
            setattr(replica._modules[key], pname, 1.5 * p.detach())
    with torch.no_grad(), swin_fused.use_backend("torch"):
        replica(x)
    assert len(fused.calls) == 2


def test_torch_jit_script_takes_the_librarys_norms():
    """TorchScript cannot compile the patched forward: scripting an optimized model (as timm's models script) takes
    its norms back to nn.LayerNorm's forward, the patch removed."""
    model = build("timm")
    x = images("timm")
    fast, report = optimized(model)
    with pytest.warns(FutureWarning, match="deprecated"), swin_fused.use_backend("torch"):
        scripted = torch.jit.script(fast)
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-4, atol=1e-4)
    assert not [n for n in report.norms if MARK in dict(fast.named_modules())[n].__dict__]


@pytest.mark.parametrize("family", ["timm", "torchvision"])
def test_whole_optimized_model_compiles_fullgraph(monkeypatch, family):
    """Every patched norm (blocks' and merges') and attention traced whole by dynamo: no graph break, the library's
    outputs, no fused norm inside the graph."""
    model = build(family)
    x = images(family)
    fast, report = optimized(model)
    fused = FusedNorms(monkeypatch)
    torch._dynamo.reset()
    with swin_fused.use_backend("torch"), torch.no_grad():
        explained = torch._dynamo.explain(fast)(x)
        assert explained.graph_break_count == 0, [str(b.reason).splitlines()[0] for b in explained.break_reasons]
        got = torch.compile(fast, backend="eager", fullgraph=True)(x)
        torch.testing.assert_close(got, model(x), rtol=1e-4, atol=1e-4)
    assert not fused.calls
