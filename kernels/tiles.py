"""Tile loads shared by the forward and backward kernels: one head's slice of a tile of tokens, the q/k/v of
a tile (padding tokens read the qkv bias), and the biased, masked score terms of a query/key tile pair.

Tensors are addressed as ``[B * H * W, channels]`` rows (``row_stride`` apart, channels contiguous): the
launchers pass any map whose batch and spatial dimensions flatten that way without copying.
"""
import triton
import triton.language as tl

from .indexing import LOG2E, in_window_coords, relative_table_row

#: ``F.normalize``'s eps, with which every Swin V2 implementation normalises q and k.
COSINE_EPS = tl.constexpr(1e-12)


@triton.jit
def load_head(ptr, tok, row_stride, d, HEAD_DIM: tl.constexpr, real, valid, pad_ptr, HAS_PAD: tl.constexpr):
    """``[tokens, BLOCK_D]`` head slice of each token; padding tokens (valid, not real) read ``pad_ptr``.

    ``ptr`` and ``pad_ptr`` already point at the head's first channel; lanes past the window or past
    HEAD_DIM read 0 (so padding reads zeros when there is no pad vector).
    """
    dmask = d < HEAD_DIM
    x = tl.load(ptr + tok[:, None] * row_stride + d[None, :], mask=real[:, None] & dmask[None, :], other=0.0)
    if HAS_PAD:
        pad = tl.load(pad_ptr + d, mask=dmask, other=0.0).to(x.dtype)
        x = tl.where((valid & ~real)[:, None], pad[None, :], x)
    return x


@triton.jit
def load_kv(QKV, PAD, tok, row_stride, d, C, head, HEAD_DIM: tl.constexpr, real, valid, HAS_PAD: tl.constexpr):
    """k and v ``[tokens, BLOCK_D]`` of one head (channels C + h*D and 2C + h*D of qkv)."""
    k = load_head(QKV + C + head * HEAD_DIM, tok, row_stride, d, HEAD_DIM, real, valid,
                  PAD + C + head * HEAD_DIM, HAS_PAD)
    v = load_head(QKV + 2 * C + head * HEAD_DIM, tok, row_stride, d, HEAD_DIM, real, valid,
                  PAD + 2 * C + head * HEAD_DIM, HAS_PAD)
    return k, v


@triton.jit
def store_head(ptr, tok, row_stride, d, HEAD_DIM: tl.constexpr, real, x):
    """Store ``[tokens, BLOCK_D]`` at each real token's own row (padding and out-of-window lanes dropped)."""
    tl.store(ptr + tok[:, None] * row_stride + d[None, :], x.to(ptr.dtype.element_ty),
             mask=real[:, None] & (d < HEAD_DIM)[None, :])


@triton.jit
def normalize_rows(x):
    """Swin V2's per-token normalisation of a ``[tokens, BLOCK_D]`` head tile, ``x / max(||x||, eps)`` as
    ``F.normalize``: the norm in fp32, so fp16 tokens whose squared norm passes 65504 still normalise. Returns
    the normalised tile in x's dtype (the dots' operand) and the fp32 norms ``[tokens]`` (for the gradient)."""
    xf = x.to(tl.float32)
    norm = tl.sqrt_rn(tl.sum(xf * xf, 1))
    return (xf / tl.maximum(norm, COSINE_EPS)[:, None]).to(x.dtype), norm


@triton.jit
def normalize_rows_grad(g, x_hat, norm):
    """The gradient through :func:`normalize_rows`: ``g`` = dL/dx_hat (fp32 ``[tokens, BLOCK_D]``) -> dL/dx =
    ``(g - x_hat (x_hat . g)) / ||x||``, or ``g / eps`` where the norm was clamped (``F.normalize``'s own)."""
    xf = x_hat.to(tl.float32)
    proj = tl.where(norm > COSINE_EPS, tl.sum(xf * g, 1), 0.0)
    return (g - xf * proj[:, None]) / tl.maximum(norm, COSINE_EPS)[:, None]


@triton.jit
def bias_tile(table_ptr, stride_r, offs_q, offs_k, WH: tl.constexpr, WW: tl.constexpr, TWH: tl.constexpr,
              TWW: tl.constexpr, KEYS_ON_ROWS: tl.constexpr = False):
    """fp32 relative position bias of one head between in-window query tokens ``offs_q`` and key tokens
    ``offs_k``: ``[M, N]``, or ``[N, M]`` with KEYS_ON_ROWS; 0 past the window. It depends on in-window
    positions only, so a kernel that loops over windows loads it once, not per window."""
    ty_q, tx_q = in_window_coords(offs_q, WW)
    ty_k, tx_k = in_window_coords(offs_k, WW)
    ok_q = offs_q < WH * WW
    ok_k = offs_k < WH * WW
    if KEYS_ON_ROWS:
        row = relative_table_row(ty_q[None, :], tx_q[None, :], ty_k[:, None], tx_k[:, None], TWH, TWW)
        ok = ok_k[:, None] & ok_q[None, :]
    else:
        row = relative_table_row(ty_q[:, None], tx_q[:, None], ty_k[None, :], tx_k[None, :], TWH, TWW)
        ok = ok_q[:, None] & ok_k[None, :]
    return tl.load(table_ptr + row * stride_r, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def scores_log2(q, k, qk_scale, bias, region_q, region_k, valid_k, HAS_SHIFT: tl.constexpr,
                MASK_VALUE: tl.constexpr, DOT_PRECISION: tl.constexpr, KEYS_ON_ROWS: tl.constexpr = False):
    """Scores in base-2 units, ``(q.k * scale + bias + mask) * log2(e)``, so that softmax can use exp2
    (``qk_scale`` = scale * log2(e), or Swin V2's per-head temperature * log2(e) with q, k normalised;
    ``bias`` from :func:`bias_tile`, the mask is MASK_VALUE across shift regions); keys past the window are
    -inf. fp32 ``[M, N]`` (queries on rows), or ``[N, M]`` with
    KEYS_ON_ROWS: the backward's orientation, in which dV = P^T dO and dK = dS^T Q take P^T and dS^T as they
    come out of the dots, with no transpose through shared memory."""
    if KEYS_ON_ROWS:
        s = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale
        if HAS_SHIFT:
            bias += tl.where(region_k[:, None] != region_q[None, :], MASK_VALUE, 0.0)
        return tl.where(valid_k[:, None], s + bias * LOG2E, float("-inf"))
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    if HAS_SHIFT:
        bias += tl.where(region_q[:, None] != region_k[None, :], MASK_VALUE, 0.0)
    return tl.where(valid_k[None, :], s + bias * LOG2E, float("-inf"))
