"""A checkpoint layout: how an adapter recognises a library's state dict and renames it onto the official keys.

Each library module of :mod:`swin_fused.interop` declares its layouts as ``LAYOUTS``; :mod:`._checkpoints`
asks every one of them, so a dict must be recognised by exactly one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping

import torch

StateDict = Dict[str, torch.Tensor]

#: Per-stage output norms of the detection backbones (``norm0`` ... ``norm3``), and the final norm.
STAGE_NORM = re.compile(r"^norm(\d+)\.")
#: A Swin block's key in the official layout (and timm's, the detection backbones'): what tells a Swin state
#: dict from another model's with ``patch_embed`` / ``layers`` keys (a ViT, a ConvNeXt).
SWIN_BLOCK = re.compile(r"^layers\.\d+\.blocks\.\d+\.")


_LAYER = re.compile(r"^layers\.(\d+)\.")
_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.")


def has_swin_blocks(keys) -> bool:
    return any(SWIN_BLOCK.match(key) for key in keys)


def merging_placement(keys) -> tuple:
    """``(official, timm, any_merging)``: whether the keys show the official placement of the merging layers (ending stages
    0..n-2, or a ``head.weight``) and timm's (starting stages 1..n-1, or a ``head.fc``). With no merging at all
    (one stage) the two differ only in the head's name; both or neither can be true of a partial dict."""
    keys = list(keys)
    stages = {int(m.group(1)) for m in map(_LAYER.match, keys) if m}
    merging = {int(m.group(1)) for m in map(_DOWNSAMPLE.match, keys) if m}
    last = max(stages, default=0)
    official = 0 in merging or "head.weight" in keys
    timm = (last > 0 and last in merging) or any(key.startswith("head.fc.") for key in keys)
    return official, timm, bool(merging)


@dataclass(frozen=True)
class Layout:
    """One library's state-dict layout.

    Attributes:
        name: what :func:`swin_fused.detect_layout` returns, and ``convert_state_dict(layout=...)`` takes.
        semantics: the ``semantics=`` value that reproduces the library's outputs with these weights.
        recognise: keys -> whether they are this layout (must not claim another layout's dicts).
        to_official: the dict renamed (and, where a library stores them otherwise, re-laid-out) onto the
            official keys; shares the input's tensors where no change is needed.
        description: the keys that tell it, for error messages.
        v2: a Swin V2 layout (converted onto the official V2 keys, :class:`swin_fused.SwinTransformerV2`'s):
            only V2 dicts (:func:`is_v2`) are asked about V2 layouts, and only V1 dicts about V1 ones.
    """

    name: str
    semantics: str
    recognise: Callable[[List[str]], bool]
    to_official: Callable[[Mapping[str, torch.Tensor]], StateDict]
    description: str
    v2: bool = False


#: Entries only Swin V2 dicts have (the cosine attention's temperature, the continuous position bias MLP).
_V2_MARKERS = ("logit_scale", "cpb_mlp", "continuous_position_bias_mlp")


def is_v2(keys) -> bool:
    """Whether state-dict keys are a Swin V2 model's."""
    return any(marker in key for key in keys for marker in _V2_MARKERS)


def rename(key: str, renames) -> str:
    """``key`` with the first matching ``(prefix, replacement)`` of ``renames`` applied."""
    for old, new in renames:
        if key.startswith(old):
            return new + key[len(old):]
    return key
