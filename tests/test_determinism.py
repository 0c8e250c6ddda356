"""Run-to-run determinism of the fused op: forward and every gradient bit-identical over repeated runs.

The backward reduces the bias-table gradient (and the qkv-bias gradient of padding tokens) through
program-private partials summed in a fixed order, never float atomics, so repeated runs give the same bits.
Checked through the autograd op (what models call), with padding and a shift so that every gradient path is
live: dqkv, the relative-position table and the qkv bias (through padding tokens).

- CPU (Triton interpreter): small shapes, including windows grouped several per program (the launcher only
  groups on large batches, so the grouping is forced here) for both the one-tile (N <= 64) and the tiled
  (N > 64) backward. The interpreter runs programs one by one, so races cannot show on the CPU;
- CUDA (``@pytest.mark.cuda``): large batches where races would show, many repeats.
"""
import pytest
import torch
from conftest import HAS_CUDA
from numerics import nan_filled_empty

import swin_fused
from swin_fused.kernels import window_attention_bwd as bwd_module

DEVICE = "cuda" if HAS_CUDA else "cpu"


def make_inputs(B, H, W, heads, head_dim, window, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = heads * head_dim
    qkv = torch.randn(B, H, W, 3 * C, generator=g).to(DEVICE, dtype)
    table = torch.randn((2 * window - 1) ** 2, heads, generator=g).to(DEVICE)  # fp32, as under AMP
    pad = torch.randn(3 * C, generator=g).to(DEVICE, dtype)
    dout = torch.randn(B, H, W, C, generator=g).to(DEVICE, dtype)
    return qkv, table, pad, dout


def run(qkv, table, pad, dout, heads, window, shift, backend="triton", shift_before_pad=False):
    """Output and gradients (qkv, table, qkv bias) through swin_fused.window_attention."""
    leaves = [t.detach().clone().requires_grad_() for t in (qkv, table, pad)]
    out = swin_fused.window_attention(leaves[0], leaves[1], heads, window, shift, pad_qkv=leaves[2],
                                      shift_before_pad=shift_before_pad, backend=backend)
    out.backward(dout)
    return [out.detach()] + [leaf.grad for leaf in leaves]


def assert_bit_identical(runs, what, padded=True):
    first = runs[0]
    for i, again in enumerate(runs[1:], 1):
        for name, a, b in zip(("out", "dqkv", "dtable", "dpad"), first, again):
            if a is None or b is None:  # the qkv bias gets no gradient when nothing is padded
                assert a is None and b is None and not padded, f"{what}: run {i} {name} is {a} vs {b}"
                continue
            assert torch.equal(a, b), f"{what}: run {i} {name} differs by {(a - b).abs().max().item():.3e}"
    names = ("out", "dqkv", "dtable", "dpad") if padded else ("out", "dqkv", "dtable")
    for name, t in zip(names, first):  # not vacuous: finite and not all zeros
        assert torch.isfinite(t).all() and t.abs().sum() > 0, f"{what}: {name} is degenerate"


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("shift_before_pad", [False, True], ids=["pad-then-shift", "shift-then-pad"])
def test_repeated_runs_are_bit_identical(backend, shift_before_pad):
    """10 x 13 map, window 7, shift 3: padded and shifted, so the qkv bias gets gradient through padding."""
    inputs = make_inputs(1, 10, 13, 2, 16, 7)
    runs = [run(*inputs, 2, 7, 3, backend, shift_before_pad) for _ in range(3)]
    assert_bit_identical(runs, f"{backend}/{'timm' if shift_before_pad else 'package'} order")


@pytest.mark.parametrize("window, H, W", [(4, 10, 11), (12, 12, 20)], ids=["one-tile-N16", "tiled-N144"])
def test_windows_grouped_per_program_stay_deterministic_and_correct(monkeypatch, window, H, W):
    """Several windows per program (3 for the 9 windows of a 10 x 11 map with window 4, 2 for the two 12 x 12
    windows): same bits run to run, and the same values as one window per program up to summation order."""
    heads = 1
    inputs = make_inputs(1, H, W, heads, 16, window)
    ungrouped = run(*inputs, heads, window, window // 2)
    monkeypatch.setattr(bwd_module, "_windows_per_program", lambda n_windows, num_heads: 3 if window == 4 else 2)
    grouped = [run(*inputs, heads, window, window // 2)]
    with nan_filled_empty():  # a read of a partial before it was written would now show as NaN
        grouped.append(run(*inputs, heads, window, window // 2))
    assert_bit_identical(grouped, f"window {window}, grouped")
    for name, a, b in zip(("out", "dqkv", "dtable", "dpad"), grouped[0], ungrouped):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")


def test_block_parameter_gradients_are_bit_identical():
    """A whole SwinBlock on a padded, shifted map: every parameter gradient (qkv bias through padding tokens,
    bias table, weights) is the same over repeated steps."""
    torch.manual_seed(0)
    block = swin_fused.SwinBlock(32, (9, 10), 2, window_size=4, shift_size=2).to(DEVICE)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(1, 9, 10, 32, device=DEVICE)
    grads = []
    with swin_fused.use_backend("triton"):
        for _ in range(2):
            block.zero_grad()
            block(x).square().mean().backward()
            grads.append({n: p.grad.clone() for n, p in block.named_parameters()})
    for name, g in grads[0].items():
        assert all(torch.equal(g, other[name]) for other in grads[1:]), name
    assert grads[0]["attn.qkv.bias"][32:].abs().sum() > 0  # k, v bias get gradient (padding tokens, shift)


def test_deterministic_algorithms_mode_is_supported():
    """Under torch.use_deterministic_algorithms(True) the op runs (no nondeterministic op inside) and gives the
    same bits; NaN-filled fresh buffers (out, lse, dqkv, partials) show nothing is read before written."""
    inputs = make_inputs(1, 6, 7, 1, 16, 4)
    expected = run(*inputs, 1, 4, 2)
    with nan_filled_empty():
        got = run(*inputs, 1, 4, 2)
    assert_bit_identical([expected, got], "deterministic mode")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("B, H, W, heads, window", [
    (128, 28, 28, 6, 7),  # Swin-T stage 2: 2048 windows x 6 heads, several windows per program
    (64, 30, 30, 3, 7),  # padded: the qkv bias gradient is reduced across programs too
    (64, 26, 26, 4, 12),  # window 12: the tiled backward (dS partials read-modify-written in memory)
], ids=["swin-t-stage2", "padded", "window12"])
def test_large_batches_are_bit_identical_on_gpu(B, H, W, heads, window, dtype):
    inputs = make_inputs(B, H, W, heads, 32, window, dtype)
    runs = [run(*inputs, heads, window, window // 2) for _ in range(5)]
    assert_bit_identical(runs, f"B={B} {H}x{W} window {window} {dtype}", padded=H % window != 0)
