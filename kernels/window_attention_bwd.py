"""Fused shifted-window attention, backward: dqkv in the natural layout and a deterministic bias-table grad.

One program owns a fixed group of consecutive windows for one head. For each window it gathers q, k, v, dO
(and O, for delta = rowsum(dO * O)) through the same index arithmetic as the forward, recomputes the
probabilities from the saved base-2 log-sum-exp (flash-style; no N x N matrix is saved), and writes dq, dk,
dv straight into ``[B, H, W, 3C]``: every token belongs to exactly one window, so no atomics.

The relative-position-bias gradient is ``sum over windows of dS`` scattered onto table rows. Float atomics
across programs would make it run-to-run different, so each program accumulates dS over its own windows into
a private ``[N, N]`` partial; the launcher then sums partials in a fixed order and gathers each table row's
pairs with a fixed index list (swin_fused.geometry's relative index). Padding tokens' dk, dv (which belong to
the qkv bias) are reduced the same way. Repeated runs are bit-identical.

Windows of up to 64 tokens (7x7, 8x8) are one register tile: one pass computes dq, dk, dv and keeps the dS
partial in registers. Larger windows (12x12, 16x16) loop over tiles: pass A accumulates dk, dv per key tile
(updating the program-private dS partial in global memory), pass B recomputes dS per query tile for dq.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .indexing import LOG2E, load_head, pair_bias, token_tile
from .window_attention_fwd import _interpreting, check_kernel_inputs

Pair = Tuple[int, int]


@triton.jit
def _probabilities(q, k, qk_scale, lse, table_ptr, stride_tr, ty_m, tx_m, region_m, ty_n, tx_n, region_n,
                   valid_m, valid_n, TWH: tl.constexpr, TWW: tl.constexpr, HAS_SHIFT: tl.constexpr,
                   DOT_PRECISION: tl.constexpr):
    """Recompute P = softmax(scores) of a [M, N] tile from the saved base-2 log-sum-exp of its rows."""
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    bias = pair_bias(table_ptr, stride_tr, ty_m, tx_m, region_m, ty_n, tx_n, region_n,
                     valid_m[:, None] & valid_n[None, :], TWH, TWW, HAS_SHIFT)
    s = tl.where(valid_n[None, :], s + bias * LOG2E, float("-inf"))
    return tl.exp2(s - lse[:, None])


@triton.jit
def _window_attention_bwd_kernel(
    QKV, PAD, TABLE, OUT, DOUT, LSE, DELTA, DQKV, DS_PARTIAL, DPAD_PARTIAL,
    stride_qb, stride_qh, stride_qw,
    stride_ob, stride_oh, stride_ow,
    stride_gb, stride_gh, stride_gw,
    stride_db, stride_dh, stride_dw,
    stride_tr, stride_th,
    H, W, Hp, Wp, n_win_w, n_win, n_windows, shift_h, shift_w,
    C, qk_scale, sm_scale,
    WINDOWS_PER_PROGRAM: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    WH: tl.constexpr, WW: tl.constexpr, TWH: tl.constexpr, TWW: tl.constexpr,
    HAS_PAD: tl.constexpr, HAS_SHIFT: tl.constexpr, SHIFT_BEFORE_PAD: tl.constexpr,
    DOT_PRECISION: tl.constexpr, BLOCK: tl.constexpr,
):
    N: tl.constexpr = WH * WW
    TILES: tl.constexpr = (N + BLOCK - 1) // BLOCK
    pid = tl.program_id(0)
    head = tl.program_id(1)
    n_heads = tl.num_programs(1)
    d = tl.arange(0, BLOCK_D)
    dmask = (d < HEAD_DIM)[None, :]
    q_ptr = QKV + head * HEAD_DIM
    k_ptr = q_ptr + C
    v_ptr = q_ptr + 2 * C
    pad_q = PAD + head * HEAD_DIM
    table_ptr = TABLE + head * stride_th
    ds_partial = DS_PARTIAL + (pid.to(tl.int64) * n_heads + head) * N * N
    # Padding tokens' dk and dv: they belong to the qkv bias (pad_qkv), reduced across programs later.
    dpad_k = tl.zeros([BLOCK_D], tl.float32)
    dpad_v = tl.zeros([BLOCK_D], tl.float32)

    w_start = pid * WINDOWS_PER_PROGRAM
    w_end = tl.minimum(w_start + WINDOWS_PER_PROGRAM, n_windows)
    if TILES == 1:
        offs = tl.arange(0, BLOCK)
        ds_acc = tl.zeros([BLOCK, BLOCK], tl.float32)
        for window in range(w_start, w_end):
            b = (window // n_win).to(tl.int64)
            win = window % n_win
            sy, sx, real, valid, ty, tx, region = token_tile(
                win, offs, n_win_w, H, W, Hp, Wp, shift_h, shift_w, WH, WW, SHIFT_BEFORE_PAD)
            sy = sy.to(tl.int64)
            sx = sx.to(tl.int64)
            x_off = b * stride_qb + sy * stride_qh + sx * stride_qw
            q = load_head(q_ptr, x_off, d, HEAD_DIM, real, valid, pad_q, HAS_PAD)
            k = load_head(k_ptr, x_off, d, HEAD_DIM, real, valid, pad_q + C, HAS_PAD)
            v = load_head(v_ptr, x_off, d, HEAD_DIM, real, valid, pad_q + 2 * C, HAS_PAD)
            # Padding queries' outputs are cropped away: their dO is 0, so they contribute nothing.
            o_off = b * stride_ob + sy * stride_oh + sx * stride_ow
            do = load_head(DOUT + head * HEAD_DIM, b * stride_gb + sy * stride_gh + sx * stride_gw, d, HEAD_DIM,
                           real, valid, PAD, False)
            o = load_head(OUT + head * HEAD_DIM, o_off, d, HEAD_DIM, real, valid, PAD, False)
            delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
            lse = tl.load(LSE + (window * n_heads + head).to(tl.int64) * N + offs, mask=valid, other=0.0)

            p = _probabilities(q, k, qk_scale, lse, table_ptr, stride_tr, ty, tx, region, ty, tx, region,
                               valid, valid, TWH, TWW, HAS_SHIFT, DOT_PRECISION)
            dv = tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PRECISION)
            dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
            ds = p * (dp - delta[:, None])  # dL/dscore, natural units
            ds_acc += ds
            dsc = ds.to(q.dtype)
            dq = tl.dot(dsc, k, input_precision=DOT_PRECISION) * sm_scale
            dk = tl.dot(tl.trans(dsc), q, input_precision=DOT_PRECISION) * sm_scale

            g_off = b * stride_db + sy * stride_dh + sx * stride_dw
            g_mask = real[:, None] & dmask
            tl.store(DQKV + head * HEAD_DIM + g_off[:, None] + d[None, :], dq.to(DQKV.dtype.element_ty), mask=g_mask)
            tl.store(DQKV + C + head * HEAD_DIM + g_off[:, None] + d[None, :], dk.to(DQKV.dtype.element_ty),
                     mask=g_mask)
            tl.store(DQKV + 2 * C + head * HEAD_DIM + g_off[:, None] + d[None, :], dv.to(DQKV.dtype.element_ty),
                     mask=g_mask)
            if HAS_PAD:
                is_pad = (valid & ~real)[:, None]
                dpad_k += tl.sum(tl.where(is_pad, dk, 0.0), 0)
                dpad_v += tl.sum(tl.where(is_pad, dv, 0.0), 0)
        tl.store(ds_partial + offs[:, None] * N + offs[None, :], ds_acc,
                 mask=(offs < N)[:, None] & (offs < N)[None, :])
    else:
        for window in range(w_start, w_end):
            b = (window // n_win).to(tl.int64)
            win = window % n_win
            lse_ptr = LSE + (window * n_heads + head).to(tl.int64) * N
            # Pass A: per key tile, dk and dv over all query tiles; dS into the program's private partial.
            for n_tile in tl.static_range(TILES):
                offs_n = n_tile * BLOCK + tl.arange(0, BLOCK)
                ky, kx, real_n, valid_n, ty_n, tx_n, region_n = token_tile(
                    win, offs_n, n_win_w, H, W, Hp, Wp, shift_h, shift_w, WH, WW, SHIFT_BEFORE_PAD)
                ky = ky.to(tl.int64)
                kx = kx.to(tl.int64)
                k_off = b * stride_qb + ky * stride_qh + kx * stride_qw
                k = load_head(k_ptr, k_off, d, HEAD_DIM, real_n, valid_n, pad_q + C, HAS_PAD)
                v = load_head(v_ptr, k_off, d, HEAD_DIM, real_n, valid_n, pad_q + 2 * C, HAS_PAD)
                dk = tl.zeros([BLOCK, BLOCK_D], tl.float32)
                dv = tl.zeros([BLOCK, BLOCK_D], tl.float32)
                for m_tile in tl.static_range(TILES):
                    offs_m = m_tile * BLOCK + tl.arange(0, BLOCK)
                    qy, qx, real_m, valid_m, ty_m, tx_m, region_m = token_tile(
                        win, offs_m, n_win_w, H, W, Hp, Wp, shift_h, shift_w, WH, WW, SHIFT_BEFORE_PAD)
                    qy = qy.to(tl.int64)
                    qx = qx.to(tl.int64)
                    q = load_head(q_ptr, b * stride_qb + qy * stride_qh + qx * stride_qw, d, HEAD_DIM, real_m,
                                  valid_m, pad_q, HAS_PAD)
                    do = load_head(DOUT + head * HEAD_DIM, b * stride_gb + qy * stride_gh + qx * stride_gw, d,
                                   HEAD_DIM, real_m, valid_m, PAD, False)
                    lse = tl.load(lse_ptr + offs_m, mask=valid_m, other=0.0)
                    delta = tl.load(DELTA + ((b * Hp + qy) * Wp + qx) * n_heads + head, mask=real_m, other=0.0)
                    p = _probabilities(q, k, qk_scale, lse, table_ptr, stride_tr, ty_m, tx_m, region_m, ty_n,
                                       tx_n, region_n, valid_m, valid_n, TWH, TWW, HAS_SHIFT, DOT_PRECISION)
                    dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PRECISION)
                    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
                    ds = p * (dp - delta[:, None])
                    dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=DOT_PRECISION)
                    # Program-private partial: read-modify-write needs no atomics, only ordering among this
                    # program's own threads (the barrier), so the sum order is fixed.
                    part_ptr = ds_partial + offs_m[:, None] * N + offs_n[None, :]
                    part_mask = valid_m[:, None] & valid_n[None, :]
                    tl.debug_barrier()
                    if window > w_start:
                        ds += tl.load(part_ptr, mask=part_mask, other=0.0)
                    tl.store(part_ptr, ds, mask=part_mask)
                g_off = b * stride_db + ky * stride_dh + kx * stride_dw
                g_mask = real_n[:, None] & dmask
                dk = dk * sm_scale
                tl.store(DQKV + C + head * HEAD_DIM + g_off[:, None] + d[None, :], dk.to(DQKV.dtype.element_ty),
                         mask=g_mask)
                tl.store(DQKV + 2 * C + head * HEAD_DIM + g_off[:, None] + d[None, :],
                         dv.to(DQKV.dtype.element_ty), mask=g_mask)
                if HAS_PAD:
                    is_pad = (valid_n & ~real_n)[:, None]
                    dpad_k += tl.sum(tl.where(is_pad, dk, 0.0), 0)
                    dpad_v += tl.sum(tl.where(is_pad, dv, 0.0), 0)
            # Pass B: per query tile, dq over all key tiles (recomputing dS rather than accumulating dq in HBM).
            for m_tile in tl.static_range(TILES):
                offs_m = m_tile * BLOCK + tl.arange(0, BLOCK)
                qy, qx, real_m, valid_m, ty_m, tx_m, region_m = token_tile(
                    win, offs_m, n_win_w, H, W, Hp, Wp, shift_h, shift_w, WH, WW, SHIFT_BEFORE_PAD)
                qy = qy.to(tl.int64)
                qx = qx.to(tl.int64)
                q = load_head(q_ptr, b * stride_qb + qy * stride_qh + qx * stride_qw, d, HEAD_DIM, real_m,
                              valid_m, pad_q, HAS_PAD)
                do = load_head(DOUT + head * HEAD_DIM, b * stride_gb + qy * stride_gh + qx * stride_gw, d,
                               HEAD_DIM, real_m, valid_m, PAD, False)
                lse = tl.load(lse_ptr + offs_m, mask=valid_m, other=0.0)
                delta = tl.load(DELTA + ((b * Hp + qy) * Wp + qx) * n_heads + head, mask=real_m, other=0.0)
                dq = tl.zeros([BLOCK, BLOCK_D], tl.float32)
                for n_tile in tl.static_range(TILES):
                    offs_n = n_tile * BLOCK + tl.arange(0, BLOCK)
                    ky, kx, real_n, valid_n, ty_n, tx_n, region_n = token_tile(
                        win, offs_n, n_win_w, H, W, Hp, Wp, shift_h, shift_w, WH, WW, SHIFT_BEFORE_PAD)
                    k_off = b * stride_qb + ky.to(tl.int64) * stride_qh + kx.to(tl.int64) * stride_qw
                    k = load_head(k_ptr, k_off, d, HEAD_DIM, real_n, valid_n, pad_q + C, HAS_PAD)
                    v = load_head(v_ptr, k_off, d, HEAD_DIM, real_n, valid_n, pad_q + 2 * C, HAS_PAD)
                    p = _probabilities(q, k, qk_scale, lse, table_ptr, stride_tr, ty_m, tx_m, region_m, ty_n,
                                       tx_n, region_n, valid_m, valid_n, TWH, TWW, HAS_SHIFT, DOT_PRECISION)
                    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
                    ds = p * (dp - delta[:, None])
                    dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)
                g_off = b * stride_db + qy * stride_dh + qx * stride_dw
                tl.store(DQKV + head * HEAD_DIM + g_off[:, None] + d[None, :], (dq * sm_scale).to(
                    DQKV.dtype.element_ty), mask=real_m[:, None] & dmask)
    if HAS_PAD:
        dpad_ptr = DPAD_PARTIAL + (pid.to(tl.int64) * n_heads + head) * 2 * BLOCK_D
        tl.store(dpad_ptr + d, dpad_k)
        tl.store(dpad_ptr + BLOCK_D + d, dpad_v)


@functools.lru_cache(maxsize=64)
def _table_gather_index(window: Pair, table_window: Pair, device: torch.device) -> torch.Tensor:
    """``[rows, max_pairs]`` flat (query, key) positions whose bias is each table row; pads point at N*N.

    Built from swin_fused.geometry's relative index (the one PyTorch copy of that formula), sorted stably so
    every row sums its pairs in a fixed order.
    """
    from swin_fused.geometry import relative_position_index

    (wh, ww), (th, tw) = window, table_window
    n_pairs = (wh * ww) ** 2
    index = relative_position_index(window).view(-1)
    dy, dx = index // (2 * ww - 1) - (wh - 1), index % (2 * ww - 1) - (ww - 1)
    rows = (dy + th - 1) * (2 * tw - 1) + (dx + tw - 1)
    n_rows = (2 * th - 1) * (2 * tw - 1)
    counts = torch.bincount(rows, minlength=n_rows)
    order = torch.argsort(rows, stable=True)
    gather = torch.full((n_rows, int(counts.max())), n_pairs, dtype=torch.long)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(n_pairs) - starts[rows[order]]
    gather[rows[order], slot] = order
    return gather.to(device)


def _windows_per_program(n_windows: int, num_heads: int) -> int:
    """Windows each program reduces. Depends on the shape only, so the summation order (and the bits of the
    table gradient) never changes between runs; ~2K programs keep an H100's 132 SMs busy."""
    return max(1, min(16, (n_windows * num_heads) // 2048))


def window_attention_bwd(
    dout: torch.Tensor,
    qkv: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    table: torch.Tensor,
    num_heads: int,
    window: Pair,
    shift: Pair,
    scale: Optional[float],
    pad_qkv: Optional[torch.Tensor] = None,
    shift_before_pad: bool = False,
    table_window: Optional[Pair] = None,
    *,
    dqkv: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Launch the fused backward.

    Args:
        dout: ``[B, H, W, C]`` gradient of the output. qkv, out, lse: the forward's input and outputs.
        table, num_heads, window, shift, scale, pad_qkv, shift_before_pad, table_window: as the forward.
        dqkv: optional ``[B, H, W, 3C]`` buffer (qkv's dtype, channels contiguous) to write.

    Returns:
        ``(dqkv, dtable, dpad)``: dtable fp32 in the table's shape; dpad ``[3C]`` fp32 (zero q part), or
        None when nothing is padded or ``pad_qkv`` is None.
    """
    B, H, W, C3 = qkv.shape
    C = C3 // 3
    head_dim = C // num_heads
    (wh, ww), (sh, sw) = window, shift
    twh, tww = table_window or window
    N = wh * ww
    check_kernel_inputs(qkv, table, head_dim, N)
    qkv = qkv if qkv.stride(-1) == 1 else qkv.contiguous()
    dout = dout if dout.stride(-1) == 1 else dout.contiguous()
    Hp, Wp = -(-H // wh) * wh, -(-W // ww) * ww
    n_win_w = Wp // ww
    n_win = (Hp // wh) * n_win_w
    n_windows = B * n_win
    use_pad = (Hp, Wp) != (H, W) and pad_qkv is not None
    pad = pad_qkv.to(qkv.dtype).contiguous() if use_pad else qkv
    if dqkv is None:
        dqkv = torch.empty_like(qkv, memory_format=torch.contiguous_format)
    elif dqkv.shape != qkv.shape or dqkv.dtype != qkv.dtype or dqkv.stride(-1) != 1:
        raise ValueError(f"dqkv must be a {tuple(qkv.shape)} {qkv.dtype} tensor with contiguous channels, got "
                         f"{tuple(dqkv.shape)} {dqkv.dtype} strides {dqkv.stride()}")
    block = max(16, triton.next_power_of_2(N)) if N <= 64 else 64
    if N > 64:
        # delta = rowsum(dO * O) per token and head, on the padded map (padding tokens: 0).
        delta = torch.zeros((B, Hp, Wp, num_heads), device=qkv.device, dtype=torch.float32)
        delta[:, :H, :W] = (dout.float() * out.float()).view(B, H, W, num_heads, head_dim).sum(-1)
    else:
        delta = lse  # computed in-kernel; never read
    g = _windows_per_program(n_windows, num_heads)
    n_programs = triton.cdiv(n_windows, g)
    block_d = max(16, triton.next_power_of_2(head_dim))
    ds_partial = torch.empty((n_programs, num_heads, N, N), device=qkv.device, dtype=torch.float32)
    dpad_partial = (torch.empty((n_programs, num_heads, 2, block_d), device=qkv.device, dtype=torch.float32)
                    if use_pad else ds_partial)
    scale = head_dim**-0.5 if scale is None else scale
    _window_attention_bwd_kernel[(n_programs, num_heads)](
        qkv, pad, table, out, dout, lse, delta, dqkv, ds_partial, dpad_partial,
        qkv.stride(0), qkv.stride(1), qkv.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        dout.stride(0), dout.stride(1), dout.stride(2),
        dqkv.stride(0), dqkv.stride(1), dqkv.stride(2),
        table.stride(0), table.stride(1),
        H, W, Hp, Wp, n_win_w, n_win, n_windows, sh, sw,
        C, scale * 1.4426950408889634, scale,
        WINDOWS_PER_PROGRAM=g,
        HEAD_DIM=head_dim, BLOCK_D=block_d,
        WH=wh, WW=ww, TWH=twh, TWW=tww,
        HAS_PAD=use_pad, HAS_SHIFT=bool(sh or sw), SHIFT_BEFORE_PAD=bool(shift_before_pad),
        DOT_PRECISION="ieee" if qkv.dtype == torch.float32 else "tf32", BLOCK=block,
        num_warps=4 if N <= 64 else 8,
    )
    # Fixed-order reductions (no atomics): over programs, then each table row over its (query, key) pairs.
    ds_sum = ds_partial.sum(0).view(num_heads, N * N)
    ds_sum = torch.cat([ds_sum, ds_sum.new_zeros(num_heads, 1)], 1)
    gather = _table_gather_index((wh, ww), (twh, tww), qkv.device)
    dtable = ds_sum[:, gather].sum(-1).t().contiguous()  # rows, heads
    dpad = None
    if use_pad:
        dkv = dpad_partial.sum(0)[..., :head_dim]  # heads, 2, head_dim
        dpad = torch.cat([torch.zeros(C, device=qkv.device), dkv[:, 0].reshape(C), dkv[:, 1].reshape(C)])
    return dqkv, dtable, dpad
