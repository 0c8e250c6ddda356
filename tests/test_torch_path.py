"""The PyTorch backend (swin_fused/torch_path.py) against the executable spec (swin_fused/reference.py).

The backend reorders the work (one gather, SDPA with a combined mask, one scatter) and caches geometry, so
these tests check that every argument combination gives the reference's output and gradients in float64,
that its rounding in fp32/bf16 stays within a small multiple of the reference's own, and that the caches
never serve a stale bias.
"""
import itertools

import pytest
import torch

import swin_fused
from swin_fused.reference import window_attention_reference
from swin_fused.torch_path import window_attention_torch

# (H, W), window, table_window (None = window): divisible, padded in one or both axes, H != W, maps smaller
# than the window, a non-square window, a table built for a larger window than the one used.
GEOMETRIES = [
    ((14, 14), (7, 7), None),
    ((9, 11), (7, 7), None),
    ((5, 3), (7, 7), None),
    ((8, 13), (3, 4), None),
    ((10, 6), (4, 3), (6, 5)),
    ((12, 12), (6, 6), (7, 7)),
]
SHIFTS = ["none", "half", "uneven"]


def _shift(kind, window):
    return {"none": (0, 0), "half": (window[0] // 2, window[1] // 2), "uneven": (1, window[1] - 1)}[kind]


def _table(table_window, heads, dtype, gen):
    rows = (2 * table_window[0] - 1) * (2 * table_window[1] - 1)
    return torch.randn(rows, heads, dtype=dtype, generator=gen)


CASES = [
    pytest.param(hw, win, twin, shift, sbp, pad,
                 id=f"{hw[0]}x{hw[1]}-w{win[0]}x{win[1]}-t{twin}-{shift}-{'roll_pad' if sbp else 'pad_roll'}-"
                    f"{'bias' if pad else 'zeros'}")
    for (hw, win, twin), shift, sbp, pad in itertools.product(GEOMETRIES, SHIFTS, [False, True], [False, True])
]


@pytest.mark.parametrize("hw, window, table_window, shift_kind, shift_before_pad, with_pad_qkv", CASES)
def test_matches_reference_float64_with_gradients(hw, window, table_window, shift_kind, shift_before_pad,
                                                  with_pad_qkv):
    gen = torch.Generator().manual_seed(1)
    heads, head_dim, B = 2, 5, 2  # odd head_dim on purpose
    twin = table_window or window
    shift = _shift(shift_kind, window)
    qkv = torch.randn(B, *hw, 3 * heads * head_dim, dtype=torch.float64, generator=gen, requires_grad=True)
    table = _table(twin, heads, torch.float64, gen).requires_grad_()
    pad_qkv = torch.randn(3 * heads * head_dim, dtype=torch.float64, generator=gen) if with_pad_qkv else None
    if pad_qkv is not None:
        pad_qkv.requires_grad_()
    args = (qkv, table, heads, window, shift, 0.37, pad_qkv, shift_before_pad, twin)

    got = window_attention_torch(*args)  # the formulation used when gradients are needed
    want = window_attention_reference(*args)
    assert got.shape == want.shape == (B, *hw, heads * head_dim)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with torch.no_grad():  # the inference formulation (SDPA with the batch-repeated mask)
        torch.testing.assert_close(window_attention_torch(*args), want, rtol=1e-12, atol=1e-12)

    dout = torch.randn(got.shape, dtype=torch.float64, generator=gen)
    inputs = [qkv, table] + ([pad_qkv] if pad_qkv is not None else [])
    got_grads = torch.autograd.grad(got, inputs, dout, allow_unused=True)
    want_grads = torch.autograd.grad(want, inputs, dout, allow_unused=True)
    for name, g, w in zip(["qkv", "table", "pad_qkv"], got_grads, want_grads):
        assert (g is None) == (w is None), name  # pad_qkv only gets a gradient when something is padded
        if w is not None:
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=lambda m, n=name: f"d{n}: {m}")


def test_public_op_dispatches_here_and_validates():
    gen = torch.Generator().manual_seed(2)
    qkv = torch.randn(1, 9, 9, 3 * 3 * 4, generator=gen, dtype=torch.float64)
    table = _table((7, 7), 3, torch.float64, gen)
    with swin_fused.use_backend("torch"):
        got = swin_fused.window_attention(qkv, table, 3, 7, 3)
        with pytest.raises(ValueError, match="shift_size"):
            swin_fused.window_attention(qkv, table, 3, 7, 7)
    torch.testing.assert_close(got, window_attention_reference(qkv, table, 3, (7, 7), (3, 3)))


def test_bias_follows_a_table_changed_in_place():
    """Geometry is cached, the bias must not be: an optimizer step or load_state_dict changes the table."""
    gen = torch.Generator().manual_seed(3)
    qkv = torch.randn(2, 14, 14, 3 * 2 * 8, generator=gen, dtype=torch.float64)
    table = torch.nn.Parameter(_table((7, 7), 2, torch.float64, gen))
    for shift in [(0, 0), (3, 3)]:
        with torch.no_grad():
            before = window_attention_torch(qkv, table, 2, (7, 7), shift, None, None, False, (7, 7))
            table.mul_(-3.0).add_(0.5)  # same storage, same data_ptr, new values
            after = window_attention_torch(qkv, table, 2, (7, 7), shift, None, None, False, (7, 7))
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, window_attention_reference(qkv, table.detach(), 2, (7, 7), shift))


def test_non_contiguous_qkv_and_column_major_table():
    gen = torch.Generator().manual_seed(4)
    base = torch.randn(2, 3 * 2 * 6, 10, 9, generator=gen, dtype=torch.float64)
    qkv = base.permute(0, 2, 3, 1)  # channels-last view of an NCHW tensor
    table = _table((5, 5), 2, torch.float64, gen).t().contiguous().t()
    args = (qkv, table, 2, (5, 5), (2, 2), None, None, False, (5, 5))
    torch.testing.assert_close(window_attention_torch(*args), window_attention_reference(*args))


def _error(x, exact):
    return (x.double() - exact).abs().max().item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_low_precision_error_is_within_twice_the_reference(dtype):
    """Rounding of the reordered computation: at most 2x the reference's error in the same dtype."""
    gen = torch.Generator().manual_seed(5)
    heads, head_dim = 3, 32
    qkv64 = torch.randn(2, 11, 13, 3 * heads * head_dim, generator=gen, dtype=torch.float64)
    table64 = 0.5 * _table((7, 7), heads, torch.float64, gen)
    pad64 = torch.randn(3 * heads * head_dim, generator=gen, dtype=torch.float64)
    exact = window_attention_reference(qkv64, table64, heads, (7, 7), (3, 3), None, pad64, False, (7, 7))
    # AMP-style inputs: activations in dtype, the table and qkv bias kept in fp32.
    args = (qkv64.to(dtype), table64.float(), heads, (7, 7), (3, 3), None, pad64.float(), False, (7, 7))
    got = window_attention_torch(*args)
    assert got.dtype == dtype
    floor = {torch.float32: 1e-6, torch.bfloat16: 1e-2}[dtype]
    assert _error(got, exact) <= 2 * _error(window_attention_reference(*args), exact) + floor


def test_mixed_dtype_gradients_come_back_in_each_inputs_dtype():
    gen = torch.Generator().manual_seed(6)
    qkv = torch.randn(1, 9, 10, 3 * 2 * 16, generator=gen).bfloat16().requires_grad_()
    table = _table((7, 7), 2, torch.float32, gen).requires_grad_()
    pad = torch.randn(3 * 2 * 16, generator=gen).requires_grad_()
    out = window_attention_torch(qkv, table, 2, (7, 7), (3, 3), None, pad, True, (7, 7))
    out.float().square().sum().backward()
    assert (qkv.grad.dtype, table.grad.dtype, pad.grad.dtype) == (torch.bfloat16, torch.float32, torch.float32)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in (qkv.grad, table.grad, pad.grad))


@pytest.mark.parametrize("with_grad", [False, True], ids=["inference", "training"])
def test_dropout_keeps_the_expected_output(with_grad):
    """Dropout on attention probabilities (rescaled by 1/(1-p)): with v = 1 every output is 1 on average.

    Both formulations: SDPA (no gradients needed) and the explicit one used for autograd.
    """
    gen = torch.Generator().manual_seed(7)
    heads, head_dim = 2, 4
    qkv = torch.randn(4, 14, 14, 3 * heads * head_dim, generator=gen, dtype=torch.float64)
    qkv[..., 2 * heads * head_dim:] = 1.0  # v = 1, so an output is the rescaled sum of kept probabilities
    table = _table((7, 7), heads, torch.float64, gen).requires_grad_(with_grad)
    torch.manual_seed(0)
    dropped = window_attention_torch(qkv, table, heads, (7, 7), (3, 3), None, None, False, (7, 7), dropout_p=0.3)
    kept = window_attention_torch(qkv, table, heads, (7, 7), (3, 3), None, None, False, (7, 7), dropout_p=0.0)
    torch.testing.assert_close(kept, torch.ones_like(kept))
    assert (dropped - 1).abs().max() > 0.05  # dropout did something
    # 4*14*14*8 outputs of mean 1; each has std well under 1, so the mean is within a few 1e-2 of 1
    assert abs(dropped.mean().item() - 1.0) < 0.05
    assert dropped.requires_grad == with_grad


@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
@pytest.mark.parametrize("shift_before_pad", [False, True])
def test_traces_under_torch_compile_in_one_graph(shift_before_pad):
    """Under torch.compile the backend switches to plain tensor ops: one graph, the reference's numbers."""
    gen = torch.Generator().manual_seed(8)
    qkv = torch.randn(2, 9, 11, 3 * 2 * 8, generator=gen, dtype=torch.float64, requires_grad=True)
    table = _table((7, 6), 2, torch.float64, gen).requires_grad_()
    pad_qkv = torch.randn(3 * 2 * 8, generator=gen, dtype=torch.float64, requires_grad=True)
    args = (qkv, table, 2, (5, 4), (2, 1), None, pad_qkv, shift_before_pad, (7, 6))
    compiled = torch.compile(window_attention_torch, backend="eager", fullgraph=True)  # fullgraph: no breaks
    got, want = compiled(*args), window_attention_reference(*args)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    dout = torch.randn(got.shape, generator=gen, dtype=torch.float64)
    for g, w in zip(torch.autograd.grad(got, (qkv, table, pad_qkv), dout),
                    torch.autograd.grad(want, (qkv, table, pad_qkv), dout)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("hw, window, table_window", GEOMETRIES[:4])
def test_cuda_sdpa_and_autograd_formulations(hw, window, table_window, dtype):
    """On CUDA, SDPA takes the strided q/k/v views and the 49-wide mask through its own kernels: both
    formulations (no grad: SDPA; grad: explicit matmuls) within 2x (outputs) / 3x (gradients) the reference's
    own error in the same dtype, against float64."""
    gen = torch.Generator().manual_seed(9)
    heads, head_dim = 2, 32
    twin = table_window or window
    shift = _shift("half", window)
    qkv64 = torch.randn(3, *hw, 3 * heads * head_dim, generator=gen, dtype=torch.float64, requires_grad=True)
    table64 = _table(twin, heads, torch.float64, gen).requires_grad_()
    pad64 = torch.randn(3 * heads * head_dim, generator=gen, dtype=torch.float64)
    dout64 = torch.randn(3, *hw, heads * head_dim, generator=gen, dtype=torch.float64)
    exact = window_attention_reference(qkv64, table64, heads, window, shift, None, pad64, False, twin)
    exact_grads = torch.autograd.grad(exact, (qkv64, table64), dout64)
    floor = {torch.float32: 1e-5, torch.bfloat16: 2e-2}[dtype]

    def run(fn, grad):
        qkv = qkv64.detach().to("cuda", dtype).requires_grad_(grad)
        table = table64.detach().float().cuda().requires_grad_(grad)  # AMP-style: fp32 table and bias
        with torch.set_grad_enabled(grad):
            out = fn(qkv, table, heads, window, shift, None, pad64.float().cuda(), False, twin)
        if not grad:
            return _error(out.cpu(), exact), None
        grads = torch.autograd.grad(out, (qkv, table), dout64.to("cuda", dtype))
        return _error(out.detach().cpu(), exact), [_error(g.cpu(), e) for g, e in zip(grads, exact_grads)]

    ref_out, ref_grads = run(window_attention_reference, grad=True)
    assert run(window_attention_torch, grad=False)[0] <= 2 * ref_out + floor
    got_out, got_grads = run(window_attention_torch, grad=True)
    assert got_out <= 2 * ref_out + floor
    for got, ref in zip(got_grads, ref_grads):
        assert got <= 3 * ref + floor * (1 + ref)
