"""Tile loads shared by the forward and backward kernels: one head's slice of a tile of tokens, the q/k/v of
a tile (padding tokens read the qkv bias), and the biased, masked score terms of a query/key tile pair.

Tensors are addressed as ``[B * H * W, channels]`` rows (``row_stride`` apart, channels contiguous): the
launchers pass any map whose batch and spatial dimensions flatten that way without copying.
"""
import triton
import triton.language as tl

from .indexing import LOG2E, MASK_VALUE, relative_table_row


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
def pair_bias(table_ptr, stride_r, ty_q, tx_q, region_q, ty_k, tx_k, region_k, pair_ok,
              TWH: tl.constexpr, TWW: tl.constexpr, HAS_SHIFT: tl.constexpr):
    """fp32 relative position bias of one head (+ MASK_VALUE across shift regions) for query and key
    coordinates that broadcast to the tile (``[M, 1]`` with ``[1, N]``, or the transpose)."""
    row = relative_table_row(ty_q, tx_q, ty_k, tx_k, TWH, TWW)
    bias = tl.load(table_ptr + row * stride_r, mask=pair_ok, other=0.0).to(tl.float32)
    if HAS_SHIFT:
        bias += tl.where(region_q != region_k, MASK_VALUE, 0.0)
    return bias


@triton.jit
def scores_log2(q, k, qk_scale, table_ptr, stride_r, ty_q, tx_q, region_q, ty_k, tx_k, region_k, valid_q, valid_k,
                TWH: tl.constexpr, TWW: tl.constexpr, HAS_SHIFT: tl.constexpr, DOT_PRECISION: tl.constexpr,
                KEYS_ON_ROWS: tl.constexpr = False):
    """Scores in base-2 units, ``(q.k * scale + bias + mask) * log2(e)``, so that softmax can use exp2
    (``qk_scale`` = scale * log2(e)); keys past the window are -inf. fp32 ``[M, N]`` (queries on rows), or
    ``[N, M]`` with KEYS_ON_ROWS: the backward's orientation, in which dV = P^T dO and dK = dS^T Q take P^T
    and dS^T as they come out of the dots, with no transpose through shared memory."""
    if KEYS_ON_ROWS:
        s = tl.dot(k, tl.trans(q), input_precision=DOT_PRECISION) * qk_scale
        bias = pair_bias(table_ptr, stride_r, ty_q[None, :], tx_q[None, :], region_q[None, :], ty_k[:, None],
                         tx_k[:, None], region_k[:, None], valid_k[:, None] & valid_q[None, :], TWH, TWW, HAS_SHIFT)
        return tl.where(valid_k[:, None], s + bias * LOG2E, float("-inf"))
    s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
    bias = pair_bias(table_ptr, stride_r, ty_q[:, None], tx_q[:, None], region_q[:, None], ty_k[None, :],
                     tx_k[None, :], region_k[None, :], valid_q[:, None] & valid_k[None, :], TWH, TWW, HAS_SHIFT)
    return tl.where(valid_k[None, :], s + bias * LOG2E, float("-inf"))
