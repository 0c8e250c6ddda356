"""``swin-fused profile``: where a model's time goes, kernel by kernel (torch.profiler).

Runs ``--warmup`` untimed steps (autotuning and caches out of the way), then profiles ``--steps`` steps,
each inside ``record_function`` ranges (``swin_fused.step``, ``forward``, ``backward``, ``optimizer``), and
prints ``key_averages()`` sorted by self device time on CUDA (self CPU time on a CPU). The fused Triton
kernels appear as ``_window_attention_fwd_kernel`` / ``_window_attention_bwd_kernel``. ``--trace`` writes a
Chrome trace (open in chrome://tracing or https://ui.perfetto.dev).
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from ..backend import use_backend
from .benchmarking import device_time_us, environment, fused_unavailable_reason, progress, synchronize

__all__ = ["add_arguments", "run", "FUSED_KERNELS"]

FUSED_KERNELS = ("_window_attention_fwd_kernel", "_window_attention_bwd_kernel")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .options import add_device_options, non_negative_int, positive_int

    add_device_options(parser)
    parser.add_argument("--model", default="swin_tiny_patch4_window7_224", help="config name (default Swin-T)")
    parser.add_argument("--batch", type=positive_int, help="images per step (default: 64 on CUDA, 1 on CPU)")
    parser.add_argument("--mode", choices=["infer", "train"], default="infer")
    parser.add_argument("--backend", choices=["auto", "torch", "triton"], default="auto",
                        help="window-attention backend (auto: fused on CUDA, PyTorch on CPU)")
    parser.add_argument("--steps", type=positive_int, default=3, help="profiled steps")
    parser.add_argument("--warmup", type=non_negative_int, default=1, help="untimed steps first")
    parser.add_argument("--row-limit", type=positive_int, default=25, help="rows of the kernel table")
    parser.add_argument("--trace", metavar="PATH", help="also write a Chrome trace (JSON)")


def _sort_key(on_cuda: bool) -> str:
    from torch.autograd.profiler_util import FunctionEventAvg

    if not on_cuda:
        return "self_cpu_time_total"
    # renamed from *_cuda_* to *_device_* in torch 2.4
    return "self_device_time_total" if hasattr(FunctionEventAvg, "self_device_time_total") else "self_cuda_time_total"


def run(args: argparse.Namespace) -> int:
    from .options import CommandError, device_and_dtype
    from ..configs import create_model, model_config, resolve_model_name

    device, dtype = device_and_dtype(args)
    args.model = resolve_model_name(args.model)
    on_cuda = device.type == "cuda"
    if args.backend == "triton":
        reason = fused_unavailable_reason(device)
        if reason:
            raise CommandError(f"--backend triton cannot be profiled here: {reason}")
    batch = args.batch or (64 if on_cuda else 1)
    img = model_config(args.model)["img_size"]
    with torch.device(device):
        model = create_model(args.model)
    images = torch.randn(batch, 3, img, img, device=device)
    if args.mode == "infer":
        model = model.eval().to(dtype)
        images = images.to(dtype)
        optimizer = None
    else:
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
        target = torch.zeros(batch, dtype=torch.long, device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=args.mode == "train" and dtype != torch.float32)

    def step() -> None:
        with record_function("swin_fused.step"), use_backend(args.backend):
            if optimizer is None:
                with torch.no_grad(), record_function("forward"):
                    model(images)
                return
            with autocast, record_function("forward"):
                loss = torch.nn.functional.cross_entropy(model(images).float(), target)
            with record_function("backward"):
                loss.backward()
            with record_function("optimizer"):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

    show = not args.no_progress
    for _ in progress(range(args.warmup), desc="warmup", enabled=show):
        step()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    if not on_cuda:
        # Kineto (read at the profiler's first start) otherwise prints "gpuGetDeviceCount failed" and its
        # start/stop lines to stderr on a machine without a GPU: noise for a CPU profile. On CUDA its messages
        # (CUPTI permissions, say) matter and stay.
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=activities, record_shapes=False) as prof:
        for _ in progress(range(args.steps), desc="profile", enabled=show):
            step()
            synchronize(device)

    env = environment(device, dtype, batch)
    sort = _sort_key(on_cuda)
    print(f"{args.model}, {args.mode}, batch {batch}, {env['dtype']}, backend {args.backend} on {env['device']} "
          f"(torch {env['torch']}, triton {env['triton']}, commit {env['commit']}); {args.steps} profiled step(s), "
          f"sorted by {sort}")
    averages = prof.key_averages()
    print(averages.table(sort_by=sort, row_limit=args.row_limit))
    if on_cuda:
        found = [(e.key, device_time_us(e), e.count) for e in averages if e.key.startswith(FUSED_KERNELS)]
        if found:
            for key, us, count in found:
                print(f"fused kernel {key}: {us / 1e3:.2f} ms device time over {count} launches")
        else:
            print(f"fused kernels: none recorded (backend {args.backend}; expected {', '.join(FUSED_KERNELS)})")
    else:
        print(f"fused kernels ({', '.join(FUSED_KERNELS)}): skipped, {fused_unavailable_reason(device)}")
    if args.trace:
        prof.export_chrome_trace(args.trace)
        print(f"wrote Chrome trace {args.trace}", file=sys.stderr)
    return 0
