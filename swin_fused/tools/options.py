"""What every ``swin-fused`` subcommand shares: the device / dtype options and their parsing, integer argument
types, and the error a subcommand raises to fail cleanly. The subcommands import these from here, never from
:mod:`.cli` (which imports the subcommands).
"""
from __future__ import annotations

import argparse

import torch

from .benchmarking import parse_dtype, resolve_device

__all__ = ["CommandError", "add_device_options", "device_and_dtype", "positive_int", "non_negative_int"]


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
