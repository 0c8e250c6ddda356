"""Compile every Triton kernel variant ahead of time for NVIDIA targets, on a machine without a GPU.

The interpreter proves the kernels compute the right thing but accepts code the compiler rejects (globals
that are not constexpr, dot shapes, dtype mismatches) and knows nothing of registers or shared memory. This
script runs Triton's real pipeline (TTIR -> TTGIR -> LLVM -> PTX -> cubin with the ptxas shipped in the
Triton wheel) for Hopper (sm_90, the H100) and Ampere (sm_80), for the autotune configs of the forward and
both backward paths, in every dtype, plus the non-autotuned launches at 64- and 128-lane heads for sm_89
(Ada; sm_86 has the same 99 KB of shared memory), checks each variant's shared memory against the target's
limit and reports ptxas's register and spill counts.

Run as a script (it must own its process: kernels compile only with TRITON_INTERPRET=0):

    TRITON_INTERPRET=0 python tests/aot_compile.py [--quick] [--kernels fwd bwd wide] [--arch 90 80 89]

Prints one line per variant and exits non-zero on the first failure. tests/test_aot_compile.py runs it.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402
from triton.runtime.autotuner import Autotuner  # noqa: E402

from swin_fused.kernels import layer_norm as ln  # noqa: E402
from swin_fused.kernels import window_attention_bwd as bwd  # noqa: E402
from swin_fused.kernels import window_attention_fwd as fwd  # noqa: E402
from swin_fused.kernels.launch import WindowGrid  # noqa: E402

PTXAS = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
#: Shared memory a block may use (opt-in maximum), bytes: H100, A100, and the 99 KB of sm_86/sm_89 GPUs
#: (RTX 30xx/40xx, A10, L4, L40), which the heuristic (non-autotuned) launches must fit too.
SHARED_LIMIT = {90: 227 * 1024, 80: 163 * 1024, 89: 99 * 1024}
TYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
FLOAT_SCALARS = {"qk_scale", "sm_scale"}
#: Integer arguments a launch typically specializes as divisible by 16 (row strides 3C and C, C itself, for
#: C a multiple of 16 as in every Swin config): what makes the token loads 16-byte vectors.
ALIGNED_INTS = {"qkv_row_stride", "out_row_stride", "dout_row_stride", "dqkv_row_stride", "C", "x_row_stride",
                "dy_row_stride"}
FLOAT_SCALARS = FLOAT_SCALARS | {"eps"}
#: Integer arguments that are 1 at every launch, which Triton specializes as constants: the bias table's row
#: stride (the launchers pass the table head by head, ``launch.head_major``).
UNIT_INTS = {"stride_tr"}


def compile_variant(kernel, pointers, constexprs, arch, num_warps, num_stages):
    """Compile one specialization; return the compiled kernel. ``pointers``: arg name -> element type."""
    fn = kernel.fn if isinstance(kernel, Autotuner) else kernel  # the JITFunction under the autotuner
    constexprs = {**constexprs, **{name: 1 for name in UNIT_INTS if name in fn.arg_names}}
    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = "*" + pointers[name]
            attrs[(i,)] = [["tt.divisibility", 16]]  # what a launch with allocator-aligned tensors specializes
        else:
            signature[name] = "fp32" if name in FLOAT_SCALARS else "i32"
            if name in ALIGNED_INTS:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=signature, attrs=attrs,
                    constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages})


def register_report(ptx: str, arch: int) -> str:
    """ptxas's verdict on registers and spills (no assertion: spills cost speed, not correctness)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.ptx"
        path.write_text(ptx)
        done = subprocess.run([str(PTXAS), f"-arch=sm_{arch}{'a' if arch == 90 else ''}", "-v", str(path), "-o",
                               str(path.with_suffix(".cubin"))], capture_output=True, text=True)
    regs = re.search(r"Used (\d+) registers", done.stderr)
    spills = re.search(r"(\d+) bytes spill stores", done.stderr)
    return f"{regs.group(1) if regs else '?'} regs, {spills.group(1) if spills else '?'} B spilled"


def fwd_pointers(dtype) -> dict:
    """Element type of each pointer argument of the forward kernel (arg name -> Triton type)."""
    return dict(QKV=TYPE[dtype], PAD=TYPE[dtype], TABLE="fp32", COS_SCALE="fp32", OUT=TYPE[dtype], LSE="fp32")


def bwd_pointers(dtype) -> dict:
    """Element type of each pointer argument of the backward kernel."""
    return dict(fwd_pointers(dtype), DOUT=TYPE[dtype], DELTA="fp32", INV_L="fp32", DQKV=TYPE[dtype],
                DS_SCRATCH="fp32", DQ_SCRATCH="fp32", DTABLE_PARTIAL="fp32", DPAD_PARTIAL="fp32",
                DCOS_PARTIAL="fp32")


def grid(window, head_dim=32, shift=None, pad=True, timm=False, table_window=None):
    wh, ww = window
    shift = shift if shift is not None else (wh // 2, ww // 2)
    qkv = torch.empty(1, wh + (1 if pad else 0), ww, 3 * 2 * head_dim, device="meta")
    return WindowGrid.of(qkv, 2, window, shift, table_window, timm)


def forward_variants(quick):
    dtypes = [torch.float16] if quick else [torch.float16, torch.bfloat16, torch.float32]
    configs = fwd._FWD_CONFIGS
    for window in ((7, 7), (4, 4), (5, 5), (8, 8), (12, 12), (16, 16)):
        g = grid(window)
        for c in fwd._window_configs(configs, *window) if not quick else configs[3:4]:
            for dtype in dtypes if window == (7, 7) else dtypes[:1]:
                per_program = c.kwargs["WINDOWS_PER_PROGRAM"]
                yield (f"fwd w{window[0]}x{window[1]} {TYPE[dtype]} BM{c.kwargs['BLOCK_M']} BN{c.kwargs['BLOCK_N']} "
                       f"warps{c.num_warps}{f' x{per_program} windows' if per_program > 1 else ''}",
                       fwd._window_attention_fwd_kernel,
                       fwd_pointers(dtype),
                       dict(g.constexprs(dtype, True), STORE_LSE=True, **c.kwargs), c.num_warps, c.num_stages)
    g = grid((7, 7), head_dim=40, shift=(0, 0), pad=False, timm=True)  # no pad / no shift / odd head_dim path
    yield ("fwd w7x7 fp16 d40 no-pad no-shift no-lse", fwd._window_attention_fwd_kernel,
           dict(QKV="fp16", PAD="fp16", TABLE="fp32", OUT="fp16", LSE="fp16"),
           dict(g.constexprs(torch.float16, False), STORE_LSE=False, BLOCK_M=64, BLOCK_N=64, WINDOWS_PER_PROGRAM=1),
           4, 2)


def _resident(config) -> str:
    return f" keys-resident BLOCK_N{config.kwargs['BLOCK_N']}" if config.kwargs["BLOCK_N"] > config.kwargs["BLOCK"] else ""


def backward_variants(quick):
    dtypes = [torch.float16] if quick else [torch.float16, torch.bfloat16, torch.float32]
    for window in ((7, 7), (4, 4), (12, 12), (16, 16), (24, 24)) if not quick else ((7, 7), (12, 12)):
        g = grid(window)
        for dtype in dtypes:
            launches = [bwd.bwd_launch_config(window[0] * window[1], dtype, 32)]
            if dtype == torch.float16 and window[0] * window[1] > bwd.RESIDENT_KEYS and not quick:
                launches = bwd._BWD_TILED_CONFIGS  # the autotuner's candidates
            ptrs = bwd_pointers(dtype)
            for c in launches:
                dq_in_a = " dq-in-pass-A" if c.kwargs["DQ_IN_PASS_A"] else ""
                yield (f"bwd w{window[0]}x{window[1]} {TYPE[dtype]} BLOCK{c.kwargs['BLOCK']} warps{c.num_warps}"
                       f"{dq_in_a}{_resident(c)}",
                       bwd._window_attention_bwd_kernel, ptrs,
                       dict(g.constexprs(dtype, True), WINDOWS_PER_PROGRAM=8, ROWS_BLOCK=bwd.ROWS_BLOCK, **c.kwargs),
                       c.num_warps, c.num_stages)
    if not quick:  # keys resident in a 128-row tile, from the central rows of a larger table (timm's order)
        g = grid((10, 10), timm=True, table_window=(12, 12))
        for dtype in dtypes[:2]:
            c = bwd.bwd_launch_config(100, dtype, 32)
            yield (f"bwd w10x10 table 12x12 {TYPE[dtype]} BLOCK{c.kwargs['BLOCK']} warps{c.num_warps}{_resident(c)}",
                   bwd._window_attention_bwd_kernel, bwd_pointers(dtype),
                   dict(g.constexprs(dtype, True), WINDOWS_PER_PROGRAM=8, ROWS_BLOCK=bwd.ROWS_BLOCK, **c.kwargs),
                   c.num_warps, c.num_stages)


def cosine_variants(quick):
    """Swin V2's scaled cosine attention (COSINE, HF's -200 mask) at its windows: 8x8 (one tile), 12x12, 16x16 and
    24x24 (tiled, 576 tokens), the forward's candidates and the backward's launch (and, for the largest windows,
    the autotuner's tiled candidates), at head_dim 32 (every V2 config) and 16 / 48."""
    windows = ((8, 8), (24, 24)) if quick else ((8, 8), (12, 12), (16, 16), (24, 24))
    for window in windows:
        for head_dim in ((32,) if quick or window != (8, 8) else (16, 32, 48)):
            g = grid(window, head_dim=head_dim)
            for dtype in (torch.bfloat16,) if quick else (torch.bfloat16, torch.float16, torch.float32):
                consts = g.constexprs(dtype, True, cosine=True, mask_value=-200.0)
                block_d = consts["BLOCK_D"]
                c = fwd._heuristic_config(*window, dtype, block_d)
                yield (f"fwd w{window[0]}x{window[1]} {TYPE[dtype]} d{head_dim} cosine BM{c.kwargs['BLOCK_M']} "
                       f"BN{c.kwargs['BLOCK_N']} warps{c.num_warps}", fwd._window_attention_fwd_kernel,
                       fwd_pointers(dtype), dict(consts, STORE_LSE=True, **c.kwargs), c.num_warps, c.num_stages)
                launches = [bwd.bwd_launch_config(window[0] * window[1], dtype, block_d)]
                if dtype == torch.bfloat16 and window[0] * window[1] > bwd.RESIDENT_KEYS and not quick:
                    launches = bwd._BWD_TILED_CONFIGS
                for c in launches:
                    dq_in_a = " dq-in-pass-A" if c.kwargs["DQ_IN_PASS_A"] else ""
                    yield (f"bwd w{window[0]}x{window[1]} {TYPE[dtype]} d{head_dim} cosine BLOCK{c.kwargs['BLOCK']} "
                           f"warps{c.num_warps}{dq_in_a}{_resident(c)}", bwd._window_attention_bwd_kernel, bwd_pointers(dtype),
                           dict(consts, WINDOWS_PER_PROGRAM=8, ROWS_BLOCK=bwd.ROWS_BLOCK, **c.kwargs),
                           c.num_warps, c.num_stages)


def wide_head_variants():
    """The launches made without autotuning (the interpreter, SWIN_FUSED_AUTOTUNE=0, deterministic mode) at
    64- and 128-lane heads, where shared memory is largest: checked against sm_89's 99 KB. (fp32 forwards at
    these widths spill kilobytes per thread: correct, but slow; Swin's heads are 32 wide.)"""
    for window in ((7, 7), (4, 4), (12, 12)):
        for head_dim in (64, 128):
            g = grid(window, head_dim=head_dim)
            for dtype in (torch.float16, torch.float32):
                c = fwd._heuristic_config(*window, dtype, g.constexprs(dtype, True)["BLOCK_D"])
                yield (f"fwd w{window[0]}x{window[1]} {TYPE[dtype]} d{head_dim} heuristic",
                       fwd._window_attention_fwd_kernel,
                       fwd_pointers(dtype),
                       dict(g.constexprs(dtype, True), STORE_LSE=True, **c.kwargs), c.num_warps, c.num_stages)
                c = bwd.bwd_launch_config(window[0] * window[1], dtype, g.constexprs(dtype, True)["BLOCK_D"])
                ptrs = bwd_pointers(dtype)
                yield (f"bwd w{window[0]}x{window[1]} {TYPE[dtype]} d{head_dim} BLOCK{c.kwargs['BLOCK']} "
                       f"warps{c.num_warps}", bwd._window_attention_bwd_kernel, ptrs,
                       dict(g.constexprs(dtype, True), WINDOWS_PER_PROGRAM=8, ROWS_BLOCK=bwd.ROWS_BLOCK, **c.kwargs),
                       c.num_warps, c.num_stages)


def layer_norm_variants(quick):
    """The fused LayerNorm's forward and backward at every Swin width (C = 96 .. 1536 and the 4C merge norms up
    to 3072; 4096 is the limit), fp32 residual stream in, the autocast dtype out (and fp32 / fp16 throughout)."""
    widths = (96, 768) if quick else (96, 100, 128, 192, 384, 512, 768, 1024, 1536, 3072, 4096)  # 100: masked lanes
    for C in widths:
        block_c, rows, warps = ln.rows_config(C)
        for x_type, y_type in (("fp32", "bf16"),) if quick else (("fp32", "bf16"), ("fp32", "fp16"), ("fp32", "fp32"),
                                                                  ("bf16", "bf16"), ("fp16", "fp16")):
            consts = dict(BLOCK_C=block_c, ROWS=rows)
            yield (f"layer_norm fwd C{C} {x_type}->{y_type} ROWS{rows} warps{warps}", ln._layer_norm_fwd_kernel,
                   dict(X=x_type, W="fp32", B="fp32", Y=y_type, MEAN="fp32", RSTD="fp32"), consts, warps, 1)
            yield (f"layer_norm bwd C{C} {x_type} dy {y_type} ROWS{rows} warps{warps}", ln._layer_norm_bwd_kernel,
                   dict(DY=y_type, X=x_type, W="fp32", MEAN="fp32", RSTD="fp32", DX=x_type, DW_PARTIAL="fp32",
                        DB_PARTIAL="fp32"), consts, warps, 1)


#: What ``--kernels`` selects: the forward's and the backward's variants, Swin V2's cosine ones and the fused
#: LayerNorm's (all for the first ``--arch``, a smoke test of two for the others), and the heuristic wide-head
#: launches (on the target with the least shared memory).
KERNEL_SETS = ("fwd", "bwd", "wide", "cosine", "norm")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one config and dtype per path (smoke test)")
    parser.add_argument("--arch", type=int, nargs="+", default=[90, 80, 89], choices=sorted(SHARED_LIMIT))
    parser.add_argument("--kernels", nargs="+", default=list(KERNEL_SETS), choices=KERNEL_SETS,
                        help="which variants (default all; tests/test_aot_compile.py runs each set as its own test)")
    args = parser.parse_args(argv)
    variants = ((list(forward_variants(args.quick)) if "fwd" in args.kernels else [])
                + (list(backward_variants(args.quick)) if "bwd" in args.kernels else [])
                + (list(cosine_variants(args.quick)) if "cosine" in args.kernels else [])
                + (list(layer_norm_variants(args.quick)) if "norm" in args.kernels else []))
    wide = [] if args.quick or "wide" not in args.kernels else list(wide_head_variants())
    smallest = min(args.arch, key=SHARED_LIMIT.get)  # the wide heads on the target with the least shared memory
    failures = 0
    for arch in args.arch:  # every variant for the first target, a smoke test for the others
        todo = (variants if arch == args.arch[0] else variants[:2]) + (wide if arch == smallest else [])
        for name, kernel, ptrs, consts, warps, stages in todo:
            start = time.perf_counter()
            try:
                compiled = compile_variant(kernel, ptrs, consts, arch, warps, stages)
                meta = compiled.metadata
            except Exception as e:  # report which variant, then fail
                print(f"FAIL sm_{arch} {name}: {type(e).__name__}: {str(e).splitlines()[-1][:300]}")
                failures += 1
                continue
            ok = meta.shared <= SHARED_LIMIT[arch]
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} sm_{arch} {name}: shared {meta.shared} B "
                  f"(limit {SHARED_LIMIT[arch]}), {register_report(compiled.asm['ptx'], arch)}, "
                  f"{time.perf_counter() - start:.1f}s", flush=True)
    print(f"{len(variants) + len(wide)} variants, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
