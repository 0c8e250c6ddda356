"""PNG charts of a benchmark run: ``python -m swin_fused.tools.plots bench.json [...] -o outdir`` (``swin-fused plot``).

- ``op_speedup_<mode>.png`` / ``block_speedup_<mode>.png``: per shape, how many times faster the fused op
  is than each baseline (the PyTorch path stands in for it when no fused results exist, e.g. on a CPU);
- ``model_throughput_<mode>.png``: images/s of every implementation per model.

Needs matplotlib (the ``plot`` extra).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

from .bench_results import Result, load_results, pivot

__all__ = ["render", "main"]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("plotting needs matplotlib: pip install 'swin-fused[plot]'") from None
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _grouped_bars(plt, groups: Sequence[str], series: "dict[str, list]", ylabel: str, title: str, path: str,
                  baseline: Optional[float] = None, value_format: str = "{:.2f}") -> str:
    """One group of bars per ``groups`` entry, each labelled with its value; the legend sits outside the axes,
    so it never hides a bar."""
    n = max(1, len(series))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) * (1 + 0.3 * n)) + 2.5, 4.5))
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (n - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(xs, [v if v is not None else 0 for v in values], width, label=name)
        ax.bar_label(bars, labels=[value_format.format(v) if v is not None else "" for v in values], fontsize=7,
                     rotation=90 if n * len(groups) > 8 else 0, padding=2)
    if baseline is not None:
        ax.axhline(baseline, color="black", linewidth=0.8, linestyle="--")
    ax.margins(y=0.18)  # room above the tallest bar for its label
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _speedup_chart(plt, results: List[Result], kind: str, mode: str, outdir: str, subtitle: str) -> Optional[str]:
    impls, table = pivot(results, kind, mode)
    target = next((t for t in ("fused", "torch_path") if t in impls), None)
    others = [i for i in impls if i != target]
    if target is None or not others:
        return None
    shapes = [s for s, row in table.items() if target in row]
    series = {f"vs {o}": [table[s][o].median_s / table[s][target].median_s if o in table[s] else None
                          for s in shapes] for o in others}
    return _grouped_bars(plt, shapes, series, f"speedup of {target} (x)", f"{kind} {mode}: {target} vs baselines"
                         f"{subtitle}", os.path.join(outdir, f"{kind}_speedup_{mode}.png"), baseline=1.0)


def _throughput_chart(plt, results: List[Result], mode: str, outdir: str, subtitle: str) -> Optional[str]:
    impls, table = pivot(results, "model", mode)
    if not table:
        return None
    models = list(table)
    series = {i: [table[m][i].images_per_s if i in table[m] else None for m in models] for i in impls}
    labels = [f"{m}\nbatch {next(iter(table[m].values())).batch}" for m in models]
    return _grouped_bars(plt, labels, series, "images/s", f"model {mode} throughput{subtitle}",
                         os.path.join(outdir, f"model_throughput_{mode}.png"), value_format="{:,.0f}")


def render(json_paths: Sequence[str], outdir: str) -> List[str]:
    """Write the charts of the benchmark files into ``outdir``; return their paths (empty if nothing to plot)."""
    results: List[Result] = []
    env: dict = {}
    for path in [json_paths] if isinstance(json_paths, str) else json_paths:
        more, more_env = load_results(path)
        results += more
        env = env or more_env
    plt = _pyplot()
    os.makedirs(outdir, exist_ok=True)
    subtitle = f"\n{env.get('device', '?')}, {env.get('dtype', '?')}, torch {env.get('torch', '?')}" if env else ""
    paths = []
    for kind in ("op", "block"):
        for mode in dict.fromkeys(r.mode for r in results if r.kind == kind):
            paths.append(_speedup_chart(plt, results, kind, mode, outdir, subtitle))
    for mode in dict.fromkeys(r.mode for r in results if r.kind == "model"):
        paths.append(_throughput_chart(plt, results, mode, outdir, subtitle))
    return [p for p in paths if p]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("json", nargs="+", help="pytest-benchmark JSON (pytest bench/ --benchmark-json=FILE), "
                                                "the JSON lines of SWIN_FUSED_BENCH_JSONL or what 'swin-fused bench "
                                                "--json' writes; several are merged")
    parser.add_argument("-o", "--outdir", default="bench-plots", help="folder for the PNG files")


def run(args: argparse.Namespace) -> int:
    try:
        paths = render(args.json, args.outdir)
    except (RuntimeError, ValueError) as error:
        print(f"swin-fused plot: {error}", file=sys.stderr)
        return 2
    if not paths:
        print(f"no op/block/model benchmarks with swin_fused extra_info in {', '.join(args.json)}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swin_fused.tools.plots", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
