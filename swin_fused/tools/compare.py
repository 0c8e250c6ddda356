"""``swin-fused bench``: one model's throughput, the fused kernels against every baseline installed here.

Rows: the package's model on the fused backend and on its PyTorch backend, timm's and torchvision's
models, and those two after ``swin_fused.optimize(model, backend="triton")``; each eager and, on CUDA,
``torch.compile``-d in the modes of ``--compile-modes`` (default, max-autotune, reduce-overhead). The speedup
columns name the fastest baseline (timm or torchvision as the library builds it), eager or compiled. All rows are
built and warmed up first, then timed in interleaved rounds (median per row), so the comparison holds on a machine
shared with other work. Inference is ``torch.no_grad`` with the model in ``--dtype``; a training step is forward +
cross-entropy + backward + SGD, fp32 weights under autocast.
Rows that cannot run here say why ("skipped: needs CUDA"). The header gives the model's analytic
window-attention work (:mod:`swin_fused.tools.costs`) so a row's time can be read against it.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from typing import Dict, List, Optional

import torch

from .benchmarking import (
    environment,
    format_table,
    fused_unavailable_reason,
    impl_id,
    inference_step,
    progress,
    synchronize,
    time_calls,
    training_step,
)

__all__ = ["add_arguments", "run", "ROWS"]

#: (label, source, backend, after swin_fused.optimize): every row eager, and compiled in each --compile-modes mode
SOURCES = [
    ("swin_fused fused", "ours", "triton", False),
    ("swin_fused torch path", "ours", "torch", False),
    ("timm", "timm", None, False),
    ("torchvision", "torchvision", None, False),
    ("timm + optimize()", "timm", "triton", True),
    ("torchvision + optimize()", "torchvision", "triton", True),
]
COMPILE_MODES = ("default", "max-autotune", "reduce-overhead")


def rows(modes):
    """``(label, source, backend, optimized, compile mode or None)`` of every row, eager ones first."""
    out = [(label, source, backend, optimized, None) for label, source, backend, optimized in SOURCES]
    for mode in modes:
        out += [(f"{label} + compile" + ("" if mode == "default" else f" ({mode})"), source, backend, optimized,
                 mode) for label, source, backend, optimized in SOURCES]
    return out


ROWS = rows(COMPILE_MODES)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .options import add_device_options, non_negative_int, positive_int

    add_device_options(parser)
    parser.add_argument("--model", default="swin_tiny_patch4_window7_224", help="config name (default Swin-T)")
    parser.add_argument("--batch", type=positive_int, help="images per step (default: 128 on CUDA, 2 on CPU)")
    parser.add_argument("--img-size", type=positive_int, help="image side (default: the config's)")
    parser.add_argument("--mode", choices=["infer", "train", "both"], default="infer")
    parser.add_argument("--iters", type=positive_int, help="timed steps (default: 20 on CUDA, 3 on CPU)")
    parser.add_argument("--warmup", type=non_negative_int, help="untimed steps first (default: 5 CUDA, 1 CPU)")
    parser.add_argument("--compile-modes", default=",".join(COMPILE_MODES),
                        help=f"torch.compile modes of the compiled rows, comma-separated, or 'none' (default: "
                             f"{','.join(COMPILE_MODES)}; CUDA only)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the environment as JSON")


def _modes(spec: str):
    if spec.strip().lower() == "none":
        return ()
    modes = tuple(m.strip() for m in spec.split(",") if m.strip())
    unknown = [m for m in modes if m not in COMPILE_MODES]
    if unknown:
        raise ValueError(f"unknown compile mode(s) {', '.join(unknown)}; expected some of "
                         f"{', '.join(COMPILE_MODES)} or 'none'")
    return modes


def _skip_reason(source: str, backend: Optional[str], compiled: bool, name: str,
                 device: torch.device) -> Optional[str]:
    from .baselines import model_unavailable_reason

    if backend == "triton":
        reason = fused_unavailable_reason(device)
        if reason:
            return reason
    if compiled and device.type != "cuda":
        return "torch.compile rows run on CUDA only"
    return model_unavailable_reason(source, name)


def _prepare(source, backend, optimized, compiled, name, mode, device, dtype, batch, img, warmup):
    """Build the model (``optimized``: then ``swin_fused.optimize`` it) and its step; run the warm-up (compilation,
    autotuning) outside any timing."""
    from .baselines import build_model

    model = build_model(source, name, device)
    if optimized:
        from ..interop import optimize

        report = optimize(model, backend=backend, verbose=False)
        if report.left_alone or not report.patched:
            raise RuntimeError(f"optimize() did not route every block: {report}")
    images = torch.randn(batch, 3, img, img, device=device)
    if mode == "infer":
        step = inference_step(model.eval().to(dtype), images.to(dtype), backend=backend, compile=compiled)
    else:
        step = training_step(model, images, dtype, backend=backend, compile=compiled)
    for _ in range(max(warmup, 1)):  # at least one call: a model that fails at this size is a row, not a crash
        step()
    synchronize(device)
    return step


def run(args: argparse.Namespace) -> int:
    from .options import device_and_dtype
    from ..configs import model_config, resolve_model_name

    device, dtype = device_and_dtype(args)
    args.model = resolve_model_name(args.model)
    on_cuda = device.type == "cuda"
    batch = args.batch or (128 if on_cuda else 2)
    iters = args.iters or (20 if on_cuda else 3)
    warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)
    img = args.img_size or model_config(args.model)["img_size"]
    modes = ["infer", "train"] if args.mode == "both" else [args.mode]
    compile_modes = _modes(args.compile_modes)
    show = not args.no_progress

    results: List[dict] = []
    steps = {}  # index in results -> step()
    for (label, source, backend, optimized, compiled), mode in progress(
            [(r, m) for m in modes for r in rows(compile_modes)], desc="build + warm up", enabled=show):
        entry = {"implementation": label, "impl": impl_id(source, backend, compiled, optimized), "mode": mode,
                 "source": source, "backend": backend, "optimized": optimized, "compiled": compiled or False}
        reason = _skip_reason(source, backend, compiled, args.model, device)
        if not reason:
            try:
                steps[len(results)] = _prepare(source, backend, optimized, compiled, args.model, mode, device, dtype,
                                               batch, img, warmup)
            except Exception as error:  # noqa: BLE001 - a baseline failing (timm at another size) is a row
                reason = f"failed: {type(error).__name__}: {str(error)[:160]}"
        results.append({**entry, "skipped": reason} if reason else entry)

    # Interleaved rounds, each implementation once per round in a shuffled order: on a shared machine a burst
    # of load then hits every row alike instead of whichever happened to run during it.
    times: Dict[int, List[float]] = {i: [] for i in steps}
    order = random.Random(0)
    for _ in progress(range(iters), desc="timed rounds", enabled=show):
        for i in order.sample(list(steps), len(steps)):
            times[i] += time_calls(steps[i], device, iters=1, warmup=0).times
    for i, seconds in times.items():
        median = statistics.median(seconds)
        results[i].update(median_s=median, images_per_s=batch / median)

    env = environment(device, dtype, batch)
    print(_render(results, args.model, img, batch, dtype, env))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "model": args.model, "img_size": img, "rows": results}, f, indent=2)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _render(results: List[dict], name: str, img: int, batch: int, dtype: torch.dtype, env: dict) -> str:
    from .costs import model_attention_cost

    fwd = model_attention_cost(name, batch, dtype, img)
    bwd = model_attention_cost(name, batch, dtype, img, backward=True)
    lines = [f"{name} at {img}x{img}, batch {batch}, {env['dtype']} on {env['device']} (torch {env['torch']}, "
             f"triton {env['triton']}, commit {env['commit']})",
             f"window attention per step (analytic, fused): forward {fwd.flops / 1e9:.2f} GFLOP / "
             f"{fwd.bytes / 1e6:.1f} MB; backward {bwd.flops / 1e9:.2f} GFLOP / {bwd.bytes / 1e6:.1f} MB", ""]
    headers = ["implementation", "mode", "images/s", "ms/step", "vs torch path", "vs best baseline", "note"]
    table = []
    for r in results:
        if "skipped" in r:
            table.append([r["implementation"], r["mode"], "—", "—", "—", "—", f"skipped: {r['skipped']}"])
            continue
        same_mode = [b for b in results if b["mode"] == r["mode"] and "median_s" in b]
        base = next((b for b in same_mode if b["implementation"] == "swin_fused torch path"), None)
        # The fastest timm / torchvision row, eager or compiled: what a user who picks the best of them gets.
        best = min((b for b in same_mode if b["source"] != "ours" and not b["optimized"]),
                   key=lambda b: b["median_s"], default=None)
        speedup = f"{base['median_s'] / r['median_s']:.2f}x" if base else "—"
        versus = f"{best['median_s'] / r['median_s']:.2f}x ({best['implementation']})" if best else "—"
        table.append([r["implementation"], r["mode"], f"{r['images_per_s']:,.1f}", f"{1e3 * r['median_s']:.1f}",
                      speedup, versus, ""])
    return "\n".join(lines) + format_table(headers, table)
