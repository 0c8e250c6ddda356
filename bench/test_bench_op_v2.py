"""The Swin V2 window-attention op (scaled cosine attention): fused vs the PyTorch path, the libraries' own V2 math
and SDPA, forward and forward + backward, at SwinV2 stage shapes. CUDA only (skipped on the CPU, with the reason).

Every implementation takes the same inputs, as a V2 model computes them on each call: ``qkv [B, H, W, 3C]``, the
continuous position bias MLP's output ``table [rows, heads]`` (before ``16 * sigmoid``, which each implementation
applies: on the table for the op and SDPA, on the gathered ``[heads, N, N]`` bias for the libraries' math) and the
temperature ``cosine_scale [heads]`` (``exp(clamp(logit_scale, max=log 100))``); the backward takes the gradients of
all three. Implementations (:data:`swin_fused.tools.baselines.OP_IMPLS_V2`):

- ``fused``: ``swin_fused.window_attention(..., cosine_scale=, backend="triton")``;
- ``torch_path``: the same call on the PyTorch backend;
- ``library``: timm's / torchvision's V2 attention transcribed (pad, roll, partition, normalize, matmul,
  ``* logit_scale``, ``+ 16 * sigmoid(bias)``, ``+ mask``, softmax, matmul, reverse), under autocast for half
  inputs as those models train;
- ``sdpa``: normalised q (times the temperature) and k into ``F.scaled_dot_product_attention`` with the bias +
  shift mask materialized, ``scale=1.0``.

Shapes (:func:`swin_fused.tools.costs.v2_benchmark_shapes`): stages 1 and 3 of SwinV2-T/S and -B at 256 with
windows 8 and 16, and of SwinV2-B at 384 with window 24 (the shifted block where a stage has one), batch 128 in
bf16. ``SWIN_FUSED_BENCH_V2_SHAPES``: comma-separated substrings choosing among every stage and shift of those
configs (``all``; e.g. ``w24,V2-T/S s1``), run in the order given. ``extra_info`` carries the analytic FLOPs and
bytes with the cosine term (:mod:`swin_fused.tools.costs`).
"""
import pytest
import torch

from bench_settings import DEVICE, DTYPE, ON_CUDA, OP_BATCH, V2_NO_CUDA, in_filter_order
from op_case import time_op
from swin_fused.tools.baselines import OP_IMPLS_V2, make_v2_op_inputs, op_unavailable_reason
from swin_fused.tools.costs import v2_benchmark_shapes

pytestmark = pytest.mark.skipif(not ON_CUDA, reason=V2_NO_CUDA)

#: Every stage and shift of the benchmarked V2 configs; by default the stage 1 and 3 shapes (shifted block).
_ALL = {s.name: s for s in v2_benchmark_shapes(stages=(1, 2, 3, 4), shifted_only=False)}
_DEFAULT = ",".join(s.name for s in v2_benchmark_shapes())
SHAPES = [_ALL[name] for name in in_filter_order(list(_ALL), "SWIN_FUSED_BENCH_V2_SHAPES", default=_DEFAULT)]


def _shape_id(shape):
    return shape.name.replace("/", "").replace(" ", "-")


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("impl", list(OP_IMPLS_V2))
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_window_attention_v2(measure, shape, impl, mode):
    reason = op_unavailable_reason(impl, DEVICE)
    if reason:
        pytest.skip(reason)
    inputs = make_v2_op_inputs(shape, OP_BATCH, DTYPE, DEVICE, requires_grad=mode == "fwd_bwd")
    time_op(measure, OP_IMPLS_V2[impl], inputs, shape, impl, mode, skip_errors=("sdpa",), skip_oom=True,
            cosine=True, swin="v2")
