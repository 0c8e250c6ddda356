"""The fused window attention as a ``torch.library`` custom op with autograd.

Registered ops (fake implementations included, so ``torch.compile(fullgraph=True)`` traces through them):

- ``swin_fused::window_attention(qkv, table, pad_qkv, ...) -> (out, lse)``: the fused forward; ``lse`` is
  empty unless gradients are needed.
- ``swin_fused::window_attention_backward(dout, qkv, out, lse, table, pad_qkv, ...) -> (dqkv, dtable,
  dpad)``.

The forward saves only its inputs, the output and the fp32 log-sum-exp (``[B * nW, heads, N]``): never an
``N x N`` attention matrix. Mixed dtypes are expected under AMP (bf16 qkv, fp32 table and qkv bias); each
gradient comes back in its input's dtype.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .geometry import padded_size
from .kernels.window_attention_bwd import window_attention_bwd
from .kernels.window_attention_fwd import window_attention_fwd

__all__ = ["fused_window_attention"]


@torch.library.custom_op("swin_fused::window_attention", mutates_args=())
def _window_attention(
    qkv: Tensor,
    table: Tensor,
    pad_qkv: Optional[Tensor],
    num_heads: int,
    window: List[int],
    shift: List[int],
    scale: float,
    shift_before_pad: bool,
    table_window: List[int],
    need_lse: bool,
) -> Tuple[Tensor, Tensor]:
    out, lse = window_attention_fwd(
        qkv, table, num_heads, tuple(window), tuple(shift), scale, pad_qkv, shift_before_pad, tuple(table_window),
        return_lse=need_lse,
    )
    return out, (lse if lse is not None else qkv.new_empty((0,), dtype=torch.float32))


@_window_attention.register_fake
def _window_attention_fake(qkv, table, pad_qkv, num_heads, window, shift, scale, shift_before_pad, table_window,
                           need_lse):
    B, H, W, C3 = qkv.shape
    out = qkv.new_empty((B, H, W, C3 // 3))
    if not need_lse:
        return out, qkv.new_empty((0,), dtype=torch.float32)
    n_windows = B * (padded_size(H, window[0]) // window[0]) * (padded_size(W, window[1]) // window[1])
    return out, qkv.new_empty((n_windows, num_heads, window[0] * window[1]), dtype=torch.float32)


@torch.library.custom_op("swin_fused::window_attention_backward", mutates_args=())
def _window_attention_backward(
    dout: Tensor,
    qkv: Tensor,
    out: Tensor,
    lse: Tensor,
    table: Tensor,
    pad_qkv: Optional[Tensor],
    num_heads: int,
    window: List[int],
    shift: List[int],
    scale: float,
    shift_before_pad: bool,
    table_window: List[int],
) -> Tuple[Tensor, Tensor, Tensor]:
    dqkv, dtable, dpad = window_attention_bwd(
        dout, qkv, out, lse, table, num_heads, tuple(window), tuple(shift), scale, pad_qkv, shift_before_pad,
        tuple(table_window),
    )
    if pad_qkv is None:
        dpad = qkv.new_empty((0,))
    elif dpad is None:  # nothing was padded
        dpad = torch.zeros_like(pad_qkv)
    return dqkv, dtable.to(table.dtype), dpad.to(pad_qkv.dtype if pad_qkv is not None else qkv.dtype)


@_window_attention_backward.register_fake
def _window_attention_backward_fake(dout, qkv, out, lse, table, pad_qkv, num_heads, window, shift, scale,
                                    shift_before_pad, table_window):
    dpad = torch.empty_like(pad_qkv) if pad_qkv is not None else qkv.new_empty((0,))
    return torch.empty_like(qkv), torch.empty_like(table), dpad


def _setup_context(ctx, inputs, output):
    qkv, table, pad_qkv, num_heads, window, shift, scale, shift_before_pad, table_window, need_lse = inputs
    out, lse = output
    # No lse means the caller promised no gradients; _backward refuses rather than recomputing silently.
    ctx.missing_lse = not need_lse
    ctx.save_for_backward(qkv, table, pad_qkv, out, lse)
    ctx.args = (num_heads, window, shift, scale, shift_before_pad, table_window)


def _backward(ctx, dout, _dlse):
    if ctx.missing_lse:
        raise RuntimeError("swin_fused::window_attention was called with need_lse=False but a gradient was "
                           "requested; call it through swin_fused.window_attention, which asks for the lse "
                           "whenever gradients are enabled")
    qkv, table, pad_qkv, out, lse = ctx.saved_tensors
    num_heads, window, shift, scale, shift_before_pad, table_window = ctx.args
    dqkv, dtable, dpad = torch.ops.swin_fused.window_attention_backward(
        dout, qkv, out, lse, table, pad_qkv, num_heads, window, shift, scale, shift_before_pad, table_window
    )
    return dqkv, dtable, (dpad if pad_qkv is not None else None), None, None, None, None, None, None, None


torch.library.register_autograd("swin_fused::window_attention", _backward, setup_context=_setup_context)


def fused_window_attention(
    qkv: Tensor,
    table: Tensor,
    num_heads: int,
    window: Sequence[int],
    shift: Sequence[int],
    scale: Optional[float],
    pad_qkv: Optional[Tensor],
    shift_before_pad: bool,
    table_window: Sequence[int],
) -> Tensor:
    """The fused op with autograd. Arguments as :func:`swin_fused.window_attention` (already validated;
    ``pad_qkv`` is None unless the map is padded)."""
    head_dim = qkv.shape[-1] // (3 * num_heads)
    scale = head_dim**-0.5 if scale is None else float(scale)
    need_lse = torch.is_grad_enabled() and (
        qkv.requires_grad or table.requires_grad or (pad_qkv is not None and pad_qkv.requires_grad)
    )
    out, _ = torch.ops.swin_fused.window_attention(
        qkv, table, pad_qkv, num_heads, list(window), list(shift), scale, bool(shift_before_pad),
        list(table_window), need_lse,
    )
    return out
