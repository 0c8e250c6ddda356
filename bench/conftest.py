"""pytest-benchmark suites of swin_fused: ``pytest bench/ --benchmark-only [--benchmark-json=out.json]``.

Scope follows the device (decided once, in bench_settings.py):

- CUDA: the op and the block at batch 128 in bf16 (the issue's setting), at every Swin-T/S, Swin-B and
  Swin-B-384 stage shape; whole models at realistic batches, eager and ``torch.compile``.
- CPU: the PyTorch paths only, at small sizes (batch 1-2, the two smallest stage shapes, Swin-T), so the
  suite finishes in about a minute on 2 cores; CUDA-only cases are skipped with the reason.

Benchmarks never run Triton's interpreter: ``TRITON_INTERPRET`` is set to 0 here when unset (the test
suite's conftest would turn it on without a GPU), and fused cases skip when it is set anyway.

Environment knobs:

- ``SWIN_FUSED_BENCH_BATCH``: op/block batch;
- ``SWIN_FUSED_BENCH_BUDGET_S``: skip the remaining cases once this many seconds have passed, so a bounded
  run still ends normally and writes its JSON;
- ``SWIN_FUSED_BENCH_JSONL``: also append every finished benchmark to this file as one JSON line (survives
  a run killed by a timeout; ``bench/summarize.py`` and ``swin_fused.tools.plots`` read it like the JSON);
- ``SWIN_FUSED_BENCH_SHAPES`` / ``SWIN_FUSED_BENCH_MODELS``: comma-separated substrings selecting op shapes
  (e.g. ``T/S,B384 s1``) / model names (e.g. ``tiny,384``); default all;
- ``SWIN_FUSED_BENCH_FLEX``: the same filter for FlexAttention, which compiles per shape (default ``T/S``;
  ``all``, ``none``).
"""
import json
import time

import pytest
import torch

from bench_settings import BUDGET_S, DEVICE, DTYPE, JSONL, NO_CUDA, ON_CUDA, START
from swin_fused.tools.benchmarking import PeakMemory, environment, synchronize


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason=NO_CUDA)
    for item in items:
        if "cuda" in item.keywords and not ON_CUDA:
            item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def _seed_and_default_backend():
    import swin_fused

    torch.manual_seed(0)
    before = swin_fused.get_backend()
    yield
    swin_fused.set_backend(before)
    if ON_CUDA:
        torch.cuda.empty_cache()


@pytest.fixture
def measure(benchmark):
    """``measure(fn, rounds=(r, w), group=..., **extra)``: time ``fn`` with the device synchronized after
    every call and record environment, peak memory and ``extra`` in ``benchmark.extra_info``.

    ``extra`` should carry ``batch`` and ``dtype``; ``images`` adds ``images_per_s`` from the median.
    """

    def run(fn, *, rounds, group, dtype=DTYPE, batch=None, **extra):
        if BUDGET_S and time.monotonic() - START > BUDGET_S:
            pytest.skip(f"time budget SWIN_FUSED_BENCH_BUDGET_S={BUDGET_S:.0f}s exhausted")
        benchmark.group = group
        benchmark.extra_info.update(environment(DEVICE, dtype, batch))
        benchmark.extra_info.update(extra)

        def call():
            fn()
            synchronize(DEVICE)

        with PeakMemory(DEVICE) as memory:
            benchmark.pedantic(call, rounds=rounds[0], warmup_rounds=rounds[1], iterations=1)
        benchmark.extra_info.update(memory.as_dict())
        stats = getattr(getattr(benchmark, "stats", None), "stats", None)
        if stats is None:
            return
        if extra.get("images"):
            benchmark.extra_info["images_per_s"] = extra["images"] / stats.median
        if JSONL:
            line = {"name": benchmark.name, "group": group, "extra_info": benchmark.extra_info,
                    "stats": {k: getattr(stats, k) for k in ("min", "max", "mean", "median", "stddev", "rounds")}}
            with open(JSONL, "a") as f:
                f.write(json.dumps(line) + "\n")

    return run
