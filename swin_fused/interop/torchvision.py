"""torchvision (``torchvision.models.swin_t/s/b``, ``swin_v2_t/s/b``): checkpoint layout and the attention patch.

Size rule: ``semantics="torchvision"`` (pad, then shift; per axis the shift is zeroed where the window covers the
padded map; the window is never clamped; decided per forward; the patch embedding drops a remainder that is
not a whole patch, :mod:`swin_fused.semantics`).

Layout: ``features.0.0`` conv and ``features.0.2`` norm, stage ``s`` blocks at ``features.{2s+1}.{j}`` with the
MLP as ``mlp.0`` / ``mlp.3``, merging at ``features.{2s+2}`` (the official concatenation order), the relative
position index flattened, then ``norm``, ``head``.

Patch: ``ShiftedWindowAttention.forward`` (and ``ShiftedWindowAttentionV2.forward``: cosine attention, the
continuous position bias from the module's ``cpb_mlp``, and the qkv bias with its k part zeroed on every call as
torchvision does), which ``attn(...)`` calls, so hooks on ``attn`` still run; the library's path calls no
submodule either (it takes ``qkv.weight`` etc. through ``F.linear``; V2's ``cpb_mlp`` is called as a module on
both paths).
"""
from __future__ import annotations

import math
import re
import sys
import types
from typing import Iterable, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..semantics import SEMANTICS as _RULES
from ._layouts import Layout, StateDict, rename
from ._patching import (Candidate, attend, first, heads_reason, index_reason, instance_reason, linear_reason,
                        mlp_reader, needs_library_path, overridden, patch_of, shift_reason, table_reason,
                        v2_reason, v2_terms)

FAMILY = "torchvision"
SEMANTICS = "torchvision"

_FEATURE = re.compile(r"^features\.(\d+)\.(.+)$")
_BLOCK = re.compile(r"^(\d+)\.(.+)$")
_MLP = (("mlp.0.", "mlp.fc1."), ("mlp.3.", "mlp.fc2."))
_EMBED = (("0.", "patch_embed.proj."), ("2.", "patch_embed.norm."))


# ---------------------------------------------------------------------------------------------------- keys


_SWIN_ATTENTION = re.compile(r"^features\.\d+\.\d+\.attn\.")


def _recognise(keys: Iterable[str]) -> bool:
    """torchvision's Swin: ``features.*`` with window attention in them (its ConvNeXt, EfficientNet ... have
    ``features.*`` too)."""
    return any(_SWIN_ATTENTION.match(key) for key in keys)


def _to_official(sd: Mapping[str, torch.Tensor]) -> StateDict:
    out: StateDict = {}
    for key, value in sd.items():
        feature = _FEATURE.match(key)
        if feature is None:  # norm.*, head.*: already official
            out[key] = value
            continue
        index, rest = int(feature.group(1)), feature.group(2)
        if index == 0:  # Sequential(conv, permute, norm)
            key = rename(rest, _EMBED) if rest.startswith(("0.", "2.")) else key
        elif index % 2 == 1:  # stage (index - 1) / 2: a Sequential of blocks
            block = _BLOCK.match(rest)
            if block is not None:
                name = rename(block.group(2), _MLP)
                key = f"layers.{(index - 1) // 2}.blocks.{block.group(1)}.{name}"
                if name == "attn.relative_position_index" and value.dim() == 1:
                    side = math.isqrt(value.numel())
                    value = value.view(side, side) if side * side == value.numel() else value
        else:  # merging after stage index / 2 - 1
            key = f"layers.{index // 2 - 1}.downsample.{rest}"
        out[key] = value
    return out


def _v2_to_official(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """As :func:`_to_official`, with V2's one qkv bias split into the official ``q_bias`` and ``v_bias``
    (torchvision zeroes its k part on every call, so it carries nothing)."""
    out: StateDict = {}
    for key, value in _to_official(sd).items():
        if key.endswith(".attn.qkv.bias") and value.dim() == 1 and value.numel() % 3 == 0:
            dim = value.numel() // 3
            out[key[: -len("qkv.bias")] + "q_bias"] = value[:dim]
            out[key[: -len("qkv.bias")] + "v_bias"] = value[2 * dim:]
        else:
            out[key] = value
    return out


LAYOUTS = (Layout("torchvision", SEMANTICS, _recognise, _to_official, "features.*"),
           Layout("torchvision-v2", SEMANTICS, _recognise, _v2_to_official,
                  "features.* with attn.{logit_scale,cpb_mlp.*} (swin_v2_t/s/b)", v2=True))


# ------------------------------------------------------------------------------------------------- patching


def _forward(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``ShiftedWindowAttention.forward`` on the fused op: ``[B, H, W, C] -> [B, H, W, C]``."""
    patch = patch_of(attn)
    # qkv / proj are read by weight (as torchvision reads them): a wrapper set on them after optimize() (peft's
    # LoRA) would be skipped, so such a call runs torchvision's code (which skips it just the same).
    if needs_library_path((), None, x) or type(attn.qkv) is not nn.Linear or type(attn.proj) is not nn.Linear:
        return patch.call_original(attn, x)
    _, H, W, C = x.shape
    configured = ((attn.window_size[0], attn.window_size[1]), (attn.shift_size[0], attn.shift_size[1]))
    window, shift = _RULES["torchvision"].at(H, W, configured, None)
    bias, tau, scale = attn.qkv.bias, None, (C // attn.num_heads) ** -0.5
    if hasattr(attn, "logit_scale"):  # V2: the k part of the bias is zeroed on each call (so it gets no gradient)
        if bias is not None:
            bias = torch.cat((bias[:C], torch.zeros_like(bias[C:2 * C]), bias[2 * C:]))
        table, tau = v2_terms(attn.logit_scale, attn.cpb_mlp, attn.relative_coords_table, attn.num_heads)
        scale = None
    else:
        table = attn.relative_position_bias_table
    qkv = F.linear(x, attn.qkv.weight, bias)  # torchvision calls F.linear too (no qkv hooks)
    out = attend(patch, qkv, table, attn.num_heads, window, shift, pad_qkv=bias, shift_before_pad=False,
                 dropout_p=attn.attention_dropout if attn.training else 0.0, scale=scale, table_window=window,
                 cosine_scale=tau)
    out = F.linear(out, attn.proj.weight, attn.proj.bias)
    return F.dropout(out, p=attn.dropout, training=attn.training)


def _check(attn: nn.Module, tv_swin: types.ModuleType) -> Optional[str]:
    v2 = isinstance(attn, tv_swin.ShiftedWindowAttentionV2)
    base = tv_swin.ShiftedWindowAttentionV2 if v2 else tv_swin.ShiftedWindowAttention
    window, shift = tuple(attn.window_size), tuple(attn.shift_size)

    def terms():
        if v2:
            return v2_reason(attn.logit_scale, attn.cpb_mlp, attn.relative_coords_table, window, attn.num_heads)
        return table_reason(attn.relative_position_bias_table, window, attn.num_heads)

    return first(
        lambda: overridden(attn, base, "forward", "get_relative_position_bias"),
        lambda: instance_reason((("", attn, ("forward", "get_relative_position_bias",
                                             "_replicate_for_data_parallel")),)),
        lambda: linear_reason(attn, "qkv", "proj"),
        lambda: None if len(window) == 2 and len(shift) == 2 else f"window {window} / shift {shift} not 2-D",
        lambda: heads_reason(attn.qkv, attn.num_heads),
        lambda: shift_reason(window, shift),
        terms,
        lambda: index_reason(attn.relative_position_index, window),
    )


def _norms(attn: nn.Module, block: Optional[nn.Module], tv_swin: types.ModuleType):
    """``(norm, reader)`` of torchvision's block around ``attn``. V1 (pre-norm): ``norm1`` -> the attention (no
    reader: its fallback is torchvision's code), ``norm2`` -> ``mlp`` (torchvision's ``MLP``, a Linear first); V2
    (post-norm): each output goes into the residual sum. Another class holding the attention: its norms are its
    own business."""
    for block_class, v2 in ((tv_swin.SwinTransformerBlockV2, True), (tv_swin.SwinTransformerBlock, False)):
        if type(block) is block_class and block.attn is attn:
            mlp_class = getattr(sys.modules.get("torchvision.ops.misc"), "MLP", None)
            return (block.norm1, None), (block.norm2, None if v2 else mlp_reader(block.mlp, mlp_class, "0"))
    return ()


def merge_norm(module: nn.Module):
    """``(norm, reader)`` of torchvision's merging layers: ``PatchMerging`` normalises, then reduces;
    ``PatchMergingV2`` reduces, then normalises."""
    tv_swin = sys.modules.get("torchvision.models.swin_transformer")
    if tv_swin is None or type(module) not in (tv_swin.PatchMerging, tv_swin.PatchMergingV2):
        return None
    return module.norm, (module, "reduction", None) if type(module) is tv_swin.PatchMerging else None


def classify(module: nn.Module, name: str = "") -> Optional[Candidate]:
    tv_swin = sys.modules.get("torchvision.models.swin_transformer")
    if tv_swin is not None and isinstance(module, tv_swin.ShiftedWindowAttention):
        return Candidate(FAMILY, "forward", _forward, lambda: _check(module, tv_swin),
                         norms=lambda parent: _norms(module, parent, tv_swin))
    return None
