"""One op benchmark case, shared by test_bench_op.py (V1) and test_bench_op_v2.py (Swin V2): the timed call
(forward under no_grad, or forward + the gradients of every input), compile / autotune outside the timing, a
baseline's own limitation turned into a stated skip, and the analytic cost in ``extra_info``."""
import pytest
import torch

from bench_settings import DTYPE, OP_BATCH, OP_ROUNDS
from swin_fused.tools.benchmarking import autotuned_call
from swin_fused.tools.costs import window_attention_cost


def time_op(measure, fn, inputs, shape, impl: str, mode: str, skip_errors=(), skip_oom: bool = False,
            cosine: bool = False, **extra_info):
    """Time ``fn(*inputs, shape)``. ``skip_errors``: implementations whose failure on a shape is a skip;
    ``skip_oom``: running out of memory is a skip for every implementation but ``fused``."""
    backward = mode == "fwd_bwd"
    if backward:
        dout = torch.randn(inputs[0].shape[:-1] + (shape.dim,), device=inputs[0].device, dtype=DTYPE)

        def call():
            return torch.autograd.grad(fn(*inputs, shape), inputs, dout)
    else:
        def call():
            with torch.no_grad():
                return fn(*inputs, shape)

    try:  # compile / autotune outside the timing, and turn an unsupported case into a stated skip
        tuned = autotuned_call(call)
    except Exception as error:  # noqa: BLE001 - a baseline's own limitation is a result, not a failure
        if skip_oom and impl != "fused" and isinstance(error, torch.cuda.OutOfMemoryError):
            pytest.skip(f"{impl} runs out of memory at batch {OP_BATCH}: {str(error)[:160]}")
        if impl in skip_errors:
            pytest.skip(f"{impl} failed on this shape: {type(error).__name__}: {str(error)[:200]}")
        raise
    cost = window_attention_cost(shape, OP_BATCH, DTYPE, saves_lse=backward, cosine=cosine)
    if backward:
        cost = cost + window_attention_cost(shape, OP_BATCH, DTYPE, backward=True, cosine=cosine)
    if tuned:  # each candidate config's time at this shape, the chosen one starred (also in the JSON)
        print(f"\nautotuned {shape.name} {mode}: {tuned}")
    measure(call, rounds=OP_ROUNDS, group=f"op {shape.name} {mode}", dtype=DTYPE, batch=OP_BATCH,
            kind="op", impl=impl, mode=mode, shape=shape.name, **extra_info, flops=cost.flops, bytes=cost.bytes,
            **({"autotune": tuned} if tuned else {}))
