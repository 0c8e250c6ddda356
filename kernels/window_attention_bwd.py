"""Fused shifted-window attention, backward: dqkv in the natural layout and a deterministic bias-table grad.

One program owns a fixed group of consecutive windows for one head. For each window it gathers q, k, v and
dO through the same index arithmetic as the forward, recomputes the probabilities (flash-style; no N x N
matrix is saved), and writes dq, dk, dv straight into ``[B, H, W, 3C]``: every token belongs to exactly one
window, so no atomics.

The probabilities are normalised by the backward itself, from the scores it recomputes, and
delta = rowsum(P * dP) comes from those same P and dP, so each row of dS = P * (dP - delta) sums to zero up to
fp32 rounding of the products. Taking the forward's lse as the exact normaliser (and delta = rowsum(dO * O)
from the rounded output), as flash attention does, breaks that whenever the two kernels round the scores
differently: the same q.k summed in another order (a transposed dot, another tile shape, another BLAS kernel
under the interpreter) differs by ulps of the score, which at fp16 scores beyond 65504 is 0.06 in base-2
units, i.e. P off by 4% and dq = scale * dS k off by |k| times that (0.15 absolute at |q|, |k| ~ 300). The
lse also rounds to ulps of the largest score, so exp2(s - lse) does not sum to one however the scores agree.
Windows of one token get an exact zero table gradient (P = 1, dS = 0), as the math says.

The relative-position-bias gradient is ``sum over windows of dS`` scattered onto table rows. Float atomics
across programs would make it run-to-run different, so each program sums dS over its own windows, then folds
that ``[N, N]`` sum onto the (2TWh-1)(2TWw-1) table rows itself (each (query, table row) names one key:
``indexing.relative_key``, the inverse of the bias gather) and writes one row vector per head; the launcher
sums those over programs in a fixed order. An ``[N, N]`` partial per program would add up to ~75% (7x7) or
~225% (12x12) to the backward's minimum traffic when programs cover few windows. Padding tokens' dk, dv
(which belong to the qkv bias) are reduced the same way. Repeated runs are bit-identical.

fp16/bf16 windows of up to 64 tokens (7x7, 8x8) with heads of up to 32 lanes are one register tile: one pass
computes the softmax of the window's scores (own row max and sum), dq, dk, dv (keys on rows, so only dq's
operand is transposed) and keeps the dS sum in registers, folded with an in-register gather; it reads neither
the forward's output nor its lse. fp16/bf16 windows of 65-256 tokens (10x10, 12x12, 16x16) with such heads keep
every key resident instead: k, v and the fp32 dk, dv accumulators of the whole window (keys padded to a power of
two) stay in registers while 16-query tiles stream past, so each query tile's scores are whole rows: its
softmax, delta, dS and dq are complete in one visit (five dots, nothing recomputed, no lse), and its dS is
folded onto the table rows it can reach at once, into the program's own row partial. Per window and head at
12x12 (head_dim 32) that is q, k, v, dO read and dq, dk, dv written once, against the tiled path's nine dots
per tile pair over three passes that re-read every tile and read-modify-write an [N, N] dS scratch per tile
pair. Wider heads, fp32 windows of more than 32 tokens and windows of more than 256 tokens (24x24) loop over
tiles (see ``bwd_launch_config``): a prologue sweeps the key tiles once per query tile for
each row's normaliser sum_j exp2(s_ij - lse_i) (the forward's lse is only the stabiliser here, so nothing can
overflow) and delta = rowsum(P * dP), and writes both for the window's tokens; pass A accumulates dk, dv per
key tile (updating the dS sum in a program-private scratch, read back from L2 for the fold), and dq either in
pass A too (``DQ_IN_PASS_A``: summed over key tiles in a second program-private scratch) or in a pass B that
recomputes dS per query tile; the autotuner picks.

Swin V2 (``COSINE``): q and k are normalised per token and head as they are loaded (norms in fp32), the head's
temperature tau replaces the scale, and the gradients of q and k go back through the normalisation
(``tiles.normalize_rows_grad``) where they are stored: dk after its sum over query tiles, dq after its sum over
key tiles. The temperature's gradient is sum_ij dS_ij cos_ij = sum_i q_i . u_i with u = dS k (dq of the
normalised q before tau), summed per program and folded over programs in a fixed order like the table's.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import triton
import triton.language as tl

from ..geometry import MASK_VALUE
from .indexing import in_window_coords, relative_key, token_tile
from .launch import (LOG2E, Launch, PlanCache, WindowGrid, as_rows, autotuning, cdiv, check_kernel_inputs,
                     check_launch_args, check_output, eager, head_major, head_major_strides, launch_device,
                     next_power_of_2, placeholder, row_layout, tensor_signature)
from .tiles import bias_tile, load_head, load_kv, normalize_rows, normalize_rows_grad, scores_log2, store_head

Pair = Tuple[int, int]
#: Table rows folded per step of the dS -> table-row reduction (a [ROWS_BLOCK, BLOCK] gather).
ROWS_BLOCK = 64
#: Bound on the tiled path's dS scratch (fp32 [N, N] per program and head): a 24x24 window's is 1.3 MB, so at
#: SwinV2-B 384's stage 1 (batch 64: 1024 windows, 4 heads) four windows per program would need 1.4 GB. Past the
#: bound each program reduces more windows (fewer, longer programs; the order is still fixed by the shape).
SCRATCH_BYTES = 256 << 20
#: Largest window (tokens) whose keys the backward keeps resident, for fp16/bf16 heads of up to 32 lanes: k, v
#: and their fp32 gradients for 256 keys are 96 registers per thread at 8 warps.
RESIDENT_KEYS = 256


@triton.jit
def _query_side(QKV, PAD, DOUT, LSE, DELTA, INV_L, b, win, lse_row, offs, d, qkv_row_stride, dout_row_stride,
                n_win_w, H, W, Hp, Wp, shift_h, shift_w, head, n_heads,
                HEAD_DIM: tl.constexpr, WH: tl.constexpr, WW: tl.constexpr,
                HAS_PAD: tl.constexpr, SHIFT_BEFORE_PAD: tl.constexpr, COSINE: tl.constexpr):
    """A query tile: its tokens, q (normalised with COSINE, and its norms), dO, the forward's lse (the
    stabiliser), and the inverse normaliser and delta (from INV_L and DELTA, ``[B*H*W, heads]``, which the
    prologue wrote for the window; 0 for padding queries, whose dO is 0, so they contribute nothing)."""
    tok, real, valid, region = token_tile(
        b, win, offs, n_win_w, H, W, Hp, Wp, shift_h, shift_w, WH, WW, SHIFT_BEFORE_PAD)
    q = load_head(QKV + head * HEAD_DIM, tok, qkv_row_stride, d, HEAD_DIM, real, valid, PAD + head * HEAD_DIM,
                  HAS_PAD)
    # Padding queries' outputs are cropped away: their dO (and delta) are 0, so they contribute nothing.
    do = load_head(DOUT + head * HEAD_DIM, tok, dout_row_stride, d, HEAD_DIM, real, valid, PAD, False)
    lse = tl.load(LSE + lse_row + offs, mask=valid, other=0.0)
    inv_l = tl.load(INV_L + tok * n_heads + head, mask=real, other=0.0)
    delta = tl.load(DELTA + tok * n_heads + head, mask=real, other=0.0)
    if COSINE:
        q, norm = normalize_rows(q)
    else:
        norm = lse  # unused
    return tok, real, valid, region, q, do, lse, inv_l, delta, norm


@triton.jit
def _key_side(QKV, PAD, b, win, offs, d, qkv_row_stride, n_win_w, H, W, Hp, Wp, shift_h, shift_w, C, head,
              HEAD_DIM: tl.constexpr, WH: tl.constexpr, WW: tl.constexpr, HAS_PAD: tl.constexpr,
              SHIFT_BEFORE_PAD: tl.constexpr, COSINE: tl.constexpr):
    """A key tile: its tokens, k (normalised with COSINE, and its norms) and v."""
    tok, real, valid, region = token_tile(
        b, win, offs, n_win_w, H, W, Hp, Wp, shift_h, shift_w, WH, WW, SHIFT_BEFORE_PAD)
    k, v = load_kv(QKV, PAD, tok, qkv_row_stride, d, C, head, HEAD_DIM, real, valid, HAS_PAD)
    if COSINE:
        k, norm = normalize_rows(k)
    else:
        norm = offs  # unused
    return tok, real, valid, region, k, v, norm


@triton.jit
def _window_p_and_ds(q, k, v, do, qk_scale, bias, region, valid, HAS_SHIFT: tl.constexpr,
                     MASK_VALUE: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """A whole window as one tile, keys on rows: P^T, the softmax of the scores recomputed here (own row max
    and sum, so a one-token window has P = 1 exactly), and dS^T = P^T * (dP^T - delta) with
    delta = rowsum(P * dP) from the same products: ``[N, M]`` each."""
    s = scores_log2(q, k, qk_scale, bias, region, region, valid, HAS_SHIFT, MASK_VALUE, DOT_PRECISION, True)
    p = tl.exp2(s - tl.max(s, 0)[None, :])
    p = p * (1.0 / tl.sum(p, 0))[None, :]
    dp = tl.dot(v, tl.trans(do), input_precision=DOT_PRECISION)
    return p, p * (dp - tl.sum(p * dp, 0)[None, :])


@triton.jit
def _tile_p_and_dp(q, k, v, do, lse, qk_scale, bias, region_m, region_n, valid_n, HAS_SHIFT: tl.constexpr,
                   MASK_VALUE: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One query/key tile pair, queries on rows: exp2(s - lse), the probabilities before the row's own
    normaliser (the forward's lse only keeps them in range), and dP = dO v^T. ``[M, N]`` each, fp32."""
    s = scores_log2(q, k, qk_scale, bias, region_m, region_n, valid_n, HAS_SHIFT, MASK_VALUE, DOT_PRECISION)
    return tl.exp2(s - lse[:, None]), tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)


@triton.jit
def _tile_p_and_ds(q, k, v, do, lse, inv_l, delta, qk_scale, bias, region_m, region_n, valid_n,
                   HAS_SHIFT: tl.constexpr, MASK_VALUE: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """P and dS = P * (dP - delta) of a tile pair (``[M, N]``), with the normaliser and delta the prologue
    derived from the same scores. dS is in natural units, so it is also the gradient of the bias."""
    p, dp = _tile_p_and_dp(q, k, v, do, lse, qk_scale, bias, region_m, region_n, valid_n, HAS_SHIFT, MASK_VALUE,
                           DOT_PRECISION)
    p = p * inv_l[:, None]
    return p, p * (dp - delta[:, None])


@triton.jit
def _finish_dq(u, q, q_norm, sm_scale, dcos, COSINE: tl.constexpr):
    """dq from u = dS k summed over the key tiles (before the scale): ``u * scale``, or with COSINE the gradient
    through q's normalisation of ``u * tau``, adding the tile's q . u to the running temperature gradient."""
    if COSINE:
        dcos += tl.sum(q.to(tl.float32) * u, 0)
        return normalize_rows_grad(u * sm_scale, q, q_norm), dcos
    return u * sm_scale, dcos


@triton.jit
def _store_dk_dv(dq_ptr, C, tok, row_stride, d, HEAD_DIM: tl.constexpr, real, valid, dk, dv, dpad_k, dpad_v,
                 HAS_PAD: tl.constexpr):
    """Store a key tile's dk, dv at its real tokens' rows; padding keys' dk, dv go to the running sums that
    become the qkv bias gradient (their q/k/v are that bias)."""
    store_head(dq_ptr + C, tok, row_stride, d, HEAD_DIM, real, dk)
    store_head(dq_ptr + 2 * C, tok, row_stride, d, HEAD_DIM, real, dv)
    if HAS_PAD:
        is_pad = (valid & ~real)[:, None]
        dpad_k += tl.sum(tl.where(is_pad, dk, 0.0), 0)
        dpad_v += tl.sum(tl.where(is_pad, dv, 0.0), 0)
    return dpad_k, dpad_v


@triton.jit
def _table_rows_from_registers(ds_t, out_ptr, row_stride, WH: tl.constexpr, WW: tl.constexpr, TWH: tl.constexpr,
                               TWW: tl.constexpr, BLOCK: tl.constexpr, ROWS_BLOCK: tl.constexpr):
    """Sum a ``[key, query]`` dS^T register tile onto the (2TWh-1)(2TWw-1) table rows and store them at
    ``out_ptr + row * row_stride``: row r of query i reads its one key (``relative_key``) with an in-register
    gather, then the queries are summed, in a fixed order."""
    ROWS: tl.constexpr = (2 * TWH - 1) * (2 * TWW - 1)
    q = tl.arange(0, BLOCK)
    q_valid = q < WH * WW
    ty, tx = in_window_coords(q, WW)
    for r0 in range(0, ROWS, ROWS_BLOCK):
        r = r0 + tl.arange(0, ROWS_BLOCK)
        key, inside = relative_key(ty[None, :], tx[None, :], r[:, None], WH, WW, TWH, TWW)
        ok = inside & q_valid[None, :] & (r < ROWS)[:, None]
        pairs = tl.gather(ds_t, tl.where(ok, key, 0), 0)  # [rows, query]: ds_t[key(r, q), q]
        tl.store(out_ptr + r * row_stride, tl.sum(tl.where(ok, pairs, 0.0), 1), mask=r < ROWS)


@triton.jit
def _table_rows_from_scratch(ds, out_ptr, row_stride, WH: tl.constexpr, WW: tl.constexpr, TWH: tl.constexpr,
                             TWW: tl.constexpr, BLOCK: tl.constexpr, ROWS_BLOCK: tl.constexpr):
    """As ``_table_rows_from_registers``, for the ``[query, key]`` dS partial the tiled path keeps in its
    program-private scratch (just written by this program, so read back from L2)."""
    N: tl.constexpr = WH * WW
    ROWS: tl.constexpr = (2 * TWH - 1) * (2 * TWW - 1)
    for r0 in range(0, ROWS, ROWS_BLOCK):
        r = r0 + tl.arange(0, ROWS_BLOCK)
        acc = tl.zeros([ROWS_BLOCK], tl.float32)
        for q0 in range(0, N, BLOCK):
            q = q0 + tl.arange(0, BLOCK)
            ty, tx = in_window_coords(q, WW)
            key, inside = relative_key(ty[None, :], tx[None, :], r[:, None], WH, WW, TWH, TWW)
            ok = inside & (q < N)[None, :] & (r < ROWS)[:, None]
            acc += tl.sum(tl.load(ds + q[None, :] * N + key, mask=ok, other=0.0), 1)
        tl.store(out_ptr + r * row_stride, acc, mask=r < ROWS)


@triton.jit
def _table_rows_from_query_tile(ds, q0, out_ptr, row_stride, WH: tl.constexpr, WW: tl.constexpr,
                                TWH: tl.constexpr, TWW: tl.constexpr, BLOCK: tl.constexpr,
                                ROWS_BLOCK: tl.constexpr):
    """Add a ``[query, key]`` dS register tile, the ``BLOCK`` queries from ``q0`` against every key of the
    window (key ``j`` in column ``j``), onto the table rows at ``out_ptr + row * row_stride``: the program's
    own partial, read, added to and written back (the caller orders successive calls with a barrier). Row
    ``r`` of query ``i`` reads its one key (``relative_key``); only the rows the tile can reach are visited."""
    N: tl.constexpr = WH * WW
    ROWS: tl.constexpr = (2 * TWH - 1) * (2 * TWW - 1)
    offs_m = q0 + tl.arange(0, BLOCK)
    ty, tx = in_window_coords(offs_m, WW)
    q_valid = offs_m < N
    # Rows are ordered by dy = ty_q - ty_k first (``relative_table_row``), and the tile's query rows
    # [q0 // WW, last // WW] pair with keys of dy in [q0 // WW - (WH - 1), last // WW].
    lo = (tl.min(ty, 0) + TWH - WH) * (2 * TWW - 1)
    hi = (tl.max(tl.where(q_valid, ty, 0), 0) + TWH) * (2 * TWW - 1)
    for r0 in range(lo, hi, ROWS_BLOCK):
        r = r0 + tl.arange(0, ROWS_BLOCK)
        key, inside = relative_key(ty[:, None], tx[:, None], r[None, :], WH, WW, TWH, TWW)
        ok = inside & q_valid[:, None] & (r < ROWS)[None, :]
        pairs = tl.gather(ds, tl.where(ok, key, 0), 1)  # [query, rows]: ds[q, key(q, r)]
        rows_sum = tl.sum(tl.where(ok, pairs, 0.0), 0)
        row_ptr = out_ptr + r * row_stride
        acc = tl.load(row_ptr, mask=r < ROWS, other=0.0)
        # Every warp holds (and loads) the chunk, one thread stores it: all loads before that store.
        tl.debug_barrier()
        tl.store(row_ptr, acc + rows_sum, mask=r < ROWS)


@triton.jit
def _window_attention_bwd_kernel(
    QKV, PAD, TABLE, COS_SCALE, DOUT, LSE, DELTA, INV_L, DQKV, DS_SCRATCH, DQ_SCRATCH, DTABLE_PARTIAL, DPAD_PARTIAL,
    DCOS_PARTIAL,
    qkv_row_stride, dout_row_stride, dqkv_row_stride, stride_tr, stride_th,
    H, W, Hp, Wp, n_win_w, n_win, shift_h, shift_w,
    n_windows, C, qk_scale, sm_scale,
    WINDOWS_PER_PROGRAM: tl.constexpr,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    WH: tl.constexpr, WW: tl.constexpr, TWH: tl.constexpr, TWW: tl.constexpr,
    HAS_PAD: tl.constexpr, HAS_SHIFT: tl.constexpr, SHIFT_BEFORE_PAD: tl.constexpr,
    DOT_PRECISION: tl.constexpr, COSINE: tl.constexpr, MASK_VALUE: tl.constexpr,
    BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, ROWS_BLOCK: tl.constexpr, DQ_IN_PASS_A: tl.constexpr,
):
    N: tl.constexpr = WH * WW
    ROWS: tl.constexpr = (2 * TWH - 1) * (2 * TWW - 1)
    TILES: tl.constexpr = (N + BLOCK - 1) // BLOCK
    pid = tl.program_id(0)
    head = tl.program_id(1)
    n_heads = tl.num_programs(1)
    d = tl.arange(0, BLOCK_D)
    table_ptr = TABLE + head * stride_th
    dq_ptr = DQKV + head * HEAD_DIM
    # [programs, rows, heads]: summed over programs, the table gradient comes out in the table's own layout.
    dtable_ptr = DTABLE_PARTIAL + pid.to(tl.int64) * ROWS * n_heads + head
    # Padding tokens' dk and dv: they belong to the qkv bias (pad_qkv), reduced across programs later.
    dpad_k = tl.zeros([BLOCK_D], tl.float32)
    dpad_v = tl.zeros([BLOCK_D], tl.float32)
    # Swin V2: the head's temperature tau replaces the q scale; dtau = sum_ij dS_ij cos_ij = sum_i q_i . u_i over
    # the program's windows, with u = dS k the gradient of the normalised q before the factor tau.
    dcos = tl.zeros([BLOCK_D], tl.float32)
    if COSINE:
        sm_scale = tl.load(COS_SCALE + head).to(tl.float32)
        qk_scale = sm_scale * qk_scale  # the launcher's qk_scale is log2(e)

    w_start = pid * WINDOWS_PER_PROGRAM
    w_end = tl.minimum(w_start + WINDOWS_PER_PROGRAM, n_windows)
    if TILES == 1:
        # The whole window is one register tile: one pass gives dq, dk, dv; dS accumulates in registers.
        offs = tl.arange(0, BLOCK)
        ds_acc = tl.zeros([BLOCK, BLOCK], tl.float32)
        bias = bias_tile(table_ptr, stride_tr, offs, offs, WH, WW, TWH, TWW, True)  # the same in every window
        for window in range(w_start, w_end):
            b = window // n_win
            win = window % n_win
            tok, real, valid, region = token_tile(
                b, win, offs, n_win_w, H, W, Hp, Wp, shift_h, shift_w, WH, WW, SHIFT_BEFORE_PAD)
            q = load_head(QKV + head * HEAD_DIM, tok, qkv_row_stride, d, HEAD_DIM, real, valid,
                          PAD + head * HEAD_DIM, HAS_PAD)
            k, v = load_kv(QKV, PAD, tok, qkv_row_stride, d, C, head, HEAD_DIM, real, valid, HAS_PAD)
            do = load_head(DOUT + head * HEAD_DIM, tok, dout_row_stride, d, HEAD_DIM, real, valid, PAD, False)
            if COSINE:
                q, q_norm = normalize_rows(q)
                k, k_norm = normalize_rows(k)

            # Keys on rows: P^T and dS^T feed dV and dK as they are; only dQ's operand is transposed.
            pt, dst = _window_p_and_ds(q, k, v, do, qk_scale, bias, region, valid, HAS_SHIFT, MASK_VALUE,
                                       DOT_PRECISION)
            dv = tl.dot(pt.to(do.dtype), do, input_precision=DOT_PRECISION)
            ds_acc += dst
            dstc = dst.to(q.dtype)
            dk = tl.dot(dstc, q, input_precision=DOT_PRECISION) * sm_scale
            dq = tl.dot(tl.trans(dstc), k, input_precision=DOT_PRECISION)
            if COSINE:
                dcos += tl.sum(q.to(tl.float32) * dq, 0)
                dq = normalize_rows_grad(dq * sm_scale, q, q_norm)
                dk = normalize_rows_grad(dk, k, k_norm)
            else:
                dq = dq * sm_scale
            store_head(dq_ptr, tok, dqkv_row_stride, d, HEAD_DIM, real, dq)
            dpad_k, dpad_v = _store_dk_dv(dq_ptr, C, tok, dqkv_row_stride, d, HEAD_DIM, real, valid, dk, dv,
                                          dpad_k, dpad_v, HAS_PAD)
        _table_rows_from_registers(ds_acc, dtable_ptr, n_heads, WH, WW, TWH, TWW, BLOCK, ROWS_BLOCK)
    elif BLOCK_N >= N:
        # Keys resident: every key of the window is one [BLOCK_N, BLOCK_D] register tile, loaded once per
        # window, and query tiles stream past it. Each query tile's scores span whole rows, so its softmax
        # (own row max and sum, as the one-tile path), delta, dS and dq are complete in one visit; dk and dv
        # accumulate in registers over the query tiles. Five dots per query tile, no recomputation, no lse, no
        # scratch: the tile's dS is folded onto the table rows it reaches at once, into the program's own row
        # partial (zeroed here first, so a relaunch by the autotuner is harmless).
        for r0 in range(0, ROWS, ROWS_BLOCK):
            r = r0 + tl.arange(0, ROWS_BLOCK)
            tl.store(dtable_ptr + r * n_heads, tl.zeros([ROWS_BLOCK], tl.float32), mask=r < ROWS)
        offs_n = tl.arange(0, BLOCK_N)
        for window in range(w_start, w_end):
            b = window // n_win
            win = window % n_win
            tok_n, real_n, valid_n, region_n, k, v, k_norm = _key_side(
                QKV, PAD, b, win, offs_n, d, qkv_row_stride, n_win_w, H, W, Hp, Wp, shift_h, shift_w, C, head,
                HEAD_DIM, WH, WW, HAS_PAD, SHIFT_BEFORE_PAD, COSINE)
            dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
            dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
            for m_tile in range(TILES):
                offs_m = m_tile * BLOCK + tl.arange(0, BLOCK)
                tok_m, real_m, valid_m, region_m = token_tile(
                    b, win, offs_m, n_win_w, H, W, Hp, Wp, shift_h, shift_w, WH, WW, SHIFT_BEFORE_PAD)
                q = load_head(QKV + head * HEAD_DIM, tok_m, qkv_row_stride, d, HEAD_DIM, real_m, valid_m,
                              PAD + head * HEAD_DIM, HAS_PAD)
                do = load_head(DOUT + head * HEAD_DIM, tok_m, dout_row_stride, d, HEAD_DIM, real_m, valid_m, PAD,
                               False)
                if COSINE:
                    q, q_norm = normalize_rows(q)
                else:
                    q_norm = offs_m  # unused
                bias = bias_tile(table_ptr, stride_tr, offs_m, offs_n, WH, WW, TWH, TWW)
                s = scores_log2(q, k, qk_scale, bias, region_m, region_n, valid_n, HAS_SHIFT, MASK_VALUE,
                                DOT_PRECISION)
                p = tl.exp2(s - tl.max(s, 1)[:, None])
                p = p * (1.0 / tl.sum(p, 1))[:, None]
                dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
                ds = p * (dp - tl.sum(p * dp, 1)[:, None])
                dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PRECISION)
                dsc = ds.to(q.dtype)
                dk += tl.dot(tl.trans(dsc), q, input_precision=DOT_PRECISION)
                dq, dcos = _finish_dq(tl.dot(dsc, k, input_precision=DOT_PRECISION), q, q_norm, sm_scale, dcos,
                                      COSINE)
                store_head(dq_ptr, tok_m, dqkv_row_stride, d, HEAD_DIM, real_m, dq)
                tl.debug_barrier()  # the previous fold's row stores, by other threads of this program
                _table_rows_from_query_tile(ds, m_tile * BLOCK, dtable_ptr, n_heads, WH, WW, TWH, TWW, BLOCK,
                                            ROWS_BLOCK)
            dk = dk * sm_scale
            if COSINE:
                dk = normalize_rows_grad(dk, k, k_norm)
            dpad_k, dpad_v = _store_dk_dv(dq_ptr, C, tok_n, dqkv_row_stride, d, HEAD_DIM, real_n, valid_n, dk, dv,
                                          dpad_k, dpad_v, HAS_PAD)
    else:
        ds_partial = DS_SCRATCH + (pid.to(tl.int64) * n_heads + head) * N * N
        # With DQ_IN_PASS_A, dq accumulates over key tiles in a program-private [N, BLOCK_D] fp32 scratch
        # (each tile read back from L1/L2 by the threads that wrote it) and pass B is skipped: per tile pair
        # one [BLOCK, BLOCK_D] read-modify-write instead of recomputing S and dP (two dots, exp2, the bias
        # gather and the k/v loads). Which wins is the autotuner's call on the device.
        dq_partial = DQ_SCRATCH + (pid.to(tl.int64) * n_heads + head) * N * BLOCK_D
        for window in range(w_start, w_end):
            b = window // n_win
            win = window % n_win
            lse_row = (window * n_heads.to(tl.int64) + head) * N
            # Prologue: per query, the normaliser l = sum_j exp2(s_ij - lse_i) and delta = rowsum(P * dP) over
            # all key tiles, from the same products passes A and B recompute; 1 / l and delta go to INV_L and
            # DELTA (each token is in one window, so no other program writes these elements), read back from
            # cache by the passes.
            for m_tile in range(TILES):
                offs_m = m_tile * BLOCK + tl.arange(0, BLOCK)
                tok_m, real_m, valid_m, region_m = token_tile(
                    b, win, offs_m, n_win_w, H, W, Hp, Wp, shift_h, shift_w, WH, WW, SHIFT_BEFORE_PAD)
                q = load_head(QKV + head * HEAD_DIM, tok_m, qkv_row_stride, d, HEAD_DIM, real_m, valid_m,
                              PAD + head * HEAD_DIM, HAS_PAD)
                if COSINE:
                    q, _ = normalize_rows(q)
                do = load_head(DOUT + head * HEAD_DIM, tok_m, dout_row_stride, d, HEAD_DIM, real_m, valid_m, PAD,
                               False)
                lse = tl.load(LSE + lse_row + offs_m, mask=valid_m, other=0.0)
                l_i = tl.zeros([BLOCK], tl.float32)
                pdp_i = tl.zeros([BLOCK], tl.float32)
                for n_tile in range(TILES):
                    offs_n = n_tile * BLOCK + tl.arange(0, BLOCK)
                    tok_n, real_n, valid_n, region_n, k, v, _ = _key_side(
                        QKV, PAD, b, win, offs_n, d, qkv_row_stride, n_win_w, H, W, Hp, Wp, shift_h, shift_w, C,
                        head, HEAD_DIM, WH, WW, HAS_PAD, SHIFT_BEFORE_PAD, COSINE)
                    bias = bias_tile(table_ptr, stride_tr, offs_m, offs_n, WH, WW, TWH, TWW)
                    p, dp = _tile_p_and_dp(q, k, v, do, lse, qk_scale, bias, region_m, region_n, valid_n,
                                           HAS_SHIFT, MASK_VALUE, DOT_PRECISION)
                    l_i += tl.sum(p, 1)
                    pdp_i += tl.sum(p * dp, 1)
                # Lanes past the window (q = 0, all keys possibly across the shift mask) can sum to ~0: keep them
                # finite; nothing stores or reads them.
                inv_l = 1.0 / tl.where(valid_m, l_i, 1.0)
                tl.store(INV_L + tok_m * n_heads + head, inv_l, mask=real_m)
                tl.store(DELTA + tok_m * n_heads + head, pdp_i * inv_l, mask=real_m)
            tl.debug_barrier()  # those stores, by other threads of this program, before pass A reads them
            # Pass A: per key tile, dk and dv over all query tiles; dS into the program's private partial.
            for n_tile in range(TILES):
                offs_n = n_tile * BLOCK + tl.arange(0, BLOCK)
                tok_n, real_n, valid_n, region_n, k, v, k_norm = _key_side(
                    QKV, PAD, b, win, offs_n, d, qkv_row_stride, n_win_w, H, W, Hp, Wp, shift_h, shift_w, C, head,
                    HEAD_DIM, WH, WW, HAS_PAD, SHIFT_BEFORE_PAD, COSINE)
                dk = tl.zeros([BLOCK, BLOCK_D], tl.float32)
                dv = tl.zeros([BLOCK, BLOCK_D], tl.float32)
                for m_tile in range(TILES):
                    offs_m = m_tile * BLOCK + tl.arange(0, BLOCK)
                    tok_m, real_m, valid_m, region_m, q, do, lse, inv_l, delta, q_norm = _query_side(
                        QKV, PAD, DOUT, LSE, DELTA, INV_L, b, win, lse_row, offs_m, d, qkv_row_stride,
                        dout_row_stride, n_win_w, H, W, Hp, Wp, shift_h, shift_w, head, n_heads, HEAD_DIM, WH, WW,
                        HAS_PAD, SHIFT_BEFORE_PAD, COSINE)
                    bias = bias_tile(table_ptr, stride_tr, offs_m, offs_n, WH, WW, TWH, TWW)
                    p, ds = _tile_p_and_ds(q, k, v, do, lse, inv_l, delta, qk_scale, bias, region_m, region_n,
                                           valid_n, HAS_SHIFT, MASK_VALUE, DOT_PRECISION)
                    dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PRECISION)
                    dsc = ds.to(q.dtype)
                    dk += tl.dot(tl.trans(dsc), q, input_precision=DOT_PRECISION)
                    if DQ_IN_PASS_A:
                        dq = tl.dot(dsc, k, input_precision=DOT_PRECISION)
                    # Program-private partial: read-modify-write needs no atomics, only ordering among this
                    # program's own threads (the barrier), so the sum order is fixed.
                    part_ptr = ds_partial + offs_m[:, None] * N + offs_n[None, :]
                    part_mask = valid_m[:, None] & valid_n[None, :]
                    tl.debug_barrier()
                    if window > w_start:
                        ds += tl.load(part_ptr, mask=part_mask, other=0.0)
                    tl.store(part_ptr, ds, mask=part_mask)
                    if DQ_IN_PASS_A:
                        # Ordered like the dS partial: a barrier separates this tile's store from the next key
                        # tile's load of it (TILES >= 2 iterations apart) and from the next window's writes.
                        dq_tile = dq_partial + offs_m[:, None] * BLOCK_D + d[None, :]
                        if n_tile > 0:
                            dq += tl.load(dq_tile, mask=valid_m[:, None], other=0.0)
                        if n_tile == TILES - 1:
                            dq, dcos = _finish_dq(dq, q, q_norm, sm_scale, dcos, COSINE)
                            store_head(dq_ptr, tok_m, dqkv_row_stride, d, HEAD_DIM, real_m, dq)
                        else:
                            tl.store(dq_tile, dq, mask=valid_m[:, None])
                dk = dk * sm_scale
                if COSINE:
                    dk = normalize_rows_grad(dk, k, k_norm)
                dpad_k, dpad_v = _store_dk_dv(dq_ptr, C, tok_n, dqkv_row_stride, d, HEAD_DIM, real_n, valid_n,
                                              dk, dv, dpad_k, dpad_v, HAS_PAD)
            if not DQ_IN_PASS_A:
                # Pass B: per query tile, dq over all key tiles, recomputing dS.
                for m_tile in range(TILES):
                    offs_m = m_tile * BLOCK + tl.arange(0, BLOCK)
                    tok_m, real_m, valid_m, region_m, q, do, lse, inv_l, delta, q_norm = _query_side(
                        QKV, PAD, DOUT, LSE, DELTA, INV_L, b, win, lse_row, offs_m, d, qkv_row_stride,
                        dout_row_stride, n_win_w, H, W, Hp, Wp, shift_h, shift_w, head, n_heads, HEAD_DIM, WH, WW,
                        HAS_PAD, SHIFT_BEFORE_PAD, COSINE)
                    dq = tl.zeros([BLOCK, BLOCK_D], tl.float32)
                    for n_tile in range(TILES):
                        offs_n = n_tile * BLOCK + tl.arange(0, BLOCK)
                        tok_n, real_n, valid_n, region_n, k, v, _ = _key_side(
                            QKV, PAD, b, win, offs_n, d, qkv_row_stride, n_win_w, H, W, Hp, Wp, shift_h, shift_w,
                            C, head, HEAD_DIM, WH, WW, HAS_PAD, SHIFT_BEFORE_PAD, COSINE)
                        bias = bias_tile(table_ptr, stride_tr, offs_m, offs_n, WH, WW, TWH, TWW)
                        p, ds = _tile_p_and_ds(q, k, v, do, lse, inv_l, delta, qk_scale, bias, region_m, region_n,
                                               valid_n, HAS_SHIFT, MASK_VALUE, DOT_PRECISION)
                        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PRECISION)
                    dq, dcos = _finish_dq(dq, q, q_norm, sm_scale, dcos, COSINE)
                    store_head(dq_ptr, tok_m, dqkv_row_stride, d, HEAD_DIM, real_m, dq)
        tl.debug_barrier()  # the partial's last read-modify-writes, by other threads of this program
        _table_rows_from_scratch(ds_partial, dtable_ptr, n_heads, WH, WW, TWH, TWW, BLOCK, ROWS_BLOCK)
    if COSINE:  # [programs, heads]: summed over programs in a fixed order
        tl.store(DCOS_PARTIAL + pid.to(tl.int64) * n_heads + head, tl.sum(dcos, 0))
    if HAS_PAD:
        # [programs, (k, v), heads, BLOCK_D]: summed over programs, the k and v halves of the qkv bias in order.
        dpad_ptr = DPAD_PARTIAL + pid.to(tl.int64) * 2 * n_heads * BLOCK_D + head * BLOCK_D
        tl.store(dpad_ptr + d, dpad_k)
        tl.store(dpad_ptr + n_heads * BLOCK_D + d, dpad_v)


def bwd_launch_config(tokens: int, dtype: torch.dtype, block_d: int = 32) -> triton.Config:
    """The launch (``BLOCK``, ``DQ_IN_PASS_A``, warps, stages) for a window of ``tokens`` tokens in ``dtype``
    whose heads are ``block_d`` lanes wide (head_dim rounded up to a power of two, >= 16).

    From compiled-register evidence (tests/aot_compile.py, ptxas -v, sm_90/sm_89, Triton 3.6 and 3.8):
    fp16/bf16 windows of up to 64 tokens with heads of up to 32 lanes (every Swin config) are one register
    tile, with 8 warps (4 spill 230-400 bytes per thread) and 2 stages (3 spill more); windows of up to
    ``RESIDENT_KEYS`` tokens keep their keys resident (:func:`resident_keys_config`), larger ones loop over
    64-token tiles. Wider heads make a 64-token tile spill (592 B at 64 lanes) and overflow the 99 KB of
    shared memory of sm_86/sm_89 GPUs (148 KB at 128 lanes), so they loop over 32-token tiles (no spills, 53
    KB). fp32 dots run on the FMA units, and a 64-token fp32 tile spills 70-850 bytes whichever way it is
    launched, so fp32 windows of more than 32 tokens loop over 32-token tiles (no spills at 8 warps), or
    16-token tiles for 128-lane heads (32-token ones need 100 KB of shared memory).
    """
    if dtype == torch.float32 and tokens > 32:
        block, warps = (32, 8) if block_d <= 64 else (16, 4)
    elif block_d > 32 and tokens > 32:
        block, warps = 32, 8
    elif tokens > RESIDENT_KEYS:
        block, warps = 64, 8
    elif tokens > 64:
        return resident_keys_config(tokens)
    else:
        block = max(16, next_power_of_2(tokens))
        warps = 8 if block >= 64 else 4
    return triton.Config({"BLOCK": block, "BLOCK_N": block, "DQ_IN_PASS_A": False}, num_warps=warps, num_stages=2)


def resident_keys_config(tokens: int) -> triton.Config:
    """The keys-resident launch for fp16/bf16 windows of 65..RESIDENT_KEYS tokens with heads of up to 32 lanes
    (10x10, 12x12, 16x16): all keys in one ``BLOCK_N``-row tile, 16-query tiles, 8 warps.

    sm_90, Triton 3.8, head_dim 32, 10x10 (128 keys), 12x12 and 16x16 (256 keys): 16-query tiles at 8 warps take
    220-255 registers and spill nothing in bf16 (fp16 12x12: 140 bytes; V2's cosine 24-212 bytes), 27-69 KB of
    shared memory; 32-query tiles spill 1.2-2.7 KB, 4 warps 0.5 KB; 16 warps capped at 128 registers spill 0.2-0.4
    KB (a GPU may still prefer the doubled occupancy: an experiment for a session with one). sm_80 spills more
    (fp16 12x12: 380 bytes)."""
    return triton.Config({"BLOCK": 16, "BLOCK_N": next_power_of_2(tokens), "DQ_IN_PASS_A": False}, num_warps=8,
                         num_stages=2)


# What the autotuner chooses among for the tiled path's fp16/bf16 windows (more than RESIDENT_KEYS tokens, or
# forced; the first is bwd_launch_config's). The measurements below are of 12x12, before its keys were resident.
# On the H100 the 12x12 backward with 64-token tiles was L1-bound at 12.5% occupancy (one 8-warp program per SM)
# and the slowest kernel relative to its work. 32-token tiles waste less of a 144-token window (160 rows instead
# of 192) and spill nothing on sm_90 (64-token tiles: 20 B at 12x12); at 4 warps two programs fit per SM.
# DQ_IN_PASS_A trades pass B's recomputation (two of the seven dots per tile pair) for a dq read-modify-write in
# cache; it also lowers sm_90 spills at 12x12 (Triton 3.6, head_dim 32: 64-token tiles 28 -> 12 B; 32-token tiles
# at 8 warps 0 B either way). Every candidate is tiled, so the launcher's buffers suit them all.
_BWD_TILED_CONFIGS = [triton.Config({"BLOCK": block, "BLOCK_N": block, "DQ_IN_PASS_A": dq_in_a}, num_warps=warps,
                                     num_stages=2)
                      for block, warps, dq_in_a in ((64, 8, False), (32, 4, False), (32, 8, False), (64, 8, True),
                                                    (32, 8, True))]
_window_attention_bwd_autotuned = triton.autotune(
    configs=_BWD_TILED_CONFIGS,
    key=["WH", "WW", "HEAD_DIM", "HAS_SHIFT", "HAS_PAD", "WINDOWS_PER_PROGRAM", "COSINE"],
)(_window_attention_bwd_kernel)


def _windows_per_program(n_windows: int, num_heads: int) -> int:
    """Windows each program reduces. Depends on the shape only, so the summation order (and the bits of the
    table gradient) never changes between runs.

    Each program pays once, whatever the number of windows it covers, for its bias gather, its dS fold
    and its table-row partial (plus, for tiled windows, an fp32 ``[N, N]`` scratch per head, 83 KB at
    12x12), so fewer programs repeat less of that. About 1024 (window-group, head) programs still give an
    H100 ~8 waves (132 SMs, one 8-warp program per SM at 255 registers).
    """
    return int(max(1, min(16, (n_windows * num_heads) // 1024)))  # int(): a constexpr, concrete under tracing


def window_attention_bwd(
    dout: torch.Tensor,
    qkv: torch.Tensor,
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
    cosine_scale: Optional[torch.Tensor] = None,
    mask_value: float = MASK_VALUE,
    dqkv: Optional[torch.Tensor] = None,
    checked: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Launch the fused backward.

    Args:
        dout: ``[B, H, W, C]`` gradient of the output. qkv, lse: the forward's input and its log-sum-exp
            (``window_attention_fwd(..., return_lse=True)``; the output itself is not needed).
        table, num_heads, window, shift, scale, pad_qkv, shift_before_pad, table_window, cosine_scale,
            mask_value: as the forward.
        dqkv: optional ``[B, H, W, 3C]`` buffer (qkv's dtype, rows as ``as_rows`` takes them) to write.
        checked: as the forward's (False for arguments the forward already checked).

    Returns:
        ``(dqkv, dtable, dpad, dcosine_scale)``: dtable fp32 in the table's shape; dpad ``[3C]`` fp32 (zero q
        part), or None when nothing is padded or ``pad_qkv`` is None; dcosine_scale ``[heads]`` fp32, or None
        without ``cosine_scale``.
    """
    if checked:
        check_launch_args(qkv, table, num_heads, window, shift, pad_qkv, table_window)
    dqkv_rows, dqkv_stride = as_rows(dqkv) if dqkv is not None else (None, None)
    autotune = autotuning()
    # A trusted eager call (checked=False: the op's) with no dqkv buffer reuses its signature's plan. What the
    # plan is made from (kernels, config functions) is in the key, so a replaced one (tests force configs) is
    # not bypassed.
    traced = not eager()
    key = None if checked or dqkv is not None or traced else (
        tensor_signature(dout), tensor_signature(qkv), tensor_signature(lse), tensor_signature(table),
        tensor_signature(pad_qkv), tensor_signature(cosine_scale), num_heads, window, shift, scale,
        shift_before_pad, table_window, mask_value, autotune, bwd_launch_config, _windows_per_program,
        _window_attention_bwd_kernel, _window_attention_bwd_autotuned, RESIDENT_KEYS, SCRATCH_BYTES, ROWS_BLOCK)
    plan = _PLANS.get(key, lambda: _backward_plan(dout, qkv, lse, table, num_heads, window, shift, scale, pad_qkv,
                                                  shift_before_pad, table_window, cosine_scale, mask_value,
                                                  dqkv_stride, autotune))
    if dqkv is None:  # allocated here: contiguous, nothing to check
        dqkv = torch.empty(qkv.shape, device=qkv.device, dtype=qkv.dtype)
    else:
        check_output("dqkv", dqkv, dqkv_rows, dqkv_stride, tuple(qkv.shape), qkv)
    # tl.dot needs dO in the operands' dtype; a converted or copied dO is contiguous.
    dout = dout if plan.dout_rows else dout.to(qkv.dtype).contiguous()
    f32 = dict(device=qkv.device, dtype=torch.float32)
    dtable_partial = torch.empty(plan.dtable_shape, **f32)

    def buffer(shape):  # fp32 scratch a path needs (shape), or an argument it never reads (None)
        return torch.empty(shape, **f32) if shape is not None else placeholder(dtable_partial, traced)

    # The tiled path's per-token, per-head delta and inverse softmax normaliser, [2, B*H*W, heads], written by the
    # kernel's prologue and read back by its passes, and its [N, N] dS and dq scratch; the other paths keep all
    # of them in registers.
    delta, inv_l = buffer(plan.stats_shape).unbind() if plan.stats_shape is not None else (buffer(None), buffer(None))
    ds_scratch, dq_scratch = buffer(plan.ds_shape), buffer(plan.dq_shape)
    dpad_partial, dcos_partial = buffer(plan.dpad_shape), buffer(plan.dcos_shape)
    cosine = cosine_scale is not None
    cos = cosine_scale.contiguous() if cosine else placeholder(dtable_partial, traced)
    pad = pad_qkv.to(qkv.dtype).contiguous() if plan.has_pad else placeholder(qkv, traced)
    # The kernel takes each map by its first element and row stride (the plan's): the 4-D tensors themselves.
    with launch_device(qkv):
        plan.launch(qkv if plan.qkv_rows else qkv.contiguous(), pad, head_major(table), cos, dout,
                    lse.contiguous(), delta, inv_l, dqkv, ds_scratch, dq_scratch, dtable_partial, dpad_partial,
                    dcos_partial)
    # Fixed-order reduction over programs (no atomics).
    dtable = dtable_partial.sum(0)  # [rows, heads], the table's layout: no transposing copy
    dpad = None
    if plan.has_pad:
        C = qkv.shape[-1] // 3
        dkv = dpad_partial.sum(0)[..., : C // num_heads].reshape(2 * C)  # k then v, heads-major: a view
        dpad = torch.nn.functional.pad(dkv, (C, 0))  # the q part of the bias gets no gradient
    return dqkv, dtable, dpad, (dcos_partial.sum(0) if cosine else None)


class _BackwardPlan(NamedTuple):
    """What a backward call's metadata decides (see ``PlanCache``): the launch and the buffers' shapes (None:
    not needed by this path)."""

    qkv_rows: bool  # qkv's rows flatten as they are; else it is copied (contiguous) per call
    dout_rows: bool  # dO is in qkv's dtype and its rows flatten; else converted / copied per call
    has_pad: bool
    dtable_shape: tuple
    stats_shape: Optional[tuple]
    ds_shape: Optional[tuple]
    dq_shape: Optional[tuple]
    dpad_shape: Optional[tuple]
    dcos_shape: Optional[tuple]
    launch: Launch


_PLANS = PlanCache()


def _backward_plan(dout, qkv, lse, table, num_heads, window, shift, scale, pad_qkv, shift_before_pad, table_window,
                   cosine_scale, mask_value, dqkv_stride, autotune) -> _BackwardPlan:
    """The launch of a backward call, from its metadata alone (nothing is read, copied or allocated), with the
    checks of what the kernel supports."""
    g = WindowGrid.of(qkv, num_heads, window, shift, table_window, shift_before_pad)
    N = g.tokens
    check_kernel_inputs(qkv, table, g.head_dim, N, cosine_scale, num_heads)
    if tuple(dout.shape) != (g.B, g.H, g.W, g.C):
        raise ValueError(f"dout must be [B, H, W, C] = {(g.B, g.H, g.W, g.C)} like the forward's output, "
                         f"got {tuple(dout.shape)}")
    if tuple(lse.shape) != (g.B * g.n_win, num_heads, N) or lse.dtype != torch.float32:
        raise ValueError(f"lse must be the forward's float32 [B * nW, heads, N] = {(g.B * g.n_win, num_heads, N)} "
                         f"log-sum-exp (window_attention_fwd(..., return_lse=True)), got {tuple(lse.shape)} "
                         f"{lse.dtype}")
    for name, t in (("dout", dout), ("lse", lse)):
        if t.device != qkv.device:
            raise ValueError(f"{name} is on {t.device} but qkv is on {qkv.device}")
    qkv_as_is, qkv_stride = row_layout(qkv)
    dout_as_is, dout_stride = row_layout(dout) if dout.dtype == qkv.dtype else (False, g.C)  # converted: contiguous
    has_pad = g.padded and pad_qkv is not None  # without pad_qkv, padding tokens are zeros (the masked loads)
    config = bwd_launch_config(N, qkv.dtype, g.block_d)
    # The tiled path (windows larger than a query tile, keys not resident) keeps per-window state in memory.
    tiled = N > config.kwargs["BLOCK"] and N > config.kwargs["BLOCK_N"]
    # Candidates: _BWD_TILED_CONFIGS, all tiled. On a GPU with less shared memory (sm_86/89: 99 KB) the
    # autotuner skips those that do not fit (OutOfResources times as inf).
    tune = autotune and tiled and qkv.dtype != torch.float32
    n_windows = g.B * g.n_win
    per_program = _windows_per_program(n_windows, num_heads)
    if tiled:  # the tiled path's [N, N] dS scratch per program and head, bounded in total
        per_program = max(per_program, cdiv(n_windows * num_heads * N * N * 4, SCRATCH_BYTES))
    n_programs = cdiv(n_windows, per_program)
    cosine = cosine_scale is not None
    scale = 1.0 if cosine else g.head_dim**-0.5 if scale is None else scale  # cosine: qk_scale = log2(e)
    scalars = (qkv_stride, dout_stride, 3 * g.C if dqkv_stride is None else dqkv_stride, *head_major_strides(table),
               *g.geometry_args(), n_windows, g.C, scale * LOG2E, scale)
    constexprs = dict(WINDOWS_PER_PROGRAM=per_program, ROWS_BLOCK=ROWS_BLOCK,
                      **g.constexprs(qkv.dtype, has_pad, cosine, mask_value))
    grid = (n_programs, num_heads)
    if tune:  # every output is overwritten, not accumulated: the autotuner's repeated launches are harmless
        run = Launch(_window_attention_bwd_autotuned, grid, scalars, constexprs)
    else:
        run = Launch(_window_attention_bwd_kernel, grid, scalars,
                     dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages, **constexprs))
    return _BackwardPlan(
        qkv_rows=qkv_as_is, dout_rows=dout_as_is, has_pad=has_pad,
        dtable_shape=(n_programs, table.shape[0], num_heads),  # table rows: (2TWh-1)(2TWw-1)
        stats_shape=(2, g.B * g.H * g.W, num_heads) if tiled else None,
        ds_shape=(n_programs, num_heads, N, N) if tiled else None,
        dq_shape=(n_programs, num_heads, N, g.block_d) if tiled and (tune or config.kwargs["DQ_IN_PASS_A"]) else None,
        dpad_shape=(n_programs, 2, num_heads, g.block_d) if has_pad else None,
        dcos_shape=(n_programs, num_heads) if cosine else None, launch=run)
