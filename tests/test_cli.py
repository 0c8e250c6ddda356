"""The ``swin-fused`` command on a CPU: every subcommand runs, prints the expected rows, and reports the
CUDA-only parts as skipped with the reason. Also the plot/summary tools that read pytest-benchmark JSON.

Sizes are tiny (batch 1, one step) so the whole file stays well under a minute on 2 cores.
"""
import importlib.util
import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch

import swin_fused.interop
from swin_fused.tools.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU behaviour (CUDA parts reported "
                                "as skipped); on a GPU machine bench/gpu_report.sh runs every subcommand for real")


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_table_reproduces_params_and_flops(capsys, tmp_path):
    path = tmp_path / "table.json"
    code, out, _ = run_cli(capsys, "table", "--models", "swin_tiny_patch4_window7_224,swin_base_patch4_window12_384",
                           "--batch", "1", "--iters", "1", "--warmup", "0", "--no-progress", "--json", str(path))
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("swin_")}
    assert set(lines) == {"swin_tiny_patch4_window7_224", "swin_base_patch4_window12_384"}
    # counted params, then the paper's; GFLOPs counted, then the paper's; V100 img/s and top-1 from the paper
    assert lines["swin_tiny_patch4_window7_224"].split()[1:4] == ["224", "28,288,354", "28,288,354"]
    assert lines["swin_base_patch4_window12_384"].split()[1:4] == ["384", "87,903,584", "87,903,584"]
    assert "755.2" in lines["swin_tiny_patch4_window7_224"] and "84.5" in lines["swin_base_patch4_window12_384"]
    assert "WARNING" not in out
    rows = json.loads(path.read_text())["rows"]
    assert [r["params"] for r in rows] == [28_288_354, 87_903_584]
    assert all(r["images_per_s"] > 0 and r["batch"] == 1 for r in rows)
    # FLOPs counted by the official convention: the paper rounds them (Swin-B-384 counts 47.1G, printed 47.0)
    for row, paper_gflops in zip(rows, [4.5, 47.0]):
        assert abs(row["gflops"] - paper_gflops) / paper_gflops < 0.005
        assert lines[row["model"]].split()[4:6] == [f"{row['gflops']:.1f}", f"{paper_gflops:.1f}"]


def test_table_rejects_unknown_model(capsys):
    code, _, err = run_cli(capsys, "table", "--models", "swin_huge", "--no-progress")
    assert code == 2 and "swin_huge" in err and "swin_tiny_patch4_window7_224" in err


def test_bench_reports_fused_rows_as_skipped(capsys, tmp_path):
    path = tmp_path / "bench.json"
    code, out, _ = run_cli(capsys, "bench", "--batch", "1", "--iters", "1", "--warmup", "0", "--no-progress",
                           "--json", str(path))
    assert code == 0
    rows = {r["implementation"]: r for r in json.loads(path.read_text())["rows"]}
    assert rows["swin_fused fused"]["skipped"].startswith("needs CUDA")
    assert rows["timm + optimize()"]["skipped"].startswith("needs CUDA")
    assert rows["timm + optimize()"]["impl"] == "ours-optimized-timm-eager"
    assert "CUDA" in rows["timm + compile"]["skipped"]
    assert rows["swin_fused torch path"]["images_per_s"] > 0
    for baseline, module in [("timm", "timm"), ("torchvision", "torchvision")]:
        if importlib.util.find_spec(module):
            assert rows[baseline]["images_per_s"] > 0
        else:
            assert "not installed" in rows[baseline]["skipped"]
    assert "skipped: needs CUDA" in out and "swin_fused torch path" in out
    # the analytic attention work of Swin-T, one image: sum over blocks of 4 N^2 C per window (N = 49)
    expected_gflop = 4 * 49 * 49 * (64 * 96 * 2 + 16 * 192 * 2 + 4 * 384 * 6 + 1 * 768 * 2) / 1e9
    assert f"forward {expected_gflop:.2f} GFLOP" in out
    # What `bench --json` writes, `plot` reads (one format for both commands), rows named as pytest bench/ does.
    assert rows["swin_fused torch path"]["impl"] == "ours-torch_path-eager"
    if importlib.util.find_spec("matplotlib"):
        code, out, _ = run_cli(capsys, "plot", str(path), "-o", str(tmp_path / "plots"))
        assert code == 0 and out.split() == [str(tmp_path / "plots" / "model_throughput_infer.png")]


def test_bench_optimized_rows_route_every_block(monkeypatch):
    """The ``+ optimize()`` rows' model (skipped on a CPU, where they would run the fused kernels): the library's
    model, every block routed, on the backend the row names (here the PyTorch path)."""
    pytest.importorskip("timm")
    from swin_fused.tools import compare

    calls = []
    real = swin_fused.interop.optimize
    monkeypatch.setattr(swin_fused.interop, "optimize", lambda model, **kw: calls.append(kw) or real(model, **kw))
    step = compare._prepare("timm", "torch", True, None, "swin_tiny_patch4_window7_224", "infer", torch.device("cpu"),
                            torch.float32, 1, 224, 0)
    step()
    assert calls == [{"backend": "torch", "verbose": False}]


def test_bench_compares_a_v2_model_with_timm_and_torchvision(capsys, tmp_path):
    """A V2 name (torchvision's short one here) is built by every source under that library's own name."""
    path = tmp_path / "bench.json"
    code, out, _ = run_cli(capsys, "bench", "--model", "swin_v2_t", "--batch", "1", "--iters", "1", "--warmup", "0",
                           "--mode", "infer", "--compile-modes", "none", "--no-progress", "--json", str(path))
    assert code == 0
    data = json.loads(path.read_text())
    assert data["model"] == "swinv2_tiny_patch4_window8_256" and data["img_size"] == 256
    rows = {r["implementation"]: r for r in data["rows"]}
    assert rows["swin_fused torch path"]["images_per_s"] > 0
    for baseline in ("timm", "torchvision"):
        if importlib.util.find_spec(baseline):
            assert rows[baseline]["images_per_s"] > 0, rows[baseline]
    # SwinV2-T at 256, one image, windows of N = 64: per window 4 N^2 C of matmuls plus the cosine's 6 N C (the
    # norms of q and k); windows x C summed over the blocks of the four stages
    expected_gflop = (4 * 64 * 64 + 6 * 64) * (64 * 96 * 2 + 16 * 192 * 2 + 4 * 384 * 6 + 1 * 768 * 2) / 1e9
    assert f"forward {expected_gflop:.2f} GFLOP" in out


def test_profile_prints_kernel_table_and_writes_trace(capsys, tmp_path):
    from swin_fused.tools.profiling import CATEGORIES

    trace, breakdown = tmp_path / "trace.json", tmp_path / "profile.json"
    code, out, _ = run_cli(capsys, "profile", "--mode", "train", "--steps", "1", "--warmup", "0", "--row-limit", "400",
                           "--no-progress", "--trace", str(trace), "--json", str(breakdown))
    assert code == 0
    assert "sorted by self_cpu_time_total" in out
    for name in ("aten::addmm", "swin_fused.step", "forward", "backward", "optimizer"):
        assert name in out
    assert "_window_attention_fwd_kernel" in out and "skipped, needs CUDA" in out
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e.get("name") == "swin_fused.step" for e in events)
    # The category breakdown after the table, and as JSON: the CPU's self time of every op, GEMMs included.
    assert "self CPU time (every op) per step by category, 1 profiled step(s):" in out
    assert out.rstrip().splitlines()[-1].startswith("largest non-GEMM cost: ")
    data = json.loads(breakdown.read_text())
    assert (data["model"], data["mode"], data["batch"], data["dtype"], data["compile"], data["steps"]) == (
        "swin_tiny_patch4_window7_224", "train", 1, "float32", "none", 1)
    assert data["environment"]["device_type"] == "cpu" and data["environment"]["commit"]
    assert list(data["categories"]) == list(CATEGORIES)
    gemm = data["categories"]["gemm"]
    assert gemm["us_per_step"] > 0 and {t["name"] for t in gemm["top"]} & {"aten::addmm", "aten::mm", "aten::bmm"}
    assert sum(c["share_pct"] for c in data["categories"].values()) == pytest.approx(100)
    assert data["largest_non_gemm"]["category"] not in ("gemm", "other")


def test_profile_on_a_cpu_keeps_the_profilers_gpu_noise_out_of_stderr():
    """Kineto prints "gpuGetDeviceCount failed" (and its start/stop lines) on a machine without a GPU; the CPU
    profile is fine, so the user should not see that. A fresh process: Kineto reads its log level once."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    env.pop("KINETO_LOG_LEVEL", None)
    done = subprocess.run([sys.executable, "-m", "swin_fused", "profile", "--device", "cpu", "--steps", "1",
                           "--warmup", "0", "--no-progress", "--row-limit", "3"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "sorted by self_cpu_time_total" in done.stdout
    assert "gpuGetDeviceCount" not in done.stderr and "profiler_start" not in done.stderr, done.stderr


def test_profile_refuses_fused_backend_without_cuda(capsys):
    code, _, err = run_cli(capsys, "profile", "--backend", "triton", "--no-progress")
    assert code == 2 and "needs CUDA" in err


def test_roofline_counts_analytically_and_skips_measurement(capsys, tmp_path):
    path = tmp_path / "roofline.json"
    code, out, _ = run_cli(capsys, "roofline", "--shapes", "T/S s1", "--dtype", "bf16", "--no-progress",
                           "--json", str(path))
    assert code == 0
    assert "skipped, needs CUDA" in out
    data = json.loads(path.read_text())
    assert data["peaks"] is None and len(data["rows"]) == 4  # two shifts x (fwd, bwd)
    # Swin-T stage 1 at batch 128: 128*64 windows x 3 heads, N = 49, head_dim 32, bf16 (2 bytes)
    fwd_flops = 4 * 49 * 49 * 32 * 128 * 64 * 3
    qkv, out_b = 128 * 56 * 56 * 288 * 2, 128 * 56 * 56 * 96 * 2
    table, lse = 169 * 3 * 4, 128 * 64 * 3 * 49 * 4
    fwd, bwd = data["rows"][0], data["rows"][1]
    assert (fwd["direction"], bwd["direction"]) == ("fwd", "bwd")
    assert fwd["flops"] == fwd_flops and bwd["flops"] == 2.5 * fwd_flops
    assert fwd["bytes"] == qkv + out_b + table  # timed without grad: no lse
    assert bwd["bytes"] == 2 * qkv + out_b + lse + 2 * table  # no read of the output
    assert f"{fwd_flops / 1e9:.2f}" in out
    assert "kernel ms" in out and "call ms" in out


def test_roofline_shapes_filter_selects_the_union(capsys, tmp_path):
    path = tmp_path / "roofline.json"
    code, _, _ = run_cli(capsys, "roofline", "--shapes", "T/S s1, B384 s4", "--no-progress", "--json", str(path))
    assert code == 0
    shapes = list(dict.fromkeys(r["shape"] for r in json.loads(path.read_text())["rows"]))
    assert shapes == ["T/S s1 56x56 C96 h3 w7 shift0", "T/S s1 56x56 C96 h3 w7 shift3",
                      "B384 s4 12x12 C1024 h32 w12 shift0"]
    code, _, err = run_cli(capsys, "roofline", "--shapes", "nope,also nope", "--no-progress")
    assert code == 2 and "matches none of" in err


def test_profiled_time_per_call_counts_the_named_op_on_cpu():
    from swin_fused.tools.benchmarking import profiled_time_per_call

    a, b = torch.randn(256, 256), torch.randn(256, 256)
    walls = []

    def call():
        start = time.perf_counter()
        torch.mm(a, b)
        walls.append(time.perf_counter() - start)

    iters = 5
    seconds = profiled_time_per_call(call, torch.device("cpu"), iters=iters, warmup=1, name_prefix="aten::mm")
    wall = sum(walls[-iters:]) / iters  # the profiled calls, timed around the op itself
    assert len(walls) == 1 + iters
    assert math.isfinite(seconds) and 0 < seconds <= wall


def test_profiled_time_per_call_warns_when_a_call_launches_more_than_one():
    from swin_fused.tools.benchmarking import profiled_time_per_call

    a = torch.randn(8, 8)
    with pytest.warns(RuntimeWarning, match="4 'aten::mm' events over 2 calls"):
        seconds = profiled_time_per_call(lambda: (a @ a, a @ a), torch.device("cpu"), iters=2, warmup=0,
                                         name_prefix="aten::mm")
    assert seconds > 0  # still per call: both launches of a call count


def test_profiled_time_per_call_names_the_missing_kernel():
    from swin_fused.tools.benchmarking import profiled_time_per_call

    a = torch.randn(8, 8)
    with pytest.raises(RuntimeError, match=r"no cpu event named '_no_such_kernel'.*aten::mm"):
        profiled_time_per_call(lambda: a @ a, torch.device("cpu"), iters=2, warmup=0, name_prefix="_no_such_kernel")


def _synthetic_benchmark_json(path):
    def entry(kind, impl, mode, subject, median, batch):
        key = "model" if kind == "model" else "shape"
        return {"name": f"test_{kind}[{subject}-{impl}-{mode}]", "group": f"{kind} {subject} {mode}",
                "stats": {"median": median, "mean": median},
                "extra_info": {"kind": kind, "impl": impl, "mode": mode, key: subject, "batch": batch,
                               "device": "Test GPU", "dtype": "bfloat16", "torch": "9.9", "commit": "abc"}}

    tuned = entry("op", "fused", "fwd_bwd", "B384 s1", 0.02, 128)
    tuned["extra_info"]["autotune"] = {"backward": {"BLOCK: 64, DQ_IN_PASS_A: False": 0.5,
                                                    "BLOCK: 32, DQ_IN_PASS_A: True *": 0.4}}
    benchmarks = [
        tuned,
        entry("op", "fused", "fwd", "T s1 56x56", 0.001, 128),
        entry("op", "torch_path", "fwd", "T s1 56x56", 0.003, 128),
        entry("op", "reference", "fwd", "T s1 56x56", 0.004, 128),
        entry("op", "fused", "fwd", "T s4 7x7", 0.0005, 128),
        entry("op", "reference", "fwd", "T s4 7x7", 0.0010, 128),
        entry("model", "ours-fused-eager", "infer", "swin_tiny_patch4_window7_224", 0.1, 256),
        entry("model", "timm-eager", "infer", "swin_tiny_patch4_window7_224", 0.2, 256),
        entry("model", "timm-compiled", "infer", "swin_tiny_patch4_window7_224", 0.15, 256),
        {"name": "unrelated", "stats": {"median": 1.0}, "extra_info": {}},
    ]
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    return path


def test_plot_renders_pngs_from_benchmark_json(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    data = _synthetic_benchmark_json(tmp_path / "bench.json")
    code, out, _ = run_cli(capsys, "plot", str(data), "-o", str(tmp_path / "plots"))
    assert code == 0
    written = sorted(os.path.basename(p) for p in out.split())
    assert written == ["model_throughput_infer.png", "op_speedup_fwd.png"]
    for name in written:
        with open(tmp_path / "plots" / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_rejects_a_file_that_is_not_benchmark_json(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    code, _, err = run_cli(capsys, "plot", str(bad), "-o", str(tmp_path))
    assert code == 2 and "neither pytest-benchmark JSON" in err and "swin-fused bench --json" in err


def test_summarize_writes_markdown_tables(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("summarize", os.path.join(REPO, "bench", "summarize.py"))
    summarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    data = _synthetic_benchmark_json(tmp_path / "bench.json")
    assert summarize.main([str(data), "-o", str(tmp_path / "RESULTS.md")]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "| T s1 56x56 | 1.000 | 3.000 | 4.000 | 3.00x |" in text  # fused vs best other: 3 ms / 1 ms
    assert "| T s4 7x7 | 0.500 | — | 1.000 | 2.00x |" in text
    # images/s = 256 / median; the package's best against the best baseline in any mode (timm compiled, 0.15 s),
    # and its eager model against the best compiled one.
    assert ("| swin_tiny_patch4_window7_224 | 256 | 2,560.0 | 1,280.0 | 1,706.7 | 1.50x (ours-fused-eager vs "
            "timm-compiled) | 1.50x (ours-fused-eager vs timm-compiled) |") in text, text
    assert "Test GPU" in text
    # The autotuner's candidates, fastest first, each against the fastest.
    assert ("| B384 s1 fwd_bwd | backward | BLOCK: 32, DQ_IN_PASS_A: True * | 0.4000 | 1.00x |\n"
            "| B384 s1 fwd_bwd | backward | BLOCK: 64, DQ_IN_PASS_A: False | 0.5000 | 1.25x |") in text


def test_autotuned_call_reports_only_kernels_tuned_during_the_call(monkeypatch):
    """What the op benchmark records: each candidate's time for a kernel that tuned a new key during the
    call (Triton's [median, p20, p80] lists as medians), the chosen config starred; nothing for a kernel
    whose key was already cached."""
    from swin_fused.tools import benchmarking
    from swin_fused.kernels import window_attention_bwd, window_attention_fwd

    class Tuner:
        def __init__(self):
            self.cache, self.configs_timings, self.best_config = {"old": 1}, {"stale": [9.0]}, None

    fwd, bwd = Tuner(), Tuner()
    monkeypatch.setattr(window_attention_fwd, "_window_attention_fwd_autotuned", fwd)
    monkeypatch.setattr(window_attention_bwd, "_window_attention_bwd_autotuned", bwd)

    def call():  # the backward tunes a new key; the forward hits its cache
        bwd.cache["new"] = bwd.best_config = "B"
        bwd.configs_timings = {"A": [0.5, 0.4, 0.6], "B": [0.3, 0.2, 0.4]}

    assert benchmarking.autotuned_call(call) == {"backward": {"A": 0.5, "B *": 0.3}}


NCU_LOG = """==PROF== Connected to process 4242 (/usr/bin/python3.11)
==PROF== Profiling "_window_attention_fwd_kernel" - 0: 0%....50%....100% - 9 passes
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Block Size","Grid Size","Device","CC","Section Name","Metric Name","Metric Unit","Metric Value"
"0","4242","python3.11","127.0.0.1","_window_attention_fwd_kernel","1","7","(128, 1, 1)","(2048, 3, 1)","0","9.0","GPU Speed Of Light Throughput","DRAM Throughput","%","71.52"
"0","4242","python3.11","127.0.0.1","_window_attention_fwd_kernel","1","7","(128, 1, 1)","(2048, 3, 1)","0","9.0","GPU Speed Of Light Throughput","Duration","usecond","41.95"
"0","4242","python3.11","127.0.0.1","_window_attention_fwd_kernel","1","7","(128, 1, 1)","(2048, 3, 1)","0","9.0","Launch Statistics","Registers Per Thread","register/thread","98"
"0","4242","python3.11","127.0.0.1","_window_attention_fwd_kernel","1","7","(128, 1, 1)","(2048, 3, 1)","0","9.0","Occupancy","Achieved Occupancy","%","38.40"
"1","4242","python3.11","127.0.0.1","_window_attention_bwd_kernel","1","7","(256, 1, 1)","(1024, 3, 1)","0","9.0","GPU Speed Of Light Throughput","Duration","msecond","1,204.5"
"1","4242","python3.11","127.0.0.1","_window_attention_bwd_kernel","1","7","(256, 1, 1)","(1024, 3, 1)","0","9.0","Launch Statistics","Registers Per Thread","register/thread","255"
==PROF== Disconnected from process 4242
"""


def test_summarize_adds_the_nsight_compute_kernel_table(tmp_path):
    """An ``ncu --csv --page details`` log (what gpu_report.sh writes) becomes one row per kernel launch, the
    profiler's own messages skipped and missing metrics shown as dashes."""
    from swin_fused.tools.bench_results import ncu_markdown

    log = tmp_path / "ncu.csv"
    log.write_text(NCU_LOG)
    lines = ncu_markdown(str(log)).splitlines()
    assert lines[0].startswith("| launch | kernel | grid | block | duration | DRAM % |")
    assert lines[2] == ("| 0 | _window_attention_fwd_kernel | (2048, 3, 1) | (128, 1, 1) | 41.95 usecond | 71.52 | — | — "
                        "| 98 | — | 38.40 |")
    assert lines[3].startswith("| 1 | _window_attention_bwd_kernel | (1024, 3, 1) | (256, 1, 1) | 1,204.5 msecond | — |")
    assert len(lines) == 4
    spec = importlib.util.spec_from_file_location("summarize", os.path.join(REPO, "bench", "summarize.py"))
    summarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    data = _synthetic_benchmark_json(tmp_path / "bench.json")
    assert summarize.main([str(data), "--ncu", str(log), "-o", str(tmp_path / "RESULTS.md")]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Fused kernels, Nsight Compute" in text and lines[2] in text
    empty = tmp_path / "empty.csv"
    empty.write_text("==PROF== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU counters\n")
    assert "No kernel launches" in ncu_markdown(str(empty))


def test_progress_falls_back_to_stderr_without_tqdm(monkeypatch, capsys):
    from swin_fused.tools.benchmarking import progress

    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm -> ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    assert list(progress(["a", "b", "c"], desc="work")) == ["a", "b", "c"]
    err = capsys.readouterr().err
    assert "work: 1/3" in err and "work: 3/3" in err


def test_module_entry_point_lists_subcommands():
    result = subprocess.run([sys.executable, "-m", "swin_fused", "--help"], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in ("table", "bench", "profile", "roofline", "plot"):
        assert name in result.stdout


def test_no_subcommand_prints_help_and_fails(capsys):
    code, out, _ = run_cli(capsys)
    assert code == 2 and "usage: swin-fused" in out


def test_benchmark_baselines_compute_the_same_op():
    """bench/ and `swin-fused bench` time these implementations: they must all compute the reference's op."""
    from swin_fused.tools.baselines import OP_IMPLS, make_op_inputs, op_unavailable_reason
    from swin_fused.tools.costs import OpShape

    cpu = torch.device("cpu")
    assert op_unavailable_reason("fused", cpu).startswith("needs CUDA")
    assert "CUDA" in op_unavailable_reason("flex", cpu)
    for shift in [(0, 0), (3, 3)]:
        shape = OpShape("test", 14, 21, 64, 2, (7, 7), shift)
        qkv, table = make_op_inputs(shape, 2, torch.float64, cpu)
        assert qkv.shape == (2, 14, 21, 192) and table.shape == (169, 2)
        want = OP_IMPLS["reference"](qkv, table, shape)
        for impl in ("torch_path", "sdpa"):
            torch.testing.assert_close(OP_IMPLS[impl](qkv, table, shape), want, rtol=1e-12, atol=1e-12)


def test_stage_shapes_follow_the_configs():
    from swin_fused.tools.costs import benchmark_shapes, stage_shapes

    tiny = [(s.H, s.dim, s.heads, s.window, s.shift) for s in stage_shapes("swin_tiny_patch4_window7_224")]
    assert tiny == [(56, 96, 3, (7, 7), (0, 0)), (56, 96, 3, (7, 7), (3, 3)), (28, 192, 6, (7, 7), (0, 0)),
                    (28, 192, 6, (7, 7), (3, 3)), (14, 384, 12, (7, 7), (0, 0)), (14, 384, 12, (7, 7), (3, 3)),
                    (7, 768, 24, (7, 7), (0, 0))]  # stage 4: map = window, so never shifted
    b384 = stage_shapes("swin_base_patch4_window12_384")
    assert [(s.H, s.dim, s.heads) for s in b384[::2]] == [(96, 128, 4), (48, 256, 8), (24, 512, 16), (12, 1024, 32)]
    assert {s.shift for s in b384} == {(0, 0), (6, 6)} and all(s.window == (12, 12) for s in b384)
    assert len(benchmark_shapes()) == 21  # T/S, B, B-384: 7 each
