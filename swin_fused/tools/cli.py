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

from .options import CommandError

__all__ = ["main", "build_parser"]


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
