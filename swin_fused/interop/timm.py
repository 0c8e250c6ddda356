"""timm (``timm.models.swin_transformer`` and ``swin_transformer_v2``, timm >= 0.9): checkpoint layout and the
block patch.

Size rule: ``semantics="timm"`` (shift, then pad; per axis, a resolution no larger than the window becomes the
window with no shift, decided at construction from ``input_resolution``, :mod:`swin_fused.semantics`).

Layout: official block keys, but the merging layer that ends official stage ``i - 1`` sits at the start of
stage ``i`` (``layers.{i}.downsample``), the classifier is ``head.fc``, and the derivable buffers are not
saved. timm's merging concatenates the 2x2 neighbourhood as ``reshape(B, H/2, 2, W/2, 2, C).permute(0, 1, 3,
4, 2, 5)``: channel block ``2 * col_parity + row_parity``, i.e. ``[x(0,0), x(1,0), x(0,1), x(1,1)]``, the
official ``[x0, x1, x2, x3]`` order, so its norm and reduction weights load unpermuted.

Patch: ``SwinTransformerBlock._attn`` (and ``SwinTransformerV2Block._attn``: cosine attention, the continuous
position bias computed by the block's ``cpb_mlp`` as timm computes it, ``q_bias`` / zero ``k_bias`` / ``v_bias``
as the padding tokens' q/k/v), which rolls, then pads (``shift_before_pad=True``, timm issue 2438 kept as
timm computes it); window and shift are read from the block at call time (``_calc_window_shift`` clamping,
``always_partition``, ``set_input_size``); static masks only where they fit the input, otherwise (and only then)
timm's own ``_attn`` runs, so timm's behaviour is kept there too. ``swin_transformer_v2_cr`` (another V2
implementation: its own scaled-cosine parametrisation, post-norm placement and masks) is left alone, named in the
report.
"""
from __future__ import annotations

import re
import sys
import types
from typing import Iterable, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..geometry import padded_size
from ._layouts import Layout, StateDict, has_swin_blocks, merging_placement
from ._patching import (Candidate, attend, first, hook_reason, index_reason, instance_reason, linear_reason,
                        mask_reason, mlp_reader, needs_library_path, overridden, patch_of, shift_reason,
                        table_reason, v2_reason, v2_terms)

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
                  "official block keys, downsample starting stage i, head.fc.*"),
           Layout("timm-v2", SEMANTICS, _recognise, _to_official,
                  "official V2 block keys, downsample starting stage i, head.fc.* (swin_transformer_v2)", v2=True))


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
    # The Linear commutes with roll and partition; padded tokens get the bias (their q/k/v) below.
    if hasattr(attn, "logit_scale"):  # V2: q_bias, k_bias (zeros), v_bias, applied as timm applies them
        bias = None if attn.q_bias is None else torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
        if bias is not None and attn.qkv_bias_separate:
            qkv = attn.qkv(x) + bias
        else:
            qkv = F.linear(x, attn.qkv.weight, bias)
        table, tau = v2_terms(attn.logit_scale, attn.cpb_mlp, attn.relative_coords_table, attn.num_heads)
        scale = None
    else:
        qkv, bias, table, tau, scale = attn.qkv(x), attn.qkv.bias, attn.relative_position_bias_table, None, attn.scale
    out = attend(patch, qkv, table, attn.num_heads, window, shift, pad_qkv=bias,
                 shift_before_pad=True,  # timm rolls, then pads (timm issue 2438): reproduced on purpose
                 dropout_p=attn.attn_drop.p if attn.training else 0.0,
                 scale=scale, table_window=tuple(attn.window_size), cosine_scale=tau)
    return attn.proj_drop(attn.proj(out))


def _check(block: nn.Module, timm_swin: types.ModuleType, block_class: type, v2: bool) -> Optional[str]:
    attn = block.attn
    window, shift = tuple(block.window_size), tuple(block.shift_size)

    def terms():
        if v2:
            return v2_reason(attn.logit_scale, attn.cpb_mlp, attn.relative_coords_table, window, attn.num_heads)
        return table_reason(attn.relative_position_bias_table, window, attn.num_heads)

    def mask():
        if getattr(block, "dynamic_mask", False):
            return None
        rh, rw = block.input_resolution
        return mask_reason(block.attn_mask, padded_size(rh, window[0]), padded_size(rw, window[1]), window, shift)

    return first(
        lambda: None if isinstance(attn, timm_swin.WindowAttention) else
        f"attention is {type(attn).__name__}, not timm's WindowAttention",
        lambda: overridden(block, block_class, "_attn", "get_attn_mask"),
        lambda: overridden(attn, timm_swin.WindowAttention, "forward", *(() if v2 else ("_get_rel_pos_bias",))),
        lambda: instance_reason((("", block, ("_attn", "get_attn_mask", "_replicate_for_data_parallel")),
                                 ("attn.", attn, ("forward", "_get_rel_pos_bias")))),
        lambda: hook_reason(_bypassed(attn)),
        lambda: linear_reason(attn, "qkv", "proj"),
        lambda: None if tuple(attn.window_size) == window else
        f"block window {window} differs from its attention's window {tuple(attn.window_size)}",
        lambda: shift_reason(window, shift),
        terms,
        lambda: index_reason(getattr(attn, "relative_position_index", None), window),
        mask,
    )


def _norms(block: nn.Module, block_class: type, v2: bool):
    """V1 (pre-norm): ``norm1`` -> timm's ``forward`` -> ``_attn`` (no reader: the fallback is timm's code);
    ``norm2`` -> ``mlp``, read by its ``fc1`` where the block's forward and the MLP are timm's own. V2
    (post-norm): each norm's output goes into the residual sum."""
    timm_mlp = getattr(sys.modules.get("timm.layers.mlp"), "Mlp", None)
    plain = not v2 and type(block).forward is block_class.forward
    return ((getattr(block, "norm1", None), None),
            (getattr(block, "norm2", None), mlp_reader(getattr(block, "mlp", None), timm_mlp) if plain else None))


def merge_norm(module: nn.Module):
    """``(norm, reader)`` of timm's merging layers: V1 normalises, then reduces; V2 reduces, then normalises."""
    for module_name, v2 in (("timm.models.swin_transformer", False), ("timm.models.swin_transformer_v2", True)):
        timm_swin = sys.modules.get(module_name)
        if timm_swin is not None and type(module) is timm_swin.PatchMerging:
            return module.norm, None if v2 else (module, "reduction", None)
    return None


def classify(module: nn.Module, name: str = "") -> Optional[Candidate]:
    """A timm V1 or V2 block, a timm block of another kind (named, left alone), or None."""
    for module_name, block_name, v2 in (("timm.models.swin_transformer", "SwinTransformerBlock", False),
                                        ("timm.models.swin_transformer_v2", "SwinTransformerV2Block", True)):
        timm_swin = sys.modules.get(module_name)
        if timm_swin is not None and isinstance(module, getattr(timm_swin, block_name)):
            block_class = getattr(timm_swin, block_name)
            return Candidate(FAMILY, "_attn", _attn, lambda: _check(module, timm_swin, block_class, v2),
                             norms=lambda parent: _norms(module, block_class, v2))
    attn = getattr(module, "attn", None)
    if not type(module).__module__.startswith("timm.") or not isinstance(attn, nn.Module):
        return None
    if type(module).__name__ == "SwinTransformerV2CrBlock":
        return Candidate(FAMILY, "_attn", None,
                         lambda: "timm swin_transformer_v2_cr block (its own scaled-cosine parametrisation, "
                                 "not the official V2's): not reproduced")
    if hasattr(attn, "logit_scale") and hasattr(module, "window_size"):
        return Candidate(FAMILY, "_attn", None,
                         lambda: f"{type(module).__name__} is not timm's SwinTransformerV2Block")
    if hasattr(attn, "relative_position_bias_table") and hasattr(module, "window_size") and \
            hasattr(module, "shift_size"):
        return Candidate(FAMILY, "_attn", None,
                         lambda: f"{type(module).__name__} is not timm's V1 SwinTransformerBlock")
    return None
