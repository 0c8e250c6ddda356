"""The Swin V2 implementations bench/test_bench_op_v2.py times compute one op: the libraries' own V2 attention math
(``library``) and SDPA with a materialized bias + mask agree with the package's op on its PyTorch backend, values
and the gradients of qkv, the position-bias table and the temperature; and the V2 cost model counts the cosine.

float64 on the CPU, one small shape with padding (both shifts) and the benchmarks' shape names; the fused op itself
is checked against the reference by tests/test_cosine_attention.py.
"""
import pytest
import torch

from swin_fused.tools.baselines import OP_IMPLS_V2, make_v2_op_inputs, op_unavailable_reason
from swin_fused.tools.costs import (OpShape, model_attention_cost, stage_shapes, v2_benchmark_shapes,
                                    window_attention_cost)

CPU = torch.device("cpu")


@pytest.mark.parametrize("shift", [(0, 0), (2, 2)])
def test_v2_baselines_compute_the_fused_op(shift):
    shape = OpShape("test", 8, 12, 32, 2, (4, 4), shift)  # 12 = 3 windows of 4: no padding; 8 rows: 2
    padded = OpShape("test-pad", 6, 10, 32, 2, (4, 4), shift)  # pads both sides
    for s in (shape, padded):
        qkv, table, tau = make_v2_op_inputs(s, 2, torch.float64, CPU, requires_grad=True)
        assert qkv.shape == (2, s.H, s.W, 96) and table.shape == (49, 2) and tau.shape == (2,)
        assert table.dtype == tau.dtype == torch.float32  # as under AMP; float64 here for tight tolerances
        table, tau = (t.detach().double().requires_grad_() for t in (table, tau))
        dout = torch.randn(2, s.H, s.W, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        want = OP_IMPLS_V2["torch_path"](qkv, table, tau, s)
        want_grads = torch.autograd.grad(want, (qkv, table, tau), dout)
        for impl in ("library", "sdpa"):
            got = OP_IMPLS_V2[impl](qkv, table, tau, s)
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=f"{impl} {s.name} {shift}")
            for name, g, w in zip(("qkv", "table", "cosine_scale"), torch.autograd.grad(got, (qkv, table, tau), dout),
                                  want_grads):
                torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9, msg=f"{impl} d{name} {s.name} {shift}")


def test_v2_library_under_autocast_matches_in_bf16():
    """Half inputs: the library transcription runs under autocast (fp32 scores, as the libraries train)."""
    shape = OpShape("test", 8, 8, 64, 2, (4, 4), (2, 2))
    qkv, table, tau = make_v2_op_inputs(shape, 2, torch.bfloat16, CPU)
    want = OP_IMPLS_V2["torch_path"](qkv, table, tau, shape).float()
    for impl in ("library", "sdpa"):
        got = OP_IMPLS_V2[impl](qkv, table, tau, shape)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)


def test_v2_fused_needs_cuda_and_names():
    assert op_unavailable_reason("fused", CPU).startswith("needs CUDA")
    assert op_unavailable_reason("library", CPU) is None
    with pytest.raises(ValueError, match="unknown implementation"):
        op_unavailable_reason("nope", CPU)


def test_v2_shapes_and_cosine_cost():
    names = [s.name for s in v2_benchmark_shapes()]
    assert "V2-T/S s1 64x64 C96 h3 w8 shift4" in names and "V2-B384 s1 96x96 C128 h4 w24 shift12" in names
    assert len(names) == len(set(names)) == 10 and all(" s2 " not in n and " s4 " not in n for n in names)
    b384 = stage_shapes("swinv2_base_patch4_window12to24_192to384")
    assert [(s.H, s.window[0], s.shift[0]) for s in b384] == [(96, 24, 0), (96, 24, 12), (48, 24, 0), (48, 24, 12),
                                                              (24, 24, 0), (12, 12, 0)]
    w16 = stage_shapes("swinv2_tiny_window16_256")  # timm's name
    assert [(s.H, s.window[0], s.shift[0]) for s in w16][-2:] == [(16, 16, 0), (8, 8, 0)]
    shape = v2_benchmark_shapes()[0]
    for backward in (False, True):
        plain = window_attention_cost(shape, 4, torch.bfloat16, backward=backward)
        cosine = window_attention_cost(shape, 4, torch.bfloat16, backward=backward, cosine=True)
        assert plain.flops < cosine.flops < 1.1 * plain.flops and cosine.bytes > plain.bytes
    assert model_attention_cost("swin_v2_t", 1, torch.bfloat16) == model_attention_cost(
        "swinv2_tiny_patch4_window8_256", 1, torch.bfloat16)
