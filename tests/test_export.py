"""Serialization and export: lossless state-dict round trips (also after optimize() and through wrappers), and
torch.export of a swin_fused model.

- ``torch.export`` with the torch backend in force: the exported program holds plain aten ops and gives the
  eager model's numbers (to fp32 rounding: traced, the torch backend runs its traceable formulation). Static
  shapes export as is. Dynamic H / W export per *size class*: the model's Python branches on sizes (patch
  padding, window padding, whether a map is larger than the window), so a range of sizes exports when those
  branches are fixed across it, e.g. H = 16k (k >= 2) or 16k + 4 for patch 4 and window 4; a size outside the
  class fails the program's guard instead of returning a wrong answer. A free range (32 <= H <= 256) fails
  to export with "Constraints violated" for the same reason.
- With the triton backend in force the graph keeps the fused custom op (``swin_fused.window_attention``) and
  gives the eager bits.
- ``make_fx`` (the tracer under AOTAutograd-style tools) in its real, fake and symbolic modes: the torch
  backend traces its plain-op formulation (its eager route reads index values that fake and symbolic tensors
  do not have), the triton backend keeps the fused op; both give eager's numbers. A fake trace leaves nothing
  fake in the geometry caches that later eager calls read.
- ``torch.jit.trace`` with gradients on: forward and backward of the traced module equal eager's.
- Checkpoints (files and dicts) round-trip bit for bit from models wrapped by torch.compile, and from timm
  models after optimize() into fresh models with and without optimize().
  (DDP / FSDP round trips: tests/test_distributed.py; plain round trips and damaged files: test_checkpoint.py.)
"""
import io
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import HAS_CUDA
from torch.fx.experimental.proxy_tensor import make_fx
from torch.func import functional_call

import swin_fused

DEVICE = "cuda" if HAS_CUDA else "cpu"

TWO_STAGES = dict(img_size=32, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                  num_classes=5, drop_path_rate=0.0)
ONE_STAGE = dict(TWO_STAGES, depths=(2,), num_heads=(2,))


def model(**cfg):
    torch.manual_seed(0)
    m = swin_fused.SwinTransformer(**cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


def assert_bits(got, expected, what):
    assert torch.equal(got, expected), f"{what}: max diff {(got - expected).abs().max().item():.3e}"


def assert_fp32_close(got, expected, what):
    """Under tracing the torch backend runs its traceable formulation (pad, roll, partition, SDPA) rather than
    its eager index gathers: the same math, other rounding."""
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_export_static_shapes_matches_eager():
    m = model(**TWO_STAGES)
    x = torch.randn(2, 3, 36, 44)  # 9 x 11 and 5 x 6 maps: padded, shifted and window-clamped blocks
    with swin_fused.use_backend("torch"), torch.no_grad():
        eager = [m(x), m(x + 1)]
    with swin_fused.use_backend("torch"):
        program = torch.export.export(m, (x,))
    assert not any("swin_fused" in str(node.target) for node in program.graph.nodes)
    exported = program.module()
    assert_fp32_close(exported(x), eager[0], "exported program")
    assert_fp32_close(exported(x + 1), eager[1], "exported program, other values")
    with pytest.raises(Exception, match="Guard failed"):  # another size: a clear guard failure
        exported(torch.randn(2, 3, 40, 44))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("offset", [0, 4], ids=["divisible-16k", "padded-16k+4"])
def test_export_dynamic_height_and_width_within_a_size_class(offset):
    m = model(**ONE_STAGE)
    kh, kw = torch.export.Dim("kh", min=2, max=32), torch.export.Dim("kw", min=2, max=32)
    with swin_fused.use_backend("torch"):
        program = torch.export.export(m, (torch.randn(2, 3, 32 + offset, 48 + offset),),
                                      dynamic_shapes={"x": {2: 16 * kh + offset, 3: 16 * kw + offset}})
        exported = program.module()
        for size in ((32, 48), (64, 32), (96, 160)):
            x = torch.randn(2, 3, size[0] + offset, size[1] + offset)
            assert_fp32_close(exported(x), m(x), f"size {tuple(x.shape[2:])}")
    with pytest.raises(Exception, match="Guard failed"):
        exported(torch.randn(2, 3, 40 + offset, 48 + offset))  # 10 + offset/4 map rows: another class


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_export_with_the_triton_backend_keeps_the_fused_op():
    m = model(**dict(ONE_STAGE, img_size=16, num_heads=(1,))).to(DEVICE)
    x = torch.randn(1, 3, 20, 20, device=DEVICE)  # 5 x 5 map, window 4: padded
    with swin_fused.use_backend("triton"):
        program = torch.export.export(m, (x,))
        eager = m(x)
    fused = [n for n in program.graph.nodes if "swin_fused.window_attention" in str(n.target)]
    assert len(fused) == 2  # one per block
    assert_bits(program.module()(x), eager, "exported program with the fused op")


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("tracing_mode", ["real", "fake", "symbolic"])
def test_make_fx_traces_the_model(tracing_mode, backend):
    m = model(**TWO_STAGES).to(DEVICE)
    x = torch.randn(2, 3, 36, 44, device=DEVICE)  # padded, shifted and window-clamped blocks
    state = {**dict(m.named_parameters()), **dict(m.named_buffers())}
    with swin_fused.use_backend(backend), torch.no_grad():
        graph = make_fx(lambda s, x: functional_call(m, s, (x,)), tracing_mode=tracing_mode)(state, x)
        eager = m(x)
        got = graph(state, x)
    fused = graph.code.count("swin_fused.window_attention")
    if backend == "triton":
        assert fused == 4  # one per block
        assert_bits(got, eager, f"make_fx ({tracing_mode}) with the fused op")
    else:
        assert fused == 0
        assert_fp32_close(got, eager, f"make_fx ({tracing_mode}) of the torch backend")


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::FutureWarning",
                            "ignore::DeprecationWarning")
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("size", [(32, 32), (36, 44)], ids=["unpadded", "padded"])
def test_jit_trace_traces_the_model_forward_and_backward(size, backend):
    """``torch.jit.trace`` (deprecated, still what older deployment and ONNX flows call), traced with gradients
    on: the trace keeps the fused op (triton) or records the plain-op formulation (torch), and the traced module
    gives eager's outputs and input / parameter gradients. Unpadded blocks return no pad gradient: the
    registered backward then returns two empty tensors, which must be distinct (returns may not alias)."""
    m = model(**TWO_STAGES).to(DEVICE)
    x = torch.randn(2, 3, *size, device=DEVICE)

    def outputs_and_grads(f, x):
        x = x.clone().requires_grad_()
        out = f(x)
        grads = torch.autograd.grad(out.square().sum(), [x, *m.parameters()])
        return out.detach(), grads

    with swin_fused.use_backend(backend):
        traced = torch.jit.trace(m, x, check_trace=False)
        other = torch.randn_like(x)  # not the traced input: nothing value-dependent was baked in
        got, got_grads = outputs_and_grads(traced, other)
        eager, eager_grads = outputs_and_grads(m, other)
    fused = sum(n.kind() == "swin_fused::window_attention" for n in traced.inlined_graph.nodes())
    close = assert_bits if backend == "triton" else assert_fp32_close
    assert fused == (4 if backend == "triton" else 0)
    close(got, eager, f"jit.trace ({backend})")
    names = ["x", *(name for name, _ in m.named_parameters())]
    for name, g, e in zip(names, got_grads, eager_grads):
        close(g, e, f"jit.trace ({backend}) gradient of {name}")


def test_a_fake_trace_leaves_no_fake_tensor_in_the_geometry_caches():
    """Geometry first built under FakeTensorMode (a fresh process, so every cache misses) must not be served,
    fake, to the eager calls after it."""
    script = textwrap.dedent("""
        import torch
        from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
        import swin_fused
        from swin_fused.geometry import relative_position_index, table_gather_index
        from swin_fused.reference import window_attention_reference

        def call(qkv, table, pad):  # 7 x 5 map, window 3, shift 1: padded and masked
            return swin_fused.window_attention(qkv, table, 2, 3, 1, pad_qkv=pad, backend="torch")

        shapes = ((2, 7, 5, 48), (25, 2), (48,))
        with FakeTensorMode():
            assert isinstance(call(*(torch.randn(s) for s in shapes)), FakeTensor)
            assert isinstance(relative_position_index((3, 3)), FakeTensor)
        qkv, table, pad = (torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes)
        out = call(qkv, table, pad)
        out.sum().backward()  # the bias gradient's table_gather_index
        expected = window_attention_reference(qkv, table, 2, (3, 3), (1, 1), None, pad, False, (3, 3))
        for t in (out, qkv.grad, table.grad, relative_position_index((3, 3)), table_gather_index((3, 3))):
            assert not isinstance(t, FakeTensor), type(t)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


# ----------------------------------------------------------------------------------------------------------
# Lossless state-dict round trips
# ----------------------------------------------------------------------------------------------------------


def assert_state_bits(got, expected):
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


def test_checkpoint_of_a_compiled_model_round_trips(tmp_path):
    source = model(**TWO_STAGES)
    compiled = torch.compile(source)  # a wrapper whose own state_dict keys carry "_orig_mod."
    assert all(k.startswith("_orig_mod.") for k in compiled.state_dict())
    path = tmp_path / "compiled.pth"
    swin_fused.save_checkpoint(compiled, path)
    target = swin_fused.SwinTransformer(**TWO_STAGES)
    swin_fused.load_checkpoint(target, path)
    assert_state_bits(target.state_dict(), source.state_dict())
    back = torch.compile(swin_fused.SwinTransformer(**TWO_STAGES))
    swin_fused.load_checkpoint(back, path)  # and into a compiled model
    assert_state_bits(back._orig_mod.state_dict(), source.state_dict())


def test_timm_state_dict_round_trips_after_optimize():
    """An optimized timm model's state dict (saved to bytes) loads bit for bit into fresh timm models, optimized
    or not, and each gives the bits of its twin."""
    timm_swin = pytest.importorskip("timm.models.swin_transformer")

    def timm_model():
        return timm_swin.SwinTransformer(img_size=(64, 64), patch_size=4, embed_dim=16, depths=(2, 2),
                                         num_heads=(1, 2), window_size=4, num_classes=5).eval()

    torch.manual_seed(0)
    source = timm_model()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    plain_twin = timm_model()
    plain_twin.load_state_dict(source.state_dict())
    swin_fused.optimize(source, backend="torch", verbose=False)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)

    plain, fused = timm_model(), timm_model()
    swin_fused.optimize(fused, backend="torch", verbose=False)
    x = torch.randn(2, 3, 64, 64)
    for target, twin in ((plain, plain_twin), (fused, source)):
        target.load_state_dict(state)
        assert_state_bits(target.state_dict(), source.state_dict())
        with torch.no_grad():
            assert_bits(target(x), twin(x), type(target).__name__)
