"""``swin-fused roofline``: how close the fused kernels run to what the device can do.

For each Swin stage shape (:func:`swin_fused.tools.costs.benchmark_shapes`), the analytic FLOPs and minimum bytes of
the fused forward and backward (:mod:`swin_fused.tools.costs`), and on CUDA two times per call: ``kernel``, the
device time of the fused kernel (``_window_attention_fwd_kernel`` / ``_window_attention_bwd_kernel``) from
torch.profiler, and ``call``, the wall time per call including host work (argument handling, Triton launch).
Achieved TFLOP/s and GB/s come from the kernel time, against two measured ceilings: copy bandwidth (a large
device-to-device copy, read + write bytes) and matmul rate (a large square matmul in the same dtype).
``roof`` is the time the roofline allows, ``max(bytes / bandwidth, flops / matmul rate)``, divided by the
kernel time: 100% means at the roof. For small shapes the call time is mostly host overhead, which a
roofline of the kernels must not count. On a CPU the analytic counts are printed and the measured part is
reported as skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

import torch

from .benchmarking import (environment, format_table, fused_unavailable_reason, name_matches, profiled_time_per_call,
                           progress, time_calls)

__all__ = ["add_arguments", "run", "measure_peaks", "select_shapes"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .options import add_device_options, positive_int

    add_device_options(parser)
    parser.add_argument("--batch", type=positive_int, default=128, help="batch of every shape (default 128)")
    parser.add_argument("--iters", type=positive_int, default=20, help="timed calls per measurement")
    parser.add_argument("--shapes", default="all",
                        help="'all', or comma-separated substrings of shape names, any match selects "
                             "(e.g. 'T/S s1,B384 s4')")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the peaks as JSON")


def measure_peaks(device: torch.device, dtype: torch.dtype, iters: int = 10) -> dict:
    """Measured copy bandwidth (bytes/s, read + write) and matmul rate (FLOP/s) of a CUDA device."""
    n_copy = 1 << 28  # 256 Mi elements: far beyond any cache
    src = torch.empty(n_copy, device=device, dtype=dtype)
    dst = torch.empty_like(src)
    copy = time_calls(lambda: dst.copy_(src), device, iters=iters, warmup=2)
    copy_bw = 2 * src.numel() * src.element_size() / copy.median
    del src, dst
    n = 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    mm = time_calls(lambda: a @ b, device, iters=iters, warmup=2)
    return {"copy_bytes_per_s": copy_bw, "matmul_flop_per_s": 2.0 * n**3 / mm.median, "matmul_n": n,
            "copy_elements": n_copy}


def select_shapes(spec: str, shapes: list) -> list:
    """The shapes whose name passes ``spec`` (:func:`swin_fused.tools.benchmarking.name_matches`)."""
    return [s for s in shapes if name_matches(s.name, spec)]


def _time_shape(shape, batch, dtype, device, iters):
    """``[(kernel, call), (kernel, call)]`` seconds per call of the fused forward (no grad) and its backward alone.

    ``kernel``: the fused kernel's device time (profiler); ``call``: median wall time, host work included.
    """
    from .baselines import OP_IMPLS, make_op_inputs
    from .profiling import FUSED_KERNELS

    fused = OP_IMPLS["fused"]
    qkv, table = make_op_inputs(shape, batch, dtype, device)

    def both(fn, kernel):
        call = time_calls(fn, device, iters=iters, warmup=3).median
        return profiled_time_per_call(fn, device, iters, warmup=1, name_prefix=kernel), call

    with torch.no_grad():
        fwd = both(lambda: fused(qkv, table, shape), FUSED_KERNELS[0])
    qkv.requires_grad_(True)
    table.requires_grad_(True)
    out = fused(qkv, table, shape)
    dout = torch.randn_like(out)
    bwd = both(lambda: torch.autograd.grad(out, (qkv, table), dout, retain_graph=True), FUSED_KERNELS[1])
    return [fwd, bwd]


def run(args: argparse.Namespace) -> int:
    from .options import device_and_dtype
    from .costs import benchmark_shapes, window_attention_cost

    device, dtype = device_and_dtype(args)
    shapes = select_shapes(args.shapes, benchmark_shapes())
    if not shapes:
        raise ValueError(f"--shapes {args.shapes!r} matches none of: {', '.join(s.name for s in benchmark_shapes())}")
    env = environment(device, dtype, args.batch)
    skip = fused_unavailable_reason(device)
    peaks: Optional[dict] = None if skip else measure_peaks(device, dtype)

    rows: List[dict] = []
    for shape in progress(shapes, desc="swin-fused roofline", enabled=not args.no_progress):
        timings = None if skip else _time_shape(shape, args.batch, dtype, device, args.iters)
        for k, direction in enumerate(("fwd", "bwd")):
            cost = window_attention_cost(shape, args.batch, dtype, backward=direction == "bwd",
                                         saves_lse=direction == "bwd")
            row = {"shape": shape.name, "direction": direction, "flops": cost.flops, "bytes": cost.bytes,
                   "intensity": cost.intensity}
            if timings is not None:
                t, call = timings[k]  # rates and roof from the kernel time: the host is not the roofline's
                roof_t = max(cost.bytes / peaks["copy_bytes_per_s"], cost.flops / peaks["matmul_flop_per_s"])
                row.update(seconds=t, call_seconds=call, tflop_per_s=cost.flops / t / 1e12,
                           gb_per_s=cost.bytes / t / 1e9, roof_fraction=roof_t / t)
            rows.append(row)

    print(f"fused window attention, batch {args.batch}, {env['dtype']} on {env['device']} (torch {env['torch']}, "
          f"triton {env['triton']}, commit {env['commit']})")
    print("FLOPs: 4*N^2*hd per window-head forward (QK^T and PV), backward 2.5x; bytes: qkv read + out written "
          "+ table + fp32 lse (forward, saved for backward); dout/lse/qkv read + dqkv/dtable written "
          "(backward). Forward timed without grad (no lse written). kernel: the fused kernel's device time per "
          "call (torch.profiler); call: wall time per call, host work included. TFLOP/s, GB/s and roof from the "
          "kernel time.")
    if peaks:
        print(f"measured peaks: copy {peaks['copy_bytes_per_s'] / 1e9:,.0f} GB/s (read + write), "
              f"matmul {peaks['matmul_flop_per_s'] / 1e12:,.1f} TFLOP/s ({peaks['matmul_n']}^3 {env['dtype']})")
    headers = ["shape", "dir", "GFLOP", "MB", "FLOP/B", "kernel ms", "call ms", "TFLOP/s", "GB/s", "roof"]
    body = []
    for r in rows:
        measured = ([f"{1e3 * r['seconds']:.3f}", f"{1e3 * r['call_seconds']:.3f}", f"{r['tflop_per_s']:.1f}",
                     f"{r['gb_per_s']:,.0f}", f"{100 * r['roof_fraction']:.0f}%"] if "seconds" in r else ["—"] * 5)
        body.append([r["shape"], r["direction"], f"{r['flops'] / 1e9:.2f}", f"{r['bytes'] / 1e6:.1f}",
                     f"{r['intensity']:.1f}"] + measured)
    print(format_table(headers, body))
    if skip:
        print(f"measured part (kernel and call time, TFLOP/s, GB/s, roof): skipped, {skip}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "peaks": peaks, "skipped": skip, "rows": rows}, f, indent=2)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
