"""Size semantics: how each source library decides a block's window and shift on the map it actually gets.

The libraries agree on what a Swin block computes at the size it was built for and disagree everywhere else
(``../shared/swin-spec.md``, "Sizes other than the built one"): in which order they pad and roll, whether a
map no larger than the window clamps the window, zeroes the shift on one axis or on both, and whether that is
decided once, at construction, or on every call. A model that reproduces one of them must follow that one's
rule, so the package's model takes ``semantics=`` and every block asks its :class:`SizeRule` twice: once at
construction (:meth:`SizeRule.built`: which window its bias table is built for, what it decides there) and
once per forward (:meth:`SizeRule.at`: host arithmetic on ints, nothing on the device).

=================  ============  =========================================================  ==================
``semantics``      order         a map no larger than the window                            decided
=================  ============  =========================================================  ==================
``official``       pad, shift    min(H, W) <= window: window = min(H, W), shift 0, both     construction (and
                                 axes (the official code asserts divisible sizes; padding   again per call for
                                 extends it)                                                smaller maps)
``detection``      pad, shift    nothing: odd blocks always shift by window // 2, the       --
                                 window is never clamped (the official detection and
                                 segmentation backbones, mmdet, mmseg; HF's SwinBackbone,
                                 whose ``always_partition=True`` skips its clamp)
``torchvision``    pad, shift    per axis: window >= padded size -> shift 0 on that axis;  per forward
                                 never clamped
``timm``           shift, pad    per axis: resolution <= window -> window = resolution,     construction
                                 shift 0 on that axis (wrapped tokens attend across the     (``input_resolution``)
                                 padding, timm issue 2438)
``transformers``   pad, shift    min(H, W) <= window: window = min(H, W), shift 0, both     per forward
                                 axes
``transformers-    pad, shift    as timm's, on the first axis for both (HF's windows are    construction
v2``                             square); the shift mask is added twice (-200)              (``input_resolution``)
=================  ============  =========================================================  ==================

``transformers`` is the rule HF transformers' Swin V1 means, applied to the configured window on every call.
HF itself writes the clamped values back to the layer (``SwinLayer.set_shift_and_window_size``), so after one
small input a layer keeps the clamped window and zero shift for every later input, and a clamped window
smaller than the configured one makes its bias lookup fail; neither is reproduced. ``mmdet`` and ``mmseg`` are
accepted as names of ``detection``.

Patch embedding differs too: the official code (which asserts the size), the detection backbone and HF pad
the image to a multiple of the patch; torchvision convolves it as it is, dropping the remainder, and so does
the package under ``timm`` (timm itself asserts a size divisible by the patch) (:attr:`SizeRule.pads_patches`).

What a state dict cannot say is not reproduced either: a model built with timm's ``always_partition=True``
(windows never clamped, but shift then pad) matches no rule here; load it into ``semantics="timm"`` only for
inputs where no stage is smaller than the window, or optimize() the timm model itself, which is exact. HF configs
with another ``hidden_act`` or ``layer_norm_eps`` than Swin's (GELU, 1e-5) need the model built to match.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Dict, Tuple

Pair = Tuple[int, int]

__all__ = ["SizeRule", "SEMANTICS", "size_rule", "Built"]


@dataclass(frozen=True)
class Built:
    """What a block decided at construction: the window its bias table is built for, and the window and
    shift it uses at its built resolution."""

    table_window: Pair
    window: Pair
    shift: Pair


def _clamp_both(resolution: Pair, window: Pair, shift: Pair) -> Tuple[Pair, Pair]:
    """The official / HF rule: a map no larger than the window on its shorter side is one window, unshifted."""
    side = min(resolution)
    if side <= min(window):
        return (side, side), (0, 0)
    return window, shift


def _clamp_per_axis(resolution: Pair, window: Pair, shift: Pair) -> Tuple[Pair, Pair]:
    """timm's ``_calc_window_shift``: per axis, a resolution no larger than the window becomes the window."""
    w = tuple(r if r <= t else t for r, t in zip(resolution, window))
    s = tuple(0 if r <= t else v for r, t, v in zip(resolution, w, shift))
    return w, s


def _clamp_square(resolution: Pair, window: Pair, shift: Pair) -> Tuple[Pair, Pair]:
    """HF Swin V2's ``_compute_window_shift``: timm's per-axis rule, of which the layer keeps the first axis
    (``window_size[0]``, ``shift_size[0]``) for both."""
    w, s = _clamp_per_axis(resolution, window, shift)
    return (w[0], w[0]), (s[0], s[0])


def _unshift_covered_axes(resolution: Pair, window: Pair, shift: Pair) -> Tuple[Pair, Pair]:
    """torchvision: along an axis whose padded size is a single window there is nothing to shift."""
    padded = tuple(-(-r // t) * t for r, t in zip(resolution, window))
    return window, tuple(0 if t >= p else s for t, p, s in zip(window, padded, shift))


@dataclass(frozen=True)
class SizeRule:
    """One library's size semantics (see the module docstring).

    Attributes:
        name: the ``semantics=`` value.
        shift_before_pad: timm rolls the unpadded map, then pads; everyone else pads, then rolls.
        pads_patches: the patch embedding zero-pads the image to a multiple of the patch (else it drops the
            remainder, as a plain strided convolution does).
        clamps_at_construction: the block's table is built for (and its decision fixed at) the window clamped
            at its built resolution.
        keeps_mask_buffer: blocks carry the official ``attn_mask`` buffer (official checkpoints hold it).
        mask_value: what separates the shift regions (HF Swin V2 adds its -100 mask twice).
    """

    name: str
    shift_before_pad: bool
    pads_patches: bool
    clamps_at_construction: bool
    keeps_mask_buffer: bool
    mask_value: float = -100.0

    def built(self, resolution: Pair, window: Pair, shift: Pair) -> Built:
        """The construction-time decision for a block of ``window`` / ``shift`` built for ``resolution``."""
        if self.name == "official":
            w, s = _clamp_both(resolution, window, shift)
        elif self.name == "timm":
            w, s = _clamp_per_axis(resolution, window, shift)
        elif self.name == "transformers-v2":
            w, s = _clamp_square(resolution, window, shift)
        else:
            w, s = window, shift
        return Built(table_window=w if self.clamps_at_construction else window, window=w, shift=s)

    def at(self, H: int, W: int, configured: Tuple[Pair, Pair], built: Built) -> Tuple[Pair, Pair]:
        """``(window, shift)`` a block uses on an ``H x W`` map (``configured``: the constructor's values)."""
        if self.name == "official":  # fixed at construction; a smaller map than built is one window
            return _clamp_both((H, W), built.window, built.shift)
        if self.name in ("timm", "transformers-v2"):
            return built.window, built.shift
        if self.name == "torchvision":
            return _unshift_covered_axes((H, W), *configured)
        if self.name == "transformers":
            return _clamp_both((H, W), *configured)
        return configured  # detection


SEMANTICS: Dict[str, SizeRule] = {
    "official": SizeRule("official", False, True, True, True),
    "detection": SizeRule("detection", False, True, False, False),
    "torchvision": SizeRule("torchvision", False, False, False, False),
    "timm": SizeRule("timm", True, False, True, False),
    "transformers": SizeRule("transformers", False, True, False, False),
    "transformers-v2": SizeRule("transformers-v2", False, True, True, False, mask_value=-200.0),
}
_ALIASES = {"mmdet": "detection", "mmseg": "detection", "hf": "transformers", "huggingface": "transformers",
            "tv": "torchvision"}


def size_rule(semantics) -> SizeRule:
    """The :class:`SizeRule` of a ``semantics=`` value (a name, an alias, or a rule); a clear error otherwise."""
    if isinstance(semantics, SizeRule):
        return semantics
    if isinstance(semantics, str):
        key = semantics.strip().lower()
        key = _ALIASES.get(key, key)
        if key in SEMANTICS:
            return SEMANTICS[key]
    close = difflib.get_close_matches(str(semantics).lower(), [*SEMANTICS, *_ALIASES], n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"semantics must be one of {', '.join(repr(s) for s in SEMANTICS)} (or 'mmdet', 'mmseg'), "
                     f"got {semantics!r}{hint}")
