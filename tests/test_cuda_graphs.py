"""CUDA graphs: a fused block captured with ``torch.cuda.make_graphed_callables`` replays forward and backward.

On the H100 the small Swin stages are host-bound: a fused call cost several times its kernel time in
launch work (bench/results/2026-11-26-h100-dbee34e). Capturing the blocks in a CUDA graph removes that cost,
so the op must be capturable: no host sync, no allocation outside the caching allocator, no autotuning inside
the capture (the warm-up outside it settles the configs). GPU only (``@pytest.mark.cuda``).
"""
import pytest
import torch

import swin_fused

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_fused_block_replays_in_a_cuda_graph(dtype):
    """A shifted block on a padded 28 x 30 map: the graphed block's output, input gradient and parameter
    gradients match eager calls, over two replays with fresh inputs copied into the same leaves."""
    torch.manual_seed(0)
    block = swin_fused.SwinBlock(96, (28, 30), 3, window_size=7, shift_size=3).to("cuda", dtype)
    inputs = [torch.randn(4, 28, 30, 96, device="cuda", dtype=dtype) for _ in range(2)]
    douts = [torch.randn_like(x) for x in inputs]

    def step(fn, x, dout):
        block.zero_grad(set_to_none=True)
        leaf = x.clone().requires_grad_()
        out = fn(leaf)
        out.backward(dout)
        return [out.detach().clone(), leaf.grad.clone()] + [p.grad.clone() for p in block.parameters()]

    names = ["out", "dx"] + [name for name, _ in block.named_parameters()]
    with swin_fused.use_backend("triton"):
        expected = [step(block, x, d) for x, d in zip(inputs, douts)]  # also compiles and autotunes
        graphed = torch.cuda.make_graphed_callables(block, (inputs[0].clone().requires_grad_(),))
        got = [step(graphed, x, d) for x, d in zip(inputs, douts)]
    torch.cuda.synchronize()
    tol = TOLERANCE[dtype]
    for i, (want, have) in enumerate(zip(expected, got)):
        for name, a, b in zip(names, want, have):
            assert torch.isfinite(b).all(), f"replay {i}: {name} has non-finite values"
            torch.testing.assert_close(b, a, rtol=tol, atol=tol, msg=lambda m: f"replay {i}, {name}: {m}")
