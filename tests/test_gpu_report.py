"""bench/gpu_report.sh and its helper scripts, checked without a GPU.

The report has to fit the GPU session it is written for: its default steps' time limits must add up to 6
minutes, every script it calls must exist, REPORT_STEPS must select steps, and the CUDA-only helper scripts
must say why they do nothing on a machine without CUDA instead of failing somewhere inside.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_report.sh"
OPT_IN = {"bench-compiled", "profile-compiled"}  # run only when named in REPORT_STEPS


def step_limits():
    """{step name: limit in seconds} from the script's ``step NAME LIMIT ...`` calls."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*step ([a-z0-9-]+) (\d+) ", SCRIPT.read_text(),
                                                              re.MULTILINE)}


def test_default_steps_fit_in_six_minutes():
    limits = step_limits()
    assert {"tests", "bench-op", "bench-block", "bench-models", "bench-op-v2", "bench-models-v2", "profile",
            "roofline", "table"} <= set(limits)
    default = sum(v for k, v in limits.items() if k not in OPT_IN)
    assert default <= 360, f"default step limits sum to {default} s: {limits}"


def test_opt_in_steps_are_the_ones_only_report_steps_reaches():
    """The default-time check above leaves OPT_IN out, so OPT_IN must be exactly the steps inside the
    ``if [ -n "${REPORT_STEPS:-}" ]`` blocks."""
    blocks = re.findall(r'^\s*if \[ -n "\$\{REPORT_STEPS:-\}" \]; then\n(.*?)^\s*fi$', SCRIPT.read_text(),
                        re.MULTILINE | re.DOTALL)
    gated = {name for block in blocks for name in re.findall(r"^\s*step ([a-z0-9-]+) \d+ ", block, re.MULTILINE)}
    assert gated == OPT_IN


def test_profile_steps_parse_and_write_their_breakdown():
    """Both profile steps' command lines, as the command's own parser reads them."""
    from swin_fused.tools.cli import build_parser

    text = SCRIPT.read_text().replace("\\\n", " ")
    steps = dict(re.findall(r"^\s*step (profile(?:-compiled)?) \d+ python -m swin_fused (.*)$", text, re.MULTILINE))
    parse = lambda name: build_parser().parse_args(shlex.split(steps[name].replace("$OUTDIR", "/report")))
    eager, compiled = parse("profile"), parse("profile-compiled")
    assert (eager.compile, eager.json) == ("none", "/report/profile.json")
    assert (compiled.model, compiled.mode, compiled.batch, compiled.compile, compiled.steps, compiled.json) == (
        "swin_tiny_patch4_window7_224", "train", 128, "default", 3, "/report/profile-compiled.json")
    assert compiled.warmup is None  # the compiled default: enough warm-up steps to compile outside the window


def test_every_script_the_report_calls_exists():
    text = SCRIPT.read_text()
    for path in set(re.findall(r"python (bench/[\w.]+\.py)", text)):
        assert (ROOT / path).is_file(), path
    subcommands = set(re.findall(r"python -m swin_fused (\w+)", text))
    assert subcommands == {"profile", "roofline", "table", "plot"}
    help_text = subprocess.run([sys.executable, "-m", "swin_fused", "--help"], cwd=ROOT, capture_output=True,
                               text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    for name in subcommands:
        assert name in help_text, name


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash, timeout")
def test_report_steps_selects_steps(tmp_path):
    """Only the env step runs; every other step is recorded as skipped, and the tarball holds the folder."""
    out = tmp_path / "report"
    env = {**os.environ, "REPORT_SKIP_INSTALL": "1", "REPORT_STEPS": "env", "PYTHONPATH": str(ROOT),
           "REPORT_TARBALL": str(tmp_path / "report.tar.gz")}
    subprocess.run(["bash", str(SCRIPT), str(out)], cwd=ROOT, env=env, capture_output=True, timeout=120,
                   check=True)
    steps = (out / "steps.txt").read_text().splitlines()
    assert any(re.fullmatch(r"env rc=0 \d+s", line) for line in steps), steps
    skipped = {line.split()[0] for line in steps if "skipped (not in REPORT_STEPS)" in line}
    # Not reached at all: install (REPORT_SKIP_INSTALL), summarize and plots (no benchmark ran), and ncu where
    # it is not installed. The opt-in steps are reached once REPORT_STEPS is set, and skipped unless named.
    expected = set(step_limits()) - {"env", "install", "summarize", "plots"}
    if shutil.which("ncu") is None:
        expected.discard("ncu")
    assert skipped == expected, steps
    assert "| torch" in (out / "log").read_text()
    assert (tmp_path / "report.tar.gz").stat().st_size > 0


@pytest.mark.parametrize("script", ["launch_overhead.py", "ncu_kernels.py", "sanitize_probe.py"])
def test_cuda_only_scripts_explain_themselves_without_cuda(script):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "needs a CUDA GPU" in done.stdout


def test_op_shapes_run_in_the_order_the_filter_names_them(monkeypatch):
    """The op suite stops at its time budget, so the report lists the shape it most needs (12x12) first and
    the suite must run the shapes in that order, not the configs' order."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    from bench_settings import in_filter_order

    names = ["T/S s1 56x56", "T/S s2 28x28", "B384 s1 96x96", "B s1 56x56"]
    monkeypatch.setenv("SWIN_FUSED_BENCH_SHAPES", "B384 s1,T/S s1,B s1")
    assert in_filter_order(names, "SWIN_FUSED_BENCH_SHAPES") == ["B384 s1 96x96", "T/S s1 56x56", "B s1 56x56"]
    monkeypatch.setenv("SWIN_FUSED_BENCH_SHAPES", "all")
    assert in_filter_order(names, "SWIN_FUSED_BENCH_SHAPES") == names
    # What the report asks for by default: the 12x12 stage first.
    default = re.search(r'SWIN_FUSED_BENCH_SHAPES="\$\{REPORT_OP_SHAPES:-([^}]*)\}"', SCRIPT.read_text()).group(1)
    assert default.replace("\\\n", "").startswith("B384 s1 96x96 C128 h4 w12 shift6,")
