"""How a fused call reaches the kernels: plain eager calls skip the torch.library dispatcher (an
autograd.Function, arguments checked once), anything that traces goes through the registered op. Both routes
must launch the same kernels with the same arguments, so their outputs and gradients are bit-identical.
"""
import pytest
import torch
from conftest import HAS_CUDA
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

import swin_fused
from swin_fused import ops
from swin_fused.kernels import window_attention_bwd as bwd_module
from swin_fused.kernels import window_attention_fwd as fwd_module

DEVICE = "cuda" if HAS_CUDA else "cpu"
HEADS, HEAD_DIM = 2, 8
C3 = 3 * HEADS * HEAD_DIM


def inputs(requires_grad=True):
    """A padded (7 x 5 map, window 3), shifted call with a qkv bias: every part of the op is exercised."""
    g = torch.Generator().manual_seed(3)
    qkv, table, pad = (torch.randn(shape, generator=g).to(DEVICE).requires_grad_(requires_grad)
                       for shape in ((2, 7, 5, C3), (25, HEADS), (C3,)))
    return qkv, table, pad


def run(qkv, table, pad):
    return swin_fused.window_attention(qkv, table, HEADS, 3, 1, pad_qkv=pad, backend="triton")


def grads(route, monkeypatch):
    monkeypatch.setattr(ops, "_plain_eager", lambda: route == "eager")
    qkv, table, pad = inputs()
    out = run(qkv, table, pad)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(4)).to(DEVICE))
    return out, qkv.grad, table.grad, pad.grad


def test_eager_route_is_bit_identical_to_the_registered_op(monkeypatch):
    eager = grads("eager", monkeypatch)
    op = grads("op", monkeypatch)
    for name, a, b in zip(("out", "dqkv", "dtable", "dpad"), eager, op):
        assert a is not None and a.dtype == b.dtype, name
        assert torch.equal(a, b), f"{name}: eager and op routes differ by {(a - b).abs().max().item()}"


def test_eager_route_uses_the_function_and_checks_arguments_once(monkeypatch):
    calls = []
    for module in (fwd_module, bwd_module):
        checked = module.check_launch_args
        monkeypatch.setattr(module, "check_launch_args", lambda *a, _c=checked: (calls.append(1), _c(*a))[1])
    qkv, table, pad = inputs()
    out = run(qkv, table, pad)
    assert type(out.grad_fn).__name__.startswith("_EagerWindowAttention")
    out.sum().backward()
    assert calls == [], "the launchers re-checked arguments that window_attention had checked"
    assert qkv.grad is not None and table.grad is not None and pad.grad is not None
    # Direct launcher callers still get the checks.
    with torch.no_grad():
        fwd_module.window_attention_fwd(qkv, table, HEADS, (3, 3), (1, 1), None, pad)
    assert calls == [1]


def test_no_grad_eager_call_saves_nothing_for_backward():
    qkv, table, pad = inputs(requires_grad=True)
    with torch.no_grad():
        out = run(qkv, table, pad)
    assert out.grad_fn is None and not out.requires_grad


def test_fake_tensors_go_through_the_registered_op():
    """Under a dispatch mode (here FakeTensorMode, as torch.export and make_fx use) nothing may launch: the
    op's fake implementation gives the shapes."""
    with FakeTensorMode():
        qkv = torch.empty(2, 7, 5, C3, device=DEVICE)
        table = torch.empty(25, HEADS, device=DEVICE)
        out = swin_fused.window_attention(qkv, table, HEADS, 3, 1, pad_qkv=torch.empty(C3, device=DEVICE),
                                          backend="triton")
    assert isinstance(out, FakeTensor) and tuple(out.shape) == (2, 7, 5, C3 // 3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_eager_route_returns_gradients_in_each_inputs_dtype(dtype):
    """Under AMP qkv is half while the table and the qkv bias stay fp32: each gradient in its input's dtype."""
    qkv, table, pad = inputs()
    qkv = qkv.detach().to(dtype).requires_grad_()
    run(qkv, table, pad).float().sum().backward()
    assert (qkv.grad.dtype, table.grad.dtype, pad.grad.dtype) == (dtype, torch.float32, torch.float32)


#: Ops that only describe or allocate memory: on a GPU they launch nothing.
NO_LAUNCH = {"aten::view", "aten::t", "aten::transpose", "aten::as_strided", "aten::empty", "aten::empty_like",
             "aten::empty_strided", "aten::to", "aten::reshape", "aten::detach", "aten::alias", "aten::permute",
             "aten::select", "aten::unbind", "aten::slice", "aten::expand", "aten::unsqueeze", "aten::squeeze",
             "aten::lift_fresh"}


def _launching(event):
    """Whether a profiled op (with what it called) would write memory on a GPU, i.e. launch a kernel."""
    return event.name not in NO_LAUNCH or any(_launching(child) for child in event.cpu_children)


class _NoKernel:
    """Stands in for a kernel: ``kernel[grid](...)`` does nothing, so only the launchers' own ops are seen."""

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


@pytest.mark.parametrize("dtype, padded, forward, backward", [
    # fp16/bf16 one-tile window: the head-major table copy; the sum of the table-gradient partials.
    (torch.float16, False, ["aten::contiguous"], ["aten::sum"]),
    # fp32 7x7 runs the tiled backward, whose prologue computes the softmax normaliser and delta itself.
    (torch.float32, False, ["aten::contiguous"], ["aten::sum"]),
    # padded: the qkv-bias partials' sum, the zero q part, and the cast to the bias's dtype.
    (torch.float16, True, ["aten::contiguous"], ["aten::sum", "aten::sum", "aten::pad", "aten::to"]),
], ids=["fp16", "fp32-tiled", "fp16-padded"])
def test_eager_call_launches_only_what_it_must(monkeypatch, dtype, padded, forward, backward):
    """Host time is launches: on the H100 host each cost ~150 us of CPU, several times a small stage's kernel
    time. Besides the fused kernel (stubbed out here), an eager forward + backward launches exactly these ops,
    the table's head-major copy made once for both (the backward reuses it)."""
    monkeypatch.setattr(fwd_module, "_window_attention_fwd_kernel", _NoKernel())
    monkeypatch.setattr(fwd_module, "_autotuning", lambda: False)
    monkeypatch.setattr(bwd_module, "_window_attention_bwd_kernel", _NoKernel())
    H, W = (15, 16) if padded else (14, 14)
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(2, H, W, 3 * 64, generator=g).to(DEVICE, dtype).requires_grad_()
    table = torch.randn(169, 2, generator=g).to(DEVICE).requires_grad_()  # fp32, as under AMP
    pad = torch.randn(3 * 64, generator=g).to(DEVICE, dtype).requires_grad_() if padded else None
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = swin_fused.window_attention(qkv, table, 2, 7, 3, pad_qkv=pad, backend="triton")
        out.backward(torch.ones_like(out))
    seen = {}
    for event in prof.events():
        if event.name in ("_EagerWindowAttention", "_EagerWindowAttentionBackward"):
            seen[event.name] = [child.name for child in event.cpu_children if _launching(child)]
    assert seen == {"_EagerWindowAttention": forward, "_EagerWindowAttentionBackward": backward}, seen


def test_fake_implementations_match_the_real_outputs_for_strided_inputs():
    """torch.library.opcheck: under torch.compile inductor asserts each real output's strides against the
    fake's, so the fakes must describe what the launchers allocate (contiguous outputs) whatever the
    inputs' strides. A transposed map, a column-major table and a strided qkv bias, through both ops."""
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(1, 7, 9, 48, generator=g).transpose(1, 2).contiguous().transpose(1, 2).to(DEVICE)
    table = torch.randn(2, 49, generator=g).to(DEVICE).t()  # [49, 2], column-major
    pad = torch.randn(96, generator=g).to(DEVICE)[::2]  # [48], stride 2
    tests = ("test_schema", "test_faketensor")
    cosine = (torch.rand(4, generator=g) * 20)[::2].to(DEVICE)  # Swin V2's per-head temperature, strided
    for tau, scale, mask_value in ((None, 0.25, -100.0), (cosine, 1.0, -200.0)):
        geometry = (2, [4, 4], [2, 2], scale, False, [4, 4], mask_value)
        forward_args = (qkv, table, pad, tau, *geometry, True)
        # The forward with every check, autograd through the fakes (test_aot_dispatch_dynamic) included.
        leaves = tuple(t if t is None else t.detach().requires_grad_() for t in forward_args[:4])
        torch.library.opcheck(torch.ops.swin_fused.window_attention.default, (*leaves, *forward_args[4:]))
        out, lse = torch.ops.swin_fused.window_attention(*forward_args)
        dout = torch.randn(out.shape, generator=g).to(DEVICE).transpose(1, 2).contiguous().transpose(1, 2)
        torch.library.opcheck(torch.ops.swin_fused.window_attention_backward.default,
                              (dout, qkv, lse, table, pad, tau, *geometry), test_utils=tests)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_tensors_on_another_gpu_launch_there():
    """Triton launches on the current device whatever the arguments' device: the launchers make the tensors'
    device current, so a model on cuda:1 runs (forward and backward) without torch.cuda.set_device(1)."""
    assert torch.cuda.current_device() == 0
    expected = [t.grad for t in _leaves_after_backward("cuda:0")]
    got = [t.grad for t in _leaves_after_backward("cuda:1")]
    assert torch.cuda.current_device() == 0
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=0, atol=0)


def _leaves_after_backward(device):
    leaves = [t.detach().to(device).requires_grad_() for t in inputs()]
    run(*leaves).square().sum().backward()
    return leaves
