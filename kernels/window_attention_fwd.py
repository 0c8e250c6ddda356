"""Fused shifted-window attention, forward: one pass from qkv to the output, both in the natural layout.

What one program does: one (window, head, query tile). It derives which map positions its window covers
(cyclic shift and bottom/right padding as modular index arithmetic), gathers q, k, v of those tokens straight
from the ``[B, H, W, 3C]`` qkv tensor, adds the relative position bias read from the
``[(2Wh-1)(2Ww-1), heads]`` table and the official -100 shift mask derived from region ids, runs an fp32
online softmax over key tiles, and writes each token's output at the token's own ``[B, H, W, C]`` position.
No rolled or partitioned copy, no ``[nW, N, N]`` mask and no ``[heads, N, N]`` bias tensor exist.

Supports: windows up to 16x16 and non-square ones (N = Wh*Ww tokens, one tile for N <= 64, key-tile loop
with online softmax beyond), head_dim 16..128 including non-powers of two (lanes masked), any number of
heads, shift 0..window-1 per axis, either shift/pad order, fp32 / fp16 / bf16 inputs (fp32 softmax and
accumulation; fp32 dots use IEEE precision, not TF32, so fp32 matches PyTorch's fp32), a custom scale, a
bias table larger than the window. Padding tokens are not masked: they read ``pad_qkv`` (the qkv bias).
Optionally stores the log-sum-exp (base 2) per (window, head, token) for the backward pass.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .indexing import LOG2E, load_head, pair_bias, token_tile

Pair = Tuple[int, int]

#: Error floors per dtype (absolute, on unit-scale inputs): tests allow err <= 2 * err(PyTorch) + floor.
ERROR_FLOOR = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 128
MAX_WINDOW_AREA = 256


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _autotuning() -> bool:
    # SWIN_FUSED_AUTOTUNE=0 keeps one heuristic config per window size (fast first calls, e.g. CUDA tests).
    return not _interpreting() and os.environ.get("SWIN_FUSED_AUTOTUNE", "1") not in ("", "0")


def _fwd_configs():
    # (BLOCK_M, BLOCK_N, num_warps). Windows of <= 64 tokens are one tile (no key loop, so num_stages is moot);
    # larger windows loop over key tiles.
    shapes = [(16, 16, 2), (32, 32, 2), (32, 32, 4), (64, 64, 4), (64, 64, 8), (32, 64, 4), (128, 64, 8),
              (64, 128, 8), (128, 128, 8)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=2 if bn < 128 else 1)
            for bm, bn, w in shapes]


def _prune_fwd_configs(configs, named_args, **kwargs):
    """Candidate tiles for this window: at most what its token count rounds up to (larger tiles only add
    masked lanes). Under the interpreter, or with autotuning off, exactly one: the autotuner must not
    benchmark through the driver there."""
    cap = max(16, triton.next_power_of_2(kwargs["WH"] * kwargs["WW"]))
    if cap <= 64:
        kept = [c for c in configs if c.kwargs["BLOCK_N"] == cap and c.kwargs["BLOCK_M"] in (cap, cap // 2)]
    else:
        kept = [c for c in configs if c.kwargs["BLOCK_M"] >= 64 and c.kwargs["BLOCK_N"] >= 64]
    if not _autotuning():
        kept = [c for c in kept if c.kwargs["BLOCK_M"] == min(cap, 64) and c.kwargs["BLOCK_N"] == min(cap, 64)][:1]
    return kept


@triton.autotune(
    configs=_fwd_configs(),
    key=["WH", "WW", "HEAD_DIM", "HAS_SHIFT", "HAS_PAD", "STORE_LSE"],
    prune_configs_by={"early_config_prune": _prune_fwd_configs},
)
@triton.jit
def _window_attention_fwd_kernel(
    QKV, PAD, TABLE, OUT, LSE,
    stride_qb, stride_qh, stride_qw,
    stride_ob, stride_oh, stride_ow,
    stride_tr, stride_th,
    H, W, Hp, Wp, n_win_w, n_win, shift_h, shift_w,
    C, qk_scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    WH: tl.constexpr, WW: tl.constexpr, TWH: tl.constexpr, TWW: tl.constexpr,
    HAS_PAD: tl.constexpr, HAS_SHIFT: tl.constexpr, SHIFT_BEFORE_PAD: tl.constexpr, STORE_LSE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    N: tl.constexpr = WH * WW
    M_TILES: tl.constexpr = (N + BLOCK_M - 1) // BLOCK_M
    N_TILES: tl.constexpr = (N + BLOCK_N - 1) // BLOCK_N
    pid = tl.program_id(0)
    head = tl.program_id(1)
    window = pid // M_TILES  # over the batch: b * n_win + win
    b = (window // n_win).to(tl.int64)
    win = window % n_win

    d = tl.arange(0, BLOCK_D)
    offs_m = (pid % M_TILES) * BLOCK_M + tl.arange(0, BLOCK_M)
    sy, sx, real_m, valid_m, ty_m, tx_m, region_m = token_tile(
        win, offs_m, n_win_w, H, W, Hp, Wp, shift_h, shift_w, WH, WW, SHIFT_BEFORE_PAD)
    q_off = b * stride_qb + sy.to(tl.int64) * stride_qh + sx.to(tl.int64) * stride_qw
    q = load_head(QKV + head * HEAD_DIM, q_off, d, HEAD_DIM, real_m, valid_m, PAD + head * HEAD_DIM, HAS_PAD)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for n_tile in tl.static_range(N_TILES):
        offs_n = n_tile * BLOCK_N + tl.arange(0, BLOCK_N)
        ky, kx, real_n, valid_n, ty_n, tx_n, region_n = token_tile(
            win, offs_n, n_win_w, H, W, Hp, Wp, shift_h, shift_w, WH, WW, SHIFT_BEFORE_PAD)
        kv_off = b * stride_qb + ky.to(tl.int64) * stride_qh + kx.to(tl.int64) * stride_qw
        k = load_head(QKV + C + head * HEAD_DIM, kv_off, d, HEAD_DIM, real_n, valid_n,
                      PAD + C + head * HEAD_DIM, HAS_PAD)
        v = load_head(QKV + 2 * C + head * HEAD_DIM, kv_off, d, HEAD_DIM, real_n, valid_n,
                      PAD + 2 * C + head * HEAD_DIM, HAS_PAD)
        # Scores in base-2 units: (q.k * scale + bias + mask) * log2(e), so the softmax can use exp2.
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        bias = pair_bias(TABLE + head * stride_th, stride_tr, ty_m, tx_m, region_m, ty_n, tx_n, region_n,
                         valid_m[:, None] & valid_n[None, :], TWH, TWW, HAS_SHIFT)
        s = tl.where(valid_n[None, :], s + bias * LOG2E, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    out = acc / l_i[:, None]
    o_off = b * stride_ob + sy.to(tl.int64) * stride_oh + sx.to(tl.int64) * stride_ow
    tl.store(OUT + head * HEAD_DIM + o_off[:, None] + d[None, :], out.to(OUT.dtype.element_ty),
             mask=real_m[:, None] & (d < HEAD_DIM)[None, :])
    if STORE_LSE:
        tl.store(LSE + (window.to(tl.int64) * tl.num_programs(1) + head) * N + offs_m, m_i + tl.log2(l_i),
                 mask=valid_m)


def window_attention_fwd(
    qkv: torch.Tensor,
    table: torch.Tensor,
    num_heads: int,
    window: Pair,
    shift: Pair,
    scale: Optional[float],
    pad_qkv: Optional[torch.Tensor] = None,
    shift_before_pad: bool = False,
    table_window: Optional[Pair] = None,
    *,
    out: Optional[torch.Tensor] = None,
    return_lse: bool = False,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Launch the fused forward.

    Args:
        qkv: ``[B, H, W, 3 * heads * head_dim]`` (channels contiguous; other strides free).
        table: ``[(2TWh-1)(2TWw-1), heads]``, any float dtype (read in fp32).
        num_heads, window, shift, scale, pad_qkv, shift_before_pad, table_window: as
            :func:`swin_fused.window_attention`.
        out: optional ``[B, H, W, heads * head_dim]`` buffer in qkv's dtype (channels contiguous) to write.
        return_lse: also return the base-2 log-sum-exp ``[B * nW, heads, Wh * Ww]`` fp32 for the backward.

    Returns:
        ``(out, lse or None)``.
    """
    B, H, W, C3 = qkv.shape
    C = C3 // 3
    head_dim = C // num_heads
    (wh, ww), (sh, sw) = window, shift
    twh, tww = table_window or window
    check_kernel_inputs(qkv, table, head_dim, wh * ww)
    qkv = qkv if qkv.stride(-1) == 1 else qkv.contiguous()
    Hp, Wp = -(-H // wh) * wh, -(-W // ww) * ww
    n_win_w = Wp // ww
    n_win = (Hp // wh) * n_win_w
    has_pad = (Hp, Wp) != (H, W)
    if out is None:
        out = torch.empty((B, H, W, C), device=qkv.device, dtype=qkv.dtype)
    elif out.shape != (B, H, W, C) or out.dtype != qkv.dtype or out.stride(-1) != 1:
        raise ValueError(f"out must be a [B, H, W, C] = {(B, H, W, C)} {qkv.dtype} tensor with contiguous "
                         f"channels, got {tuple(out.shape)} {out.dtype} strides {out.stride()}")
    lse = torch.empty((B * n_win, num_heads, wh * ww), device=qkv.device, dtype=torch.float32) if return_lse else out
    # Without pad_qkv, padding tokens are zeros: the masked loads already return 0 for them.
    use_pad = has_pad and pad_qkv is not None
    pad = pad_qkv.to(qkv.dtype).contiguous() if use_pad else qkv
    scale = head_dim**-0.5 if scale is None else scale

    def grid(meta):
        return (B * n_win * triton.cdiv(wh * ww, meta["BLOCK_M"]), num_heads)

    _window_attention_fwd_kernel[grid](
        qkv, pad, table, out, lse,
        qkv.stride(0), qkv.stride(1), qkv.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        table.stride(0), table.stride(1),
        H, W, Hp, Wp, n_win_w, n_win, sh, sw,
        C, scale * 1.4426950408889634,
        HEAD_DIM=head_dim, BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
        WH=wh, WW=ww, TWH=twh, TWW=tww,
        HAS_PAD=use_pad, HAS_SHIFT=bool(sh or sw), SHIFT_BEFORE_PAD=bool(shift_before_pad),
        STORE_LSE=return_lse,
        DOT_PRECISION="ieee" if qkv.dtype == torch.float32 else "tf32",
    )
    return out, (lse if return_lse else None)


def check_kernel_inputs(qkv: torch.Tensor, table: torch.Tensor, head_dim: int, window_area: int) -> None:
    """What the kernels support, checked at launch with messages that name the value."""
    if qkv.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"fused window attention supports float32, float16 and bfloat16, got {qkv.dtype}; "
                        f"use the 'torch' backend for other dtypes")
    if not table.is_floating_point():
        raise TypeError(f"relative position bias table must be floating point, got {table.dtype}")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"fused window attention supports head_dim 1..{MAX_HEAD_DIM}, got {head_dim}")
    if window_area > MAX_WINDOW_AREA:
        raise ValueError(f"fused window attention supports windows of up to {MAX_WINDOW_AREA} tokens "
                         f"(16x16), got {window_area}")
    if qkv.device != table.device:
        raise ValueError(f"qkv is on {qkv.device} but the table is on {table.device}")
    if qkv.device.type != "cuda" and not _interpreting():
        raise RuntimeError(f"fused window attention got a tensor on {qkv.device}: the Triton kernels run on CUDA, "
                           f"or on the CPU only through Triton's interpreter (set TRITON_INTERPRET=1 before "
                           f"importing swin_fused); use the 'torch' or 'auto' backend on the CPU")
