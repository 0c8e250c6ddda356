#!/usr/bin/env bash
# One prepared command for a GPU machine: environment, the test suite on CUDA, op/block/model benchmarks,
# profile, roofline and the results table, then Markdown + PNG summaries, all written into one folder.
#
#   bench/gpu_report.sh [OUTDIR]        # default: $OUT, else ./gpu-report-<date>
#
# Bounded: every step has its own `timeout` (which signals the step's whole process group), and the limits add
# up to 6 minutes (REPORT_SCALE=2 doubles them). Benchmarks also stop themselves before their limit
# (SWIN_FUSED_BENCH_BUDGET_S) and append each result to bench.jsonl as they go, so a step cut short still leaves
# its numbers. A failing step is recorded in steps.txt and the report goes on. REPORT_STEPS=a,b,... runs only
# the named steps (and enables bench-compiled and profile-compiled, the torch.compile rows and the compiled
# training step's profile, which do not fit in the 6 minutes);
# REPORT_OP_SHAPES=all benchmarks the op at every stage shape. REPORT_TARBALL=PATH packs the folder into one
# file at the end. Works offline: the package is installed with --no-deps (REPORT_SKIP_INSTALL=1 skips that,
# for an environment that already has it).
set -u -o pipefail

OUTDIR="${1:-${OUT:-./gpu-report-$(date +%Y%m%d-%H%M%S)}}"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
export SWIN_FUSED_BENCH_JSONL="$OUTDIR/bench.jsonl"
SCALE="${REPORT_SCALE:-1}"
: > "$OUTDIR/steps.txt"

step() {  # step NAME LIMIT_S COMMAND...: run with a hard time limit, log rc and duration
    local name=$1 limit=$(( $2 * SCALE )); shift 2
    if [ -n "${REPORT_STEPS:-}" ] && [[ ",$REPORT_STEPS," != *",$name,"* ]]; then
        echo "$name skipped (not in REPORT_STEPS)" >> "$OUTDIR/steps.txt"; return 0
    fi
    local start=$SECONDS
    echo "=== [$name] (limit ${limit}s) $*"
    timeout --kill-after=5 "$limit" "$@"
    local rc=$?
    echo "=== [$name] rc=$rc in $(( SECONDS - start ))s"
    echo "$name rc=$rc $(( SECONDS - start ))s" >> "$OUTDIR/steps.txt"
}

{
    echo "swin_fused GPU report -> $OUTDIR ($(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown))"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"

    if [ -z "${REPORT_SKIP_INSTALL:-}" ]; then
        step install 8 python -m pip install --no-deps --no-build-isolation -q -e .
    fi
    step env 10 python -c "
import torch, triton
from importlib.metadata import version
print('gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else 'NONE', '| torch', torch.__version__,
      '| cuda', torch.version.cuda, '| triton', triton.__version__)
for m in ('timm', 'torchvision', 'pytest-benchmark', 'hypothesis', 'matplotlib', 'numpy'):
    try: print(m, version(m))  # metadata only: importing timm cold takes seconds
    except Exception as e: print(m, 'unavailable:', e)
"
    # The kernel tests with real kernels (conftest keeps TRITON_INTERPRET=0 on a GPU machine; one config per window
    # size, so the time goes to compiling each variant once, not to autotuning), the GPU-only tests (-m cuda) and,
    # where compute-sanitizer is installed, memcheck and racecheck over bench/sanitize_probe.py, all as parallel
    # processes, with direct launches on (SWIN_FUSED_DIRECT_LAUNCH=1, off by default until this step has passed on a
    # GPU: every second call of a launch class in the kernel tests is a direct one). Compiling ~100 kernel variants
    # is the cost, and Triton compiles one at a time per process. The kernel tests are sharded by test id over
    # REPORT_TEST_JOBS processes. Each process logs to its own file (kept if the step is cut short). The rest of the
    # suite is device-independent and runs in CI.
    step tests 85 env SWIN_FUSED_AUTOTUNE=0 SWIN_FUSED_DIRECT_LAUNCH=1 OUTDIR="$OUTDIR" \
        JOBS="${REPORT_TEST_JOBS:-12}" bash -c '
        mkdir -p "$OUTDIR/tests"
        pytest_args=(-q -rfE --tb=short -p no:cacheprovider)
        pids=()
        python -m pytest tests -m cuda "${pytest_args[@]}" --junitxml="$OUTDIR/tests/cuda.xml" \
            > "$OUTDIR/tests/cuda.log" 2>&1 &
        pids+=($!)
        if command -v compute-sanitizer >/dev/null 2>&1; then
            for tool in memcheck racecheck; do
                compute-sanitizer --tool "$tool" --print-limit 20 python bench/sanitize_probe.py \
                    > "$OUTDIR/tests/sanitizer-$tool.log" 2>&1 &
                pids+=($!)
            done
        fi
        python -m pytest --collect-only -q -p no:cacheprovider tests/test_fused_forward.py \
            tests/test_fused_backward.py tests/test_training.py tests/test_dispatch.py tests/test_layer_norm.py \
            tests/test_optimize_norms.py tests/test_launch_plans.py | grep "::" > "$OUTDIR/tests/ids"
        split -n "r/$JOBS" -d "$OUTDIR/tests/ids" "$OUTDIR/tests/shard-"
        for shard in "$OUTDIR"/tests/shard-??; do
            [ -s "$shard" ] || continue
            xargs -a "$shard" python -m pytest "${pytest_args[@]}" --junitxml="$shard.xml" > "$shard.log" 2>&1 &
            pids+=($!)
        done
        rc=0
        for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
        tail -n 4 "$OUTDIR"/tests/*.log
        exit $rc'

    # One block per Swin-T stage (fused, PyTorch path, timm), then the op at the shifted stage shapes of Swin-T/S,
    # Swin-B stage 1 and Swin-B-384 stage 1 (batch 128 bf16), fused vs PyTorch path vs reference vs SDPA, and
    # FlexAttention at Swin-T stage 1 only (it compiles per shape). Every shape: REPORT_OP_SHAPES=all (needs
    # about 3 minutes more). Each suite stops itself at its budget, a few seconds inside the step's limit, so
    # the op runs its shapes in the order listed: 12x12 first (the keys-resident backward to be measured).
    step bench-block 16 env SWIN_FUSED_BENCH_BUDGET_S=12 \
        python -m pytest bench/test_bench_block.py --benchmark-only -q -p no:cacheprovider \
        --benchmark-json="$OUTDIR/bench-block.json"
    step bench-op 45 env SWIN_FUSED_BENCH_BUDGET_S=38 SWIN_FUSED_BENCH_FLEX="T/S s1 56x56 C96 h3 w7 shift3" \
        SWIN_FUSED_BENCH_SHAPES="${REPORT_OP_SHAPES:-B384 s1 96x96 C128 h4 w12 shift6,T/S s1 56x56 C96 h3 w7 shift3,\
T/S s3 14x14 C384 h12 w7 shift3,B s1 56x56 C128 h4 w7 shift3,T/S s2 28x28 C192 h6 w7 shift3,T/S s4}" \
        python -m pytest bench/test_bench_op.py --benchmark-only -q -p no:cacheprovider \
        --benchmark-json="$OUTDIR/bench-op.json"
    # Whole models, eager: fused vs PyTorch path vs timm vs torchvision, inference and training step.
    step bench-models 60 env SWIN_FUSED_BENCH_BUDGET_S=52 \
        python -m pytest bench/test_bench_models.py -k "eager" --benchmark-only -q -p no:cacheprovider \
        --benchmark-json="$OUTDIR/bench-models.json"
    # Swin V2: the cosine-attention op at window 16 (SwinV2-T/S stage 1, the 3x target), 24 (SwinV2-B-384) and 8,
    # fused vs the libraries' own V2 math vs SDPA vs the PyTorch path; then SwinV2-T (timm, window 8 and 16;
    # torchvision swin_v2_t) eager: the library's model, it after optimize(), the drop-in.
    step bench-op-v2 22 env SWIN_FUSED_BENCH_BUDGET_S=18 SWIN_FUSED_BENCH_V2_SHAPES="V2-T/S s1 64x64 C96 h3 w16,\
V2-B384 s1 96x96 C128 h4 w24,V2-T/S s1 64x64 C96 h3 w8,V2-T/S s3" \
        python -m pytest bench/test_bench_op_v2.py --benchmark-only -q -p no:cacheprovider \
        --benchmark-json="$OUTDIR/bench-op-v2.json"
    step bench-models-v2 32 env SWIN_FUSED_BENCH_BUDGET_S=27 \
        python -m pytest bench/test_bench_models_v2.py -k "eager" --benchmark-only -q -p no:cacheprovider \
        --benchmark-json="$OUTDIR/bench-models-v2.json"
    # torch.compile rows (default and max-autotune at the throughput batch, reduce-overhead at batch 1), Swin-T,
    # then the compiled training step profiled (batch 128, its bench batch: two warm-up steps compile it first):
    # time by category and the "largest non-GEMM cost" line, what the next fusion should target. Not in the 6
    # minutes: each compile takes 30 s or more on a fresh machine (max-autotune minutes). Run them with
    # REPORT_STEPS=bench-compiled,profile-compiled,summarize on a warm machine.
    if [ -n "${REPORT_STEPS:-}" ]; then
        step bench-compiled 120 env SWIN_FUSED_BENCH_BUDGET_S=100 SWIN_FUSED_BENCH_MODELS=tiny \
            python -m pytest bench/test_bench_models.py -k "compiled or max-autotune or reduce-overhead" \
            --benchmark-only -q -p no:cacheprovider \
            --benchmark-json="$OUTDIR/bench-compiled.json"
        step profile-compiled 150 python -m swin_fused profile --model swin_tiny_patch4_window7_224 --mode train \
            --batch 128 --compile default --steps 3 --no-progress --json "$OUTDIR/profile-compiled.json"
    fi

    # Nsight Compute on the fused kernels alone (bench/ncu_kernels.py brackets one forward + backward per shape in
    # a profiler range): registers, spills, achieved occupancy, DRAM and SM throughput as launched. The heuristic
    # configs (SWIN_FUSED_AUTOTUNE=0), mostly compiled by the test step already, so the limit goes to profiling.
    if command -v ncu >/dev/null 2>&1; then
        step ncu 16 env SWIN_FUSED_AUTOTUNE=0 \
            ncu --profile-from-start off --kernel-name regex:_window_attention_ --csv --page details \
            --section SpeedOfLight --section Occupancy --section LaunchStats --log-file "$OUTDIR/ncu.csv" \
            python bench/ncu_kernels.py
    else
        echo "=== [ncu] skipped: ncu not on PATH"; echo "ncu skipped (not on PATH)" >> "$OUTDIR/steps.txt"
    fi

    # Host microseconds per launch: empty Triton kernels with 1 and 11 pointers, the fused launchers, the op.
    step launch-overhead 10 env SWIN_FUSED_AUTOTUNE=0 python bench/launch_overhead.py
    # The eager training step by kernel, then by category (profile.json: per step, with the environment).
    step profile 15 python -m swin_fused profile --mode train --batch 64 --steps 3 --no-progress \
        --trace "$OUTDIR/profile-trace.json" --json "$OUTDIR/profile.json"
    # Roofline of the kernels' device time at three shapes: many windows, few windows (many heads), 12 x 12.
    roof_shapes="T/S s1 56x56 C96 h3 w7 shift3,T/S s3 14x14 C384 h12 w7 shift3,B384 s1 96x96 C128 h4 w12 shift6"
    step roofline 16 python -m swin_fused roofline --iters 10 --shapes "$roof_shapes" --no-progress \
        --json "$OUTDIR/roofline.json"
    step table 12 python -m swin_fused table --iters 5 --warmup 2 --no-progress --json "$OUTDIR/table.json"

    if [ -s "$OUTDIR/bench.jsonl" ]; then
        ncu_table=()
        if [ -s "$OUTDIR/ncu.csv" ]; then ncu_table=(--ncu "$OUTDIR/ncu.csv"); fi
        step summarize 5 python bench/summarize.py "$OUTDIR/bench.jsonl" ${ncu_table[@]+"${ncu_table[@]}"} \
            -o "$OUTDIR/RESULTS.md"
        step plots 6 python -m swin_fused plot "$OUTDIR/bench.jsonl" -o "$OUTDIR/plots"
        cat "$OUTDIR/RESULTS.md" 2>/dev/null
    fi
    echo "=== steps"; cat "$OUTDIR/steps.txt"
} 2>&1 | tee "$OUTDIR/log"
if [ -n "${REPORT_TARBALL:-}" ]; then
    tar czf "$REPORT_TARBALL" -C "$(dirname "$OUTDIR")" "$(basename "$OUTDIR")" && echo "packed $OUTDIR into $REPORT_TARBALL"
fi
