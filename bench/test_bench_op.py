"""The window-attention op alone: fused vs the PyTorch path, the reference, SDPA and FlexAttention.

Forward (no grad) and forward + backward (gradients of qkv and the bias table) at each Swin stage shape.
Baselines come from :mod:`swin_fused.tools.baselines`, which imports the same reference the tests check against.
``extra_info`` carries the analytic FLOPs and bytes (:mod:`swin_fused.tools.costs`) for roofline plots.
"""
import pytest
import torch

from bench_settings import DEVICE, DTYPE, ON_CUDA, OP_BATCH, OP_ROUNDS, in_filter_order, selected
from swin_fused.tools.baselines import OP_IMPLS, make_op_inputs, op_unavailable_reason
from swin_fused.tools.benchmarking import autotuned_call
from swin_fused.tools.costs import benchmark_shapes, stage_shapes, window_attention_cost

# CPU: the two smallest Swin-T stages (14x14 both shifts, 7x7); CUDA: every T/S, B and B-384 stage shape.
_ALL = benchmark_shapes() if ON_CUDA else [s for s in stage_shapes("swin_tiny_patch4_window7_224", "T/S") if s.H <= 14]
_BY_NAME = {s.name: s for s in _ALL}
SHAPES = [_BY_NAME[name] for name in in_filter_order(list(_BY_NAME), "SWIN_FUSED_BENCH_SHAPES")]


def _shape_id(shape):
    return shape.name.replace("/", "").replace(" ", "-")


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("impl", list(OP_IMPLS))
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_window_attention(measure, shape, impl, mode):
    reason = op_unavailable_reason(impl, DEVICE)
    if reason:
        pytest.skip(reason)
    if impl == "flex" and not selected(shape.name, "SWIN_FUSED_BENCH_FLEX", default="T/S"):
        pytest.skip("FlexAttention compiles per shape: not selected by SWIN_FUSED_BENCH_FLEX (default 'T/S')")
    fn = OP_IMPLS[impl]
    backward = mode == "fwd_bwd"
    qkv, table = make_op_inputs(shape, OP_BATCH, DTYPE, DEVICE, requires_grad=backward)

    if backward:
        dout = torch.randn(qkv.shape[:-1] + (shape.dim,), device=DEVICE, dtype=DTYPE)

        def call():
            out = fn(qkv, table, shape)
            return torch.autograd.grad(out, (qkv, table), dout)
    else:
        def call():
            with torch.no_grad():
                return fn(qkv, table, shape)

    try:  # compile / autotune outside the timing, and turn an unsupported case into a stated skip
        tuned = autotuned_call(call)
    except Exception as error:  # noqa: BLE001 - a baseline's own limitation is a result, not a failure
        if impl in ("flex", "sdpa"):
            pytest.skip(f"{impl} failed on this shape: {type(error).__name__}: {str(error)[:200]}")
        raise
    cost = window_attention_cost(shape, OP_BATCH, DTYPE, saves_lse=backward)
    if backward:
        cost = cost + window_attention_cost(shape, OP_BATCH, DTYPE, backward=True)
    if tuned:  # each candidate config's time at this shape, the chosen one starred (also in the JSON)
        print(f"\nautotuned {shape.name} {mode}: {tuned}")
    measure(call, rounds=OP_ROUNDS, group=f"op {shape.name} {mode}", dtype=DTYPE, batch=OP_BATCH,
            kind="op", impl=impl, mode=mode, shape=shape.name, flops=cost.flops, bytes=cost.bytes,
            **({"autotune": tuned} if tuned else {}))
