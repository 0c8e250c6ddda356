"""The fused op's argument checks, shared by :func:`swin_fused.window_attention` and the kernel launchers (which a
caller may use directly): every message names the offending value and what was expected.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple, Union

import torch

from .geometry import to_2tuple

__all__ = ["check_window_attention_args", "check_scale", "check_cosine_args", "fail", "IntOrPair"]

IntOrPair = Union[int, Sequence[int]]


#: What the op computes in: the fused kernels take the first three (see _fused_supports).
_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def fail(message: str) -> None:
    raise ValueError(f"window_attention: {message}")


def check_window_attention_args(
    qkv: torch.Tensor,
    table: torch.Tensor,
    num_heads: int,
    window_size: IntOrPair,
    shift_size: IntOrPair,
    pad_qkv: Optional[torch.Tensor],
    table_window: Optional[IntOrPair],
) -> Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int], int]:
    """Validate the op's arguments; return ``(window, shift, table_window, head_dim)``.

    Every message names the offending value and what was expected.
    """
    if not isinstance(qkv, torch.Tensor) or qkv.dim() != 4:
        fail(f"qkv must be a 4-D tensor [B, H, W, 3*heads*head_dim], got "
              f"{tuple(qkv.shape) if isinstance(qkv, torch.Tensor) else type(qkv).__name__}")
    if qkv.dtype not in _DTYPES:
        fail(f"qkv must be a floating-point tensor (float32, float16, bfloat16 or float64), got dtype {qkv.dtype}")
    B, H, W, C3 = qkv.shape
    if min(B, H, W, C3) <= 0:
        fail(f"qkv has an empty dimension: shape {tuple(qkv.shape)}, expected B, H, W and channels >= 1")
    if isinstance(num_heads, bool) or not isinstance(num_heads, numbers.Integral) or num_heads <= 0:
        fail(f"num_heads must be a positive int, got {num_heads!r}")
    if C3 % (3 * num_heads):
        fail(f"qkv's last dimension {C3} is not 3 * num_heads * head_dim for num_heads={num_heads}")
    head_dim = C3 // (3 * num_heads)
    window = to_2tuple(window_size, "window_size")
    shift = to_2tuple(shift_size, "shift_size")
    if min(window) <= 0:
        fail(f"window_size must be positive, got {window}")
    for s, w, axis in zip(shift, window, "hw"):
        if not 0 <= s < w:
            fail(f"shift_size must satisfy 0 <= shift < window in each dimension, got shift {shift} "
                  f"for window {window} ({axis})")
    twin = window if table_window is None else to_2tuple(table_window, "table_window")
    if twin[0] < window[0] or twin[1] < window[1]:
        fail(f"table_window {twin} must not be smaller than window_size {window}")
    rows = (2 * twin[0] - 1) * (2 * twin[1] - 1)
    if not isinstance(table, torch.Tensor) or tuple(table.shape) != (rows, num_heads):
        got = tuple(table.shape) if isinstance(table, torch.Tensor) else type(table).__name__
        fail(f"relative position bias table must have shape ((2*{twin[0]}-1)*(2*{twin[1]}-1), num_heads) = "
              f"{(rows, num_heads)}, got {got}")
    if not table.is_floating_point():
        raise TypeError(f"window_attention: relative position bias table must be a floating-point tensor, got "
                        f"dtype {table.dtype}")
    if table.device != qkv.device:
        fail(f"table is on {table.device} but qkv is on {qkv.device}")
    if pad_qkv is not None:
        if not isinstance(pad_qkv, torch.Tensor) or not pad_qkv.is_floating_point():
            got = pad_qkv.dtype if isinstance(pad_qkv, torch.Tensor) else type(pad_qkv).__name__
            raise TypeError(f"window_attention: pad_qkv must be None or a floating-point tensor of shape ({C3},) "
                            f"(the qkv bias; any float dtype, it is cast to qkv's), got {got}")
        if tuple(pad_qkv.shape) != (C3,):
            fail(f"pad_qkv must have shape ({C3},) (the qkv bias), got {tuple(pad_qkv.shape)}")
        if pad_qkv.device != qkv.device:
            fail(f"pad_qkv is on {pad_qkv.device} but qkv is on {qkv.device}")
    return window, shift, twin, head_dim


def check_scale(scale) -> None:
    """``scale`` is None or a finite Python number. Skipped under torch.compile, which may trace a float
    attribute as a symbolic value (``dynamic=True``) that math.isfinite cannot take."""
    if scale is None or torch.compiler.is_compiling() or isinstance(scale, (torch.SymFloat, torch.SymInt)):
        return
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"window_attention: scale must be None or a Python float, got {scale!r} "
                        f"({type(scale).__name__})")
    if not math.isfinite(scale):
        fail(f"scale must be a finite float (or None for head_dim ** -0.5), got {scale}")


def check_cosine_args(qkv: torch.Tensor, num_heads: int, scale, cosine_scale: Optional[torch.Tensor],
                      mask_value) -> None:
    """Swin V2's arguments: ``cosine_scale`` None or a floating ``[heads]`` tensor on qkv's device (with no
    ``scale`` beside it), ``mask_value`` a finite float <= 0."""
    if cosine_scale is not None:
        if not isinstance(cosine_scale, torch.Tensor) or not cosine_scale.is_floating_point():
            got = cosine_scale.dtype if isinstance(cosine_scale, torch.Tensor) else type(cosine_scale).__name__
            raise TypeError(f"window_attention: cosine_scale must be None or a floating-point [num_heads] tensor "
                            f"(Swin V2's exp(clamp(logit_scale))), got {got}")
        if tuple(cosine_scale.shape) != (num_heads,):
            fail(f"cosine_scale must have shape ({num_heads},) (one temperature per head; reshape the "
                 f"[heads, 1, 1] logit_scale), got {tuple(cosine_scale.shape)}")
        if cosine_scale.device != qkv.device:
            fail(f"cosine_scale is on {cosine_scale.device} but qkv is on {qkv.device}")
        if scale is not None:
            fail(f"scale={scale!r} was given with cosine_scale: cosine attention has no q scale (pass scale=None)")
    if torch.compiler.is_compiling() or isinstance(mask_value, (torch.SymFloat, torch.SymInt)):
        return
    if isinstance(mask_value, bool) or not isinstance(mask_value, (int, float)) or not math.isfinite(mask_value) \
            or mask_value > 0:
        fail(f"mask_value must be a finite float <= 0 (official -100.0), got {mask_value!r}")
