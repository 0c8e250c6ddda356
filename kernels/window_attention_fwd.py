"""Fused shifted-window attention, forward: one pass from qkv to the output, both in the natural layout.

What one program does: one (window, head, query tile) -- or, in the autotune configs with several windows
per program, that query tile of a few consecutive windows, with the bias tile gathered once. It derives which
map positions a window covers (cyclic shift and bottom/right padding as modular index arithmetic), gathers
q, k, v of those tokens straight from the ``[B, H, W, 3C]`` qkv tensor, adds the relative position bias read
from the ``[(2Wh-1)(2Ww-1), heads]`` table and the shift mask (official -100) derived from region ids, runs an
fp32 online softmax over key tiles, and writes each token's output at the token's own ``[B, H, W, C]``
position. No rolled or partitioned copy, no ``[nW, N, N]`` mask and no ``[heads, N, N]`` bias tensor exist.

Supports: windows up to 24x24 (576 tokens) and non-square ones (N = Wh*Ww tokens, one tile for N <= 64, key-tile loop
with online softmax beyond), head_dim 1..128 including non-powers of two (lanes masked), any number of
heads, shift 0..window-1 per axis, either shift/pad order, fp32 / fp16 / bf16 inputs (fp32 softmax and
accumulation; fp32 dots use IEEE precision, not TF32, so fp32 matches PyTorch's fp32), a custom scale, a
bias table larger than the window, Swin V2's scaled cosine attention (``COSINE``: q and k normalised per
token and head in fp32, the head's temperature read from a ``[heads]`` tensor) and any shift-mask value (HF
Swin V2: -200). Padding tokens are not masked: they read ``pad_qkv`` (the qkv bias).
Optionally stores the log-sum-exp (base 2) per (window, head, token) for the backward pass.
"""
from __future__ import annotations

import functools
from typing import NamedTuple, Optional, Tuple

import torch
import triton
import triton.language as tl

from ..geometry import MASK_VALUE
from .indexing import token_tile
from .launch import (ERROR_FLOOR, LOG2E, Launch, PlanCache, WindowGrid, as_rows, cdiv,  # noqa: F401
                     check_kernel_inputs, check_launch_args, check_output, eager, head_major, head_major_strides,
                     launch_device, next_power_of_2, placeholder, row_layout, tensor_signature)
from .launch import autotuning as _autotuning
from .tiles import bias_tile, load_head, load_kv, normalize_rows, scores_log2, store_head

Pair = Tuple[int, int]


# (BLOCK_M, BLOCK_N, num_warps, windows per program). Windows of <= 64 tokens are one tile (no key loop);
# larger windows loop over key tiles. Compiled for sm_90 (tests/aot_compile.py + ptxas -v), 128-row tiles and
# 4-warp 64x64 tiles spill for 144/256-token windows (190-1570 bytes); these do not. On the H100 the 12x12
# forward with 64-row tiles ran at 12.5% occupancy (151 registers x 8 warps: one program per SM), far from
# the roofline; 16- and 32-row tiles at 4 warps need 96-160 registers, so 3-5 programs fit per SM. A one-tile program may
# run several windows with its bias tile gathered once: fewer gather instructions per window, but about
# twice the registers (98 -> 196 at 4 warps for 7x7 fp16 with Triton 3.6), so fewer programs per SM; the
# autotuner measures which wins on the device.
_FWD_CONFIGS = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "WINDOWS_PER_PROGRAM": wpp}, num_warps=w, num_stages=2)
    for bm, bn, w, wpp in ((16, 16, 2, 1), (32, 32, 2, 1), (32, 32, 4, 1), (64, 64, 4, 1), (64, 64, 8, 1),
                           (32, 64, 4, 1), (64, 128, 8, 1), (64, 64, 4, 4), (64, 64, 8, 4), (16, 64, 4, 1))
]


def _window_configs(configs, wh: int, ww: int):
    """Candidate tiles for a window: at most what its token count rounds up to (larger tiles only add masked
    lanes), several windows per program only for one-tile windows; the first is the heuristic choice used
    when not autotuning."""
    cap = max(16, next_power_of_2(wh * ww))
    if cap <= 64:
        return [c for c in configs if c.kwargs["BLOCK_N"] == cap and c.kwargs["BLOCK_M"] in (cap, cap // 2)]

    def large(c):  # 64-row tiles at 8 warps, or 16/32-row tiles at 4 warps (fewer registers, more programs)
        bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        return bn >= 64 and (bm == 64 and c.num_warps == 8 or bm < 64 and bn == 64 and c.num_warps == 4)

    return [c for c in configs if c.kwargs["WINDOWS_PER_PROGRAM"] == 1 and large(c)]


@functools.lru_cache(maxsize=None)
def _heuristic_config(wh: int, ww: int, dtype: torch.dtype, block_d: int = 32) -> triton.Config:
    """The config launched without autotuning: the window's first candidate, but 8 warps for fp32 (whose
    IEEE dots run on the FMA units: the 4-warp 7x7 fp32 program spills 88 B on sm_90 with Triton 3.6), and
    16-row tiles for fp32 heads wider than 32 lanes (sm_90, Triton 3.6: the 64-row tile spills 124 B at 7x7 and
    64 lanes, 15 KB at 128 lanes, 18 KB at 12x12 and 64 lanes; 16-row tiles 0 B, 660 B and 920 B)."""
    if dtype == torch.float32 and block_d > 32:
        n = max(16, next_power_of_2(wh * ww))
        return triton.Config({"BLOCK_M": 16, "BLOCK_N": min(n, 64), "WINDOWS_PER_PROGRAM": 1}, num_warps=4,
                             num_stages=2)
    candidates = _window_configs(_FWD_CONFIGS, wh, ww)
    if dtype == torch.float32:
        wide = [c for c in candidates if c.num_warps == 8 and c.kwargs["WINDOWS_PER_PROGRAM"] == 1]
        candidates = wide or candidates
    return candidates[0]


def _prune_fwd_configs(configs, named_args, **kwargs):
    """The autotuner's pruning: the window's candidates (``_window_configs``)."""
    args = {**named_args, **kwargs}  # Triton 3.6-3.8 pass the constexprs as kwargs; older releases may not
    if "WH" not in args:  # then one config that is right for every window
        return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps,
                                       c.kwargs["WINDOWS_PER_PROGRAM"]) == (64, 64, 4, 1)]
    return _window_configs(configs, args["WH"], args["WW"])


@triton.jit
def _attend_window(QKV, PAD, OUT, LSE, window, head, n_heads, offs_m, d, bias, table_ptr, stride_tr,
                   qkv_row_stride, out_row_stride, H, W, Hp, Wp, n_win_w, n_win, shift_h, shift_w, C, qk_scale,
                   HEAD_DIM: tl.constexpr, WH: tl.constexpr, WW: tl.constexpr, TWH: tl.constexpr,
                   TWW: tl.constexpr, HAS_PAD: tl.constexpr, HAS_SHIFT: tl.constexpr,
                   SHIFT_BEFORE_PAD: tl.constexpr, STORE_LSE: tl.constexpr, DOT_PRECISION: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BIAS_GIVEN: tl.constexpr,
                   COSINE: tl.constexpr, MASK_VALUE: tl.constexpr):
    """One query tile of one window and head: online softmax over the key tiles, output (and lse) stored.
    With BIAS_GIVEN, ``bias`` is the (single) key tile's bias, gathered by the caller once for all its
    windows; otherwise each key tile's bias is gathered here."""
    N: tl.constexpr = WH * WW
    N_TILES: tl.constexpr = (N + BLOCK_N - 1) // BLOCK_N
    b = window // n_win
    win = window % n_win
    tok_m, real_m, valid_m, region_m = token_tile(
        b, win, offs_m, n_win_w, H, W, Hp, Wp, shift_h, shift_w, WH, WW, SHIFT_BEFORE_PAD)
    q = load_head(QKV + head * HEAD_DIM, tok_m, qkv_row_stride, d, HEAD_DIM, real_m, valid_m,
                  PAD + head * HEAD_DIM, HAS_PAD)
    if COSINE:
        q, _ = normalize_rows(q)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for n_tile in tl.static_range(N_TILES):  # one iteration for windows of <= BLOCK_N tokens
        offs_n = n_tile * BLOCK_N + tl.arange(0, BLOCK_N)
        tok_n, real_n, valid_n, region_n = token_tile(
            b, win, offs_n, n_win_w, H, W, Hp, Wp, shift_h, shift_w, WH, WW, SHIFT_BEFORE_PAD)
        k, v = load_kv(QKV, PAD, tok_n, qkv_row_stride, d, C, head, HEAD_DIM, real_n, valid_n, HAS_PAD)
        if COSINE:
            k, _ = normalize_rows(k)
        if not BIAS_GIVEN:
            bias = bias_tile(table_ptr, stride_tr, offs_m, offs_n, WH, WW, TWH, TWW)
        s = scores_log2(q, k, qk_scale, bias, region_m, region_n, valid_n, HAS_SHIFT, MASK_VALUE, DOT_PRECISION)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new

    store_head(OUT + head * HEAD_DIM, tok_m, out_row_stride, d, HEAD_DIM, real_m, acc / l_i[:, None])
    if STORE_LSE:
        tl.store(LSE + (window * n_heads.to(tl.int64) + head) * N + offs_m, m_i + tl.log2(l_i), mask=valid_m)


@triton.jit
def _window_attention_fwd_kernel(
    QKV, PAD, TABLE, COS_SCALE, OUT, LSE,
    qkv_row_stride, out_row_stride, stride_tr, stride_th,
    H, W, Hp, Wp, n_win_w, n_win, shift_h, shift_w,
    C, qk_scale, n_windows,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    WH: tl.constexpr, WW: tl.constexpr, TWH: tl.constexpr, TWW: tl.constexpr,
    HAS_PAD: tl.constexpr, HAS_SHIFT: tl.constexpr, SHIFT_BEFORE_PAD: tl.constexpr, STORE_LSE: tl.constexpr,
    DOT_PRECISION: tl.constexpr, COSINE: tl.constexpr, MASK_VALUE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, WINDOWS_PER_PROGRAM: tl.constexpr,
):
    M_TILES: tl.constexpr = (WH * WW + BLOCK_M - 1) // BLOCK_M
    pid = tl.program_id(0)
    head = tl.program_id(1)
    n_heads = tl.num_programs(1)
    if COSINE:  # Swin V2: the head's temperature exp(clamp(logit_scale)) replaces the q scale
        qk_scale = tl.load(COS_SCALE + head).to(tl.float32) * qk_scale  # the launcher's qk_scale is log2(e)
    table_ptr = TABLE + head * stride_th
    d = tl.arange(0, BLOCK_D)
    offs_m = (pid % M_TILES) * BLOCK_M + tl.arange(0, BLOCK_M)
    window = (pid // M_TILES) * WINDOWS_PER_PROGRAM  # windows run over the batch: b * n_win + win
    if WINDOWS_PER_PROGRAM == 1:  # the bias argument is unused (``d`` fills it): gathered per key tile
        _attend_window(QKV, PAD, OUT, LSE, window, head, n_heads, offs_m, d, d, table_ptr, stride_tr,
                       qkv_row_stride, out_row_stride, H, W, Hp, Wp, n_win_w, n_win, shift_h, shift_w, C, qk_scale,
                       HEAD_DIM, WH, WW, TWH, TWW, HAS_PAD, HAS_SHIFT, SHIFT_BEFORE_PAD, STORE_LSE, DOT_PRECISION,
                       BLOCK_M, BLOCK_N, BLOCK_D, False, COSINE, MASK_VALUE)
    else:  # one key tile (see _window_configs): its bias is the same in every window, gathered once
        bias = bias_tile(table_ptr, stride_tr, offs_m, tl.arange(0, BLOCK_N), WH, WW, TWH, TWW)
        for w in range(window, tl.minimum(window + WINDOWS_PER_PROGRAM, n_windows)):
            _attend_window(QKV, PAD, OUT, LSE, w, head, n_heads, offs_m, d, bias, table_ptr, stride_tr,
                           qkv_row_stride, out_row_stride, H, W, Hp, Wp, n_win_w, n_win, shift_h, shift_w, C,
                           qk_scale, HEAD_DIM, WH, WW, TWH, TWW, HAS_PAD, HAS_SHIFT, SHIFT_BEFORE_PAD, STORE_LSE,
                           DOT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_D, True, COSINE, MASK_VALUE)


# Launched directly (one heuristic config) under the interpreter or with SWIN_FUSED_AUTOTUNE=0: an autotuner
# with one config left after pruning still benchmarks it in some Triton releases (3.6), which needs a driver.
_window_attention_fwd_autotuned = triton.autotune(
    configs=_FWD_CONFIGS,
    key=["WH", "WW", "HEAD_DIM", "HAS_SHIFT", "HAS_PAD", "STORE_LSE", "COSINE"],
    prune_configs_by={"early_config_prune": _prune_fwd_configs},
)(_window_attention_fwd_kernel)


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
    cosine_scale: Optional[torch.Tensor] = None,
    mask_value: float = MASK_VALUE,
    out: Optional[torch.Tensor] = None,
    return_lse: bool = False,
    checked: bool = True,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Launch the fused forward.

    Args:
        qkv: ``[B, H, W, 3 * heads * head_dim]`` (copied only if its rows do not flatten, see ``as_rows``).
        table: ``[(2TWh-1)(2TWw-1), heads]``, any float dtype (read in fp32), any strides.
        num_heads, window, shift, scale, pad_qkv, shift_before_pad, table_window, cosine_scale, mask_value: as
            :func:`swin_fused.window_attention` (with ``cosine_scale``, ``scale`` is ignored).
        out: optional ``[B, H, W, heads * head_dim]`` buffer in qkv's dtype, rows as ``as_rows`` takes them.
        return_lse: also return the base-2 log-sum-exp ``[B * nW, heads, Wh * Ww]`` fp32 for the backward.
        checked: False skips the argument checks (shapes, window, shift, table, pad vector) that
            :func:`swin_fused.window_attention` has already made; what the kernel supports is always checked.

    Returns:
        ``(out, lse or None)``.
    """
    if checked:
        check_launch_args(qkv, table, num_heads, window, shift, pad_qkv, table_window)
    out_rows, out_stride = as_rows(out) if out is not None else (None, None)
    autotune = _autotuning()
    # A trusted eager call (checked=False: the op's) with no out buffer reuses its signature's plan. The
    # kernels and the config function are in the key, so a replaced one (tests force configs) is not bypassed.
    traced = not eager()
    key = None if checked or out is not None or traced else (
        tensor_signature(qkv), tensor_signature(table), tensor_signature(pad_qkv), tensor_signature(cosine_scale),
        num_heads, window, shift, scale, shift_before_pad, table_window, mask_value, return_lse, autotune,
        _heuristic_config, _window_attention_fwd_kernel, _window_attention_fwd_autotuned)
    plan = _PLANS.get(key, lambda: _forward_plan(qkv, table, num_heads, window, shift, scale, pad_qkv,
                                                 shift_before_pad, table_window, cosine_scale, mask_value,
                                                 return_lse, out_stride, autotune))
    if out is None:  # allocated here: contiguous, nothing to check (and nothing to read under fake tensors)
        out = torch.empty(plan.out_shape, device=qkv.device, dtype=qkv.dtype)
    else:
        check_output("out", out, out_rows, out_stride, plan.out_shape, qkv)
    # Arguments a constexpr switches off (no lse, no pad vector, no cosine) are never read: placeholders.
    lse = (torch.empty(plan.lse_shape, device=qkv.device, dtype=torch.float32) if return_lse
           else placeholder(out, traced))
    pad = pad_qkv.to(qkv.dtype).contiguous() if plan.has_pad else placeholder(qkv, traced)
    cos = cosine_scale.contiguous() if cosine_scale is not None else placeholder(out, traced)
    # The kernel takes each map by its first element and row stride (the plan's): the 4-D tensors themselves.
    with launch_device(qkv):
        plan.launch(qkv if plan.qkv_rows else qkv.contiguous(), pad, head_major(table), cos, out, lse)
    return out, (lse if return_lse else None)


class _ForwardPlan(NamedTuple):
    """What a forward call's metadata decides (see ``PlanCache``)."""

    out_shape: tuple  # [B, H, W, C]
    lse_shape: tuple  # [B * nW, heads, N]
    qkv_rows: bool  # qkv's rows flatten as they are; else it is copied (contiguous) per call
    has_pad: bool
    launch: Launch


_PLANS = PlanCache()


def _forward_plan(qkv, table, num_heads, window, shift, scale, pad_qkv, shift_before_pad, table_window,
                  cosine_scale, mask_value, return_lse, out_stride, autotune) -> _ForwardPlan:
    """The launch of a forward call, from its metadata alone (nothing is read, copied or allocated)."""
    g = WindowGrid.of(qkv, num_heads, window, shift, table_window, shift_before_pad)
    check_kernel_inputs(qkv, table, g.head_dim, g.tokens, cosine_scale, num_heads)
    qkv_as_is, qkv_stride = row_layout(qkv)
    has_pad = g.padded and pad_qkv is not None  # without pad_qkv, padding tokens are zeros (the masked loads)
    # With cosine_scale the kernel multiplies the head's temperature into qk_scale (= log2(e) then).
    scale = 1.0 if cosine_scale is not None else g.head_dim**-0.5 if scale is None else scale
    windows = g.B * g.n_win
    out_stride = g.C if out_stride is None else out_stride  # None: allocated contiguous
    scalars = (qkv_stride, out_stride, *head_major_strides(table), *g.geometry_args(), g.C, scale * LOG2E, windows)
    constexprs = dict(STORE_LSE=return_lse, **g.constexprs(qkv.dtype, has_pad, cosine_scale is not None, mask_value))
    if autotune:
        def grid(meta):
            return cdiv(windows, meta["WINDOWS_PER_PROGRAM"]) * cdiv(g.tokens, meta["BLOCK_M"]), num_heads

        run = Launch(_window_attention_fwd_autotuned, grid, scalars, constexprs)
    else:
        config = _heuristic_config(*g.window, qkv.dtype, g.block_d)
        grid = (windows * cdiv(g.tokens, config.kwargs["BLOCK_M"]), num_heads)  # a window per program
        run = Launch(_window_attention_fwd_kernel, grid, scalars,
                     dict(constexprs, **config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages))
    return _ForwardPlan((g.B, g.H, g.W, g.C), (windows, num_heads, g.tokens), qkv_as_is, has_pad, run)
