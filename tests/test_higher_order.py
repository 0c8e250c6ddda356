"""Higher-order autograd through ``swin_fused.window_attention``: double backward (gradient penalties) and the
``torch.func`` transforms (grad, vmap, jvp, jacrev, jacfwd), on both backends.

The fused kernels' backward is not itself differentiable and the op has no forward-mode rule, so these
must either be right or fail loudly, never come out silently zero or short of terms. Expected values come
from finite differences in float64 (``gradgradcheck``, central differences), not from the code under test.
"""
import pytest
import torch
from conftest import HAS_CUDA

import swin_fused

DEVICE = "cuda" if HAS_CUDA else "cpu"
BACKENDS = ["torch", "triton"]
# A padded (4x5 -> 6x6), shifted map: every gradient path, the qkv bias of padding tokens included, is live.
HEADS, HEAD_DIM, WINDOW, SHIFT = 2, 3, 3, 1
C3 = 3 * HEADS * HEAD_DIM


def _inputs(dtype, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, 4, 5, C3, generator=g, dtype=torch.float64)
    table = torch.randn((2 * WINDOW - 1) ** 2, HEADS, generator=g, dtype=torch.float64)
    pad = torch.randn(C3, generator=g, dtype=torch.float64)
    return [t.to(DEVICE, dtype) for t in (qkv, table, pad)]


def _op(backend):
    def f(qkv, table, pad):
        return swin_fused.window_attention(qkv, table, HEADS, WINDOW, SHIFT, pad_qkv=pad, backend=backend)
    return f


def test_torch_backend_is_twice_differentiable():
    """gradcheck and gradgradcheck (float64 finite differences) through qkv, the table and the qkv bias."""
    inputs = [t.requires_grad_() for t in _inputs(torch.float64)]
    inputs[0] = inputs[0].detach()[:, :, :4].requires_grad_()  # 4x4 map: fewer finite differences, still padded
    f = _op("torch")
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


def _penalty_gradients(backend, dtype):
    """d/d(inputs) of a gradient penalty |dL/dqkv|^2, L = <out, w>: needs the second derivative."""
    qkv, table, pad = [t.requires_grad_() for t in _inputs(dtype)]
    out = _op(backend)(qkv, table, pad)
    w = torch.linspace(-1, 1, out.numel(), device=DEVICE, dtype=dtype).view(out.shape)
    dqkv, = torch.autograd.grad((out * w).sum(), qkv, create_graph=True)
    assert dqkv.requires_grad, f"{backend}: the first gradient carries no graph"
    return torch.autograd.grad(dqkv.square().sum(), (qkv, table, pad))


def test_double_backward_on_the_fused_op_matches_the_checked_torch_backend():
    """The fused op's create_graph backward (fp32, kernels in the interpreter on the CPU) against the float64
    torch backend, whose second derivatives gradgradcheck verifies above. Before the fix the table and qkv
    bias terms, which reach the penalty only through the first gradient, were silently dropped."""
    got = _penalty_gradients("triton", torch.float32)
    want = _penalty_gradients("torch", torch.float64)
    for name, a, b in zip(("qkv", "table", "pad"), got, want):
        assert b.abs().max() > 1e-3, f"{name}: the expected second-order term is trivially zero"
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-4, msg=lambda m: f"{name}: {m}")


def _central_difference(f, x, t, eps=1e-6):
    return (f(x + eps * t) - f(x - eps * t)) / (2 * eps)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_func_jvp_and_jacobians(backend):
    """Forward mode (jvp, jacfwd) against float64 central differences, and reverse mode (jacrev) against forward
    mode: before the fix the fused op's tangents came out as zeros."""
    dtype = torch.float64 if backend == "torch" else torch.float32
    qkv, table, pad = _inputs(dtype)
    tangent = torch.randn(qkv.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(qkv)
    f = _op(backend)
    _, jvp = torch.func.jvp(lambda q: f(q, table, pad), (qkv,), (tangent,))
    want = _central_difference(lambda q: _op("torch")(q, table.double(), pad.double()), qkv.double(),
                               tangent.double())
    assert want.abs().max() > 1e-2
    torch.testing.assert_close(jvp.double(), want, rtol=1e-4, atol=1e-5)

    small = qkv[:, :2, :3].contiguous()  # a 2x3 map (one padded window): a 36 x 108 Jacobian
    jac_fwd = torch.func.jacfwd(lambda q: f(q, table, pad))(small)
    jac_rev = torch.func.jacrev(lambda q: f(q, table, pad))(small)
    assert jac_fwd.abs().max() > 1e-2
    torch.testing.assert_close(jac_fwd, jac_rev)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_func_grad_and_vmap(backend):
    """torch.func.grad equals plain autograd; vmap over a stack of maps equals one call per map."""
    qkv, table, pad = _inputs(torch.float32, batch=2)
    f = _op(backend)
    w = torch.linspace(-1, 1, qkv.shape[-1] // 3, device=DEVICE)

    def loss(q, t, p):
        return (f(q, t, p) * w).sum()

    got = torch.func.grad(loss, argnums=(0, 1, 2))(qkv, table, pad)
    leaves = [t.clone().requires_grad_() for t in (qkv, table, pad)]
    want = torch.autograd.grad(loss(*leaves), leaves)
    for name, a, b in zip(("qkv", "table", "pad"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")

    stacked = torch.stack([qkv, qkv.flip(1)])  # [2, B, H, W, 3C]
    mapped = torch.func.vmap(lambda q: f(q, table, pad))(stacked)
    torch.testing.assert_close(mapped, torch.stack([f(q, table, pad) for q in stacked]), rtol=1e-5, atol=1e-6)
