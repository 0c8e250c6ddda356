"""One forward and one backward launch per shape, inside a CUDA profiler range, for Nsight Compute.

    ncu --profile-from-start off --kernel-name regex:_window_attention_ --csv --page details \
        --section SpeedOfLight --section Occupancy --section LaunchStats python bench/ncu_kernels.py

Everything before the range (compiling, autotuning, a warm-up call) is not profiled, so ncu replays exactly
the fused kernels of the chosen shapes: registers and spills as launched, achieved occupancy, DRAM and
compute throughput against the device's peak. ``bench/gpu_report.sh`` runs it with SWIN_FUSED_AUTOTUNE=0
(the heuristic configs, mostly compiled already by its test step). The shapes: Swin-T stage 1
(shifted), Swin-T stage 3 (shifted, few windows per program in the backward) and Swin-B-384 stage 1 (12 x 12
windows: the forward's key loop and the tiled backward).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("TRITON_INTERPRET", "0")

import torch  # noqa: E402

from swin_fused.tools.baselines import make_op_inputs  # noqa: E402
from swin_fused.tools.costs import shapes_by_name  # noqa: E402
from swin_fused.kernels.window_attention_bwd import window_attention_bwd  # noqa: E402
from swin_fused.kernels.window_attention_fwd import window_attention_fwd  # noqa: E402

SHAPES = ("T/S s1 56x56 C96 h3 w7 shift3", "T/S s3 14x14 C384 h12 w7 shift3", "B384 s1 96x96 C128 h4 w12 shift6")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "float16", "bfloat16"])
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("ncu_kernels: needs a CUDA GPU")
        return 2
    dtype = getattr(torch, args.dtype)
    calls = []
    for name in SHAPES:
        shape = shapes_by_name()[name]
        qkv, table = make_op_inputs(shape, args.batch, dtype, torch.device("cuda"))
        geometry = (shape.heads, shape.window, shape.shift, None)

        def call(qkv=qkv, table=table, geometry=geometry):
            out, lse = window_attention_fwd(qkv, table, *geometry, return_lse=True)
            window_attention_bwd(torch.ones_like(out), qkv, lse, table, *geometry)

        call()  # compile and autotune outside the profiled range
        calls.append(call)
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for call in calls:
        call()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()
    print(f"ncu_kernels: {len(calls)} shapes x (forward, backward), batch {args.batch}, {args.dtype}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
