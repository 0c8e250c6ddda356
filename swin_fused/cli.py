"""The ``swin-fused`` command (also ``python -m swin_fused``).

Subcommands:

- ``table``: the paper's results table reproduced: params and FLOPs counted from the models, throughput
  measured on this device, beside the published numbers (the package's main job);
- ``bench``: one model's images/s, fused vs the PyTorch path, timm and torchvision (eager / compiled);
- ``profile``: torch.profiler over a few steps, per-kernel time table, optional Chrome trace;
- ``roofline``: analytic bytes and FLOPs of the fused kernels at the Swin stage shapes, against the
  device's measured copy bandwidth and matmul rate;
- ``plot``: PNG charts of a ``pytest bench/ --benchmark-json`` file.

Every subcommand runs on a CPU; what needs CUDA is reported as skipped, with the reason.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import torch

from .benchmarking import parse_dtype, resolve_device

__all__ = ["main", "build_parser", "add_device_options", "device_and_dtype", "CommandError"]


class CommandError(Exception):
    """A subcommand cannot do what was asked; ``main`` prints the message and exits with status 2."""


def add_device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:1 ...")
    parser.add_argument("--dtype", default="auto",
                        help="auto (bf16 on CUDA, fp32 on CPU), fp32, fp16, bf16")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def device_and_dtype(args: argparse.Namespace):
    """``(device, dtype)`` from ``--device`` / ``--dtype`` (clear errors for bad values)."""
    device = resolve_device(args.device)
    if args.dtype == "auto":
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    else:
        dtype = parse_dtype(args.dtype)
    if dtype == torch.float64:
        raise ValueError("fp64 is not a benchmark dtype: the fused kernels take fp32, fp16 and bf16")
    return device, dtype


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "an integer >= 0")


def build_parser() -> argparse.ArgumentParser:
    from . import compare, plots, profiling, results_table, roofline

    parser = argparse.ArgumentParser(prog="swin-fused", description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, summary in [
        ("table", results_table, "the paper's results table: params, FLOPs, measured images/s vs published"),
        ("bench", compare, "one model's throughput: fused vs PyTorch path, timm, torchvision"),
        ("profile", profiling, "torch.profiler per-kernel time table over a few steps of a model"),
        ("roofline", roofline, "bytes and FLOPs of the fused kernels vs the device's measured peaks"),
        ("plot", plots, "PNG charts from pytest-benchmark JSON"),
    ]:
        command = sub.add_parser(name, help=summary, description=(module.__doc__ or summary).strip(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(command)
        command.set_defaults(run=module.run, command_name=name)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except (ValueError, CommandError) as error:
        print(f"swin-fused {args.command_name}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
