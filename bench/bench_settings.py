"""Scope of the benchmark suites, decided once from the device (imported by conftest.py and every suite).

Importing it first also pins ``TRITON_INTERPRET=0`` (when unset) before anything imports the kernels.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "0")

import time  # noqa: E402

import torch  # noqa: E402

from swin_fused.tools.benchmarking import name_matches, resolve_device  # noqa: E402

DEVICE = resolve_device()
ON_CUDA = DEVICE.type == "cuda"
DTYPE = torch.bfloat16 if ON_CUDA else torch.float32
OP_BATCH = int(os.environ.get("SWIN_FUSED_BENCH_BATCH", 128 if ON_CUDA else 2))
#: (rounds, warmup rounds) per benchmark: enough for a stable median on a GPU, short on 2 CPU cores.
OP_ROUNDS = (20, 3) if ON_CUDA else (5, 1)
MODEL_ROUNDS = (6, 2) if ON_CUDA else (3, 1)
NO_CUDA = "needs CUDA (no GPU on this machine): the CPU run keeps to the PyTorch paths at small sizes"
#: The Swin V2 suites run on CUDA only: V2's shapes (windows 8-24 at 256-384 px) through the interpreter, or even
#: through the PyTorch paths on 2 cores, would take minutes per layer.
V2_NO_CUDA = ("Swin V2 benchmarks need a CUDA GPU: the interpreter takes minutes per V2 layer (and the PyTorch "
              "paths at V2's 64-576-token windows minutes per case on a CPU)")

BUDGET_S = float(os.environ.get("SWIN_FUSED_BENCH_BUDGET_S", "0") or 0)
START = time.monotonic()
#: Each finished benchmark is also appended here as one JSON line, so a run cut short keeps its results.
JSONL = os.environ.get("SWIN_FUSED_BENCH_JSONL", "")


def selected(name: str, variable: str, default: str = "all") -> bool:
    """Whether ``name`` passes the filter in ``$variable`` (``name_matches``: "all", "none" or substrings)."""
    return name_matches(name, os.environ.get(variable) or default)


def in_filter_order(names, variable: str, default: str = "all"):
    """``names`` that pass the filter in ``$variable`` (``default`` when unset), in the order its comma-separated
    parts name them (the order given, for a time-budgeted run that must reach the first ones), then the rest in
    their own order."""
    spec = os.environ.get(variable) or default
    parts = [p.strip() for p in spec.split(",") if p.strip()]

    def rank(name):
        return next((i for i, part in enumerate(parts) if part in name), len(parts))

    return sorted((n for n in names if name_matches(n, spec)), key=rank)
