"""Every kernel variant compiles for real NVIDIA targets (sm_90 H100, sm_80 A100, sm_89), without a GPU.

The interpreter does not compile anything; this runs Triton's full pipeline down to cubin with the ptxas in
the Triton wheel (tests/aot_compile.py, in its own process because kernels compile only with
TRITON_INTERPRET=0) and checks shared memory against each target's limit. It caught a kernel that passed
every interpreter test yet could not compile (non-constexpr globals).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import swin_fused

triton = pytest.importorskip("triton")
PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"


#: (--kernels, --arch, a line the report must hold): each set is its own test, so the suite's workers compile
#: them side by side and each reports as it finishes (one run of everything took ~4 minutes on CI's CPU).
SETS = [
    ("fwd", ["90", "80"], "sm_90 fwd w16x16 fp16"),
    ("bwd", ["90", "80"], "sm_90 bwd w12x12 bf16 BLOCK16 warps8 keys-resident BLOCK_N256"),
    ("wide", ["89"], "sm_89 bwd w7x7 fp16 d128"),  # wide heads fit 99 KB of shared memory
    ("cosine", ["90", "80"], "sm_90 bwd w24x24 bf16 d32 cosine"),  # Swin V2, windows up to 24x24
    ("norm", ["90", "80"], "sm_90 layer_norm bwd C4096 fp32 dy bf16"),  # the fused LayerNorm, every width
]


@pytest.mark.skipif(not PTXAS.exists(), reason=f"Triton's NVIDIA backend (ptxas) is not installed: {PTXAS}")
@pytest.mark.parametrize("kernels, arch, expected", SETS, ids=[s[0] for s in SETS])
def test_every_kernel_variant_compiles_for_sm90_and_sm80(tmp_path, kernels, arch, expected):
    # A cold cache, so every variant really compiles; the swin_fused this test session imported.
    package_root = str(Path(swin_fused.__file__).resolve().parent.parent)
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(tmp_path),
               PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    script = Path(__file__).with_name("aot_compile.py")
    done = subprocess.run([sys.executable, str(script), "--kernels", kernels, "--arch", *arch], env=env,
                          capture_output=True, text=True, timeout=900)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-4000:]
    assert " 0 failures" in report and expected in report, report[-2000:]
