"""``swin-fused table``: the paper's results table (Liu et al. 2021, Table 1a) reproduced on this machine.

For each configuration: parameters counted from the model, FLOPs from ``model.flops()`` (the paper's
multiply-add convention), and inference throughput measured here (images/s, ``torch.no_grad``, the model in
``--dtype``), beside the paper's values (``swin_fused.PAPER_TABLE``: V100 images/s, ImageNet top-1).
On a CPU the defaults are batch 1, one warm-up and one timed forward per config: all six take well under
a minute on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List

import torch

from .benchmarking import environment, format_table, inference_step, progress, time_calls

__all__ = ["add_arguments", "run", "measure_table"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .options import add_device_options, non_negative_int, positive_int

    add_device_options(parser)
    parser.add_argument("--batch", type=positive_int, help="images per forward (default: 64 on CUDA, 1 on CPU)")
    parser.add_argument("--iters", type=positive_int, help="timed forwards per config (default: 20 on CUDA, 1 on CPU)")
    parser.add_argument("--warmup", type=non_negative_int,
                        help="untimed forwards first (default: 5 on CUDA, 1 on CPU)")
    parser.add_argument("--models", default="all",
                        help="comma-separated config names (default: all six of the paper's table)")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "triton"],
                        help="window-attention backend (auto: fused on CUDA, PyTorch on CPU)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the environment as JSON")


def _models(spec: str) -> List[str]:
    from ..configs import MODEL_CONFIGS, list_models, resolve_model_name

    if spec == "all":
        return list_models()
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ValueError(f"no model names in {spec!r}; expected 'all' or names from {', '.join(MODEL_CONFIGS)}")
    return [resolve_model_name(n) for n in names]


def measure_table(names: List[str], device: torch.device, dtype: torch.dtype, batch: int, iters: int, warmup: int,
                  backend: str = "auto", show_progress: bool = True) -> List[dict]:
    """One row per config: counted params, FLOPs, measured images/s, and the paper's numbers."""
    from ..configs import PAPER_TABLE, create_model, model_config

    rows = []
    bar = progress(names, desc="swin-fused table", enabled=show_progress)
    for name in bar:
        if hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(name)
        img = model_config(name)["img_size"]
        with torch.device(device):  # initialise on the device: fast on GPUs
            model = create_model(name)
        params = sum(p.numel() for p in model.parameters())
        flops = model.flops()
        model = model.eval().to(dtype)
        images = torch.randn(batch, 3, img, img, device=device, dtype=dtype)
        timing = time_calls(inference_step(model, images, backend=backend), device, iters=iters, warmup=warmup)
        paper = PAPER_TABLE[name]
        rows.append({
            "model": name, "img_size": img, "params": params, "paper_params": paper.params,
            "gflops": flops / 1e9, "paper_gflops": paper.gflops, "images_per_s": timing.per_second(batch),
            "paper_v100_images_per_s": paper.v100_img_s, "paper_top1": paper.top1,
            "batch": batch, "iters": iters, "median_s": timing.median,
        })
        del model, images
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def render(rows: List[dict], env: dict, backend: str) -> str:
    headers = ["model", "img", "params", "paper params", "GFLOPs", "paper GFLOPs", "img/s (here)",
               "paper img/s (V100)", "paper top-1"]
    body = [[r["model"], r["img_size"], f"{r['params']:,}",
             "—" if r["paper_params"] is None else f"{r['paper_params']:,}", f"{r['gflops']:.1f}",
             f"{r['paper_gflops']:.1f}", f"{r['images_per_s']:,.1f}",
             "—" if r["paper_v100_images_per_s"] is None else f"{r['paper_v100_images_per_s']:.1f}",
             r["paper_top1"]] for r in rows]
    first = rows[0] if rows else {}
    note = (f"\nimg/s (here): {env['device']}, {env['dtype']}, batch {first.get('batch')}, median of "
            f"{first.get('iters')} timed forward(s), backend {backend}; torch {env['torch']}, triton "
            f"{env['triton']}, commit {env['commit']}.\nPaper: V100 throughput (batch 64); top-1 on ImageNet-1K "
            f"(22K: pre-trained on ImageNet-22K). Top-1 needs the released weights and ImageNet: not measured.")
    mismatched = [r["model"] for r in rows if r["paper_params"] is not None and r["params"] != r["paper_params"]]
    if mismatched:
        note += f"\nWARNING: parameter count differs from the paper for {', '.join(mismatched)}."
    return format_table(headers, body) + note


def run(args: argparse.Namespace) -> int:
    from .options import device_and_dtype

    device, dtype = device_and_dtype(args)
    on_cuda = device.type == "cuda"
    batch = args.batch or (64 if on_cuda else 1)
    iters = args.iters or (20 if on_cuda else 1)
    warmup = args.warmup if args.warmup is not None else (5 if on_cuda else 1)
    names = _models(args.models)
    env = environment(device, dtype, batch)
    rows = measure_table(names, device, dtype, batch, iters, warmup, args.backend, not args.no_progress)
    print(render(rows, env, args.backend))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "backend": args.backend, "rows": rows}, f, indent=2)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
