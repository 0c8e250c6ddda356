"""The executable spec of the fused op: shifted-window attention in plain PyTorch.

This is the readable path every kernel is tested against, step by step as the paper and the official code
do it: (pad) -> roll -> partition -> per-window biased, masked softmax attention -> reverse -> roll back ->
crop. It is deliberately unoptimized; see :mod:`swin_fused.torch_path` for the fast PyTorch backend.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .geometry import (
    MASK_VALUE,
    pad_map,
    padded_size,
    relative_position_index,
    shift_mask,
    window_partition,
    window_reverse,
)

Pair = Tuple[int, int]


def relative_position_bias(table: torch.Tensor, window: Pair, table_window: Optional[Pair] = None) -> torch.Tensor:
    """``[(2TWh-1)(2TWw-1), heads] -> [heads, N, N]`` bias of each query/key pair of a ``window``.

    ``table_window`` (default ``window``) is the window the table was built for; a smaller window reads the
    table's central rows (the same relative offsets).
    """
    N = window[0] * window[1]
    index = relative_position_index(window, table.device, table_window)
    return table[index.view(-1)].view(N, N, -1).permute(2, 0, 1)


def window_attention_reference(
    qkv: torch.Tensor,
    table: torch.Tensor,
    num_heads: int,
    window_size: Pair,
    shift_size: Pair = (0, 0),
    scale: Optional[float] = None,
    pad_qkv: Optional[torch.Tensor] = None,
    shift_before_pad: bool = False,
    table_window: Optional[Pair] = None,
    dropout_p: float = 0.0,
    cosine_scale: Optional[torch.Tensor] = None,
    mask_value: float = MASK_VALUE,
) -> torch.Tensor:
    """Shifted-window multi-head attention on a channels-last map.

    Args:
        qkv: ``[B, H, W, 3 * heads * head_dim]``, channels ordered (q|k|v, head, head_dim): the qkv Linear
            applied to every token of the map in its natural position.
        table: ``[(2Wh-1)(2Ww-1), heads]`` relative position bias table.
        num_heads: number of heads.
        window_size: ``(Wh, Ww)``; H and W need not be multiples of it.
        shift_size: ``(Sh, Sw)``; the map is rolled by ``(-Sh, -Sw)`` before partitioning.
        scale: multiplies q; defaults to ``head_dim ** -0.5``.
        pad_qkv: ``[3 * heads * head_dim]`` q/k/v of padded tokens (the qkv bias: the Linear applied to a zero
            token); None means zeros. Padded tokens are attended to like any other, never masked.
        shift_before_pad: False (the package's, the official detection code's and torchvision's order) pads
            the map to window multiples, then rolls it; True (timm's order) rolls the unpadded map, then pads.
        table_window: the window ``table`` was built for (default ``window_size``).
        dropout_p: dropout on the attention probabilities (pass 0 outside training).
        cosine_scale: ``[heads]``: Swin V2's scaled cosine attention, ``normalize(q) normalize(k)^T *
            cosine_scale[h]`` (``F.normalize``, eps 1e-12) instead of ``q k^T * scale``; ``scale`` is unused.
        mask_value: added between tokens of different shift regions (official -100; HF Swin V2 adds its
            mask twice: -200).

    Returns:
        ``[B, H, W, heads * head_dim]``: each token's attention output at the token's own position.
    """
    B, H, W, C3 = qkv.shape
    head_dim = C3 // (3 * num_heads)
    scale = head_dim**-0.5 if scale is None else scale
    (wh, ww), (sh, sw) = window_size, shift_size
    Hp, Wp = padded_size(H, wh), padded_size(W, ww)

    if shift_before_pad:
        x = torch.roll(qkv, shifts=(-sh, -sw), dims=(1, 2)) if sh or sw else qkv
        x = pad_map(x, Hp, Wp, pad_qkv)
    else:
        x = pad_map(qkv, Hp, Wp, pad_qkv)
        x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2)) if sh or sw else x

    windows = window_partition(x, (wh, ww))  # B*nW, N, 3C
    Bw, N, _ = windows.shape
    q, k, v = windows.view(Bw, N, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # Bw, heads, N, D
    if cosine_scale is None:
        attn = (q * scale) @ k.transpose(-2, -1)  # Bw, heads, N, N
    else:  # as the official V2 code orders it: the cosine, then the per-head temperature
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * cosine_scale.to(attn.dtype).view(1, num_heads, 1, 1)
    attn = attn + relative_position_bias(table, (wh, ww), table_window).to(attn.dtype).unsqueeze(0)
    if sh or sw:
        mask = shift_mask(Hp, Wp, (wh, ww), (sh, sw), attn.device, attn.dtype, mask_value)  # nW, N, N
        attn = (attn.view(B, -1, num_heads, N, N) + mask[None, :, None]).view(Bw, num_heads, N, N)
    attn = attn.softmax(dim=-1)
    if dropout_p:
        attn = torch.nn.functional.dropout(attn, dropout_p)
    out = (attn @ v).transpose(1, 2).reshape(Bw, N, num_heads * head_dim)

    out = window_reverse(out, (wh, ww), Hp, Wp)  # B, Hp, Wp, C
    if shift_before_pad:
        out = out[:, :H, :W]
        out = torch.roll(out, shifts=(sh, sw), dims=(1, 2)) if sh or sw else out
    else:
        out = torch.roll(out, shifts=(sh, sw), dims=(1, 2)) if sh or sw else out
        out = out[:, :H, :W]
    return out.contiguous()
