"""``swin_fused.optimize(model)``: send an existing Swin model's window attention through the fused op.

Works in place on models built by timm, torchvision, HF transformers, the official classification code, the
official detection / segmentation backbones and mmdet / mmseg, without copying a weight: each block's own
projection and relative-position-table Parameters are read by reference on every call, so optimizers,
checkpoints, ``state_dict`` keys and values, hooks on the model and gradients are unchanged. Each library's own
semantics are reproduced exactly, at sizes that are not multiples of the window too; what each adapter patches,
and how, is in its module (:mod:`swin_fused.interop.timm`, ``.torchvision``, ``.transformers``, ``.detection``,
``.official``); the shared mechanism in :mod:`swin_fused.interop._patching`.

Each routed block's two LayerNorms, and the norm of each of timm's, torchvision's and HF's merging layers in a model
with routed blocks, get a patched ``forward`` too: the fused norm kernel in eager CUDA calls with the Triton backend,
``nn.LayerNorm.forward`` everywhere else (see :mod:`swin_fused.interop._patching`, "The LayerNorms", for where the
output may be written in the autocast dtype: only where a Linear is, at call time, its only reader). ``undo=True``
restores them too, except under a wrapper set around a patched method after optimize() (accelerate's hooks), which
is left in place with a warning. ``torch.jit.script`` (which cannot compile the patched forward) takes the norms
back to PyTorch's forward.

Swin V2 blocks (timm ``SwinTransformerV2``, torchvision ``swin_v2_t/s/b``, HF ``Swinv2*``) run the op's cosine
attention, with the continuous position bias computed by the block's own MLP on every call.

Left on its own path, each with its reason in the report and one summary warning: anything the op cannot
reproduce (timm's ``swin_transformer_v2_cr``, a non-standard relative position index or mask, a class that overrides a method the
patch replaces or skips, projections that are not ``nn.Linear``, e.g. dynamically quantized); an
instance-level override (accelerate's ``add_hook_to_module``, a user's wrapper) of the method optimize()
would replace or of one the patched path skips; and hooks on a module the patched path does not call (timm's
and the official ``attn``, HF's ``attention`` and its projections), whose forward, pre-forward or backward
hooks (DeepSpeed ZeRO-3's, attention-map capture, ablations) would not run. The same checks run at every
call, as dict-truthiness tests (cheap, and no graph break under ``torch.compile``): a hook, a global module
hook or an instance-level override added after optimize() sends that call down the library's path, and so
does FX symbolic tracing (``torchvision.models.feature_extraction``), and so does a call that asks HF for its
attention probabilities. Meta-device models are optimized without reading index or mask values.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch.nn as nn

from ..backend import BACKENDS
from ..model import SwinTransformerBlock as FusedBlock
from . import detection, official, timm, torchvision, transformers
from ._patching import (MARK, NORM, OptimizeReport, Patch, abbreviate, install, install_norm, routable_norm,
                        uninstall)

__all__ = ["optimize", "OptimizeReport"]

#: Asked in this order; the first that recognises a module decides. Detection blocks look like official ones
#: (and copies of the official block live in many repositories), so the official adapter comes last.
ADAPTERS = (torchvision, timm, transformers, detection, official)


def optimize(model: nn.Module, *, backend: Optional[str] = None, verbose: bool = True,
             undo: bool = False) -> OptimizeReport:
    """Route every Swin V1 and V2 block of ``model`` through :func:`swin_fused.window_attention`, in place.

    Outputs are unchanged beyond floating-point rounding: each library's semantics (pad/shift order, window
    clamping, masks, qkv bias of padded tokens, dropouts) are reproduced; see the module docstring. No
    weight is copied and ``state_dict`` is untouched. Calling it again is harmless (it may change the
    pinned ``backend``); ``undo=True`` puts every block back on its original path. Call it before
    ``torch.compile`` (a model compiled earlier keeps its traced graphs until it recompiles).

    Args:
        model: an ``nn.Module`` holding Swin V1 blocks of timm, torchvision, HF transformers, the official
            classification or detection code, mmdet / mmseg, or swin_fused, or Swin V2 blocks of timm,
            torchvision or HF transformers (a whole model, a stage or a block).
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` to pin for these blocks; None follows
            :func:`swin_fused.set_backend` at call time. Pinning works inside ``torch.compile`` graphs.
        verbose: print the report.
        undo: restore the original paths instead.

    Returns:
        An :class:`OptimizeReport`. Blocks that cannot be reproduced exactly are left alone, named in the
        report and in one ``UserWarning``. Hooks registered later, FX symbolic tracing and HF calls with
        ``output_attentions=True`` send the affected calls down the library's own path; ``nn.DataParallel``
        replicas of a patched model compute with their own Parameters.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"optimize: model must be a torch.nn.Module, got {type(model).__name__}")
    if backend is not None and (not isinstance(backend, str) or backend.lower() not in BACKENDS):
        raise ValueError(f"optimize: unknown backend {backend!r}; expected None or one of {', '.join(BACKENDS)}")
    backend = backend.lower() if backend is not None else None

    report = OptimizeReport(backend=backend)
    families = set()
    modules = dict(model.named_modules())
    names = {id(module): name for name, module in modules.items()}
    norms = set()  # names of the fused norms
    merges = []  # (norm, reader) of the libraries' merging layers: routed if blocks are
    wrapped = {}  # names of patched modules a wrapper set after optimize() calls: undo leaves them as they are

    def classify(module, name):
        return next((found for found in (adapter.classify(module, name) for adapter in ADAPTERS)
                     if found is not None), None)

    def block_norms(candidate, name):
        parent = modules.get(name.rpartition(".")[0]) if name else None
        return candidate.norms(parent) if candidate is not None else ()

    def route(pairs):
        for norm, reader in pairs:
            if routable_norm(norm):
                install_norm(norm, reader, backend)
                norms.add(names.get(id(norm)))

    def restore(module, name) -> bool:
        if uninstall(module):
            return True
        wrapped[name] = None
        return False

    for name, module in modules.items():
        patch: Optional[Patch] = module.__dict__.get(MARK)
        if patch is not None and patch.family == NORM:  # a routed block's or merge's norm
            if undo:
                restore(module, name)
            else:
                patch.backend = backend
                norms.add(name)
            continue
        if patch is not None:
            families.add(patch.family)
            pairs = block_norms(classify(module, name), name)
            if undo:
                for norm, _ in pairs:  # its norms too, wherever the walk meets them (torchvision's: before)
                    if MARK in norm.__dict__:
                        restore(norm, names.get(id(norm), name))
                if restore(module, name):
                    report.restored.append(name)
                else:
                    report.already_optimized.append(name)
            else:
                patch.backend = backend
                report.already_optimized.append(name)
                route(pairs)  # routed before its norms were (optimize() on the attention alone, then the model)
            continue
        if isinstance(module, FusedBlock):
            families.add("swin_fused")
            report.already_fused.append(name)
            continue
        candidate = classify(module, name)
        if candidate is None:
            merge = next((found for found in (adapter.merge_norm(module) for adapter in ADAPTERS
                                              if hasattr(adapter, "merge_norm")) if found is not None), None)
            if merge is not None and not undo:
                merges.append(merge)
            continue
        families.add(candidate.family)
        if undo:
            report.already_original.append(name)
            continue
        reason = candidate.check()
        if reason is None:
            install(module, Patch(candidate.attr, candidate.family, candidate.replacement, backend,
                                  candidate.state()))
            report.patched.append(name)
            route(block_norms(candidate, name))
        else:
            report.left_alone[name] = reason
    if report.patched or report.already_optimized:  # a Swin model of the library: its merges' norms too
        route(merges)
    report.family = ", ".join(sorted(families)) or "none"
    report.norms = [name for name in modules if name in norms]

    if wrapped:
        warnings.warn(f"swin_fused.optimize(undo=True) left {len(wrapped)} modules routed "
                      f"({abbreviate(list(wrapped))}): a wrapper set after optimize() (accelerate's hooks, a user's) "
                      f"replaced the patched method and calls it; remove the wrapper first, then undo", UserWarning,
                      stacklevel=2)
    if report.left_alone:
        summary = "; ".join(f"{reason} ({abbreviate(names)})" for reason, names in report.reasons().items())
        warnings.warn(f"swin_fused.optimize left {len(report.left_alone)} of {report.num_blocks} Swin blocks on "
                      f"their original path: {summary}", UserWarning, stacklevel=2)
    elif not report.num_blocks and not undo:
        warnings.warn(f"swin_fused.optimize found no Swin blocks in {type(model).__name__}: nothing changed",
                      UserWarning, stacklevel=2)
    if verbose:
        print(report)
    return report
