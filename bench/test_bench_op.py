"""The window-attention op alone: fused vs the PyTorch path, the reference, SDPA and FlexAttention.

Forward (no grad) and forward + backward (gradients of qkv and the bias table) at each Swin stage shape.
Baselines come from :mod:`swin_fused.tools.baselines`, which imports the same reference the tests check against.
``extra_info`` carries the analytic FLOPs and bytes (:mod:`swin_fused.tools.costs`) for roofline plots.
"""
import pytest
import torch

from bench_settings import DEVICE, DTYPE, ON_CUDA, OP_BATCH, in_filter_order, selected
from op_case import time_op
from swin_fused.tools.baselines import OP_IMPLS, make_op_inputs, op_unavailable_reason
from swin_fused.tools.costs import benchmark_shapes, stage_shapes

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
    qkv, table = make_op_inputs(shape, OP_BATCH, DTYPE, DEVICE, requires_grad=mode == "fwd_bwd")
    time_op(measure, OP_IMPLS[impl], (qkv, table), shape, impl, mode, skip_errors=("flex", "sdpa"))
