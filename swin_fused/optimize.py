"""``swin_fused.optimize(model)``: send an existing Swin V1 model's window attention through the fused op.

Works in place on models built by timm (``timm.models.swin_transformer``), torchvision
(``torchvision.models.swin_t/s/b``) or the official Microsoft code, without copying a weight: each block's
own ``qkv`` / ``proj`` / relative-position-table Parameters are read by reference on every call, so
optimizers, checkpoints, ``state_dict`` keys and values, hooks on the model and gradients are unchanged.
Each library's own semantics are reproduced exactly, including at sizes that are not multiples of the
window:

=============  ======================================================================================
library        what the patched attention does
=============  ======================================================================================
timm           rolls, then pads (``shift_before_pad=True``, timm issue 2438 kept as timm computes it);
               window/shift read from the block at call time (``_calc_window_shift`` clamping,
               ``always_partition``, ``set_input_size``); static masks only where they fit the input,
               otherwise (and only then) timm's own ``_attn`` runs, so timm's behaviour is kept there too
torchvision    pads, then rolls; shift zeroed per dimension when the window covers the padded map; no
               window clamping; padded tokens carry the qkv bias
official       ``[B, L, C]`` tokens at the block's fixed ``input_resolution``, divisible sizes
=============  ======================================================================================

Mechanism: one method set on the *instance* (never the class), under the name the library calls:
``block._attn`` (timm), ``attn.forward`` (torchvision ``ShiftedWindowAttention``), ``block.forward``
(official); a ``functools.partial`` of a function of this module, so ``copy.deepcopy`` and pickling a whole
optimized model keep the patch. The same module also gets a ``_replicate_for_data_parallel`` that re-binds
the patch to each ``nn.DataParallel`` replica (whose ``__dict__`` is a copy of the module's), so a replica
computes with its own device's Parameters. ``optimize(model, undo=True)`` removes both again.

Left on its own path, each with its reason in the report and one summary warning: anything the op cannot
reproduce (Swin V2, a non-standard relative position index or mask, a class that overrides a method the
patch replaces or skips, ``qkv`` / ``proj`` that are not ``nn.Linear``, e.g. dynamically quantized); an
instance-level override (accelerate's ``add_hook_to_module``, a user's wrapper) of the method optimize()
would replace or of one the patched path skips (timm / official ``attn.forward``); and hooks on a module
the patched path does not call: timm and official blocks compute attention without calling ``attn``
(nor, where the library calls them, ``attn.softmax`` / ``attn.attn_drop``), so forward, pre-forward or
backward hooks there (DeepSpeed ZeRO-3's, attention-map capture, ablations) would not run. torchvision's
patched ``attn.forward`` is called by ``attn(...)``, so hooks on ``attn`` still run, and its library path
calls no submodule either. Hooks on ``qkv`` / ``proj`` / ``proj_drop`` (timm, official) still run, on
``[B, H, W, *]`` maps instead of the library's window batches. The same checks run at every call, as
dict-truthiness tests (cheap, and no graph break under ``torch.compile``): a hook, a global module hook or
a timm / official ``attn.forward`` override added after optimize() sends that call down the library's
path, and so does FX symbolic tracing (``torchvision.models.feature_extraction``), which traces the
library's code, not the op's shape logic. Meta-device models are optimized without reading index or mask
values (the patched path never reads them).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
import types
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.modules import module as _nn_module

from . import functional
from .backend import BACKENDS
from .geometry import padded_size, relative_position_index, shift_mask
from .model import SwinTransformerBlock as FusedBlock

__all__ = ["optimize", "OptimizeReport"]

Pair = Tuple[int, int]

#: Instance attribute that marks a patched module and remembers how to undo the patch.
_MARK = "_swin_fused_patch"
#: ``nn.DataParallel``'s replicate() calls this method of every module; a patched module gets its own.
_REPLICATE = "_replicate_for_data_parallel"


@dataclass
class OptimizeReport:
    """What :func:`optimize` did, block by block (module names as in ``model.named_modules()``).

    Attributes:
        family: the libraries whose blocks were found (``"timm"``, ``"torchvision"``, ``"official"``,
            ``"swin_fused"``, comma-joined if several), or ``"none"``.
        patched: blocks routed through :func:`swin_fused.window_attention` by this call.
        already_optimized: blocks an earlier ``optimize`` call had routed (left as they are).
        already_fused: blocks of :mod:`swin_fused` itself, which always run the fused op.
        left_alone: block name -> why it stays on its original path.
        restored: blocks put back on their original path (``undo=True``).
        already_original: blocks ``undo=True`` found on their original path (nothing to restore).
        backend: the backend pinned for the patched blocks (None: the global setting at call time).
    """

    family: str = "none"
    patched: List[str] = field(default_factory=list)
    already_optimized: List[str] = field(default_factory=list)
    already_fused: List[str] = field(default_factory=list)
    left_alone: Dict[str, str] = field(default_factory=dict)
    restored: List[str] = field(default_factory=list)
    already_original: List[str] = field(default_factory=list)
    backend: Optional[str] = None

    @property
    def num_blocks(self) -> int:
        return (len(self.patched) + len(self.already_optimized) + len(self.already_fused)
                + len(self.left_alone) + len(self.restored) + len(self.already_original))

    def reasons(self) -> Dict[str, List[str]]:
        """reason -> names of the blocks left alone for it."""
        grouped: Dict[str, List[str]] = defaultdict(list)
        for name, reason in self.left_alone.items():
            grouped[reason].append(name)
        return dict(grouped)

    def __str__(self) -> str:
        lines = [f"swin_fused.optimize: {self.family} model, {self.num_blocks} Swin blocks"]
        route = f"routed through swin_fused.window_attention (backend: {self.backend or 'global setting'})"
        if self.patched:
            lines.append(f"  {route}: {len(self.patched)}")
        if self.already_optimized:
            lines.append(f"  already routed by an earlier optimize(): {len(self.already_optimized)}")
        if self.already_fused:
            lines.append(f"  swin_fused blocks, fused already (nothing to do): {len(self.already_fused)}")
        if self.restored:
            lines.append(f"  restored to their original path: {len(self.restored)}")
        if self.already_original:
            lines.append(f"  already on their original path (nothing to undo): {len(self.already_original)}")
        if self.left_alone:
            lines.append(f"  left on their original path: {len(self.left_alone)}")
            for reason, names in self.reasons().items():
                lines.append(f"    {_abbreviate(names)}: {reason}")
        if not self.num_blocks:
            lines.append("  no Swin blocks found")
        return "\n".join(lines)


def _abbreviate(names: List[str], keep: int = 3) -> str:
    shown = ", ".join(n or "<model>" for n in names[:keep])
    return shown + (f" (+{len(names) - keep} more)" if len(names) > keep else "")


@dataclass
class _Patch:
    """Stored on a patched module: what was replaced and which backend the patched path pins."""

    attr: str  # "_attn" or "forward"; the class method of that name is the original path
    family: str
    backend: Optional[str]

    def call_original(self, module: nn.Module, *args):
        return getattr(type(module), self.attr)(module, *args)


def _attend(patch: _Patch, qkv: torch.Tensor, attn: nn.Module, window: Pair, shift: Pair, pad_qkv,
            shift_before_pad: bool, dropout_p: float, scale: float, table_window: Pair) -> torch.Tensor:
    """``[B, H, W, 3 * heads * hd] -> [B, H, W, heads * hd]`` through the package's functional op."""
    args = (qkv, attn.relative_position_bias_table, attn.num_heads, window, shift)
    kwargs = dict(scale=scale, pad_qkv=pad_qkv, shift_before_pad=shift_before_pad, table_window=table_window,
                  dropout_p=dropout_p, backend=patch.backend)
    return functional.window_attention(*args, **kwargs)


# --------------------------------------------------------------------------------------------------------
# What the patched path skips. The library's path calls these modules (so their hooks run); the patched
# path computes attention without calling them. torchvision's library path calls no submodule at all.


def _bypassed(family: str, attn: nn.Module) -> Tuple[Tuple[str, nn.Module], ...]:
    """``(name, module)`` for each module the library's path calls and the patched path does not."""
    if family == "torchvision":
        return ()
    if family == "timm" and getattr(attn, "fused_attn", False):  # timm's SDPA path calls neither submodule
        return (("attn", attn),)
    named = (("attn", attn), ("attn.softmax", getattr(attn, "softmax", None)),
             ("attn.attn_drop", getattr(attn, "attn_drop", None)))
    return tuple((name, module) for name, module in named if isinstance(module, nn.Module))


def _has_hooks(module: nn.Module) -> bool:
    """Whether calling ``module`` runs hooks of its own (forward, pre-forward or backward)."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def _global_hooks() -> bool:
    """Whether module calls run global hooks (``torch.nn.modules.module.register_module_forward_hook`` ...)."""
    return bool(_nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks
                or _nn_module._global_backward_hooks or _nn_module._global_backward_pre_hooks)


def _needs_library_path(family: str, attn: nn.Module, x) -> bool:
    """Call-time twin of the optimize()-time checks on what can change afterwards: hooks (the module's or
    global ones) on a module the patched path skips, an instance-level ``attn.forward`` (timm, official),
    and FX symbolic tracing (``x`` a Proxy: the library's code traces, this module's shape logic does not).
    Dict-truthiness and isinstance tests only: cheap in eager mode, no graph break under torch.compile."""
    if isinstance(x, torch.fx.Proxy):
        return True
    bypassed = _bypassed(family, attn)
    if not bypassed:
        return False
    if "forward" in attn.__dict__ or _global_hooks():
        return True
    for _, module in bypassed:
        if _has_hooks(module):
            return True
    return False


# --------------------------------------------------------------------------------------------------------
# The patched methods. Python work here is on shapes and attributes only (no tensor values), so
# torch.compile traces through them; window, shift and the table are read at call time, never cached.


def _timm_attn(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm ``SwinTransformerBlock._attn`` on the fused op: ``[B, H, W, C] -> [B, H, W, C]``."""
    patch: _Patch = getattr(block, _MARK)
    attn = block.attn
    if _needs_library_path("timm", attn, x):
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
    out = _attend(patch, qkv, attn, window, shift,
                  pad_qkv=attn.qkv.bias,
                  shift_before_pad=True,  # timm rolls, then pads (timm issue 2438): reproduced on purpose
                  dropout_p=attn.attn_drop.p if attn.training else 0.0,
                  scale=attn.scale, table_window=tuple(attn.window_size))
    return attn.proj_drop(attn.proj(out))


def _torchvision_forward(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision ``ShiftedWindowAttention.forward`` on the fused op: ``[B, H, W, C] -> [B, H, W, C]``."""
    patch: _Patch = getattr(attn, _MARK)
    if _needs_library_path("torchvision", attn, x):
        return patch.call_original(attn, x)
    _, H, W, C = x.shape
    window = (attn.window_size[0], attn.window_size[1])
    # torchvision drops the shift along a dimension whose padded size is a single window.
    shift = tuple(0 if window[i] >= padded_size(size, window[i]) else attn.shift_size[i]
                  for i, size in enumerate((H, W)))
    qkv = F.linear(x, attn.qkv.weight, attn.qkv.bias)  # torchvision calls F.linear too (no qkv hooks)
    out = _attend(patch, qkv, attn, window, shift,
                  pad_qkv=attn.qkv.bias,
                  shift_before_pad=False,
                  dropout_p=attn.attention_dropout if attn.training else 0.0,
                  scale=(C // attn.num_heads) ** -0.5, table_window=window)
    out = F.linear(out, attn.proj.weight, attn.proj.bias)
    return F.dropout(out, p=attn.dropout, training=attn.training)


def _official_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Official ``SwinTransformerBlock.forward`` on the fused op: ``[B, L, C] -> [B, L, C]``."""
    patch: _Patch = getattr(block, _MARK)
    attn = block.attn
    if _needs_library_path("official", attn, x):
        return patch.call_original(block, x)
    H, W = block.input_resolution
    B, L, C = x.shape
    if L != H * W:
        raise ValueError(f"input feature has wrong size: {L} tokens, expected H*W = {H}*{W} = {H * W} "
                         f"for input_resolution {tuple(block.input_resolution)}")
    shortcut = x
    qkv = attn.qkv(block.norm1(x).view(B, H, W, C))
    out = _attend(patch, qkv, attn, tuple(attn.window_size), (block.shift_size, block.shift_size),
                  pad_qkv=None, shift_before_pad=False,
                  dropout_p=attn.attn_drop.p if attn.training else 0.0,
                  scale=attn.scale, table_window=tuple(attn.window_size))
    x = shortcut + block.drop_path(attn.proj_drop(attn.proj(out)).view(B, L, C))
    return x + block.drop_path(block.mlp(block.norm2(x)))


_PATCHED: Dict[str, Tuple[str, Callable]] = {  # family -> (attribute, replacement)
    "timm": ("_attn", _timm_attn),
    "torchvision": ("forward", _torchvision_forward),
    "official": ("forward", _official_forward),
}


# --------------------------------------------------------------------------------------------------------
# Checks, once per block at optimize() time. Each returns None (the op reproduces the block) or a reason.
# Meta tensors (models built without storage, loaded later) carry no values: only the index's and mask's
# shapes are checked then; the patched path never reads their values, so values loaded later cannot matter.


def _index_reason(index: torch.Tensor, window: Pair) -> Optional[str]:
    expected = relative_position_index(window)
    if index.numel() != expected.numel() or (
            not index.is_meta and not torch.equal(index.detach().reshape(-1).cpu(), expected.reshape(-1))):
        return "relative_position_index is not the standard formula"
    return None


def _table_reason(attn: nn.Module, window: Pair) -> Optional[str]:
    table = getattr(attn, "relative_position_bias_table", None)
    rows = (2 * window[0] - 1) * (2 * window[1] - 1)
    if not isinstance(table, torch.Tensor) or tuple(table.shape) != (rows, attn.num_heads):
        return f"relative_position_bias_table is not [(2*{window[0]}-1)*(2*{window[1]}-1), heads]"
    return None


def _shift_reason(window: Pair, shift: Pair) -> Optional[str]:
    if not all(0 <= s < w for s, w in zip(shift, window)):
        return f"shift {shift} is not in [0, window {window})"
    return None


def _mask_reason(mask: Optional[torch.Tensor], Hp: int, Wp: int, window: Pair, shift: Pair) -> Optional[str]:
    if not any(shift):
        return None
    expected = shift_mask(Hp, Wp, window, shift)
    if mask is None or tuple(mask.shape) != tuple(expected.shape) or \
            (not mask.is_meta and not torch.equal(mask.detach().float().cpu(), expected)):
        return "attn_mask is not the standard -100 shift mask for its input_resolution"
    return None


def _overridden(obj: object, base: type, *names: str) -> Optional[str]:
    for name in names:
        if getattr(type(obj), name) is not getattr(base, name):
            return f"{type(obj).__name__}.{name} overrides {base.__module__}.{base.__name__}.{name}"
    return None


def _linear_reason(attn: nn.Module) -> Optional[str]:
    """qkv / proj must be plain Linears: the patched path reads ``.weight`` / ``.bias`` (the qkv bias is the
    q/k/v of padded tokens); a quantized or wrapped projection has neither as a tensor."""
    for name in ("qkv", "proj"):
        layer = getattr(attn, name, None)
        if not isinstance(layer, nn.Linear):
            kind = f"{type(layer).__module__}.{type(layer).__qualname__}"
            return f"attn.{name} is {kind}, not an nn.Linear (quantized or wrapped projection)"
    return None


# Instance attributes (on the patched module, and on its attention for timm and official blocks) that the
# library's path calls and the patched path replaces or skips: an override set on the instance (accelerate's
# add_hook_to_module, a user's wrapper) would be lost.
_INSTANCE_ATTRS: Dict[str, Tuple[Tuple[str, Tuple[str, ...]], ...]] = {
    "timm": (("", ("_attn", "get_attn_mask", _REPLICATE)), ("attn.", ("forward", "_get_rel_pos_bias"))),
    "torchvision": (("", ("forward", "get_relative_position_bias", _REPLICATE)),),
    "official": (("", ("forward", _REPLICATE)), ("attn.", ("forward",))),
}


def _instance_reason(family: str, module: nn.Module, attn: nn.Module) -> Optional[str]:
    for prefix, names in _INSTANCE_ATTRS[family]:
        owner = attn if prefix else module
        for name in names:
            if name in owner.__dict__:
                return f"instance-level {prefix}{name} override"
    return None


def _hook_reason(family: str, attn: nn.Module) -> Optional[str]:
    for name, module in _bypassed(family, attn):
        if _has_hooks(module):
            return f"hooks on {name}, which the fused path does not call"
    return None


def _first(*reasons: Callable[[], Optional[str]]) -> Optional[str]:
    for reason in reasons:
        found = reason()
        if found:
            return found
    return None


def _check_timm(block: nn.Module, timm_swin: types.ModuleType) -> Optional[str]:
    attn = block.attn
    window, shift = tuple(block.window_size), tuple(block.shift_size)

    def mask():
        if getattr(block, "dynamic_mask", False):
            return None
        rh, rw = block.input_resolution
        return _mask_reason(block.attn_mask, padded_size(rh, window[0]), padded_size(rw, window[1]),
                            window, shift)

    return _first(
        lambda: None if isinstance(attn, timm_swin.WindowAttention) else
        f"attention is {type(attn).__name__}, not timm's WindowAttention",
        lambda: _overridden(block, timm_swin.SwinTransformerBlock, "_attn", "get_attn_mask"),
        lambda: _overridden(attn, timm_swin.WindowAttention, "forward", "_get_rel_pos_bias"),
        lambda: _instance_reason("timm", block, attn),
        lambda: _hook_reason("timm", attn),
        lambda: _linear_reason(attn),
        lambda: None if tuple(attn.window_size) == window else
        f"block window {window} differs from its attention's window {tuple(attn.window_size)}",
        lambda: _shift_reason(window, shift),
        lambda: _table_reason(attn, window),
        lambda: _index_reason(attn.relative_position_index, window),
        mask,
    )


def _heads_reason(attn: nn.Module) -> Optional[str]:
    dim = attn.qkv.in_features
    if dim % attn.num_heads == 0 and attn.qkv.out_features == 3 * dim:
        return None
    return f"qkv {dim}->{attn.qkv.out_features} does not split into {attn.num_heads} heads"


def _check_torchvision(attn: nn.Module, tv_swin: types.ModuleType) -> Optional[str]:
    if isinstance(attn, tv_swin.ShiftedWindowAttentionV2):
        return "Swin V2 attention (cosine attention, continuous position bias): not supported"
    window, shift = tuple(attn.window_size), tuple(attn.shift_size)
    return _first(
        lambda: _overridden(attn, tv_swin.ShiftedWindowAttention, "forward", "get_relative_position_bias"),
        lambda: _instance_reason("torchvision", attn, attn),
        lambda: _linear_reason(attn),
        lambda: None if len(window) == 2 and len(shift) == 2 else f"window {window} / shift {shift} not 2-D",
        lambda: _heads_reason(attn),
        lambda: _shift_reason(window, shift),
        lambda: _table_reason(attn, window),
        lambda: _index_reason(attn.relative_position_index, window),
    )


_OFFICIAL_BLOCK_ATTRS = ("norm1", "norm2", "mlp", "drop_path", "input_resolution", "attn_mask")
_OFFICIAL_ATTN_ATTRS = ("qkv", "proj", "relative_position_bias_table", "relative_position_index", "num_heads",
                        "scale", "window_size", "attn_drop", "proj_drop")


def _check_official(block: nn.Module) -> Optional[str]:
    attn = block.attn
    missing = [a for a in _OFFICIAL_BLOCK_ATTRS if not hasattr(block, a)]
    missing += [f"attn.{a}" for a in _OFFICIAL_ATTN_ATTRS if not hasattr(attn, a)]
    if missing:
        return f"not the official block layout (no {', '.join(missing)})"
    instance = _instance_reason("official", block, attn)
    if instance:
        return instance
    ws, ss = block.window_size, block.shift_size
    if not (isinstance(ws, int) and isinstance(ss, int)):
        return f"window_size {ws!r} / shift_size {ss!r} are not ints as in the official block"
    params = [p for p in inspect.signature(block.forward).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(params) != 1:
        return f"forward{inspect.signature(block.forward)} is not the official forward(x)"
    window, shift = (ws, ws), (ss, ss)
    H, W = block.input_resolution
    return _first(
        lambda: _hook_reason("official", attn),
        lambda: _linear_reason(attn),
        lambda: None if tuple(attn.window_size) == window else
        f"block window {ws} differs from its attention's window {tuple(attn.window_size)}",
        lambda: None if H % ws == 0 and W % ws == 0 else
        f"input_resolution {(H, W)} is not a multiple of the window {ws} (the official code cannot run it)",
        lambda: _heads_reason(attn),
        lambda: _shift_reason(window, shift),
        lambda: _table_reason(attn, window),
        lambda: _index_reason(attn.relative_position_index, window),
        lambda: _mask_reason(block.attn_mask, H, W, window, shift),
    )


# --------------------------------------------------------------------------------------------------------
# Finding the blocks.


def _classify(module: nn.Module) -> Optional[Tuple[str, Callable[[], Optional[str]]]]:
    """``(family, check)`` if ``module`` is a unit optimize() handles, else None.

    Library classes are looked up in ``sys.modules``: a model holding timm or torchvision modules has
    imported them, and optimize() never imports an optional dependency itself.
    """
    if isinstance(module, FusedBlock):
        return "swin_fused", lambda: None
    tv_swin = sys.modules.get("torchvision.models.swin_transformer")
    if tv_swin is not None and isinstance(module, tv_swin.ShiftedWindowAttention):
        return "torchvision", lambda: _check_torchvision(module, tv_swin)
    timm_swin = sys.modules.get("timm.models.swin_transformer")
    if timm_swin is not None and isinstance(module, timm_swin.SwinTransformerBlock):
        return "timm", lambda: _check_timm(module, timm_swin)
    attn = getattr(module, "attn", None)
    if not isinstance(attn, nn.Module) or (tv_swin is not None and isinstance(attn, tv_swin.ShiftedWindowAttention)):
        return None
    family = "timm" if type(module).__module__.startswith("timm.") else "official"
    if hasattr(attn, "logit_scale"):  # timm's and Microsoft's V2 blocks
        return family, lambda: "Swin V2 block (cosine attention, continuous position bias): not supported"
    if hasattr(attn, "relative_position_bias_table") and hasattr(module, "window_size") and \
            hasattr(module, "shift_size"):
        if family == "timm":
            return family, lambda: f"{type(module).__name__} is not timm's V1 SwinTransformerBlock"
        return family, lambda: _check_official(module)
    return None


def _install(module: nn.Module, patch: _Patch) -> None:
    """Set the patch on ``module``. Partials of module-level functions, unlike bound methods, pickle and
    deep-copy with the module (the copy's partial is bound to the copy)."""
    setattr(module, _MARK, patch)
    setattr(module, patch.attr, functools.partial(_PATCHED[patch.family][1], module))
    setattr(module, _REPLICATE, functools.partial(_replicate_patched, module))


def _replicate_patched(module: nn.Module) -> nn.Module:
    """``Module._replicate_for_data_parallel`` of a patched module. A replica starts as a copy of the
    module's ``__dict__``, whose partials are bound to the module itself: bind the replica's to the replica,
    so it computes with the Parameters replicate() gives it."""
    replica = type(module)._replicate_for_data_parallel(module)
    _install(replica, dataclasses.replace(getattr(module, _MARK)))
    return replica


def _patch(module: nn.Module, family: str, backend: Optional[str]) -> None:
    _install(module, _Patch(_PATCHED[family][0], family, backend))


def _unpatch(module: nn.Module) -> None:
    patch: _Patch = module.__dict__.pop(_MARK)
    for attr in (patch.attr, _REPLICATE):
        module.__dict__.pop(attr, None)


def optimize(model: nn.Module, *, backend: Optional[str] = None, verbose: bool = True,
             undo: bool = False) -> OptimizeReport:
    """Route every Swin V1 block of ``model`` through :func:`swin_fused.window_attention`, in place.

    Outputs are unchanged beyond floating-point rounding: each library's semantics (pad/shift order, window
    clamping, masks, qkv bias of padded tokens, dropouts) are reproduced; see the module docstring. No
    weight is copied and ``state_dict`` is untouched. Calling it again is harmless (it may change the
    pinned ``backend``); ``undo=True`` puts every block back on its original path. Call it before
    ``torch.compile`` (a model compiled earlier keeps its traced graphs until it recompiles).

    Args:
        model: an ``nn.Module`` holding timm, torchvision, official-code or swin_fused Swin V1 blocks
            (a whole model, a stage or a single block).
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` to pin for these blocks; None follows
            :func:`swin_fused.set_backend` at call time. Pinning works inside ``torch.compile`` graphs.
        verbose: print the report.
        undo: restore the original paths instead.

    Returns:
        An :class:`OptimizeReport`. Blocks that cannot be reproduced exactly (Swin V2, a non-standard
        relative position index, overridden methods, qkv / proj that are not ``nn.Linear``, hooks on a
        module the fused path does not call, ...) are left alone, named in the report and in one
        ``UserWarning``. Hooks registered later, and FX symbolic tracing, send the affected calls down the
        library's own path; ``nn.DataParallel`` replicas of a patched model compute with their own
        Parameters.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize: model must be a torch.nn.Module, got {type(model).__name__}")
    if backend is not None and (not isinstance(backend, str) or backend.lower() not in BACKENDS):
        raise ValueError(f"optimize: unknown backend {backend!r}; expected None or one of {', '.join(BACKENDS)}")
    backend = backend.lower() if backend is not None else None

    report = OptimizeReport(backend=backend)
    families = set()
    for name, module in model.named_modules():
        patch: Optional[_Patch] = module.__dict__.get(_MARK)
        if patch is not None:
            families.add(patch.family)
            if undo:
                _unpatch(module)
                report.restored.append(name)
            else:
                patch.backend = backend
                report.already_optimized.append(name)
            continue
        found = _classify(module)
        if found is None:
            continue
        family, check = found
        families.add(family)
        if family == "swin_fused":
            report.already_fused.append(name)
        elif undo:
            report.already_original.append(name)
        else:
            reason = check()
            if reason is None:
                _patch(module, family, backend)
                report.patched.append(name)
            else:
                report.left_alone[name] = reason
    report.family = ", ".join(sorted(families)) or "none"

    if report.left_alone:
        summary = "; ".join(f"{reason} ({_abbreviate(names)})" for reason, names in report.reasons().items())
        warnings.warn(f"swin_fused.optimize left {len(report.left_alone)} of {report.num_blocks} Swin blocks on "
                      f"their original path: {summary}", UserWarning, stacklevel=2)
    elif not report.num_blocks and not undo:
        warnings.warn(f"swin_fused.optimize found no Swin blocks in {type(model).__name__}: nothing changed",
                      UserWarning, stacklevel=2)
    if verbose:
        print(report)
    return report
