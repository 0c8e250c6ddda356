"""Checkpoints of every source: recognise the layout, rename it onto the official keys, load all or nothing;
save the package's own, atomically.

The libraries' layouts live with their adapters (``LAYOUTS`` in each module of :mod:`swin_fused.interop`); this
module holds what they share: unwrapping files and wrappers, reading ``.safetensors``, checking every key and
shape before anything is copied, the error messages, and writing.

Public: :func:`detect_layout`, :func:`convert_state_dict`, :func:`load_checkpoint` (into a swin_fused
``SwinTransformer`` or ``SwinBackbone``) and :func:`save_checkpoint` (``{"model": state_dict}`` through a
temporary file and ``os.replace``). The buffers ``relative_position_index`` and ``attn_mask`` are derivable; the
modules' load hooks fill them in when a dict lacks them.
"""
from __future__ import annotations

import math
import os
import pickle
import re
import uuid
import warnings
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn
from torch.nn.modules.module import _IncompatibleKeys

from ..backbone import SwinBackbone
from ..geometry import relative_position_index, same_index
from ..model import SwinTransformer, SwinTransformerBlock
from ..model_v2 import SwinTransformerV2
from . import detection, official, timm, torchvision, transformers
from ._layouts import Layout, StateDict, is_v2

__all__ = ["LAYOUTS", "CheckpointError", "LoadResult", "detect_layout", "convert_state_dict", "load_checkpoint",
           "save_checkpoint", "convert_foreign_keys_in_place"]

_REGISTRY: Tuple[Layout, ...] = (*official.LAYOUTS, *detection.LAYOUTS, *timm.LAYOUTS, *torchvision.LAYOUTS,
                                 *transformers.LAYOUTS)
#: Layouts :func:`convert_state_dict` reads. "official" is also the package's own layout.
LAYOUTS = tuple(layout.name for layout in _REGISTRY)
_BY_NAME: Dict[str, Layout] = {layout.name: layout for layout in _REGISTRY}

PathLike = Union[str, "os.PathLike[str]"]

_SHOWN_KEYS = 10  # keys listed per category in error messages
_WRAPPER_KEYS = ("model", "state_dict")  # official training/release files; timm, mmdet and Lightning files
# DistributedDataParallel / DataParallel; torch.compile; a training wrapper holding the network as `.model`
# (PyTorch Lightning modules, many trainers). Each is stripped only when every key carries it.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
_BACKBONE_LAYOUTS = ("detection", "mmdet", "transformers-backbone")


class CheckpointError(RuntimeError):
    """A checkpoint could not be read, or does not fit the model (the model is left unchanged)."""


class LoadResult(_IncompatibleKeys):
    """What :func:`load_checkpoint` returns: the missing and unexpected keys (as ``load_state_dict``), and
    ``source``, the layout it detected (or was told)."""

    source: str


# ---------------------------------------------------------------------------------------------- layouts


def _describe_keys(keys: List[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f", ... ({len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")


def _guess(keys: List[str]) -> List[Layout]:
    v2 = is_v2(keys)  # V1 and V2 dicts share most keys: each is asked only about its own kind of layout
    return [layout for layout in _REGISTRY if layout.v2 == v2 and layout.recognise(keys)]


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Which layout a Swin state dict uses: one of :data:`LAYOUTS`.

    Accepts wrappers as :func:`load_checkpoint` does (``{"model": ...}``, ``{"state_dict": ...}``, DDP /
    ``torch.compile`` key prefixes, a detector's ``backbone.*``). Raises ValueError for Swin V2 dicts and for keys
    that fit no layout (or several), listing some.
    """
    sd = _prepare(state_dict, "state_dict")
    return _detect(list(sd)).name


def _detect(keys: List[str]) -> Layout:
    found = _guess(keys)
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f"ambiguous Swin state-dict layout: the keys fit {', '.join(l.name for l in found)} "
                         f"({len(keys)} keys: {_describe_keys(keys)}); pass layout= to choose")
    known = "; ".join(f"{layout.name} ({layout.description})" for layout in _REGISTRY if layout.v2 == is_v2(keys))
    raise ValueError(f"unknown Swin state-dict layout ({len(keys)} keys: {_describe_keys(keys)}); expected one "
                     f"of: {known}")


# -------------------------------------------------------------------------------------------- unwrapping


def _is_bare_state_dict(obj: Mapping) -> bool:
    """A non-empty mapping whose values are all tensors (a state dict never holds a mapping or a number)."""
    return len(obj) > 0 and all(isinstance(value, torch.Tensor) for value in obj.values())


def _find_state_dict(obj: Mapping) -> Optional[Mapping[str, torch.Tensor]]:
    """``obj`` itself if it is a bare state dict, else the first ``"model"`` / ``"state_dict"`` entry holding one."""
    if _is_bare_state_dict(obj):
        return obj
    for wrapper in _WRAPPER_KEYS:
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping):
            found = _find_state_dict(inner)
            if found is not None:
                return found
    return None


def _unwrap(obj, source: str) -> Mapping[str, torch.Tensor]:
    """The state dict inside a checkpoint object: itself, or its ``"model"`` / ``"state_dict"`` entry.

    A wrapper's other entries may be anything, tensors included (``save_checkpoint(extra={"rng_state": ...})``,
    a ``"step"`` tensor): only a mapping whose values are all tensors counts as a bare state dict.
    """
    if not isinstance(obj, Mapping):
        raise TypeError(f"{source} is a {type(obj).__name__}, not a state dict (a mapping from names to "
                        f"tensors, or a dict with a 'model' or 'state_dict' entry)")
    found = _find_state_dict(obj)
    if found is not None:
        return found
    for wrapper in _WRAPPER_KEYS:
        if wrapper in obj:  # holds no state dict: say what it holds instead
            return _unwrap(obj[wrapper], f"{source}[{wrapper!r}]")
    keys = [str(key) for key in obj]
    others = [f"{key} ({type(value).__name__})" for key, value in obj.items() if not isinstance(value, torch.Tensor)]
    if len(others) < len(obj):  # some tensors: a state dict mixed with other entries
        raise ValueError(f"{source} mixes tensors with other values ({_describe_keys(others)}) and has no 'model' "
                         f"or 'state_dict' entry holding the state dict; its top-level keys are: "
                         f"{_describe_keys(keys)}")
    raise ValueError(f"{source} holds no tensors and no 'model' or 'state_dict' entry; its top-level keys "
                     f"are: {_describe_keys(keys) or '(none)'}")


def _strip_wrapper_prefixes(sd: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """Drop ``module.`` / ``_orig_mod.`` / ``model.`` when every key carries it (dicts saved from DDP, compiled
    models or a trainer module holding the network as ``.model``), repeatedly, so nested wrappers go too."""
    stripped = True
    while sd and stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(key.startswith(prefix) for key in sd):
                sd = {key[len(prefix):]: value for key, value in sd.items()}
                stripped = True
    return sd


def _backbone_of_detector(sd: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """A whole detector's or segmentor's dict (mmdet, mmseg: ``backbone.*``, ``neck.*``, ``*_head.*``) -> its
    ``backbone.*`` entries, when those are a Swin backbone; any other dict as it is."""
    inner = {key[len("backbone."):]: value for key, value in sd.items() if key.startswith("backbone.")}
    if inner and len(inner) < len(sd) and _guess(list(inner)):
        return inner
    return sd


def _prepare(obj, source: str) -> Mapping[str, torch.Tensor]:
    return _backbone_of_detector(_strip_wrapper_prefixes(_unwrap(obj, source)))


# ----------------------------------------------------------------------------------------------- conversion


def _add_relative_position_index(sd: StateDict) -> None:
    """Add the standard index beside every bias table that lacks one (square windows: all published configs).

    A table of ``(2w - 1)^2`` rows belongs to a ``w x w`` window; other shapes are left to the model's load
    hook, which keeps the model's own index.
    """
    suffix = "relative_position_bias_table"
    for key in [k for k in sd if k.endswith(suffix)]:
        index_key = key[: -len(suffix)] + "relative_position_index"
        table = sd[key]
        if index_key in sd or not isinstance(table, torch.Tensor) or table.dim() != 2:
            continue
        side = math.isqrt(table.shape[0])
        if side * side == table.shape[0] and side % 2 == 1:
            window = (side + 1) // 2
            sd[index_key] = relative_position_index((window, window)).clone()


def _resolve(sd: Mapping[str, torch.Tensor], layout: str) -> Layout:
    if layout == "auto":
        return _detect(list(sd))
    if layout not in _BY_NAME:
        raise ValueError(f"layout must be 'auto' or one of {', '.join(LAYOUTS)}, got {layout!r}")
    return _BY_NAME[layout]


def convert_state_dict(state_dict: Mapping, layout: str = "auto") -> StateDict:
    """Rename a Swin V1 state dict of any supported source onto the official layout (the package's own).

    Args:
        state_dict: an official (bare or ``{"model": ...}``), official detection backbone, mmdet / mmseg, timm >= 0.9,
            torchvision ``swin_t/s/b`` or HF transformers dict, or one saved by this package; ``{"state_dict": ...}``
            wrappers, ``module.`` / ``_orig_mod.`` / ``model.`` key prefixes and a detector's ``backbone.*`` are
            accepted too.
        layout: ``"auto"`` (detect, see :func:`detect_layout`) or one of :data:`LAYOUTS` to force it.

    Returns:
        A new dict with official keys, sharing the input's tensors where nothing changes. It carries
        ``relative_position_index`` for every (square-window) block; ``attn_mask`` is left to the model.
    """
    if layout != "auto" and layout not in _BY_NAME:
        raise ValueError(f"layout must be 'auto' or one of {', '.join(LAYOUTS)}, got {layout!r}")
    sd = _prepare(state_dict, "state_dict")
    out = _resolve(sd, layout).to_official(sd)
    _add_relative_position_index(out)
    return out


def convert_foreign_keys_in_place(state_dict: Dict[str, torch.Tensor], prefix: str = "") -> None:
    """Load-hook helper (``model.STATE_DICT_CONVERTERS``): rename a foreign dict's ``prefix``-ed keys to official
    ones, in place.

    Leaves the dict alone unless its layout is recognisably one other library's, so partial or unusual dicts
    still reach PyTorch's own missing/unexpected-key report unchanged.
    """
    local = [key for key in state_dict if key.startswith(prefix)]
    found = _guess([key[len(prefix):] for key in local])
    if len(found) != 1 or found[0].name in ("official", "detection"):
        return
    converted = found[0].to_official({key[len(prefix):]: state_dict.pop(key) for key in local})
    state_dict.update((prefix + key, value) for key, value in converted.items())


# ------------------------------------------------------------------------------------------------- loading


def _bare_module(model: nn.Module) -> nn.Module:
    """The module inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _read(path: PathLike):
    """``torch.load`` on CPU with ``weights_only=True`` (``safetensors`` for ``*.safetensors``), turning failures
    into errors that name the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint file not found: {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"checkpoint path is a directory, expected a file: {path!r}")
    if path.lower().endswith(".safetensors"):
        return _read_safetensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if refused:
            raise CheckpointError(
                f"{path!r} holds a Python object ({refused.group(1)}) that torch.load(weights_only=True) refuses "
                f"to unpickle; if you trust the file, load it with torch.load(path, weights_only=False) and pass "
                f"the dict (or its 'model' entry) to load_checkpoint") from error
        # torch wraps the unpickler's reason in paragraphs of advice; keep the reason.
        reason = re.search(r"WeightsUnpickler error:\s*(\S.*)", str(error))
        raise _unreadable(path, reason.group(1) if reason else error) from error
    except Exception as error:  # noqa: BLE001 -- damaged files fail deep inside the unpickler in many ways
        raise _unreadable(path, error) from error


def _read_safetensors(path: str) -> StateDict:
    """A ``.safetensors`` file through the optional ``safetensors`` package (not every torch.load reads them)."""
    try:
        from safetensors.torch import load_file
    except ImportError as error:
        raise ImportError(f"checkpoint {path!r} is a safetensors file; reading it needs the optional 'safetensors' "
                          f"package (pip install safetensors)") from error
    try:
        return load_file(path, device="cpu")
    except Exception as error:  # noqa: BLE001 -- safetensors raises its own error types for damaged files
        raise _unreadable(path, error, kind="safetensors file") from error


def _unreadable(path: str, reason, kind: str = "PyTorch checkpoint") -> CheckpointError:
    if isinstance(reason, BaseException):
        # The first sentence: torch appends paragraphs of general advice to its reasons.
        reason = str(reason).split(". ")[0].splitlines()[0] if str(reason) else type(reason).__name__
    return CheckpointError(f"{path!r} could not be read as a {kind} (truncated or corrupt file?): {reason}")


class _Mismatch(NamedTuple):
    missing: List[str]
    unexpected: List[str]
    misshaped: List[Tuple[str, tuple, object]]  # key, the model's shape, the checkpoint's shape (or type)
    nonstandard_index: List[str]


def _match_absolute_pos_embed(model: nn.Module, sd: StateDict) -> None:
    """The two layouts of the absolute position embedding (``ape``) onto the model's: classification code keeps
    ``[1, H*W, C]``, the detection backbone ``[1, C, H, W]`` (as the detection code's own loader reshapes it).
    Grids of another size are left to the shape check (no resizing)."""
    own = model.state_dict().get("absolute_pos_embed")
    got = sd.get("absolute_pos_embed")
    if own is None or not isinstance(got, torch.Tensor) or got.shape == own.shape or got.numel() != own.numel():
        return
    if own.dim() == 4 and got.dim() == 3:  # [1, L, C] -> [1, C, H, W]
        _, C, H, W = own.shape
        if tuple(got.shape) == (1, H * W, C):
            sd["absolute_pos_embed"] = got.view(1, H, W, C).permute(0, 3, 1, 2).contiguous()
    elif own.dim() == 3 and got.dim() == 4:  # [1, C, H, W] -> [1, L, C]
        sd["absolute_pos_embed"] = got.flatten(2).transpose(1, 2).contiguous()


def _is_derivable(key: str) -> bool:
    """The buffers a model rebuilds from its geometry; a checkpoint need not carry them."""
    return key.rsplit(".", 1)[-1] in ("relative_position_index", "attn_mask", "relative_coords_table")


def _is_ignored_mask(model: nn.Module, key: str) -> bool:
    """A checkpoint's ``attn_mask`` for a block that has none here (not shifted at this resolution, or a
    semantics whose blocks carry no mask buffer)."""
    module_name, _, name = key.rpartition(".")
    if name != "attn_mask":
        return False
    try:
        return isinstance(model.get_submodule(module_name), SwinTransformerBlock)
    except AttributeError:
        return False


def _standard(model: nn.Module, key: str, own: torch.Tensor) -> torch.Tensor:
    """The standard value of a derived buffer (the model's own may be garbage after ``to_empty``)."""
    module_name, _, name = key.rpartition(".")
    derived = getattr(model.get_submodule(module_name), "derived_buffers", None)
    return derived()[name] if derived is not None else own


def _compare(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> _Mismatch:
    """Everything ``model.load_state_dict(sd)`` would object to, found before any tensor is copied."""
    own = model.state_dict()
    mismatch = _Mismatch([], [], [], [])
    for key, expected in own.items():
        if key not in sd:
            if not _is_derivable(key):
                mismatch.missing.append(key)
            continue
        got = sd[key]
        if not isinstance(got, torch.Tensor):
            mismatch.misshaped.append((key, tuple(expected.shape), type(got).__name__))
        elif key.rsplit(".", 1)[-1] == "attn_mask":
            continue  # derivable: the model keeps its own (see SwinTransformerBlock._load_from_state_dict)
        elif key.rsplit(".", 1)[-1] == "relative_position_index":
            # Of another shape: another window (whose table then differs too, and is reported) or a square window
            # guessed from a clamped table's rows (convert_state_dict); the model derives its own.
            if got.shape == expected.shape and not same_index(got, _standard(model, key, expected)):
                mismatch.nonstandard_index.append(key)
        elif got.shape != expected.shape:
            mismatch.misshaped.append((key, tuple(expected.shape), tuple(got.shape)))
    mismatch.unexpected.extend(key for key in sd if key not in own and not _is_ignored_mask(model, key))
    return mismatch


_BLOCK_KEY = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.")


def _architecture(sd: Mapping[str, torch.Tensor]) -> Optional[dict]:
    """embed_dim, depths, num_heads and window_size of an official-layout state dict (None when it lacks the
    patch embedding or the bias tables that tell)."""
    embed = sd.get("patch_embed.proj.weight")
    if not isinstance(embed, torch.Tensor) or embed.dim() != 4:
        return None
    blocks: Dict[int, set] = {}
    for key in sd:
        m = _BLOCK_KEY.match(key)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    stages = range(max(blocks) + 1) if blocks else range(0)
    tables = [sd.get(f"layers.{i}.blocks.0.attn.relative_position_bias_table") for i in stages]
    if not tables or any(not isinstance(t, torch.Tensor) or t.dim() != 2 for t in tables):
        return None
    side = math.isqrt(tables[0].shape[0])
    return dict(embed_dim=embed.shape[0], depths=tuple(len(blocks.get(i, ())) for i in stages),
                num_heads=tuple(t.shape[1] for t in tables), window_size=(side + 1) // 2)


def _describe_architecture(arch: dict) -> str:
    from ..configs import MODEL_CONFIGS

    text = ", ".join(f"{k}={v}" for k, v in arch.items())
    names = [name for name, cfg in MODEL_CONFIGS.items() if all(tuple(cfg[k]) == v if isinstance(v, tuple)
                                                                 else cfg[k] == v for k, v in arch.items())]
    return f"{' / '.join(names)} ({text})" if names else text


def _mismatch_message(source: str, layout: str, model: nn.Module, mismatch: _Mismatch, strict: bool,
                      sd: Optional[Mapping[str, torch.Tensor]] = None) -> str:
    lines = [f"{source} ({layout} layout) does not fit {type(model).__name__}; the model was not modified:"]
    theirs, ours = (_architecture(sd), _architecture(model.state_dict())) if sd is not None else (None, None)
    if theirs and ours and theirs != ours:
        lines.append(f"  the checkpoint is {_describe_architecture(theirs)}; the model is "
                     f"{_describe_architecture(ours)}: build the model with the checkpoint's config")
    if strict and mismatch.missing:
        lines.append(f"  missing keys ({len(mismatch.missing)}): {_describe_keys(mismatch.missing)}")
    if strict and mismatch.unexpected:
        lines.append(f"  unexpected keys ({len(mismatch.unexpected)}): {_describe_keys(mismatch.unexpected)}")
    if mismatch.misshaped:
        lines.append(f"  mis-shaped keys ({len(mismatch.misshaped)}):")
        shown = mismatch.misshaped[:_SHOWN_KEYS]
        lines.extend(f"    {key}: model {want}, checkpoint {got}" for key, want, got in shown)
        if len(mismatch.misshaped) > _SHOWN_KEYS:
            lines.append(f"    ... ({len(mismatch.misshaped) - _SHOWN_KEYS} more)")
        if all(key.startswith("head.") for key, _, _ in mismatch.misshaped):
            lines.append("  (another number of classes? drop the head.* entries and load with strict=False)")
    if mismatch.nonstandard_index:
        lines.append(f"  relative_position_index differs from the standard index the fused kernels compute "
                     f"({len(mismatch.nonstandard_index)}): {_describe_keys(mismatch.nonstandard_index)}")
    return "\n".join(lines)


def check_model(model, function: str) -> None:
    if not isinstance(model, nn.Module):
        swapped = isinstance(model, (str, os.PathLike, Mapping))
        raise TypeError(f"{function}: model must be a torch.nn.Module, got {type(model).__name__}"
                        f"{' (arguments swapped? the model comes first, then the checkpoint)' if swapped else ''}")


def _check_swin_fused_model(model: nn.Module) -> None:
    """load_checkpoint converts every layout onto swin_fused's own keys, so only swin_fused models can take them."""
    bare = _bare_module(model)
    if not isinstance(bare, (SwinTransformer, SwinBackbone, SwinTransformerV2)):
        kind = f"{type(bare).__module__}.{type(bare).__qualname__}"
        raise TypeError(f"load_checkpoint: model must be a swin_fused.SwinTransformer, SwinTransformerV2 or "
                        f"SwinBackbone (bare, or in a "
                        f"DDP / DataParallel / torch.compile wrapper), got {kind}; load_checkpoint renames "
                        f"official, detection, mmdet, timm, torchvision and HF transformers checkpoints onto "
                        f"swin_fused's keys. Load another model's own checkpoint with "
                        f"model.load_state_dict(torch.load(path, weights_only=True)); move such weights into a "
                        f"swin_fused model with swin_fused.convert_state_dict")


def load_checkpoint(
    model: nn.Module,
    checkpoint: Union[PathLike, Mapping],
    strict: bool = True,
    layout: str = "auto",
    assign: bool = False,
) -> LoadResult:
    """Load a checkpoint of any supported source into ``model``, all or nothing.

    Args:
        model: a :class:`swin_fused.SwinTransformer` or :class:`swin_fused.SwinBackbone` (DDP / DataParallel /
            torch.compile wrappers are unwrapped). Other models (a timm, torchvision or HF Swin, optimized or
            not) are refused with a TypeError: load their own checkpoints with ``model.load_state_dict``.
        checkpoint: a file path (read with ``torch.load(weights_only=True, map_location="cpu")``; ``*.safetensors``
            with the optional ``safetensors`` package) or an object already loaded: a state dict (a mapping whose
            values are all tensors), or a dict with a ``"model"`` or ``"state_dict"`` entry holding one beside
            any other entries (epoch, optimizer, RNG state tensors, ...). A detector's whole checkpoint loads
            its ``backbone.*`` entries.
        strict: as ``nn.Module.load_state_dict``: missing or unexpected keys are errors. Shape mismatches are
            errors either way. The derivable buffers (``relative_position_index``, ``attn_mask``) may be absent.
        layout: ``"auto"`` or one of :data:`LAYOUTS` (see :func:`convert_state_dict`).
        assign: as ``nn.Module.load_state_dict``: the model takes the checkpoint's tensors (device, dtype) rather
            than copying them into its own; needed for a model built on the meta device, whose tensors hold no
            storage (or materialise it first with ``model.to_empty(device=...)``).

    Returns:
        A :class:`LoadResult`: ``missing_keys`` and ``unexpected_keys`` (empty when ``strict``) and ``source``,
        the layout detected. With ``strict=False`` a UserWarning also names the parameters left at their
        initialisation and the checkpoint entries ignored, if any. When the model's ``semantics`` is not the
        source's, a UserWarning says so once and names the ``semantics=`` that reproduces the source's outputs
        at every input size.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is not a readable PyTorch checkpoint, or the dict does not fit the model
            (the message lists the missing, unexpected and mis-shaped keys, and which config the checkpoint
            is); the model is left unchanged.
        ValueError: the dict's layout is not recognised, or the object holds no state dict, or the model is on the
            meta device without ``assign=True``.
        TypeError: ``model`` is not a swin_fused model, or ``checkpoint`` (or the file's content) is not a mapping.
        ImportError: a ``.safetensors`` file without the ``safetensors`` package installed.
    """
    check_model(model, "load_checkpoint")
    _check_swin_fused_model(model)
    if layout != "auto" and layout not in _BY_NAME:
        raise ValueError(f"layout must be 'auto' or one of {', '.join(LAYOUTS)}, got {layout!r}")
    if isinstance(checkpoint, (str, os.PathLike)):
        source, obj = f"checkpoint {os.fspath(checkpoint)!r}", _read(checkpoint)
    else:
        source, obj = "checkpoint", checkpoint
    sd = _prepare(obj, source)
    found = _resolve(sd, layout)
    v2_model = isinstance(_bare_module(model), SwinTransformerV2)
    if found.v2 != v2_model:
        want, got = ("SwinTransformerV2", "Swin V2") if found.v2 else ("SwinTransformer or SwinBackbone", "Swin V1")
        raise CheckpointError(f"load_checkpoint: {source} is a {got} checkpoint ({found.name} layout), but the model "
                              f"is a {type(_bare_module(model)).__name__}; load it into a swin_fused.{want}")
    sd = found.to_official(sd)  # no index added where a layout lacks one: the model derives its own
    model = _bare_module(model)
    _match_absolute_pos_embed(model, sd)
    mismatch = _compare(model, sd)
    if mismatch.misshaped or mismatch.nonstandard_index or (strict and (mismatch.missing or mismatch.unexpected)):
        raise CheckpointError(_mismatch_message(source, found.name, model, mismatch, strict, sd))
    meta = [key for key, value in model.state_dict().items() if value.is_meta]
    if meta and not assign:  # copying into a meta tensor is a no-op: the load would "succeed" and load nothing
        raise ValueError(f"load_checkpoint: the model is on the meta device ({len(meta)} tensors, e.g. {meta[0]!r}: "
                         f"built under torch.device('meta')); pass assign=True to take the checkpoint's tensors, or "
                         f"materialise it first with model.to_empty(device=...)")
    still_meta = [key for key in mismatch.missing if key in meta]
    if still_meta:
        raise CheckpointError(f"load_checkpoint({source}, strict=False, assign=True): {len(still_meta)} tensors of the "
                              f"meta-built model are not in the checkpoint and would hold no storage: "
                              f"{_describe_keys(still_meta)}; materialise the model with model.to_empty(device=...) "
                              f"and model.reset_parameters() first, then load without assign")
    incompatible = model.load_state_dict(sd, strict=strict, assign=assign)
    if mismatch.missing or mismatch.unexpected:  # strict=False: say what was not loaded, never silently
        parts = []
        if mismatch.missing:
            parts.append(f"left at their initialisation ({len(mismatch.missing)}): "
                         f"{_describe_keys(mismatch.missing)}")
        if mismatch.unexpected:
            parts.append(f"ignored from the checkpoint ({len(mismatch.unexpected)}): "
                         f"{_describe_keys(mismatch.unexpected)}")
        warnings.warn(f"load_checkpoint({source}, strict=False): " + "; ".join(parts), stacklevel=2)
    semantics = getattr(model, "semantics", None)
    # A backbone initialised from a classification checkpoint (the usual detector recipe) reproduces no
    # model of that library, so only a backbone's own checkpoints say which semantics it should have.
    pretraining = isinstance(model, SwinBackbone) and found.name not in _BACKBONE_LAYOUTS
    if semantics is not None and semantics != found.semantics and not pretraining:
        warnings.warn(f"load_checkpoint: {source} is a {found.name} checkpoint, but the model was built with "
                      f"semantics={semantics!r}: outputs match the {found.name} model only at the size it was "
                      f"built for. Build the model with semantics={found.semantics!r} to reproduce them at every "
                      f"input size.", stacklevel=2)
    result = LoadResult(incompatible.missing_keys, incompatible.unexpected_keys)
    result.source = found.name
    return result


# -------------------------------------------------------------------------------------------------- saving


def save_checkpoint(model: nn.Module, path: PathLike, extra: Optional[Mapping] = None) -> None:
    """Write ``{"model": model.state_dict(), **extra}`` to ``path`` atomically (official file layout).

    The file is written and fsynced under a temporary name in the same directory, then renamed over ``path``
    with ``os.replace``: a crash at any point leaves either the old checkpoint or the new one, never a torn
    file. ``extra`` (epoch, optimizer state, RNG state tensors, ...) must not use the key ``"model"``;
    :func:`load_checkpoint` reads such a file back. Raises OSError naming ``path`` when it cannot be written
    (read-only or missing directory, ``path`` is a directory); the old file, if any, is left as it was.
    """
    check_model(model, "save_checkpoint")
    if extra is not None and "model" in extra:
        raise ValueError("extra must not contain the key 'model' (it holds the model's state dict)")
    payload = {"model": _bare_module(model).state_dict(), **(extra or {})}
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"directory of checkpoint path {path!r} does not exist: {directory!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"checkpoint path is a directory, expected a file name: {path!r}")
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        # os.open with 0o666 lets the umask decide the mode, as for any newly created file.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:  # name the checkpoint, not the hidden temporary file
        raise _os_error(error, f"cannot write checkpoint {path!r}: creating a file in {directory!r} failed "
                               f"({error.strerror or error})") from error
    try:
        with os.fdopen(descriptor, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _os_error(error: OSError, message: str) -> OSError:
    """An OSError of the same kind (PermissionError, ...) and errno as ``error``, with ``message``."""
    if error.errno is None:
        return OSError(message)
    return OSError(error.errno, message)  # OSError(errno, ...) picks the subclass for the errno


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
