"""Detection and segmentation backbones: the official ones (SwinTransformer/Swin-Transformer-Object-Detection and
-Semantic-Segmentation, ``mmdet/models/backbones/swin_transformer.py``) and mmdet's / mmseg's own
(``mmdet.models.backbones.swin``, ``mmseg.models.backbones.swin``): checkpoint layouts and block patches.

Size rule: ``semantics="detection"`` (pad, then shift; odd blocks always shift by window // 2 and the window is
never clamped, whatever the map, :mod:`swin_fused.semantics`). :class:`swin_fused.SwinBackbone` is the module a
detector swaps in: the official backbone's constructor, keys and ``forward``.

Layouts:

- ``detection`` (the official backbones): the official block keys, no ``norm`` / ``head``, per-stage output norms
  ``norm{i}`` for each of ``out_indices``; ``absolute_pos_embed`` is ``[1, C, H, W]`` (bicubic-resized to the
  map). Nothing to rename.
- ``mmdet`` (mmdet >= 2.17, mmseg >= 0.20): ``patch_embed.projection``, ``stages.{i}.blocks.{j}.attn.w_msa.{qkv,
  proj, relative_position_bias_table, relative_position_index}``, the MLP as ``ffn.layers.0.0`` / ``ffn.layers.1``,
  ``stages.{i}.downsample`` ending stage ``i``, ``norm{i}``. mmcv's ``PatchMerging`` gathers the 2x2 neighbourhood
  with ``nn.Unfold``: its ``4C`` features are channel-major with the kernel position minor, positions in the
  order (0,0), (0,1), (1,0), (1,1), where the official ``[x0, x1, x2, x3]`` is position-major in the order
  (0,0), (1,0), (0,1), (1,1); the reduction's columns and the norm's entries are permuted back (the inverse of
  mmdet's own ``swin_converter``).

A detector's whole checkpoint (``backbone.*``, ``neck.*``, ``*_head.*``) loads its ``backbone.*`` entries.

Patches: the official backbone's ``SwinTransformerBlock.forward(x, mask_matrix)`` (``H`` / ``W`` set by its
``BasicLayer``; the mask it passes is the standard -100 mask of the padded map, which the fused op derives
itself and so never reads), and mmdet's / mmseg's ``ShiftWindowMSA.forward(query, hw_shape)``.
"""
from __future__ import annotations

import re
import sys
import types
from typing import Iterable, Mapping, Optional

import torch
import torch.nn as nn

from ._layouts import STAGE_NORM, Layout, StateDict, has_swin_blocks, rename
from ._patching import (Candidate, attend, block_norm, first, heads_reason, hook_reason, index_reason,
                        instance_reason, linear_reason, needs_library_path, overridden, patch_of, shift_reason,
                        table_reason)
from .official import positional_parameters, pre_norms

FAMILY = "detection"
SEMANTICS = "detection"

_MM_BLOCK = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.(.+)$")
_MM_DOWNSAMPLE = re.compile(r"^stages\.(\d+)\.downsample\.(.+)$")
_MM_BLOCK_RENAMES = (("attn.w_msa.", "attn."), ("ffn.layers.0.0.", "mlp.fc1."), ("ffn.layers.1.", "mlp.fc2."))
#: Unfold's kernel positions (0,0), (0,1), (1,0), (1,1) -> the official order (0,0), (1,0), (0,1), (1,1).
_UNFOLD_TO_OFFICIAL = [0, 2, 1, 3]


# ---------------------------------------------------------------------------------------------------- keys


def _recognise_detection(keys: Iterable[str]) -> bool:
    keys = list(keys)
    return (has_swin_blocks(keys) and any(STAGE_NORM.match(key) for key in keys) and not any(key.startswith("head.") for key in keys))


def _recognise_mmdet(keys: Iterable[str]) -> bool:
    return any(_MM_BLOCK.match(key) or key.startswith("patch_embed.projection.") for key in keys)


def _merging_from_unfold(value: torch.Tensor) -> torch.Tensor:
    """A reduction weight ``[out, 4C]`` or norm vector ``[4C]`` in mmcv's unfold order -> the official order."""
    four_c = value.shape[-1]
    lead = value.shape[:-1]
    v = value.reshape(*lead, four_c // 4, 4)  # channel-major, kernel position minor
    v = v.transpose(-1, -2)[..., _UNFOLD_TO_OFFICIAL, :]  # position-major, official position order
    return v.reshape(*lead, four_c).contiguous()


def _mmdet_to_official(sd: Mapping[str, torch.Tensor]) -> StateDict:
    out: StateDict = {}
    for key, value in sd.items():
        block, merging = _MM_BLOCK.match(key), _MM_DOWNSAMPLE.match(key)
        if block:
            key = f"layers.{block.group(1)}.blocks.{block.group(2)}.{rename(block.group(3), _MM_BLOCK_RENAMES)}"
        elif merging:
            key = f"layers.{merging.group(1)}.downsample.{merging.group(2)}"
            if merging.group(2) in ("reduction.weight", "norm.weight", "norm.bias"):
                value = _merging_from_unfold(value)
        elif key.startswith("patch_embed.projection."):
            key = "patch_embed.proj." + key[len("patch_embed.projection."):]
        out[key] = value
    return out


LAYOUTS = (
    Layout("detection", SEMANTICS, _recognise_detection, dict,
           "official block keys with per-stage norm{i}.* and no head.* (the official detection backbone)"),
    Layout("mmdet", SEMANTICS, _recognise_mmdet, _mmdet_to_official,
           "stages.{i}.blocks.{j}.attn.w_msa.*, ffn.layers.*, patch_embed.projection.* (mmdet / mmseg)"),
)


# ------------------------------------------------------------------------------------------------- patching


def _bypassed(attn: nn.Module, name: str):
    named = ((name, attn), (f"{name}.softmax", getattr(attn, "softmax", None)),
             (f"{name}.attn_drop", getattr(attn, "attn_drop", None)))
    return tuple((n, module) for n, module in named if isinstance(module, nn.Module))


def _block_forward(block: nn.Module, x: torch.Tensor, mask_matrix=None) -> torch.Tensor:
    """The official detection backbone's ``SwinTransformerBlock.forward``: ``[B, H*W, C] -> [B, H*W, C]``."""
    patch = patch_of(block)
    attn = block.attn
    if needs_library_path(_bypassed(attn, "attn"), attn, x):
        return patch.call_original(block, x, mask_matrix)
    B, L, C = x.shape
    H, W = block.H, block.W
    if L != H * W:
        raise ValueError(f"input feature has wrong size: {L} tokens, expected H*W = {H}*{W}")
    shortcut = x
    qkv = attn.qkv(block_norm(block.norm1, x, attn.qkv).view(B, H, W, C))
    window, shift = (block.window_size, block.window_size), (block.shift_size, block.shift_size)
    out = attend(patch, qkv, attn.relative_position_bias_table, attn.num_heads, window, shift,
                 pad_qkv=attn.qkv.bias, shift_before_pad=False,
                 dropout_p=attn.attn_drop.p if attn.training else 0.0, scale=attn.scale, table_window=window)
    x = shortcut + block.drop_path(attn.proj_drop(attn.proj(out)).view(B, L, C))
    return x + block.drop_path(block.mlp(block.norm2(x)))


def _msa_forward(msa: nn.Module, query: torch.Tensor, hw_shape) -> torch.Tensor:
    """mmdet's / mmseg's ``ShiftWindowMSA.forward``: ``[B, H*W, C] -> [B, H*W, C]``."""
    patch = patch_of(msa)
    w_msa = msa.w_msa
    if needs_library_path(_bypassed(w_msa, "w_msa"), w_msa, query):
        return patch.call_original(msa, query, hw_shape)
    B, L, C = query.shape
    H, W = hw_shape
    if L != H * W:
        raise ValueError(f"input feature has wrong size: {L} tokens, expected H*W = {H}*{W}")
    qkv = w_msa.qkv(query.view(B, H, W, C))
    window, shift = (msa.window_size, msa.window_size), (msa.shift_size, msa.shift_size)
    out = attend(patch, qkv, w_msa.relative_position_bias_table, w_msa.num_heads, window, shift,
                 pad_qkv=w_msa.qkv.bias, shift_before_pad=False,
                 dropout_p=w_msa.attn_drop.p if w_msa.training else 0.0, scale=w_msa.scale, table_window=window)
    return msa.drop(w_msa.proj_drop(w_msa.proj(out)).view(B, L, C))


def _square(block_or_msa: nn.Module, attn: nn.Module) -> Optional[str]:
    ws, ss = block_or_msa.window_size, block_or_msa.shift_size
    if not (isinstance(ws, int) and isinstance(ss, int)):
        return f"window_size {ws!r} / shift_size {ss!r} are not ints"
    if tuple(attn.window_size) != (ws, ws):
        return f"window {ws} differs from its attention's window {tuple(attn.window_size)}"
    return None


def _attention_reasons(owner: nn.Module, attn: nn.Module, attn_name: str):
    window = (owner.window_size, owner.window_size)
    return (
        lambda: _square(owner, attn),
        lambda: hook_reason(_bypassed(attn, attn_name)),
        lambda: linear_reason(attn, "qkv", "proj", prefix=f"{attn_name}."),
        lambda: heads_reason(attn.qkv, attn.num_heads),
        lambda: shift_reason(window, (owner.shift_size, owner.shift_size)),
        lambda: table_reason(attn.relative_position_bias_table, window, attn.num_heads),
        lambda: index_reason(getattr(attn, "relative_position_index", None), window),
    )


def _check_block(block: nn.Module) -> Optional[str]:
    attn = block.attn
    missing = [a for a in ("norm1", "norm2", "mlp", "drop_path", "H", "W") if not hasattr(block, a)]
    missing += [f"attn.{a}" for a in ("qkv", "proj", "scale", "num_heads", "attn_drop", "proj_drop")
                if not hasattr(attn, a)]
    if missing:
        return f"not the official detection block layout (no {', '.join(missing)})"
    return first(lambda: instance_reason((("", block, ("forward", "_replicate_for_data_parallel")),
                                          ("attn.", attn, ("forward",)))),
                 *_attention_reasons(block, attn, "attn"))


def _check_msa(msa: nn.Module, base: type) -> Optional[str]:
    w_msa = msa.w_msa
    return first(lambda: overridden(msa, base, "forward"),
                 lambda: instance_reason((("", msa, ("forward", "_replicate_for_data_parallel")),
                                          ("w_msa.", w_msa, ("forward",)))),
                 lambda: None if hasattr(msa, "drop") else "no drop (mmcv's dropout_layer) on ShiftWindowMSA",
                 *_attention_reasons(msa, w_msa, "w_msa"))


def _is_detection_block(module: nn.Module) -> bool:
    """The official detection backbone's block: the official attributes, ``H`` / ``W`` set by its layer, and
    ``forward(x, mask_matrix)``."""
    attn = getattr(module, "attn", None)
    return (isinstance(attn, nn.Module) and hasattr(attn, "relative_position_bias_table")
            and hasattr(module, "H") and hasattr(module, "W") and hasattr(module, "shift_size")
            and positional_parameters(module.forward) == 2)


def _mm_norms(msa: nn.Module, block: Optional[nn.Module], mm_swin: types.ModuleType):
    """mmdet's / mmseg's ``SwinBlock`` around ``msa``: ``norm1`` -> the attention, ``norm2`` -> mmcv's FFN (neither
    handed over in the Linear's dtype: mmdet's code runs on both)."""
    if type(block) is getattr(mm_swin, "SwinBlock", None) and block.attn is msa:
        return (block.norm1, None), (block.norm2, None)
    return ()


def classify(module: nn.Module, name: str = "") -> Optional[Candidate]:
    for library in ("mmdet.models.backbones.swin", "mmseg.models.backbones.swin"):
        mm_swin = sys.modules.get(library)
        if mm_swin is not None and isinstance(module, mm_swin.ShiftWindowMSA):
            return Candidate(FAMILY, "forward", _msa_forward, lambda: _check_msa(module, mm_swin.ShiftWindowMSA),
                             norms=lambda parent: _mm_norms(module, parent, mm_swin))
    if _is_detection_block(module):
        return Candidate(FAMILY, "forward", _block_forward, lambda: _check_block(module),
                         norms=lambda parent: pre_norms(module))
    return None
