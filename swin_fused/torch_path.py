"""The PyTorch backend of :func:`swin_fused.window_attention` (CPU, and CUDA when asked for).

For now it is the reference itself; it is the place to make the PyTorch path fast without touching the
readable spec in :mod:`swin_fused.reference`.
"""
from __future__ import annotations

from .reference import window_attention_reference


def window_attention_torch(qkv, table, num_heads, window, shift, scale, pad_qkv, shift_before_pad, table_window,
                           dropout_p=0.0):
    """Arguments as :func:`swin_fused.functional.window_attention` (already validated)."""
    return window_attention_reference(
        qkv, table, num_heads, window, shift, scale, pad_qkv, shift_before_pad, table_window, dropout_p
    )
