"""Turn pytest-benchmark JSON from bench/ into Markdown tables (for bench/results/ and the README).

    python bench/summarize.py bench.json [more.json ...] [--ncu ncu.csv] [-o bench/results/RESULTS.md]

Op and block tables give the median milliseconds per call of each implementation and the fused op's
speedup over the best other one; model tables give images/s. The environment line says which device,
dtype, versions and commit produced the numbers. ``--ncu`` adds a table of the fused kernels as Nsight Compute
measured them (bench/ncu_kernels.py, run by gpu_report.sh).
"""
import argparse
import os
import sys

try:
    from swin_fused.tools.bench_results import load_results, markdown_report, ncu_markdown
except ImportError:  # run from a source checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from swin_fused.tools.bench_results import load_results, markdown_report, ncu_markdown


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", help="pytest-benchmark JSON files (--benchmark-json)")
    parser.add_argument("--ncu", help="an `ncu --csv --page details` log of the fused kernels")
    parser.add_argument("-o", "--output", help="write the Markdown here instead of stdout")
    args = parser.parse_args(argv)
    sections = []
    for path in args.json:
        try:
            results, env = load_results(path)
        except ValueError as error:
            print(f"summarize: {error}", file=sys.stderr)
            return 2
        sections.append(f"## {path}\n\n" + markdown_report(results, env))
    if args.ncu:
        sections.append(f"## Fused kernels, Nsight Compute ({args.ncu})\n\n" + ncu_markdown(args.ncu))
    text = "\n".join(sections)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
