"""timm (``timm.models.swin_transformer``, timm >= 0.9): checkpoint layout and the block patch.

Size rule: ``semantics="timm"`` (shift, then pad; per axis, a resolution no larger than the window becomes the
window with no shift, decided at construction from ``input_resolution``, :mod:`swin_fused.semantics`).

Layout: official block keys, but the merging layer that ends official stage ``i - 1`` sits at the start of
stage ``i`` (``layers.{i}.downsample``), the classifier is ``head.fc``, and the derivable buffers are not
saved. timm's merging concatenates the 2x2 neighbourhood as ``reshape(B, H/2, 2, W/2, 2, C).permute(0, 1, 3,
4, 2, 5)``: channel block ``2 * col_parity + row_parity``, i.e. ``[x(0,0), x(1,0), x(0,1), x(1,1)]``, the
official ``[x0, x1, x2, x3]`` order, so its norm and reduction weights load unpermuted.

Patch: ``SwinTransformerBlock._attn``, which rolls, then pads (``shift_before_pad=True``, timm issue 2438 kept as
timm computes it); window and shift are read from the block at call time (``_calc_window_shift`` clamping,
``always_partition``, ``set_input_size``); static masks only where they fit the input, otherwise (and only then)
timm's own ``_attn`` runs, so timm's behaviour is kept there too.
"""
from __future__ import annotations

import re
import sys
import types
from typing import Iterable, Mapping, Optional

import torch
import torch.nn as nn

from ..geometry import padded_size
from ._layouts import Layout, StateDict, has_swin_blocks, merging_placement
from ._patching import (Candidate, attend, first, hook_reason, index_reason, instance_reason, linear_reason,
                        mask_reason, needs_library_path, overridden, patch_of, shift_reason, table_reason)

FAMILY = "timm"
SEMANTICS = "timm"

_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")


# ---------------------------------------------------------------------------------------------------- keys


def _recognise(keys: Iterable[str]) -> bool:
    keys = list(keys)
    if not has_swin_blocks(keys):
        return False
    official, timm, _ = merging_placement(keys)
    return timm and not official


def _to_official(sd: Mapping[str, torch.Tensor]) -> StateDict:
    out: StateDict = {}
    for key, value in sd.items():
        merging = _DOWNSAMPLE.match(key)
        if merging and int(merging.group(1)) > 0:
            key = f"layers.{int(merging.group(1)) - 1}.downsample.{merging.group(2)}"  # ends the stage before
        elif key.startswith("head.fc."):
            key = "head." + key[len("head.fc."):]
        out[key] = value
    return out


LAYOUTS = (Layout("timm", SEMANTICS, _recognise, _to_official,
                  "official block keys, downsample starting stage i, head.fc.*"),)


# ------------------------------------------------------------------------------------------------- patching


def _bypassed(attn: nn.Module):
    """``(name, module)`` the library's ``_attn`` calls and the patched one does not."""
    if getattr(attn, "fused_attn", False):  # timm's SDPA path calls neither submodule
        return (("attn", attn),)
    named = (("attn", attn), ("attn.softmax", getattr(attn, "softmax", None)),
             ("attn.attn_drop", getattr(attn, "attn_drop", None)))
    return tuple((name, module) for name, module in named if isinstance(module, nn.Module))


def _attn(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm ``SwinTransformerBlock._attn`` on the fused op: ``[B, H, W, C] -> [B, H, W, C]``."""
    patch = patch_of(block)
    attn = block.attn
    if needs_library_path(_bypassed(attn), attn, x):
        return patch.call_original(block, x)
    _, H, W, _ = x.shape
    window, shift = tuple(block.window_size), tuple(block.shift_size)
    if any(shift) and not getattr(block, "dynamic_mask", False):
        # The static mask is built for input_resolution padded to the window. Another padded size makes
        # timm fail or mis-assign mask windows: keep exactly that behaviour by running timm's own code.
        rh, rw = block.input_resolution
        if (padded_size(H, window[0]), padded_size(W, window[1])) != (padded_size(rh, window[0]),
                                                                       padded_size(rw, window[1])):
            return patch.call_original(block, x)
    qkv = attn.qkv(x)  # the Linear commutes with roll and partition; padded tokens get the bias below
    out = attend(patch, qkv, attn.relative_position_bias_table, attn.num_heads, window, shift,
                 pad_qkv=attn.qkv.bias,
                 shift_before_pad=True,  # timm rolls, then pads (timm issue 2438): reproduced on purpose
                 dropout_p=attn.attn_drop.p if attn.training else 0.0,
                 scale=attn.scale, table_window=tuple(attn.window_size))
    return attn.proj_drop(attn.proj(out))


def _check(block: nn.Module, timm_swin: types.ModuleType) -> Optional[str]:
    attn = block.attn
    window, shift = tuple(block.window_size), tuple(block.shift_size)

    def mask():
        if getattr(block, "dynamic_mask", False):
            return None
        rh, rw = block.input_resolution
        return mask_reason(block.attn_mask, padded_size(rh, window[0]), padded_size(rw, window[1]), window, shift)

    return first(
        lambda: None if isinstance(attn, timm_swin.WindowAttention) else
        f"attention is {type(attn).__name__}, not timm's WindowAttention",
        lambda: overridden(block, timm_swin.SwinTransformerBlock, "_attn", "get_attn_mask"),
        lambda: overridden(attn, timm_swin.WindowAttention, "forward", "_get_rel_pos_bias"),
        lambda: instance_reason((("", block, ("_attn", "get_attn_mask", "_replicate_for_data_parallel")),
                                 ("attn.", attn, ("forward", "_get_rel_pos_bias")))),
        lambda: hook_reason(_bypassed(attn)),
        lambda: linear_reason(attn, "qkv", "proj"),
        lambda: None if tuple(attn.window_size) == window else
        f"block window {window} differs from its attention's window {tuple(attn.window_size)}",
        lambda: shift_reason(window, shift),
        lambda: table_reason(attn.relative_position_bias_table, window, attn.num_heads),
        lambda: index_reason(getattr(attn, "relative_position_index", None), window),
        mask,
    )


def classify(module: nn.Module, name: str = "") -> Optional[Candidate]:
    """A timm V1 block, a timm block of another kind (named, left alone), or None."""
    timm_swin = sys.modules.get("timm.models.swin_transformer")
    if timm_swin is not None and isinstance(module, timm_swin.SwinTransformerBlock):
        return Candidate(FAMILY, "_attn", _attn, lambda: _check(module, timm_swin))
    attn = getattr(module, "attn", None)
    if not type(module).__module__.startswith("timm.") or not isinstance(attn, nn.Module):
        return None
    if hasattr(attn, "logit_scale"):
        return Candidate(FAMILY, "_attn", None,
                         lambda: "Swin V2 block (cosine attention, continuous position bias): not supported")
    if hasattr(attn, "relative_position_bias_table") and hasattr(module, "window_size") and \
            hasattr(module, "shift_size"):
        return Candidate(FAMILY, "_attn", None,
                         lambda: f"{type(module).__name__} is not timm's V1 SwinTransformerBlock")
    return None
