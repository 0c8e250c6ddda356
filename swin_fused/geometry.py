"""Window geometry of the Swin Transformer, written once in PyTorch.

Everything the reference path needs about where a token goes: padding to window multiples, the official
window/shift clamping rule, window partition and reverse, the relative position index and the region ids of
the shift mask. The Triton kernels re-derive the same quantities from indices in ``kernels/indexing.py``;
tests rebuild them a third time, independently, from the paper's definitions.

Conventions: maps are channels-last ``[B, H, W, C]``; a window is ``(Wh, Ww)``; a shift is ``(Sh, Sw)`` and
rolls the map by ``(-Sh, -Sw)`` before partitioning (so window-frame position ``p`` reads map position
``p + S``).
"""
from __future__ import annotations

import operator
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .backend import eager_cache

__all__ = [
    "MASK_VALUE",
    "to_2tuple",
    "padded_size",
    "needs_padding",
    "effective_window_shift",
    "window_partition",
    "window_reverse",
    "relative_position_index",
    "same_index",
    "table_gather_index",
    "region_ids",
    "shift_mask",
    "pad_map",
]

#: Added to the score of token pairs from different regions of a shifted window. The official value
#: (not -inf): checkpoints were trained with it, so it is part of the model's numbers.
MASK_VALUE = -100.0

Pair = Tuple[int, int]


def _as_int(value) -> int:
    """``value`` as an int if it is integer-like (int, NumPy/torch integer); bools, floats, strings: TypeError."""
    if isinstance(value, bool):
        raise TypeError(f"{value!r} is a bool")
    return operator.index(value)


def _is_int(value) -> bool:
    return isinstance(value, (int, torch.SymInt)) and not isinstance(value, bool)


def to_2tuple(value, name: str = "value") -> Pair:
    """``7 -> (7, 7)``; ``(7, 8) -> (7, 8)``; anything else (floats, strings, bools, 3 items) is a clear error."""
    # Fast path first: plain ints and SymInts (torch.compile with dynamic shapes) take no try/except and
    # no string formatting, which Dynamo cannot trace through.
    if _is_int(value):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and _is_int(value[0]) and _is_int(value[1]):
        return (value[0], value[1])
    return _to_2tuple_checked(value, name)


def _to_2tuple_checked(value, name: str) -> Pair:
    """Integer-likes (NumPy / torch integers) accepted; everything else raises, naming the value."""
    error = f"{name} must be an int or a pair of ints, got {value!r}"
    try:
        side = _as_int(value)
        return (side, side)
    except TypeError:
        pass
    if isinstance(value, (str, bytes)):  # iterable, but "77" is not (7, 7)
        raise TypeError(error)
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(error) from None
    if len(items) != 2:
        raise ValueError(error)
    try:
        return (_as_int(items[0]), _as_int(items[1]))
    except TypeError:
        raise TypeError(error) from None


def padded_size(size: int, window: int) -> int:
    """Smallest multiple of ``window`` that is >= ``size``."""
    return -(-size // window) * window


def needs_padding(H: int, W: int, window: Pair) -> bool:
    """Whether an ``H x W`` map must be padded to be cut into ``window``-sized windows."""
    return padded_size(H, window[0]) != H or padded_size(W, window[1]) != W


def effective_window_shift(resolution: Pair, window: int | Pair, shift: int | Pair) -> Tuple[Pair, Pair]:
    """The official rule: if the map is not larger than the window, use window = min(resolution), shift 0.

    Args:
        resolution: ``(H, W)`` of the token map the block sees.
        window: the configured window size.
        shift: the configured shift (0 for W-MSA blocks, window // 2 for SW-MSA blocks).

    Returns:
        ``((Wh, Ww), (Sh, Sw))`` the block actually uses.
    """
    window, shift = to_2tuple(window, "window_size"), to_2tuple(shift, "shift_size")
    if min(resolution) <= min(window):
        side = min(resolution)
        return (side, side), (0, 0)
    return window, shift


def window_partition(x: torch.Tensor, window: Pair) -> torch.Tensor:
    """``[B, H, W, C] -> [B * nW, Wh * Ww, C]``, windows in row-major order; H, W multiples of the window."""
    B, H, W, C = x.shape
    wh, ww = window
    x = x.view(B, H // wh, wh, W // ww, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, C)


def window_reverse(windows: torch.Tensor, window: Pair, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B * nW, Wh * Ww, C] -> [B, H, W, C]``."""
    wh, ww = window
    C = windows.shape[-1]
    x = windows.view(-1, H // wh, W // ww, wh, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


@eager_cache(maxsize=64)
def _relative_position_index_cpu(wh: int, ww: int, th: int, tw: int) -> torch.Tensor:
    # Explicit CPU: under a `with torch.device(...)` context a bare arange would land on that device and be
    # cached there (a meta index would then poison every later model).
    cpu = torch.device("cpu")
    coords = torch.stack(torch.meshgrid(torch.arange(wh, device=cpu), torch.arange(ww, device=cpu),
                                        indexing="ij")).flatten(1)  # 2, N
    rel = coords[:, :, None] - coords[:, None, :]  # 2, N, N: (query - key)
    return (rel[0] + th - 1) * (2 * tw - 1) + (rel[1] + tw - 1)


def relative_position_index(window: Pair, device=None, table_window: Optional[Pair] = None) -> torch.Tensor:
    """``[N, N]`` int64: row of the bias table for query i and key j of a window (N = Wh * Ww).

    ``index[i, j] = (yi - yj + TWh - 1) * (2 TWw - 1) + (xi - xj + TWw - 1)`` with (y, x) the in-window
    coordinates and (TWh, TWw) the window the table was built for (default: ``window``; a larger table's
    central rows hold the same offsets). Shared and cached: do not modify the result in place.
    """
    th, tw = window if table_window is None else table_window
    return _relative_position_index_cpu(window[0], window[1], th, tw).to(device)


def same_index(incoming: torch.Tensor, own: torch.Tensor) -> bool:
    """Whether a relative position index (a checkpoint's, a library's) equals ``own`` (the standard one), any
    device or dtype. Meta tensors (models built without storage) carry no values and count as equal."""
    if incoming.shape != own.shape:
        return False
    if incoming.is_meta or own.is_meta:
        return True
    return torch.equal(incoming.to(own.device), own.to(incoming.dtype))


@eager_cache(maxsize=64)
def _table_gather_index_cpu(window: Pair, table_window: Pair) -> torch.Tensor:
    rows = relative_position_index(window, table_window=table_window).reshape(-1)  # N*N
    n_pairs = rows.numel()
    n_rows = (2 * table_window[0] - 1) * (2 * table_window[1] - 1)
    counts = torch.bincount(rows, minlength=n_rows)
    order = torch.argsort(rows, stable=True)
    gather = torch.full((n_rows, int(counts.max())), n_pairs, dtype=torch.long)
    slot = torch.arange(n_pairs) - (torch.cumsum(counts, 0) - counts)[rows[order]]
    gather[rows[order], slot] = order
    return gather


def table_gather_index(window: Pair, table_window: Optional[Pair] = None, device=None) -> torch.Tensor:
    """``[table rows, max pairs]``: the flat (query * N + key) pairs whose bias is each table row, in a fixed
    order; unused slots point at ``N * N`` (callers append a zero there).

    The inverse of :func:`relative_position_index`, for summing a ``[..., N * N]`` gradient onto table rows
    deterministically (a gather and a sum in fixed order, where a scatter-add would use atomics on GPUs).
    """
    return _table_gather_index_cpu(tuple(window), tuple(table_window or window)).to(device)


def region_ids(Hp: int, Wp: int, window: Pair, shift: Pair, device=None) -> torch.Tensor:
    """``[Hp, Wp]`` int64 region id of each window-frame position of a shifted, padded map.

    Rows split at ``[0, Hp - Wh), [Hp - Wh, Hp - Sh), [Hp - Sh, Hp)``, columns likewise; id = 3 * row + col.
    With shift 0 in a dimension every window lies in one part of it, so nothing is masked there.
    """
    (wh, ww), (sh, sw) = window, shift
    y = torch.arange(Hp, device=device)
    x = torch.arange(Wp, device=device)
    row = (y >= Hp - wh).long() + (y >= Hp - sh).long()
    col = (x >= Wp - ww).long() + (x >= Wp - sw).long()
    return 3 * row[:, None] + col[None, :]


def shift_mask(Hp: int, Wp: int, window: Pair, shift: Pair, device=None, dtype=torch.float32,
               value: float = MASK_VALUE) -> torch.Tensor:
    """``[nW, N, N]`` additive mask: ``value`` (the official ``MASK_VALUE``) between tokens of different
    regions, 0 otherwise."""
    ids = region_ids(Hp, Wp, window, shift, device)[None, :, :, None]
    ids = window_partition(ids, window).squeeze(-1)  # nW, N
    differs = ids[:, :, None] != ids[:, None, :]
    return torch.zeros(differs.shape, device=device, dtype=dtype).masked_fill_(differs, value)


def pad_map(x: torch.Tensor, Hp: int, Wp: int, value: torch.Tensor | None = None) -> torch.Tensor:
    """Pad ``[B, H, W, C]`` at the bottom/right to ``[B, Hp, Wp, C]`` with zeros or with the vector ``value``.

    Padding with ``value`` (the qkv bias) gives exactly what the qkv Linear produces on zero-padded input.
    """
    B, H, W, C = x.shape
    if (Hp, Wp) == (H, W):
        return x
    if value is None:
        return F.pad(x, (0, 0, 0, Wp - W, 0, Hp - H))
    value = value.to(x.dtype)
    x = torch.cat([x, value.expand(B, H, Wp - W, C)], dim=2)
    return torch.cat([x, value.expand(B, Hp - H, Wp, C)], dim=1)
