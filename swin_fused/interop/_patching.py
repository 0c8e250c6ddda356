"""What every library adapter of :func:`swin_fused.optimize` shares: the report, the patch record and how it is
installed, undone and re-bound to ``nn.DataParallel`` replicas, the call-time fallback to the library's path,
and the checks that decide whether a block can be reproduced exactly.

Mechanism: one method set on the *instance* (never the class), under the name the library calls (``_attn``,
``forward``); a ``functools.partial`` of a module-level function of the adapter, so ``copy.deepcopy`` and
pickling a whole optimized model keep the patch. The same module also gets a ``_replicate_for_data_parallel``
that re-binds the patch to each replica (whose ``__dict__`` is a copy of the module's), so a replica computes
with its own device's Parameters.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from .. import functional, norm as _norm
from ..backend import global_hooks, has_hooks
from ..geometry import MASK_VALUE, relative_position_index, shift_mask

Pair = Tuple[int, int]

#: Instance attribute that marks a patched module and remembers how to undo the patch.
MARK = "_swin_fused_patch"
#: ``nn.DataParallel``'s replicate() calls this method of every module; a patched module gets its own.
REPLICATE = "_replicate_for_data_parallel"


@dataclass
class OptimizeReport:
    """What :func:`optimize` did, block by block (module names as in ``model.named_modules()``).

    Attributes:
        family: the libraries whose blocks were found (``"timm"``, ``"torchvision"``, ``"official"``,
            ``"detection"``, ``"transformers"``, ``"swin_fused"``, comma-joined if several), or ``"none"``.
        patched: blocks routed through :func:`swin_fused.window_attention` by this call.
        already_optimized: blocks an earlier ``optimize`` call had routed (left as they are).
        already_fused: blocks of :mod:`swin_fused` itself, which always run the fused op.
        left_alone: block name -> why it stays on its original path.
        restored: blocks put back on their original path (``undo=True``).
        already_original: blocks ``undo=True`` found on their original path (nothing to restore).
        norms: the LayerNorms that run the fused norm kernel where it applies (eager CUDA calls with the Triton
            backend; elsewhere their own forward) after this call: the routed blocks', and the merging layers'.
        backend: the backend pinned for the patched blocks (None: the global setting at call time).
    """

    family: str = "none"
    patched: List[str] = field(default_factory=list)
    already_optimized: List[str] = field(default_factory=list)
    already_fused: List[str] = field(default_factory=list)
    left_alone: Dict[str, str] = field(default_factory=dict)
    restored: List[str] = field(default_factory=list)
    already_original: List[str] = field(default_factory=list)
    norms: List[str] = field(default_factory=list)
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
        if self.norms:
            lines.append(f"  LayerNorms on the fused norm kernel (eager CUDA calls): {len(self.norms)}")
        if self.already_fused:
            lines.append(f"  swin_fused blocks, fused already (nothing to do): {len(self.already_fused)}")
        if self.restored:
            lines.append(f"  restored to their original path: {len(self.restored)}")
        if self.already_original:
            lines.append(f"  already on their original path (nothing to undo): {len(self.already_original)}")
        if self.left_alone:
            lines.append(f"  left on their original path: {len(self.left_alone)}")
            for reason, names in self.reasons().items():
                lines.append(f"    {abbreviate(names)}: {reason}")
        if not self.num_blocks:
            lines.append("  no Swin blocks found")
        return "\n".join(lines)


def abbreviate(names: List[str], keep: int = 3) -> str:
    shown = ", ".join(n or "<model>" for n in names[:keep])
    return shown + (f" (+{len(names) - keep} more)" if len(names) > keep else "")


@dataclass
class Patch:
    """Stored on a patched module: what was replaced, by which adapter function, and what the patched path
    pins or remembers (``state``: adapter-specific values fixed at optimize() time, e.g. HF's configured
    window, which the library overwrites)."""

    attr: str  # the attribute the library calls ("_attn", "forward"); the class's own is the original path
    family: str
    replacement: Callable  # module-level function (module, *args, **kwargs)
    backend: Optional[str]
    state: Dict[str, Any] = field(default_factory=dict, repr=False)

    def call_original(self, module: nn.Module, *args, **kwargs):
        return getattr(type(module), self.attr)(module, *args, **kwargs)


@dataclass
class Candidate:
    """An adapter's answer for a module it recognises: how to patch it, and the check that decides whether
    the fused op reproduces it (None: yes; a string: the reason it stays on its own path)."""

    family: str
    attr: str
    replacement: Optional[Callable]
    check: Callable[[], Optional[str]]
    state: Callable[[], Dict[str, Any]] = dict
    #: ``norms(parent)`` -> ``((norm, reader), ...)``: the block's LayerNorms for the fused norm kernel, each with its
    #: ``Reader`` (see :func:`install_norm`), ``parent`` being the module that holds the patched one (torchvision's
    #: block holds the attention that is patched and the norms around it).
    norms: Callable[[Optional[nn.Module]], Tuple[Tuple[nn.Module, Any], ...]] = lambda parent: ()


def attend(patch: Patch, qkv: torch.Tensor, table: torch.Tensor, num_heads: int, window: Pair, shift: Pair,
           pad_qkv, shift_before_pad: bool, dropout_p: float, scale: Optional[float], table_window: Pair,
           cosine_scale: Optional[torch.Tensor] = None, mask_value: float = MASK_VALUE) -> torch.Tensor:
    """``[B, H, W, 3 * heads * hd] -> [B, H, W, heads * hd]`` through the package's functional op."""
    return functional.window_attention(qkv, table, num_heads, window, shift, scale=scale, pad_qkv=pad_qkv,
                                       shift_before_pad=shift_before_pad, table_window=table_window,
                                       dropout_p=dropout_p, backend=patch.backend, cosine_scale=cosine_scale,
                                       mask_value=mask_value)


def v2_terms(logit_scale: torch.Tensor, cpb_mlp: nn.Module, coords_table: torch.Tensor,
             num_heads: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Swin V2's per-call attention terms as the fused op takes them, computed as every V2 library computes
    them (so gradients reach ``cpb_mlp`` and ``logit_scale`` through the op's own): the bias table
    ``16 * sigmoid(cpb_mlp(coords))`` ``[(2Wh-1)(2Ww-1), heads]`` (sigmoid is elementwise: before or after the
    libraries' gather, the same values) and the temperature ``exp(clamp(logit_scale, max=log(1 / 0.01)))``
    ``[heads]``."""
    table = 16 * torch.sigmoid(cpb_mlp(coords_table).view(-1, num_heads))
    tau = torch.clamp(logit_scale, max=math.log(1.0 / 0.01)).exp().view(num_heads)
    return table, tau


def v2_reason(logit_scale, cpb_mlp, coords_table, window: Pair, num_heads: int) -> Optional[str]:
    """A V2 attention's terms have the standard shapes: ``logit_scale`` one value per head, the coordinates table
    ``[1, 2Wh-1, 2Ww-1, 2]`` and ``cpb_mlp`` a Linear(2, .) ... -> heads Sequential."""
    if not isinstance(logit_scale, torch.Tensor) or logit_scale.numel() != num_heads:
        return f"logit_scale is not one value per head ({num_heads})"
    rows = (2 * window[0] - 1, 2 * window[1] - 1)
    if not isinstance(coords_table, torch.Tensor) or tuple(coords_table.shape) != (1, *rows, 2):
        return f"relative_coords_table is not [1, {rows[0]}, {rows[1]}, 2] for window {window}"
    layers = list(cpb_mlp) if isinstance(cpb_mlp, nn.Sequential) else []
    if not layers or not isinstance(layers[0], nn.Linear) or layers[0].in_features != 2 or \
            not isinstance(layers[-1], nn.Linear) or layers[-1].out_features != num_heads:
        return f"cpb_mlp is not a Linear(2, .) ... Linear(., {num_heads}) Sequential"
    return None


# --------------------------------------------------------------------------------------------------------
# Call-time fallback. The library's path calls some modules the patched path skips (timm's and the official
# ``attn``, HF's projections): hooks there would not run, so a call that would run them goes the library's way.
# Dict-truthiness and isinstance tests only: cheap in eager mode, no graph break under torch.compile.


def needs_library_path(bypassed: Tuple[Tuple[str, nn.Module], ...], owner: Optional[nn.Module], x) -> bool:
    """Call-time twin of the optimize()-time checks on what can change afterwards: hooks (the modules' own or
    global ones) or an instance-level ``forward`` (a wrapper: accelerate's hooks, a user's) on ``owner`` (the
    skipped attention module, where the library calls it) or any other module the patched path skips, and FX
    symbolic tracing (``x`` a Proxy: the library's code traces, the adapter's shape logic does not)."""
    if isinstance(x, torch.fx.Proxy):
        return True
    if not bypassed:
        return False
    if (owner is not None and overrides(owner, "forward")) or global_hooks():
        return True
    return any(has_hooks(module) or overrides(module, "forward") for _, module in bypassed)


def overrides(module: nn.Module, name: str) -> bool:
    """Whether ``module`` has an instance-level ``name`` other than its class's own method bound to it (which is
    what accelerate's ``remove_hook_from_module`` puts back: no wrapper is left)."""
    value = module.__dict__.get(name)
    if value is None:
        return False
    return not (getattr(value, "__self__", None) is module
                and getattr(value, "__func__", None) is getattr(type(module), name, None))


def hook_reason(bypassed: Tuple[Tuple[str, nn.Module], ...]) -> Optional[str]:
    for name, module in bypassed:
        if has_hooks(module):
            return f"hooks on {name}, which the fused path does not call"
    return None


def instance_reason(owners: Tuple[Tuple[str, nn.Module, Tuple[str, ...]], ...]) -> Optional[str]:
    """An instance-level override (accelerate's add_hook_to_module, a user's wrapper) of a method the library
    calls and the patched path replaces or skips: it would be lost. ``owners``: (prefix, module, names)."""
    for prefix, owner, names in owners:
        for name in names:
            if overrides(owner, name):
                return f"instance-level {prefix}{name} override"
    return None


# --------------------------------------------------------------------------------------------------------
# Checks, once per block at optimize() time. Each returns None (the op reproduces the block) or a reason.
# Meta tensors (models built without storage, loaded later) carry no values: only the index's and mask's
# shapes are checked then; the patched path never reads their values, so values loaded later cannot matter.


def first(*reasons: Callable[[], Optional[str]]) -> Optional[str]:
    for reason in reasons:
        found = reason()
        if found:
            return found
    return None


def index_reason(index: Optional[torch.Tensor], window: Pair) -> Optional[str]:
    expected = relative_position_index(window)
    if not isinstance(index, torch.Tensor) or index.numel() != expected.numel() or (
            not index.is_meta and not torch.equal(index.detach().reshape(-1).cpu(), expected.reshape(-1))):
        return "relative_position_index is not the standard formula"
    return None


def table_reason(table, window: Pair, num_heads: int) -> Optional[str]:
    rows = (2 * window[0] - 1) * (2 * window[1] - 1)
    if not isinstance(table, torch.Tensor) or tuple(table.shape) != (rows, num_heads):
        return f"relative_position_bias_table is not [(2*{window[0]}-1)*(2*{window[1]}-1), heads]"
    return None


def shift_reason(window: Pair, shift: Pair) -> Optional[str]:
    if not all(0 <= s < w for s, w in zip(shift, window)):
        return f"shift {shift} is not in [0, window {window})"
    return None


def mask_reason(mask: Optional[torch.Tensor], Hp: int, Wp: int, window: Pair, shift: Pair) -> Optional[str]:
    if not any(shift):
        return None
    expected = shift_mask(Hp, Wp, window, shift)
    if mask is None or tuple(mask.shape) != tuple(expected.shape) or \
            (not mask.is_meta and not torch.equal(mask.detach().float().cpu(), expected)):
        return "attn_mask is not the standard -100 shift mask for its input_resolution"
    return None


def overridden(obj: object, base: type, *names: str) -> Optional[str]:
    for name in names:
        if getattr(type(obj), name) is not getattr(base, name):
            return f"{type(obj).__name__}.{name} overrides {base.__module__}.{base.__name__}.{name}"
    return None


def linear_reason(owner: nn.Module, *names: str, prefix: str = "attn.") -> Optional[str]:
    """Projections must be plain Linears: the patched path reads ``.weight`` / ``.bias`` (the qkv bias is the
    q/k/v of padded tokens); a quantized or wrapped projection has neither as a tensor. ``prefix``: the
    owner's name in the block, for the message."""
    for name in names:
        try:
            layer = owner.get_submodule(name)
        except AttributeError:
            layer = None
        if not isinstance(layer, nn.Linear):
            kind = f"{type(layer).__module__}.{type(layer).__qualname__}"
            return f"{prefix}{name} is {kind}, not an nn.Linear (quantized or wrapped projection)"
    return None


def heads_reason(qkv: nn.Linear, num_heads: int) -> Optional[str]:
    dim = qkv.in_features
    if dim % num_heads == 0 and qkv.out_features == 3 * dim:
        return None
    return f"qkv {dim}->{qkv.out_features} does not split into {num_heads} heads"


# --------------------------------------------------------------------------------------------------------
# The LayerNorms. A patched block's nn.LayerNorms, and a routed model's merging layers' (the adapters' merge_norm),
# get a patched ``forward`` too (the same record, family NORM), which runs the fused norm kernel where it applies
# (:func:`swin_fused.norm.patched_forward`: eager CUDA calls with the Triton backend) and nn.LayerNorm's own
# forward everywhere else. Under autocast PyTorch's norm gives fp32, which the Linear after it casts; the fused
# norm writes the Linear's dtype instead only where that Linear is, at call time, the output's only reader: the
# norm's ``reader`` (set where the library's code hands the output to the MLP's first Linear, or a V1 merge's
# reduction, and to nothing else) is still a plain, unhooked nn.Linear, nothing between them has hooks, and nothing
# observes the norm (hooks of its own or global ones, a wrapper around its forward). The attention's norm feeds the
# library's own code on its fallback path, where a mask built in the input's dtype would change the numbers: it
# has no reader, and the adapters that run the block's forward themselves ask for the Linear's dtype in that call
# alone (:func:`block_norm`).

NORM = "layernorm"
#: ``torch.jit.script`` calls this on every module first: TorchScript cannot compile the patched forward.
SCRIPTABLE = "__prepare_scriptable__"

#: ``(owner, name, via)``: the Linear ``getattr(owner, name)`` reads the norm's output, through ``via`` (a module
#: called on it first, whose hooks would see it) or directly (None).
Reader = Optional[Tuple[nn.Module, str, Optional[nn.Module]]]


def routable_norm(norm: Optional[nn.Module]) -> bool:
    """Whether ``norm`` is a LayerNorm the fused kernel stands in for: a plain ``nn.LayerNorm`` over the last
    dimension with weight and bias, whose ``forward`` is its class's (anything else is left as it is)."""
    return (type(norm) is nn.LayerNorm and norm.elementwise_affine and norm.bias is not None
            and len(norm.normalized_shape) == 1 and not {"forward", REPLICATE, MARK, SCRIPTABLE} & norm.__dict__.keys())


def mlp_reader(mlp: Optional[nn.Module], mlp_class: Optional[type], first: str = "fc1") -> Reader:
    """The MLP's first Linear as its norm's reader, where ``mlp`` is exactly the library's ``mlp_class`` (whose
    forward starts with ``getattr(mlp, first)`` on its input); None otherwise."""
    if mlp_class is None or type(mlp) is not mlp_class:
        return None
    return mlp, first, mlp


def install_norm(norm: nn.Module, reader: Reader, backend: Optional[str]) -> None:
    install(norm, Patch("forward", NORM, _norm_forward, backend, {"reader": reader}))
    setattr(norm, SCRIPTABLE, functools.partial(_unpatch_for_script, norm))


def _unpatch_for_script(norm: nn.Module) -> nn.Module:
    uninstall(norm)
    return norm


def _norm_forward(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A patched ``nn.LayerNorm.forward``: ``[..., C] -> [..., C]``."""
    patch = norm.__dict__.get(MARK)
    if patch is None:  # undone, and still called by a wrapper set around it after optimize()
        return nn.LayerNorm.forward(norm, x)
    return _norm.patched_forward(norm, x, _reads_linear(patch.state["reader"]) and _unobserved(norm), patch.backend)


def _reads_linear(reader: Reader) -> bool:
    if reader is None:
        return False
    owner, name, via = reader
    return _plain_linear(getattr(owner, name, None)) and not (via is not None and has_hooks(via))


def _plain_linear(linear: Optional[nn.Module]) -> bool:
    """An ``nn.Linear`` itself (no subclass, no quantized or LoRA wrapper) that no hook watches: it reads the
    norm's output in its own dtype and nothing else sees that output."""
    return type(linear) is nn.Linear and not has_hooks(linear)


def _unobserved(norm: nn.Module) -> bool:
    """No hooks see the norm's call (its own, global ones) and its forward is the patch itself (no wrapper)."""
    return _ours(norm.__dict__.get("forward"), norm, _norm_forward) and not _norm.observed(norm)


def block_norm(norm: nn.Module, x: torch.Tensor, linear: Optional[nn.Module] = None) -> torch.Tensor:
    """``norm(x)`` for an adapter's own block forward, whose next step is ``linear`` on the result (None: an
    ``F.linear`` the adapter calls itself): a routed, unobserved norm writes the Linear's dtype under autocast;
    anything else is called as it is (hooks, wrappers, its patched forward)."""
    patch = norm.__dict__.get(MARK)
    if patch is None or not _unobserved(norm) or (linear is not None and not _plain_linear(linear)):
        return norm(x)
    return _norm.patched_forward(norm, x, True, patch.backend)


# --------------------------------------------------------------------------------------------------------
# Installing and removing a patch.


def install(module: nn.Module, patch: Patch) -> None:
    """Set the patch on ``module``. Partials of module-level functions, unlike bound methods, pickle and
    deep-copy with the module (the copy's partial is bound to the copy)."""
    setattr(module, MARK, patch)
    setattr(module, patch.attr, functools.partial(patch.replacement, module))
    setattr(module, REPLICATE, functools.partial(_replicate_patched, module))


def _replicate_patched(module: nn.Module) -> nn.Module:
    """``Module._replicate_for_data_parallel`` of a patched module. A replica starts as a copy of the
    module's ``__dict__``, whose partials are bound to the module itself: bind the replica's to the replica,
    so it computes with the Parameters replicate() gives it."""
    replica = type(module)._replicate_for_data_parallel(module)
    patch = dataclasses.replace(getattr(module, MARK))
    if patch.family == NORM:
        install_norm(replica, patch.state["reader"], patch.backend)
    else:
        install(replica, patch)
    return replica


def _ours(value, module: nn.Module, func: Callable) -> bool:
    return isinstance(value, functools.partial) and value.func is func and value.args == (module,)


def uninstall(module: nn.Module) -> bool:
    """Remove the patch; False (and nothing removed) where a wrapper set after optimize() (accelerate's hooks, a
    user's) replaced the patched attribute and still calls the patch: removing it would drop the wrapper."""
    patch: Patch = module.__dict__[MARK]
    if not _ours(module.__dict__.get(patch.attr), module, patch.replacement):
        return False
    del module.__dict__[MARK]
    for attr, func in ((patch.attr, patch.replacement), (REPLICATE, _replicate_patched),
                       (SCRIPTABLE, _unpatch_for_script)):
        if _ours(module.__dict__.get(attr), module, func):
            del module.__dict__[attr]
    return True


def patch_of(module: nn.Module) -> Patch:
    return getattr(module, MARK)
