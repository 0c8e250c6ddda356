"""The fused window attention as ``torch.library.triton_op``s with autograd.

Registered ops (``torch.compile(fullgraph=True)`` traces into them: a ``triton_op``'s body is its own fake
implementation, and the AOT dispatcher decomposes it, so each kernel launch, through ``wrap_triton``
(:func:`swin_fused.kernels.launch.launch`), is a node of the graph that inductor generates the launch of,
and CUDA graphs (``mode="reduce-overhead"``) capture; ``torch.export`` keeps the ops whole):

- ``swin_fused::window_attention(qkv, table, pad_qkv, cosine_scale, ...) -> (out, lse)``: the fused forward;
  ``lse`` is empty unless gradients are needed.
- ``swin_fused::window_attention_backward(dout, qkv, lse, table, pad_qkv, cosine_scale, ...) -> (dqkv, dtable,
  dpad, dcosine_scale)``.

The forward saves only its inputs and the fp32 log-sum-exp (``[B * nW, heads, N]``): never the output (the
backward derives delta = rowsum(P * dP) from its own recomputed probabilities) nor an ``N x N`` attention
matrix. Mixed dtypes are expected under AMP (bf16 qkv, fp32 table and qkv bias); each
gradient comes back in its input's dtype.

Plain eager calls skip the dispatcher: the same launches through a ``torch.autograd.Function``, without the
custom op's Python dispatch (about 20 us a call with gradients on, a sizeable share of a small batch's step)
and without re-checking what ``swin_fused.window_attention`` has checked. Whenever anything traces the call
(torch.compile, export, fake tensors, dispatch modes), it goes through the registered op. (torch.func
transforms never get here: :func:`swin_fused.window_attention` sends them to the reference.) A backward with
``create_graph=True`` returns the PyTorch path's gradients, which are differentiable, instead of the kernel's.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .backend import plain_eager
from .kernels.launch import head_major
from .kernels.window_attention_bwd import window_attention_bwd
from .kernels.window_attention_fwd import window_attention_fwd

__all__ = ["fused_window_attention"]


@torch.library.triton_op("swin_fused::window_attention", mutates_args=())
def _window_attention(
    qkv: Tensor,
    table: Tensor,
    pad_qkv: Optional[Tensor],
    cosine_scale: Optional[Tensor],
    num_heads: int,
    window: List[int],
    shift: List[int],
    scale: float,
    shift_before_pad: bool,
    table_window: List[int],
    mask_value: float,
    need_lse: bool,
) -> Tuple[Tensor, Tensor]:
    return _forward(qkv, table, pad_qkv, cosine_scale, num_heads, window, shift, scale, shift_before_pad,
                    table_window, mask_value, need_lse, checked=True)


def _forward(qkv, table, pad_qkv, cosine_scale, num_heads, window, shift, scale, shift_before_pad, table_window,
             mask_value, need_lse, checked):
    """``(out, lse)``; lse is empty unless ``need_lse``."""
    out, lse = window_attention_fwd(
        qkv, table, num_heads, tuple(window), tuple(shift), scale, pad_qkv, shift_before_pad, tuple(table_window),
        cosine_scale=cosine_scale, mask_value=mask_value, return_lse=need_lse, checked=checked,
    )
    return out, (lse if lse is not None else qkv.new_empty((0,), dtype=torch.float32))


@torch.library.triton_op("swin_fused::window_attention_backward", mutates_args=())
def _window_attention_backward(
    dout: Tensor,
    qkv: Tensor,
    lse: Tensor,
    table: Tensor,
    pad_qkv: Optional[Tensor],
    cosine_scale: Optional[Tensor],
    num_heads: int,
    window: List[int],
    shift: List[int],
    scale: float,
    shift_before_pad: bool,
    table_window: List[int],
    mask_value: float,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    dqkv, dtable, dpad, dcos = _gradients(dout, qkv, lse, table, pad_qkv, cosine_scale, num_heads, window, shift,
                                          scale, shift_before_pad, table_window, mask_value, checked=True)
    # An op cannot return None, nor one tensor twice (returns may not alias): a fresh empty for each.
    return (dqkv, dtable, dpad if dpad is not None else qkv.new_empty((0,)),
            dcos if dcos is not None else qkv.new_empty((0,)))


def _gradients(dout, qkv, lse, table, pad_qkv, cosine_scale, num_heads, window, shift, scale, shift_before_pad,
               table_window, mask_value, checked):
    """``(dqkv, dtable, dpad, dcosine_scale)``, each in its input's dtype; dpad is None without ``pad_qkv``
    (and zeros when it was given but nothing is padded), dcosine_scale None without ``cosine_scale``."""
    dqkv, dtable, dpad, dcos = window_attention_bwd(
        dout, qkv, lse, table, num_heads, tuple(window), tuple(shift), scale, pad_qkv, shift_before_pad,
        tuple(table_window), cosine_scale=cosine_scale, mask_value=mask_value, checked=checked,
    )
    if pad_qkv is not None:
        dpad = torch.zeros_like(pad_qkv) if dpad is None else dpad.to(pad_qkv.dtype)
    if dcos is not None:
        dcos = dcos.to(cosine_scale.dtype)
    return dqkv, dtable.to(table.dtype), dpad, dcos


def _setup_context(ctx, inputs, output):
    (qkv, table, pad_qkv, cosine_scale, num_heads, window, shift, scale, shift_before_pad, table_window,
     mask_value, need_lse) = inputs
    _, lse = output
    # No lse means the caller promised no gradients; _backward refuses rather than recomputing silently.
    ctx.missing_lse = not need_lse
    ctx.save_for_backward(qkv, table, pad_qkv, cosine_scale, lse)
    ctx.args = (num_heads, window, shift, scale, shift_before_pad, table_window, mask_value)


def _saved(ctx):
    """``(qkv, table, pad_qkv, cosine_scale, lse)`` saved by ``_setup_context``."""
    if ctx.missing_lse:
        raise RuntimeError("swin_fused::window_attention was called with need_lse=False but a gradient was "
                           "requested; call it through swin_fused.window_attention, which asks for the lse "
                           "whenever gradients are enabled")
    return ctx.saved_tensors


def _backward(ctx, dout, _dlse):
    qkv, table, pad_qkv, cosine_scale, lse = _saved(ctx)
    dqkv, dtable, dpad, dcos = torch.ops.swin_fused.window_attention_backward(
        dout, qkv, lse, table, pad_qkv, cosine_scale, *ctx.args)
    return (dqkv, dtable, (dpad if pad_qkv is not None else None), (dcos if cosine_scale is not None else None),
            *_NO_GRADS)


_NO_GRADS = (None,) * 8  # num_heads .. need_lse


torch.library.register_autograd("swin_fused::window_attention", _backward, setup_context=_setup_context)


class _EagerWindowAttention(torch.autograd.Function):
    """The op for plain eager calls (see the module docstring): same launches, same saved tensors. The
    forward(ctx, ...) form: with a separate setup_context, every apply binds the signature through inspect
    (~40 us)."""

    @staticmethod
    def forward(ctx, qkv, table, *rest):
        # Both launchers read the table head-major: copy it once here, and let the backward reuse the copy.
        inputs = (qkv, head_major(table), *rest)
        out, lse = _forward(*inputs, checked=False)
        _setup_context(ctx, inputs, (out, lse))
        ctx.table = table  # the input itself (a reference, not a copy), for a double backward
        return out

    @staticmethod
    def backward(ctx, dout):
        qkv, table, pad_qkv, cosine_scale, lse = _saved(ctx)
        if torch.is_grad_enabled():  # create_graph=True, e.g. a gradient penalty
            grads = _differentiable_gradients(dout, qkv, ctx.table, pad_qkv, cosine_scale, *ctx.args)
        else:
            grads = _gradients(dout, qkv, lse, table, pad_qkv, cosine_scale, *ctx.args, checked=False)
        return (*grads, *_NO_GRADS)


def _differentiable_gradients(dout, qkv, table, pad_qkv, cosine_scale, num_heads, window, shift, scale,
                              shift_before_pad, table_window, mask_value):
    """``(dqkv, dtable, dpad)`` that are themselves differentiable, for ``create_graph=True``: the fused
    backward's outputs carry no graph, so a second derivative through them would silently miss every term
    that flows through the first. Instead the PyTorch path's forward is recomputed from the saved inputs and
    differentiated by autograd with ``create_graph``. Slower, and only taken in that case."""
    from .torch_path import window_attention_torch

    inputs = (qkv, table, pad_qkv, cosine_scale)
    leaves = [t for t in inputs if t is not None and t.requires_grad]
    out = window_attention_torch(qkv, table, num_heads, window, shift, None if cosine_scale is not None else scale,
                                 pad_qkv, shift_before_pad, table_window, 0.0, cosine_scale, mask_value)
    grads = iter(torch.autograd.grad(out, leaves, dout, create_graph=True, allow_unused=True))
    return tuple(next(grads) if t is not None and t.requires_grad else None for t in inputs)


def _plain_eager() -> bool:
    """See :func:`swin_fused.backend.plain_eager` (looked up here, where the tests replace it)."""
    return plain_eager()


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
    cosine_scale: Optional[Tensor] = None,
    mask_value: float = -100.0,
) -> Tensor:
    """The fused op with autograd. Arguments as :func:`swin_fused.window_attention` (already validated;
    ``pad_qkv`` is None unless the map is padded; with ``cosine_scale``, ``scale`` is unused)."""
    head_dim = qkv.shape[-1] // (3 * num_heads)
    scale = 1.0 if cosine_scale is not None else head_dim**-0.5 if scale is None else float(scale)
    need_lse = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (qkv, table, pad_qkv, cosine_scale))
    if _plain_eager():
        return _EagerWindowAttention.apply(qkv, table, pad_qkv, cosine_scale, num_heads, tuple(window), tuple(shift),
                                           scale, bool(shift_before_pad), tuple(table_window), mask_value, need_lse)
    out, _ = torch.ops.swin_fused.window_attention(
        qkv, table, pad_qkv, cosine_scale, num_heads, list(window), list(shift), scale, bool(shift_before_pad),
        list(table_window), mask_value, need_lse,
    )
    return out
