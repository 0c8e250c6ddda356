"""Host time per launch: where a fused window-attention call spends its CPU time before the GPU runs it.

    python bench/launch_overhead.py [--calls 300]

On the 2026-11-26 H100 host a fused call cost 350-500 us of host time (under the profiler) against 30-110 us
of kernel time. About 150 us of that lay between the launcher's last aten op and ``cuLaunchKernelEx``, in
Triton's launch path. This script splits that cost. Each row times ``--calls`` back-to-back launches with
``time.perf_counter`` and no sync between them (the queue absorbs the kernels), then reports the host
microseconds per launch:

- ``torch add_``: one small aten kernel, the floor for any launch from Python;
- ``triton 1 ptr`` / ``triton 11 ptrs`` / ``triton 11 ptrs + 19 ints``: an empty Triton kernel taking as many
  pointer (and int) arguments as the fused backward does. Triton's CUDA launcher calls ``data_ptr()`` and
  ``cuPointerGetAttribute`` per pointer, and its binder specializes every argument;
- ``fused fwd launcher``, ``fused bwd launcher``: ``window_attention_fwd`` / ``_bwd`` (checked=False), the
  whole launch path including the head-major table copy;
- ``fused op, no grad`` and ``fused op fwd+bwd``: the public op, as models call it.

Each fused row runs twice: through Triton's ``JITFunction.run`` and with ``SWIN_FUSED_DIRECT_LAUNCH=1``, which
launches the compiled kernel of the call's launch class directly (``kernels/launch.py``); then both routes'
outputs are compared bit for bit.

Then the kernels' device time (profiler) reading the bias table head-major, as the launchers copy it, against
reading the parameter's row-major layout directly, at three shapes: whether that copy (one launch per
forward) buys anything.

Last, the package's own host code per call with the launches stubbed out, launchers building their plan on
every call against reusing it (``package_host_time``). ``--stub-launches`` runs only that, and on a CPU too
(``TRITON_INTERPRET=1 python bench/launch_overhead.py --stub-launches``).

Needs CUDA, except with ``--stub-launches``; prints the reason and exits 2 elsewhere.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TRITON_INTERPRET", "0")  # a GPU's kernels; set it to 1 for --stub-launches on a CPU

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import swin_fused  # noqa: E402
from swin_fused.tools.baselines import make_op_inputs  # noqa: E402
from swin_fused.tools.costs import shapes_by_name  # noqa: E402
from swin_fused.tools.benchmarking import profiled_time_per_call  # noqa: E402
from swin_fused.kernels import launch as launch_module  # noqa: E402
from swin_fused.kernels import window_attention_bwd as bwd_module  # noqa: E402
from swin_fused.kernels import window_attention_fwd as fwd_module  # noqa: E402
from swin_fused.kernels.launch import clear_plans, head_major  # noqa: E402
from swin_fused.kernels.window_attention_bwd import window_attention_bwd  # noqa: E402
from swin_fused.kernels.window_attention_fwd import window_attention_fwd  # noqa: E402

SHAPE = "T/S s3 14x14 C384 h12 w7 shift3"  # small: its kernels take far less time than their launch


@triton.jit
def _empty_1(P0, n):
    if n < 0:  # never true (n = 2, not 1: Triton would specialize 1 into a constant): only the launch counts
        tl.store(P0, 0.0)


@triton.jit
def _empty_11(P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, n):
    if n < 0:
        tl.store(P0, tl.load(P1) + tl.load(P2) + tl.load(P3) + tl.load(P4) + tl.load(P5) + tl.load(P6)
                 + tl.load(P7) + tl.load(P8) + tl.load(P9) + tl.load(P10))


@triton.jit
def _empty_11_ints(P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, i0, i1, i2, i3, i4, i5, i6, i7, i8, i9, i10,
                   i11, i12, i13, i14, i15, i16, i17, n):
    if n < 0:
        s = i0 + i1 + i2 + i3 + i4 + i5 + i6 + i7 + i8 + i9 + i10 + i11 + i12 + i13 + i14 + i15 + i16 + i17
        tl.store(P0, tl.load(P1 + s) + tl.load(P2) + tl.load(P3) + tl.load(P4) + tl.load(P5) + tl.load(P6)
                 + tl.load(P7) + tl.load(P8) + tl.load(P9) + tl.load(P10))


def host_us_per_call(fn, calls: int) -> float:
    """Host microseconds per call over ``calls`` back-to-back calls (after 5 warm-up calls)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(5):
        fn()
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    host = time.perf_counter() - start
    sync()
    return 1e6 * host / calls


def package_host_time(calls: int, batch: int) -> None:
    """The package's own host code per call, with every kernel launch replaced by nothing: argument checks,
    plans, allocations, the autograd Function, the table-gradient sum. Runs on a CPU too (under
    TRITON_INTERPRET=1, which the launchers' device check needs; nothing is interpreted). The launchers twice:
    ``checked=True`` builds the launch plan on every call (what every call did before plans were cached),
    ``checked=False`` (the op's calls) reuses its signature's plan."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float16
    shape = shapes_by_name()[SHAPE]
    qkv, table = make_op_inputs(shape, batch, dtype, device)
    table = head_major(table)  # as the op passes it (its forward copies it once for both launchers)
    geometry = (shape.heads, shape.window, shape.shift, None)
    real_call = launch_module.Launch.__call__
    launch_module.Launch.__call__ = lambda self, *tensors: None
    try:
        out, lse = window_attention_fwd(qkv, table, *geometry, return_lse=True)
        dout = torch.randn_like(out)
        leaf_qkv, leaf_table = qkv.clone().requires_grad_(), table.clone().requires_grad_()

        def op_fwd_bwd():
            o = swin_fused.window_attention(leaf_qkv, leaf_table, *geometry[:3], backend="triton")
            o.backward(dout)
            leaf_qkv.grad = leaf_table.grad = None  # no gradient accumulation (real work on a CPU)

        rows = [
            ("fwd launcher, plan built (checked=True)", lambda: window_attention_fwd(
                qkv, table, *geometry, return_lse=True)),
            ("fwd launcher, plan cached", lambda: window_attention_fwd(
                qkv, table, *geometry, return_lse=True, checked=False)),
            ("bwd launcher, plan built (checked=True)", lambda: window_attention_bwd(
                dout, qkv, lse, table, *geometry)),
            ("bwd launcher, plan cached", lambda: window_attention_bwd(dout, qkv, lse, table, *geometry,
                                                                       checked=False)),
            ("op, no grad", lambda: swin_fused.window_attention(qkv, table, *geometry[:3], backend="triton")),
            ("op fwd+bwd", op_fwd_bwd),
        ]
        print(f"host us per call of the package's own code (launches stubbed out), {SHAPE} batch {batch} "
              f"{str(dtype).replace('torch.', '')} on {device}, torch {torch.__version__}")
        for name, fn in rows:
            with torch.no_grad() if "launcher" in name or "no grad" in name else torch.enable_grad():
                print(f"  {name:42s} {host_us_per_call(fn, calls):8.1f}")
    finally:
        launch_module.Launch.__call__ = real_call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--stub-launches", action="store_true",
                        help="only time the package's own host code, launches replaced by nothing (a CPU will "
                             "do, with TRITON_INTERPRET=1)")
    args = parser.parse_args(argv)
    if args.stub_launches:
        package_host_time(args.calls, args.batch)
        return 0
    if not torch.cuda.is_available():
        print("launch_overhead: needs a CUDA GPU (or --stub-launches)")
        return 2
    shape = shapes_by_name()[SHAPE]
    qkv, table = make_op_inputs(shape, args.batch, torch.bfloat16, torch.device("cuda"))
    geometry = (shape.heads, shape.window, shape.shift, None)
    out, lse = window_attention_fwd(qkv, table, *geometry, return_lse=True)
    dout = torch.randn_like(out)
    bufs = [torch.zeros(16, device="cuda") for _ in range(11)]
    ints = list(range(3, 21))
    leaf_qkv, leaf_table = qkv.clone().requires_grad_(), table.clone().requires_grad_()

    def op_fwd_bwd():
        o = swin_fused.window_attention(leaf_qkv, leaf_table, *geometry[:3])
        o.backward(dout)

    rows = [
        ("torch add_", lambda: bufs[0].add_(1.0)),
        ("triton 1 ptr", lambda: _empty_1[(1,)](bufs[0], 2)),
        ("triton 11 ptrs", lambda: _empty_11[(1,)](*bufs, 2)),
        ("triton 11 ptrs + 19 ints", lambda: _empty_11_ints[(1,)](*bufs, *ints, 2)),
        ("fused fwd launcher", lambda: window_attention_fwd(qkv, table, *geometry, checked=False)),
        ("fused bwd launcher",
         lambda: window_attention_bwd(dout, qkv, lse, table, *geometry, checked=False)),
        ("fused op, no grad", lambda: swin_fused.window_attention(qkv, table, *geometry[:3])),
        ("fused op fwd+bwd", op_fwd_bwd),
    ]
    print(f"host us per launch, {args.calls} back-to-back calls, {SHAPE} batch {args.batch} bf16, "
          f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    for name, fn in rows:
        # The fused rows twice, side by side: through Triton's JITFunction.run, then launching the compiled
        # kernel of the call's launch class directly (kernels/launch.py, SWIN_FUSED_DIRECT_LAUNCH=1).
        for direct in ((False, True) if name.startswith("fused") else (None,)):
            if direct is not None:
                os.environ["SWIN_FUSED_DIRECT_LAUNCH"] = "1" if direct else "0"
            label = name + {None: "", False: " (triton run)", True: " (direct)"}[direct]
            with torch.no_grad() if "no grad" in name or "launcher" in name else torch.enable_grad():
                print(f"  {label:42s} {host_us_per_call(fn, args.calls):8.1f}")
    os.environ.pop("SWIN_FUSED_DIRECT_LAUNCH", None)
    check_direct_launch(qkv, table, lse, dout, geometry)
    table_layouts(args.batch)
    package_host_time(args.calls, args.batch)
    return 0


def check_direct_launch(qkv, table, lse, dout, geometry) -> None:
    """The direct launches' outputs against Triton's own path, bit for bit (the kernel tests check the same
    under ``-m cuda`` with SWIN_FUSED_DIRECT_LAUNCH=1)."""
    results = {}
    for direct in ("0", "1"):
        os.environ["SWIN_FUSED_DIRECT_LAUNCH"] = direct
        for _ in range(2):  # a class's first call goes through Triton either way; the second is direct
            results[direct] = [window_attention_fwd(qkv, table, *geometry, checked=False)[0],
                               *window_attention_bwd(dout, qkv, lse, table, *geometry, checked=False)[:2]]
    os.environ.pop("SWIN_FUSED_DIRECT_LAUNCH", None)
    same = all(torch.equal(a, b) for a, b in zip(results["0"], results["1"]))
    print(f"direct launches equal Triton's path bit for bit (out, dqkv, dtable): {same}")


def table_layouts(batch: int) -> None:
    """Device time of the forward and backward kernels reading the bias table head-major (what the
    launchers copy it to: one extra launch per forward) against the parameter's own row-major layout. If
    row-major costs the kernels no more than that copy's launch, the copy should go."""
    device = torch.device("cuda")
    print("kernel device us per call, bias table head-major (launchers' copy) vs row-major (the parameter):")
    for name in (SHAPE, "T/S s1 56x56 C96 h3 w7 shift3", "B384 s1 96x96 C128 h4 w12 shift6"):
        shape = shapes_by_name()[name]
        qkv, table = make_op_inputs(shape, batch, torch.bfloat16, device)
        geometry = (shape.heads, shape.window, shape.shift, None)
        out, lse = window_attention_fwd(qkv, table, *geometry, return_lse=True)
        dout = torch.randn_like(out)
        times = {}
        for layout, t in (("head-major", head_major(table)), ("row-major", table)):
            for module in (fwd_module, bwd_module):  # the launchers take the table as given
                module.head_major = lambda x: x
            clear_plans()  # plans hold the table strides head_major gave
            try:
                fwd_us = 1e6 * profiled_time_per_call(lambda: window_attention_fwd(qkv, t, *geometry, checked=False),
                                                      device, 20, name_prefix="_window_attention_fwd")
                bwd_us = 1e6 * profiled_time_per_call(
                    lambda: window_attention_bwd(dout, qkv, lse, t, *geometry, checked=False),
                    device, 20, name_prefix="_window_attention_bwd")
            finally:
                for module in (fwd_module, bwd_module):
                    module.head_major = head_major
                clear_plans()
            times[layout] = (fwd_us, bwd_us)
        print(f"  {name}, batch {batch}: " + "; ".join(
            f"{layout} fwd {f:.1f} bwd {b:.1f}" for layout, (f, b) in times.items()))


if __name__ == "__main__":
    raise SystemExit(main())
