"""Checkpoints: read official, timm and torchvision Swin (V1) state dicts; save the package's own, atomically.

The package's modules use the official Microsoft state-dict layout, so official checkpoints load as they are.
This file renames the two other layouts in circulation onto it; no tensor is changed except the torchvision
relative position index, which is reshaped from ``[N*N]`` to ``[N, N]``:

- **timm >= 0.9**: the merging layer that ends official stage ``i - 1`` sits at the start of stage ``i``
  (``layers.{i}.downsample``), the classifier is ``head.fc``, and the derivable buffers are not saved. timm's
  merging concatenates the 2x2 neighbourhood as ``reshape(B, H/2, 2, W/2, 2, C).permute(0, 1, 3, 4, 2, 5)``:
  channel block ``2 * col_parity + row_parity``, i.e. ``[x(0,0), x(1,0), x(0,1), x(1,1)]``, the official
  ``[x0, x1, x2, x3]`` order, so its norm and reduction weights load unpermuted (the tests check this).
- **torchvision** (``swin_t/s/b``): ``features.0.0`` conv and ``features.0.2`` norm, stage ``s`` blocks at
  ``features.{2s+1}.{j}`` with the MLP as ``mlp.0`` / ``mlp.3``, merging at ``features.{2s+2}`` (same
  concatenation order as official), the relative position index flattened.

Public: :func:`detect_layout`, :func:`convert_state_dict`, :func:`load_checkpoint` (into a swin_fused
SwinTransformer: read (``*.safetensors`` through the optional ``safetensors`` package), unwrap, convert, check every
key and shape, then load: all or nothing) and :func:`save_checkpoint` (``{"model": state_dict}``
through a temporary file and ``os.replace``). The buffers ``relative_position_index`` and ``attn_mask`` are
derivable; the modules' load hooks (swin_fused/model.py) fill them in when a dict lacks them.
"""
from __future__ import annotations

import math
import os
import pickle
import re
import uuid
import warnings
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn as nn

from .geometry import relative_position_index
from .model import SwinTransformer, SwinTransformerBlock

__all__ = [
    "LAYOUTS",
    "CheckpointError",
    "detect_layout",
    "convert_state_dict",
    "load_checkpoint",
    "save_checkpoint",
]

#: Layouts :func:`convert_state_dict` reads. "official" is also the package's own layout.
LAYOUTS = ("official", "timm", "torchvision")

StateDict = Dict[str, torch.Tensor]
PathLike = Union[str, "os.PathLike[str]"]

_SHOWN_KEYS = 10  # keys listed per category in error messages
_WRAPPER_KEYS = ("model", "state_dict")  # official training/release files; timm and Lightning training files
# DistributedDataParallel / DataParallel; torch.compile; a training wrapper holding the network as `.model`
# (PyTorch Lightning modules, many trainers). Each is stripped only when every key carries it.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
_SWIN_V2_MARKERS = ("logit_scale", "cpb_mlp")

_LAYER = re.compile(r"^layers\.(\d+)\.")
_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")
_TV_FEATURE = re.compile(r"^features\.(\d+)\.(.+)$")
_TV_BLOCK = re.compile(r"^(\d+)\.(.+)$")
_TV_MLP = {"mlp.0.": "mlp.fc1.", "mlp.3.": "mlp.fc2."}
_TV_EMBED = {"0.": "patch_embed.proj.", "2.": "patch_embed.norm."}


class CheckpointError(RuntimeError):
    """A checkpoint could not be read, or does not fit the model (the model is left unchanged)."""


# ---------------------------------------------------------------------------------------------- layouts


def _guess_layout(keys: Iterable[str]) -> Optional[str]:
    """One of :data:`LAYOUTS`, ``"swin_v2"``, or None when the keys fit no layout (or contradict each other)."""
    keys = list(keys)
    if any(marker in key for key in keys for marker in _SWIN_V2_MARKERS):
        return "swin_v2"
    if any(_TV_FEATURE.match(key) for key in keys):
        return "torchvision"
    stages = {int(m.group(1)) for m in map(_LAYER.match, keys) if m}
    if not stages and not any(key.startswith("patch_embed.") for key in keys):
        return None
    merging = {int(m.group(1)) for m in map(_DOWNSAMPLE.match, keys) if m}
    # Official merging ends stages 0..n-2; timm's starts stages 1..n-1. With no merging at all (one stage)
    # the two differ only in the head's name.
    official = 0 in merging or "head.weight" in keys
    last = max(stages, default=0)
    timm = (last > 0 and last in merging) or any(key.startswith("head.fc.") for key in keys)
    if official and timm:
        return None
    if timm:
        return "timm"
    if merging and not official:
        return None  # merging only in middle stages: a partial dict whose placement cannot be told
    return "official"


def _describe_keys(keys: List[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f", ... ({len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else "")


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Which layout a Swin state dict uses: ``"official"`` (also the package's), ``"timm"`` or ``"torchvision"``.

    Accepts an official release/training file's dict (``{"model": ...}``) or a ``{"state_dict": ...}``
    wrapper as well. Raises ValueError for Swin V2 dicts and for keys that fit no layout, listing some.
    """
    keys = list(_strip_wrapper_prefixes(_unwrap(state_dict, "state_dict")))
    layout = _guess_layout(keys)
    if layout == "swin_v2":
        raise ValueError("this is a Swin V2 state dict (it has logit_scale / cpb_mlp entries); swin_fused "
                         "implements Swin V1 only")
    if layout is None:
        raise ValueError(f"unknown Swin state-dict layout ({len(keys)} keys: {_describe_keys(keys)}); expected "
                         f"the official (patch_embed.*, layers.{{i}}.blocks.{{j}}.*, layers.{{i}}.downsample.* "
                         f"ending stage i, head.*), timm (downsample starting stage i, head.fc.*) or torchvision "
                         f"(features.*) layout")
    return layout


# ----------------------------------------------------------------------------------------------- conversion


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


def _from_official(sd: Mapping[str, torch.Tensor]) -> StateDict:
    return dict(sd)


def _from_timm(sd: Mapping[str, torch.Tensor]) -> StateDict:
    out: StateDict = {}
    for key, value in sd.items():
        merging = _DOWNSAMPLE.match(key)
        if merging and int(merging.group(1)) > 0:
            key = f"layers.{int(merging.group(1)) - 1}.downsample.{merging.group(2)}"  # ends the stage before
        elif key.startswith("head.fc."):
            key = "head." + key[len("head.fc."):]
        out[key] = value
    return out


def _from_torchvision(sd: Mapping[str, torch.Tensor]) -> StateDict:
    out: StateDict = {}
    for key, value in sd.items():
        feature = _TV_FEATURE.match(key)
        if feature is None:  # norm.*, head.*: already official
            out[key] = value
            continue
        index, rest = int(feature.group(1)), feature.group(2)
        if index == 0:  # Sequential(conv, permute, norm)
            key = next((new + rest[len(old):] for old, new in _TV_EMBED.items() if rest.startswith(old)), key)
        elif index % 2 == 1:  # stage (index - 1) / 2: a Sequential of blocks
            block = _TV_BLOCK.match(rest)
            if block is not None:
                name = block.group(2)
                name = next((new + name[len(old):] for old, new in _TV_MLP.items() if name.startswith(old)), name)
                key = f"layers.{(index - 1) // 2}.blocks.{block.group(1)}.{name}"
                if name == "attn.relative_position_index" and value.dim() == 1:
                    side = math.isqrt(value.numel())
                    value = value.view(side, side) if side * side == value.numel() else value
        else:  # merging after stage index / 2 - 1
            key = f"layers.{index // 2 - 1}.downsample.{rest}"
        out[key] = value
    return out


_CONVERTERS = {"official": _from_official, "timm": _from_timm, "torchvision": _from_torchvision}


def convert_state_dict(state_dict: Mapping, layout: str = "auto") -> StateDict:
    """Rename a Swin V1 state dict onto the official layout (the package's own).

    Args:
        state_dict: official (bare or ``{"model": ...}``), timm >= 0.9 or torchvision ``swin_t/s/b`` dict, or one
            saved by this package; ``{"state_dict": ...}`` wrappers and ``module.`` / ``_orig_mod.`` key prefixes
            (DDP, torch.compile) are accepted too.
        layout: ``"auto"`` (detect, see :func:`detect_layout`) or one of :data:`LAYOUTS` to force it.

    Returns:
        A new dict with official keys, sharing the input's tensors. It carries ``relative_position_index`` for
        every (square-window) block; ``attn_mask`` is left to the model, which derives it.
    """
    if layout != "auto" and layout not in LAYOUTS:
        raise ValueError(f"layout must be 'auto' or one of {', '.join(LAYOUTS)}, got {layout!r}")
    sd = _strip_wrapper_prefixes(_unwrap(state_dict, "state_dict"))
    if layout == "auto":
        layout = detect_layout(sd)
    out = _CONVERTERS[layout](sd)
    _add_relative_position_index(out)
    return out


def convert_foreign_keys_in_place(state_dict: Dict[str, torch.Tensor], prefix: str = "") -> None:
    """Load-hook helper: rename a timm / torchvision dict's ``prefix``-ed keys to official ones, in place.

    Leaves the dict alone unless its layout is recognisably timm or torchvision, so partial or unusual dicts
    still reach PyTorch's own missing/unexpected-key report unchanged.
    """
    local = [key for key in state_dict if key.startswith(prefix)]
    layout = _guess_layout(key[len(prefix):] for key in local)
    if layout not in ("timm", "torchvision"):
        return
    converted = _CONVERTERS[layout]({key[len(prefix):]: state_dict.pop(key) for key in local})
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


def same_index(incoming: torch.Tensor, own: torch.Tensor) -> bool:
    """Whether a checkpoint's relative position index equals the model's (the standard one), any device/dtype.

    Meta tensors (models built without storage) carry no values to compare and count as equal.
    """
    if incoming.shape != own.shape:
        return False
    if incoming.is_meta or own.is_meta:
        return True
    return torch.equal(incoming.to(own.device), own.to(incoming.dtype))


def _is_derivable(key: str) -> bool:
    """The buffers a model rebuilds from its geometry; a checkpoint need not carry them."""
    return key.rsplit(".", 1)[-1] in ("relative_position_index", "attn_mask")


def _is_ignored_mask(model: nn.Module, key: str) -> bool:
    """A checkpoint's ``attn_mask`` for a block that has none here (not shifted at this resolution)."""
    module_name, _, name = key.rpartition(".")
    if name != "attn_mask":
        return False
    try:
        return isinstance(model.get_submodule(module_name), SwinTransformerBlock)
    except AttributeError:
        return False


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
        elif got.shape != expected.shape:
            mismatch.misshaped.append((key, tuple(expected.shape), tuple(got.shape)))
        elif key.rsplit(".", 1)[-1] == "relative_position_index" and not same_index(got, expected):
            mismatch.nonstandard_index.append(key)
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
    from .configs import MODEL_CONFIGS

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


def _check_model(model, function: str) -> None:
    if not isinstance(model, nn.Module):
        swapped = isinstance(model, (str, os.PathLike, Mapping))
        raise TypeError(f"{function}: model must be a torch.nn.Module, got {type(model).__name__}"
                        f"{' (arguments swapped? the model comes first, then the checkpoint)' if swapped else ''}")


def _check_swin_fused_model(model: nn.Module) -> None:
    """load_checkpoint converts every layout onto swin_fused's own keys, so only swin_fused models can take them."""
    bare = _bare_module(model)
    if not isinstance(bare, SwinTransformer):
        kind = f"{type(bare).__module__}.{type(bare).__qualname__}"
        raise TypeError(f"load_checkpoint: model must be a swin_fused.SwinTransformer (bare, or in a DDP / "
                        f"DataParallel / torch.compile wrapper), got {kind}; load_checkpoint renames official, timm "
                        f"and torchvision checkpoints onto swin_fused's keys. Load another model's own checkpoint "
                        f"with model.load_state_dict(torch.load(path, weights_only=True)); move such weights into a "
                        f"swin_fused model with swin_fused.convert_state_dict")


def load_checkpoint(
    model: nn.Module,
    checkpoint: Union[PathLike, Mapping],
    strict: bool = True,
    layout: str = "auto",
):
    """Load an official, timm, torchvision or swin_fused checkpoint into ``model``, all or nothing.

    Args:
        model: a :class:`swin_fused.SwinTransformer` (DDP / DataParallel / torch.compile wrappers are unwrapped).
            Other models (a timm or torchvision Swin, optimized or not) are refused with a TypeError: load their
            own checkpoints with ``model.load_state_dict``.
        checkpoint: a file path (read with ``torch.load(weights_only=True, map_location="cpu")``; ``*.safetensors``
            with the optional ``safetensors`` package) or an object already loaded: a state dict (a mapping whose
            values are all tensors), or a dict with a ``"model"`` or ``"state_dict"`` entry holding one beside
            any other entries (epoch, optimizer, RNG state tensors, ...).
        strict: as ``nn.Module.load_state_dict``: missing or unexpected keys are errors. Shape mismatches are
            errors either way. The derivable buffers (``relative_position_index``, ``attn_mask``) may be absent.
        layout: ``"auto"`` or one of :data:`LAYOUTS` (see :func:`convert_state_dict`).

    Returns:
        ``torch.nn.modules.module._IncompatibleKeys`` (missing and unexpected keys; empty when ``strict``).
        With ``strict=False``, a UserWarning also names the parameters left at their initialisation and the
        checkpoint entries ignored, if any.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is not a readable PyTorch checkpoint, or the dict does not fit the model
            (the message lists the missing, unexpected and mis-shaped keys); the model is left unchanged.
        ValueError: the dict's layout is not recognised, or the object holds no state dict.
        TypeError: ``model`` is not a swin_fused SwinTransformer, or ``checkpoint`` (or the file's content) is not
            a mapping.
        ImportError: a ``.safetensors`` file without the ``safetensors`` package installed.
    """
    _check_model(model, "load_checkpoint")
    _check_swin_fused_model(model)
    if layout != "auto" and layout not in LAYOUTS:
        raise ValueError(f"layout must be 'auto' or one of {', '.join(LAYOUTS)}, got {layout!r}")
    if isinstance(checkpoint, (str, os.PathLike)):
        source, obj = f"checkpoint {os.fspath(checkpoint)!r}", _read(checkpoint)
    else:
        source, obj = "checkpoint", checkpoint
    sd = _strip_wrapper_prefixes(_unwrap(obj, source))
    layout = detect_layout(sd) if layout == "auto" else layout
    sd = convert_state_dict(sd, layout)
    model = _bare_module(model)
    mismatch = _compare(model, sd)
    if mismatch.misshaped or mismatch.nonstandard_index or (strict and (mismatch.missing or mismatch.unexpected)):
        raise CheckpointError(_mismatch_message(source, layout, model, mismatch, strict, sd))
    result = model.load_state_dict(sd, strict=strict)
    if mismatch.missing or mismatch.unexpected:  # strict=False: say what was not loaded, never silently
        parts = []
        if mismatch.missing:
            parts.append(f"left at their initialisation ({len(mismatch.missing)}): "
                         f"{_describe_keys(mismatch.missing)}")
        if mismatch.unexpected:
            parts.append(f"ignored from the checkpoint ({len(mismatch.unexpected)}): "
                         f"{_describe_keys(mismatch.unexpected)}")
        warnings.warn(f"load_checkpoint({source}, strict=False): " + "; ".join(parts), stacklevel=2)
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
    _check_model(model, "save_checkpoint")
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
