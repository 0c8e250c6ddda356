"""The official classification code (microsoft/Swin-Transformer ``models/swin_transformer.py``): its layout,
which is the package's own, and the block patch.

Size rule: ``semantics="official"`` (decided at construction from ``input_resolution``: a stage no larger than the
window is one unshifted window; the code asserts divisible sizes, :mod:`swin_fused.semantics`).

Layout: ``patch_embed.*``, ``layers.{i}.blocks.{j}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``, the bias
table, the ``relative_position_index`` and (shifted blocks) ``attn_mask`` buffers, ``layers.{i}.downsample.*``
ending stage ``i``, ``norm.*``, ``head.*``. Nothing to rename.

Patch: ``SwinTransformerBlock.forward`` on ``[B, L, C]`` tokens at the block's fixed ``input_resolution``, with
divisible sizes (what the official code can run).
"""
from __future__ import annotations

import inspect
import sys
from typing import Iterable, Mapping, Optional

import torch
import torch.nn as nn

from ._layouts import STAGE_NORM, Layout, StateDict, has_swin_blocks, merging_placement
from ._patching import (Candidate, attend, block_norm, first, heads_reason, hook_reason, index_reason,
                        instance_reason, linear_reason, mask_reason, needs_library_path, patch_of,
                        shift_reason, table_reason)

FAMILY = "official"
SEMANTICS = "official"

# ---------------------------------------------------------------------------------------------------- keys


def _recognise(keys: Iterable[str]) -> bool:
    keys = list(keys)
    if not has_swin_blocks(keys):
        return False
    if any(key.startswith("patch_embed.projection.") or STAGE_NORM.match(key) for key in keys):
        return False  # mmdet's embedding; a detection backbone's per-stage norms
    official, timm, merging = merging_placement(keys)
    if timm:
        return False
    return official or not merging  # merging only in middle stages: a partial dict, placement unknown


def _to_official(sd: Mapping[str, torch.Tensor]) -> StateDict:
    return dict(sd)


LAYOUTS = (Layout("official", SEMANTICS, _recognise, _to_official,
                  "patch_embed.*, layers.{i}.blocks.{j}.*, layers.{i}.downsample.* ending stage i, head.*"),
           Layout("official-v2", SEMANTICS, _recognise, _to_official,
                  "as official, with attn.{q_bias,v_bias,logit_scale,cpb_mlp.*} (swin_transformer_v2.py)", v2=True))


# ------------------------------------------------------------------------------------------------- patching


def _bypassed(attn: nn.Module):
    named = (("attn", attn), ("attn.softmax", getattr(attn, "softmax", None)),
             ("attn.attn_drop", getattr(attn, "attn_drop", None)))
    return tuple((name, module) for name, module in named if isinstance(module, nn.Module))


def _forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Official ``SwinTransformerBlock.forward`` on the fused op: ``[B, L, C] -> [B, L, C]``."""
    patch = patch_of(block)
    attn = block.attn
    if needs_library_path(_bypassed(attn), attn, x):
        return patch.call_original(block, x)
    H, W = block.input_resolution
    B, L, C = x.shape
    if L != H * W:
        raise ValueError(f"input feature has wrong size: {L} tokens, expected H*W = {H}*{W} = {H * W} "
                         f"for input_resolution {tuple(block.input_resolution)}")
    shortcut = x
    qkv = attn.qkv(block_norm(block.norm1, x, attn.qkv).view(B, H, W, C))
    out = attend(patch, qkv, attn.relative_position_bias_table, attn.num_heads, tuple(attn.window_size),
                 (block.shift_size, block.shift_size), pad_qkv=None, shift_before_pad=False,
                 dropout_p=attn.attn_drop.p if attn.training else 0.0,
                 scale=attn.scale, table_window=tuple(attn.window_size))
    x = shortcut + block.drop_path(attn.proj_drop(attn.proj(out)).view(B, L, C))
    return x + block.drop_path(block.mlp(block.norm2(x)))


_BLOCK_ATTRS = ("norm1", "norm2", "mlp", "drop_path", "input_resolution", "attn_mask")
_ATTN_ATTRS = ("qkv", "proj", "relative_position_bias_table", "relative_position_index", "num_heads", "scale",
               "window_size", "attn_drop", "proj_drop")


def pre_norms(block: nn.Module):
    """``(norm, reader)`` of the official block (pre-norm): ``norm1`` -> the patched forward's qkv (asked for
    there: the original forward runs other code on it), ``norm2`` -> ``mlp``, the user's copy of the official
    code (no reader: its forward could read its input some other way)."""
    return (block.norm1, None), (block.norm2, None)


def positional_parameters(method) -> int:
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               for p in inspect.signature(method).parameters.values())


def _check(block: nn.Module) -> Optional[str]:
    attn = block.attn
    missing = [a for a in _BLOCK_ATTRS if not hasattr(block, a)]
    missing += [f"attn.{a}" for a in _ATTN_ATTRS if not hasattr(attn, a)]
    if missing:
        return f"not the official block layout (no {', '.join(missing)})"
    instance = instance_reason((("", block, ("forward", "_replicate_for_data_parallel")),
                                ("attn.", attn, ("forward",))))
    if instance:
        return instance
    ws, ss = block.window_size, block.shift_size
    if not (isinstance(ws, int) and isinstance(ss, int)):
        return f"window_size {ws!r} / shift_size {ss!r} are not ints as in the official block"
    if positional_parameters(block.forward) != 1:
        return f"forward{inspect.signature(block.forward)} is not the official forward(x)"
    window, shift = (ws, ws), (ss, ss)
    H, W = block.input_resolution
    return first(
        lambda: hook_reason(_bypassed(attn)),
        lambda: linear_reason(attn, "qkv", "proj"),
        lambda: None if tuple(attn.window_size) == window else
        f"block window {ws} differs from its attention's window {tuple(attn.window_size)}",
        lambda: None if H % ws == 0 and W % ws == 0 else
        f"input_resolution {(H, W)} is not a multiple of the window {ws} (the official code cannot run it)",
        lambda: heads_reason(attn.qkv, attn.num_heads),
        lambda: shift_reason(window, shift),
        lambda: table_reason(attn.relative_position_bias_table, window, attn.num_heads),
        lambda: index_reason(attn.relative_position_index, window),
        lambda: mask_reason(block.attn_mask, H, W, window, shift),
    )


def classify(module: nn.Module, name: str = "") -> Optional[Candidate]:
    """A block of the official classification code (or of code that copies it), by its attributes."""
    attn = getattr(module, "attn", None)
    tv_swin = sys.modules.get("torchvision.models.swin_transformer")
    if not isinstance(attn, nn.Module) or (tv_swin is not None and isinstance(attn, tv_swin.ShiftedWindowAttention)):
        return None  # (torchvision's blocks: its adapter patches their attention module itself)
    if hasattr(attn, "logit_scale"):  # Microsoft's V2 block
        return Candidate(FAMILY, "forward", None,
                         lambda: "Swin V2 block (cosine attention, continuous position bias): not supported")
    if hasattr(attn, "relative_position_bias_table") and hasattr(module, "window_size") and \
            hasattr(module, "shift_size"):
        return Candidate(FAMILY, "forward", _forward, lambda: _check(module), norms=lambda parent: pre_norms(module))
    return None
