"""Read pytest-benchmark JSON written by ``bench/`` (and Nsight Compute CSV) and turn it into Markdown tables.

Used by ``bench/summarize.py`` (tables for bench/results/ and the README) and :mod:`swin_fused.tools.plots`.
Each benchmark's ``extra_info`` (written by bench/conftest.py) says what it measured: ``kind`` (op, block,
model), ``impl``, ``mode``, ``shape`` or ``model``, ``batch``, ``dtype``, device and versions.
"""
from __future__ import annotations

import csv
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = ["Result", "load_results", "IMPL_ORDER", "pivot", "markdown_report", "autotune_markdown",
           "ncu_markdown"]

#: Column order of implementations in tables and plots; unknown ones follow in first-seen order.
IMPL_ORDER = (
    "fused", "fused_attention", "torch_path", "reference", "sdpa", "flex", "library", "timm",
    *(f"{source}-{mode}" for source in ("ours-fused", "ours-torch_path", "timm", "torchvision")
      for mode in ("eager", "compiled", "max-autotune", "reduce-overhead")),
    "ours-fused_attention-eager", "ours-optimized-timm-eager", "ours-optimized-torchvision-eager",
)


@dataclass
class Result:
    """One benchmark: what ran (kind/impl/mode/subject) and its median seconds per call."""

    kind: str
    impl: str
    mode: str
    subject: str  # op/block shape name, or model name
    median_s: float
    batch: Optional[int] = None
    extra: Dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> Optional[float]:
        return self.batch / self.median_s if self.kind == "model" and self.batch else None


_ENV_KEYS = ("device", "dtype", "torch", "triton", "cuda", "commit")


def _from_cli_bench(data: dict) -> Tuple[List[Result], Dict]:
    """The rows ``swin-fused bench --json`` writes (one model, its measured rows; skipped rows dropped)."""
    env = data.get("environment") or {}
    batch, model = env.get("batch"), data.get("model", "?")
    results = [Result("model", row.get("impl") or row.get("implementation", "?"), row.get("mode", ""), model,
                      float(row["median_s"]), batch, {**row, "batch": batch})
               for row in data["rows"] if isinstance(row, dict) and "median_s" in row]
    return results, {k: env[k] for k in _ENV_KEYS if k in env}


def load_results(path: str) -> Tuple[List[Result], Dict]:
    """``(results, environment)`` from a ``--benchmark-json`` file, the JSON-lines file bench/ appends to
    (``SWIN_FUSED_BENCH_JSONL``) or what ``swin-fused bench --json`` writes. Benchmarks without our extra_info
    are skipped; ``environment`` is the first benchmark's device/dtype/versions/commit."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as error:
        raise ValueError(f"cannot read benchmark JSON {path!r}: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:  # JSON lines: one benchmark per line
            data = {"benchmarks": [json.loads(line) for line in text.splitlines() if line.strip()]}
        except json.JSONDecodeError as error:
            raise ValueError(f"{path!r} is neither pytest-benchmark JSON nor JSON lines: {error}") from None
    if isinstance(data, dict) and isinstance(data.get("rows"), list) and "environment" in data:
        return _from_cli_bench(data)
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise ValueError(f"{path!r} is neither pytest-benchmark JSON (no 'benchmarks' list) nor what "
                         f"'swin-fused bench --json' writes (no 'rows' and 'environment')")
    results, env = [], {}
    for bench in data["benchmarks"]:
        if not isinstance(bench, dict):
            continue
        info = bench.get("extra_info") or {}
        if "kind" not in info or "stats" not in bench:
            continue
        subject = info.get("shape") or info.get("model") or bench.get("name", "?")
        if info.get("batch_kind") == "latency":  # batch 1 beside the throughput batch: rows of their own
            subject = f"{subject} (latency)"
        results.append(Result(info["kind"], info.get("impl", "?"), info.get("mode", ""), subject,
                              float(bench["stats"]["median"]), info.get("batch"), info))
        if not env:
            env = {k: info[k] for k in _ENV_KEYS if k in info}
    return results, env


def _impl_key(impl: str, seen: Sequence[str]) -> Tuple[int, int]:
    return (IMPL_ORDER.index(impl), 0) if impl in IMPL_ORDER else (len(IMPL_ORDER), list(seen).index(impl))


def pivot(results: Iterable[Result], kind: str, mode: str) -> Tuple[List[str], "OrderedDict[str, Dict[str, Result]]"]:
    """``(impls, {subject: {impl: result}})`` for one kind and mode, subjects in first-seen order."""
    table: "OrderedDict[str, Dict[str, Result]]" = OrderedDict()
    seen: List[str] = []
    for r in results:
        if r.kind != kind or r.mode != mode:
            continue
        table.setdefault(r.subject, {})[r.impl] = r
        if r.impl not in seen:
            seen.append(r.impl)
    return sorted(seen, key=lambda i: _impl_key(i, seen)), table


def _speedup_target(impls: Sequence[str]) -> Optional[str]:
    for candidate in ("fused", "ours-fused-eager", "torch_path", "ours-torch_path-eager"):
        if candidate in impls:
            return candidate
    return None


def _fastest(row: Dict[str, Result], keep) -> Optional[Result]:
    """The fastest result of ``row`` among the implementations ``keep`` accepts."""
    found = [r for impl, r in row.items() if keep(impl)]
    return min(found, key=lambda r: r.median_s) if found else None


def _versus(ours: Optional[Result], theirs: Optional[Result]) -> str:
    if ours is None or theirs is None:
        return "—"
    return f"{theirs.median_s / ours.median_s:.2f}x ({ours.impl} vs {theirs.impl})"


def _is_ours(impl: str) -> bool:
    return impl.startswith("ours-")


def _model_speedups(row: Dict[str, Result]) -> List[str]:
    """The package's fastest row against the fastest baseline whatever its mode (eager or compiled), and its
    eager model against the fastest compiled baseline (what a user who does not compile gets)."""
    ours_fused = _fastest(row, lambda i: i.startswith("ours-fused-")) or _fastest(row, _is_ours)
    baseline = _fastest(row, lambda i: not _is_ours(i))
    eager = row.get("ours-fused-eager") or row.get("ours-torch_path-eager")
    compiled_baseline = _fastest(row, lambda i: not _is_ours(i) and not i.endswith("-eager"))
    return [_versus(ours_fused, baseline), _versus(eager, compiled_baseline)]


def _markdown_table(kind: str, mode: str, results: List[Result]) -> Optional[str]:
    impls, table = pivot(results, kind, mode)
    if not table:
        return None
    model = kind == "model"
    target = None if model else _speedup_target(impls)
    unit = "images/s" if model else "ms"
    header = (["model", "batch"] if model else ["shape"]) + [f"{i} ({unit})" for i in impls]
    if model:
        header += ["best ours vs best baseline (any mode)", "ours eager vs best compiled baseline"]
    if target:
        header.append(f"{target}: speedup vs best other")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for subject, row in table.items():
        cells = [subject] + ([str(next(iter(row.values())).batch)] if model else [])
        for impl in impls:
            r = row.get(impl)
            cells.append("—" if r is None else (f"{r.images_per_s:,.1f}" if model else f"{1e3 * r.median_s:.3f}"))
        if model:
            cells += _model_speedups(row)
        if target:
            others = [r.median_s for i, r in row.items() if i != target]
            if target in row and others:
                cells.append(f"{min(others) / row[target].median_s:.2f}x")
            else:
                cells.append("—")
        lines.append("| " + " | ".join(cells) + " |")
    title = {"op": "Window-attention op", "block": "One Swin block", "model": "Whole model"}.get(kind, kind)
    if not model:
        title += f" (batch {next(iter(next(iter(table.values())).values())).batch})"
    return f"### {title}, {mode}\n\n" + "\n".join(lines)


def markdown_report(results: List[Result], env: Dict) -> str:
    """All tables of a benchmark run, with the environment that produced them."""
    parts = []
    if env:
        parts.append("Measured on " + ", ".join(f"{k} {v}" for k, v in env.items()) + ".")
    for kind in ("op", "block", "model"):
        modes = list(OrderedDict.fromkeys(r.mode for r in results if r.kind == kind))
        for mode in modes:
            table = _markdown_table(kind, mode, results)
            if table:
                parts.append(table)
    if len(parts) <= 1:
        parts.append("_No benchmark results with swin_fused extra_info in this file._")
    autotune = autotune_markdown(results)
    if autotune:
        parts.append(autotune)
    return "\n\n".join(parts) + "\n"


def autotune_markdown(results: Iterable[Result]) -> Optional[str]:
    """The autotuner's timing of every candidate config per shape and kernel, where a benchmark recorded it
    (``extra_info["autotune"]``, written by bench/test_bench_op.py; the chosen config is starred), or None."""
    rows = []
    for r in results:
        for kernel, timings in (r.extra.get("autotune") or {}).items():
            best = min(timings.values())
            for config, ms in sorted(timings.items(), key=lambda item: item[1]):
                rows.append(f"| {r.subject} {r.mode} | {kernel} | {config} | {ms:.4f} | {ms / best:.2f}x |")
    if not rows:
        return None
    return "\n".join(["Autotuner candidates (Triton's median ms per launch; * = chosen)", "",
                      "| shape | kernel | config | ms | vs best |", "|---|---|---|---|---|", *rows])


#: (column, Nsight Compute metric) of the kernel table: SpeedOfLight, LaunchStats and Occupancy sections.
NCU_COLUMNS = (
    ("duration", "Duration"),
    ("DRAM %", "DRAM Throughput"),
    ("memory %", "Memory Throughput"),
    ("SM %", "Compute (SM) Throughput"),
    ("regs/thread", "Registers Per Thread"),
    ("occupancy % (theor.)", "Theoretical Occupancy"),
    ("occupancy % (achieved)", "Achieved Occupancy"),
)


def ncu_markdown(path: str) -> str:
    """One row per profiled kernel launch of an ``ncu --csv --page details`` log (bench/ncu_kernels.py):
    duration, DRAM / memory / SM throughput as % of peak, registers and occupancy. Lines before the CSV
    header (``==PROF==`` messages) are skipped; a log without kernels says so instead of failing."""
    with open(path, newline="") as f:
        lines = [line for line in f if line.startswith('"')]
    launches: "OrderedDict[str, Dict]" = OrderedDict()
    for row in csv.DictReader(lines):
        if not row.get("ID") or "Metric Name" not in row:
            continue
        launch = launches.setdefault(row["ID"], {"kernel": row.get("Kernel Name", "?"), "metrics": {},
                                                 "grid": row.get("Grid Size", ""), "block": row.get("Block Size", "")})
        value, unit = row.get("Metric Value", ""), row.get("Metric Unit") or ""
        # Percentages and counts speak for themselves; the duration needs its unit (ns, usecond, msecond...).
        launch["metrics"][row["Metric Name"]] = f"{value} {unit}" if row["Metric Name"] == "Duration" else value
    if not launches:
        return f"No kernel launches in {path} (was ncu able to profile? see the log)."
    head = ["launch", "kernel", "grid", "block"] + [name for name, _ in NCU_COLUMNS]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for launch_id, launch in launches.items():
        cells = [launch_id, launch["kernel"], launch["grid"], launch["block"]]
        cells += [launch["metrics"].get(metric, "—") for _, metric in NCU_COLUMNS]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"
