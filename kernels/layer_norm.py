"""LayerNorm over the channels of ``[rows, C]`` tokens, forward and backward, writing its output in the dtype
the next op reads.

Why a kernel: in an eager Swin training step under autocast, LayerNorm runs in fp32 (autocast's fp32 list) and
the Linear after it casts the fp32 output back to bf16, so each of a Swin-T step's 27 block and merge norms is
a normalisation, a cast and, in the backward, a cast, PyTorch's input-gradient kernel and its separate
weight/bias-gradient kernel (on the 2026-11-26 H100 profile of the eager training step at batch 64, the norms'
kernels took 6.5 of its 23.1 ms of device time, 28%, the casts not counted).
Here the forward reads the fp32 (or half) rows once and writes the output directly in the Linear's dtype (the
values of casting PyTorch's fp32 output, up to fp32 rounding in the statistics: fp32 statistics and affine
transform, one rounding at the store), and the backward reads x, dy and the saved row statistics once, writing
dx and fixed-order per-program partials of dweight and dbias (no atomics: bit-reproducible).

Supports: C up to ``MAX_CHANNELS`` = 4096 (Swin-L's widest norms: 1536 channels in stage 4, 3072 in the merge
into it; wider ones stay PyTorch's, see ``swin_fused/norm.py``), any number of rows, x in fp32/fp16/bf16, the
output in any of those, weight and bias present (the only LayerNorm a Swin block has), any eps.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import torch
import triton
import triton.language as tl

from .launch import (Launch, PlanCache, cdiv, eager, interpreting, launch_device, next_power_of_2, row_layout,
                     tensor_signature)

MAX_CHANNELS = 4096
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _row_tile(X, rows, cols, n_rows, C, row_stride):
    """A ``[ROWS, BLOCK_C]`` tile of rows in fp32 (0 outside the rows and channels) and its mask."""
    mask = (rows < n_rows)[:, None] & (cols < C)[None, :]
    x = tl.load(X + rows[:, None].to(tl.int64) * row_stride + cols[None, :], mask=mask, other=0.0)
    return x.to(tl.float32), mask


@triton.jit
def _layer_norm_fwd_kernel(X, W, B, Y, MEAN, RSTD, n_rows, C, x_row_stride, eps,
                           BLOCK_C: tl.constexpr, ROWS: tl.constexpr):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_C)
    x, mask = _row_tile(X, rows, cols, n_rows, C, x_row_stride)
    mean = tl.sum(x, 1) / C
    xc = tl.where(mask, x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, 1) / C + eps)  # two-pass variance: no cancellation
    w = tl.load(W + cols, mask=cols < C, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=cols < C, other=0.0).to(tl.float32)
    y = xc * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(Y + rows[:, None].to(tl.int64) * C + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    tl.store(MEAN + rows, mean, mask=rows < n_rows)
    tl.store(RSTD + rows, rstd, mask=rows < n_rows)


@triton.jit
def _layer_norm_bwd_kernel(DY, X, W, MEAN, RSTD, DX, DW_PARTIAL, DB_PARTIAL, n_rows, C, x_row_stride,
                           dy_row_stride, rows_per_program, BLOCK_C: tl.constexpr, ROWS: tl.constexpr):
    """dx = rstd * (w dy - mean(w dy) - xhat mean(w dy xhat)) per row; this program's rows' sums of dy xhat and
    dy (dweight, dbias) into its own partial row."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    w = tl.load(W + cols, mask=cols < C, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_C], dtype=tl.float32)
    db = tl.zeros([BLOCK_C], dtype=tl.float32)
    first = pid * rows_per_program
    for r0 in range(first, tl.minimum(first + rows_per_program, n_rows), ROWS):
        rows = r0 + tl.arange(0, ROWS)
        x, mask = _row_tile(X, rows, cols, n_rows, C, x_row_stride)
        dy, _ = _row_tile(DY, rows, cols, n_rows, C, dy_row_stride)
        mean = tl.load(MEAN + rows, mask=rows < n_rows, other=0.0)
        rstd = tl.load(RSTD + rows, mask=rows < n_rows, other=0.0)
        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        wdy = dy * w[None, :]
        c1 = tl.sum(xhat * wdy, 1) / C
        c2 = tl.sum(wdy, 1) / C
        dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        tl.store(DX + rows[:, None].to(tl.int64) * C + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        dw += tl.sum(dy * xhat, 0)
        db += tl.sum(dy, 0)
    tl.store(DW_PARTIAL + pid * C + cols, dw, mask=cols < C)
    tl.store(DB_PARTIAL + pid * C + cols, db, mask=cols < C)


def rows_config(C: int) -> Tuple[int, int, int]:
    """``(BLOCK_C, ROWS, num_warps)``: tiles of about 4K elements (16 fp32 registers a thread at 8 warps), so
    that narrow stages (C = 96) still give each program enough rows to stream. Under the interpreter every
    program costs host time, so it takes 64K-element tiles."""
    block_c = max(16, next_power_of_2(C))
    tile, max_rows = (1 << 16, 4096) if interpreting() else (4096, 64)
    return block_c, max(1, min(max_rows, tile // block_c)), 8 if block_c >= 1024 else 4


class _Forward(NamedTuple):
    n_rows: int
    x_as_is: bool  # x's tokens flatten to evenly spaced rows as they are; else copied per call
    launch: Launch


class _Backward(NamedTuple):
    x_as_is: bool
    dy_as_is: bool
    programs: int  # each writes one partial row of dweight and of dbias
    launch: Launch


_PLANS = PlanCache()


def check_layer_norm_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out_dtype) -> None:
    """What the kernels support, with messages that name the value."""
    C = x.shape[-1]
    if x.dtype not in SUPPORTED_DTYPES or out_dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"fused layer norm supports float32, float16 and bfloat16, got input {x.dtype} and output "
                        f"{out_dtype}")
    if not 1 <= C <= MAX_CHANNELS:
        raise ValueError(f"fused layer norm supports 1..{MAX_CHANNELS} channels, got {C}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is None or tuple(t.shape) != (C,) or t.device != x.device or not t.is_floating_point():
            got = "None" if t is None else f"{tuple(t.shape)} {t.dtype} on {t.device}"
            raise ValueError(f"fused layer norm needs a floating-point ({C},) {name} on {x.device}, got {got}")
    if x.device.type != "cuda" and not interpreting():
        raise RuntimeError(f"fused layer norm got a tensor on {x.device}: its kernels run on CUDA, or on the CPU "
                           f"only through Triton's interpreter (TRITON_INTERPRET=1 before importing swin_fused)")


def _forward_plan(x, weight, bias, out_dtype, eps) -> _Forward:
    check_layer_norm_inputs(x, weight, bias, out_dtype)
    C = x.shape[-1]
    n_rows = x.numel() // C
    x_as_is, x_stride = row_layout(x)
    block_c, rows, warps = rows_config(C)
    return _Forward(n_rows, x_as_is, Launch(_layer_norm_fwd_kernel, (cdiv(n_rows, rows),),
                                            (n_rows, C, x_stride, float(eps)),
                                            dict(BLOCK_C=block_c, ROWS=rows, num_warps=warps)))


def _backward_plan(dy, x) -> _Backward:
    if dy.shape != x.shape or dy.device != x.device or dy.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"fused layer norm: the output gradient must be a float {tuple(x.shape)} tensor on "
                         f"{x.device}, got {tuple(dy.shape)} {dy.dtype} on {dy.device}")
    C = x.shape[-1]
    n_rows = x.numel() // C
    x_as_is, x_stride = row_layout(x)
    dy_as_is, dy_stride = row_layout(dy)
    block_c, rows, warps = rows_config(C)
    # Each program streams rows_per_program rows (a multiple of ROWS) into one partial row; about 1024 programs
    # (several per SM). The partials' sum is fixed for a shape, so the bits are too.
    rows_per_program = rows * max(1, cdiv(cdiv(n_rows, rows), 1024))
    programs = max(1, cdiv(n_rows, rows_per_program))
    return _Backward(x_as_is, dy_as_is, programs,
                     Launch(_layer_norm_bwd_kernel, (programs,), (n_rows, C, x_stride, dy_stride, rows_per_program),
                            dict(BLOCK_C=block_c, ROWS=rows, num_warps=warps)))


def _key(*parts):
    """A plan's key in eager calls (None while tracing: never cached); the kernels and the config function are
    part of it, so that replacing one is never served a stale plan."""
    if not eager():
        return None
    return (*parts, _layer_norm_fwd_kernel, _layer_norm_bwd_kernel, rows_config)


def layer_norm_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                   out_dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LayerNorm over the last dimension of ``x [..., C]``: ``(y [..., C] in out_dtype, mean [rows], rstd [rows])``,
    statistics fp32, computed in fp32 whatever the dtypes."""
    key = _key("fwd", tensor_signature(x), tensor_signature(weight), tensor_signature(bias), out_dtype, eps)
    plan = _PLANS.get(key, lambda: _forward_plan(x, weight, bias, out_dtype, eps))
    y = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    mean = torch.empty(plan.n_rows, device=x.device, dtype=torch.float32)
    rstd = torch.empty(plan.n_rows, device=x.device, dtype=torch.float32)
    if plan.n_rows:
        with launch_device(x):
            plan.launch(x if plan.x_as_is else x.contiguous(), weight, bias, y, mean, rstd)
    return y, mean, rstd


def layer_norm_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor,
                   rstd: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dx in x's dtype, dweight fp32, dbias fp32)`` of :func:`layer_norm_fwd`'s output gradient ``dy``."""
    plan = _PLANS.get(_key("bwd", tensor_signature(dy), tensor_signature(x)), lambda: _backward_plan(dy, x))
    C = x.shape[-1]
    dx = torch.empty(x.shape, device=x.device, dtype=x.dtype)
    # Every program writes its whole partial row; with no rows there is no program, and the sums are 0.
    partial = torch.empty if x.numel() else torch.zeros
    partial = partial((2, plan.programs, C), device=x.device, dtype=torch.float32)
    if x.numel():
        with launch_device(x):
            plan.launch(dy if plan.dy_as_is else dy.contiguous(), x if plan.x_as_is else x.contiguous(), weight,
                        mean, rstd, dx, partial[0], partial[1])
    # Fixed order over programs; two sums, not one: views of one [2, C] result would make weight.grad and
    # bias.grad share a storage (code that flattens or deduplicates gradients by storage would trip on it).
    return dx, partial[0].sum(0), partial[1].sum(0)
