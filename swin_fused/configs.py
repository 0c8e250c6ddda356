"""Named constructors for the configurations of the paper's results table (ImageNet-1K, 1000 classes).

``swin_tiny_patch4_window7_224()`` etc. build a :class:`swin_fused.SwinTransformer`; keyword arguments
override the config (``num_classes=0`` for a backbone, ``drop_path_rate=...``). ``MODEL_CONFIGS`` and
``PAPER_TABLE`` hold the numbers the ``table`` command reproduces.
"""
from __future__ import annotations

import difflib
from typing import Callable, Dict, NamedTuple, Optional

from .model import SwinTransformer

__all__ = ["MODEL_CONFIGS", "MODEL_ALIASES", "PAPER_TABLE", "PaperRow", "create_model", "list_models",
           "resolve_model_name"]


class PaperRow(NamedTuple):
    """Published numbers: parameters (official count, 1000 classes), GFLOPs, V100 images/s, top-1."""

    params: int
    gflops: float
    v100_img_s: Optional[float]
    top1: str


MODEL_CONFIGS: Dict[str, dict] = {
    "swin_tiny_patch4_window7_224": dict(img_size=224, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24),
                                         window_size=7, drop_path_rate=0.2),
    "swin_small_patch4_window7_224": dict(img_size=224, embed_dim=96, depths=(2, 2, 18, 2),
                                          num_heads=(3, 6, 12, 24), window_size=7, drop_path_rate=0.3),
    "swin_base_patch4_window7_224": dict(img_size=224, embed_dim=128, depths=(2, 2, 18, 2),
                                         num_heads=(4, 8, 16, 32), window_size=7, drop_path_rate=0.5),
    "swin_base_patch4_window12_384": dict(img_size=384, embed_dim=128, depths=(2, 2, 18, 2),
                                          num_heads=(4, 8, 16, 32), window_size=12, drop_path_rate=0.5),
    "swin_large_patch4_window7_224": dict(img_size=224, embed_dim=192, depths=(2, 2, 18, 2),
                                          num_heads=(6, 12, 24, 48), window_size=7, drop_path_rate=0.2),
    "swin_large_patch4_window12_384": dict(img_size=384, embed_dim=192, depths=(2, 2, 18, 2),
                                           num_heads=(6, 12, 24, 48), window_size=12, drop_path_rate=0.2),
}

PAPER_TABLE: Dict[str, PaperRow] = {
    "swin_tiny_patch4_window7_224": PaperRow(28_288_354, 4.5, 755.2, "81.3"),
    "swin_small_patch4_window7_224": PaperRow(49_606_258, 8.7, 436.9, "83.0"),
    "swin_base_patch4_window7_224": PaperRow(87_768_224, 15.4, 278.1, "83.5"),
    "swin_base_patch4_window12_384": PaperRow(87_903_584, 47.0, 84.7, "84.5"),
    "swin_large_patch4_window7_224": PaperRow(196_532_476, 34.5, None, "86.3 (22K)"),
    "swin_large_patch4_window12_384": PaperRow(196_735_516, 103.9, 42.1, "87.3 (22K)"),
}


#: Short names in common use (torchvision's ``swin_t``, the paper's "Swin-T", ...) -> the config's name. Matched
#: after lower-casing and reading ``-`` as ``_``, so ``Swin-T`` and ``swin-b-384`` work too.
MODEL_ALIASES: Dict[str, str] = {
    **{alias: "swin_tiny_patch4_window7_224" for alias in ("swin_t", "swin_tiny", "swin_tiny_224")},
    **{alias: "swin_small_patch4_window7_224" for alias in ("swin_s", "swin_small", "swin_small_224")},
    **{alias: "swin_base_patch4_window7_224" for alias in ("swin_b", "swin_base", "swin_base_224", "swin_b_224")},
    **{alias: "swin_base_patch4_window12_384" for alias in ("swin_b_384", "swin_base_384")},
    **{alias: "swin_large_patch4_window7_224" for alias in ("swin_l", "swin_large", "swin_large_224", "swin_l_224")},
    **{alias: "swin_large_patch4_window12_384" for alias in ("swin_l_384", "swin_large_384")},
}


def resolve_model_name(name: str) -> str:
    """A config name, or an alias of one (:data:`MODEL_ALIASES`), -> the config's name in :data:`MODEL_CONFIGS`.

    Raises ValueError naming the closest names for anything else."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    if name in MODEL_CONFIGS:
        return name
    key = name.strip().lower().replace("-", "_")
    if key in MODEL_CONFIGS:
        return key
    if key in MODEL_ALIASES:
        return MODEL_ALIASES[key]
    close = difflib.get_close_matches(key, [*MODEL_CONFIGS, *MODEL_ALIASES], n=3, cutoff=0.5)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    raise ValueError(f"unknown model {name!r}{hint}; expected one of {', '.join(MODEL_CONFIGS)} or a short name "
                     f"such as {', '.join(sorted(set(MODEL_ALIASES) - set(MODEL_CONFIGS))[:6])}")


def create_model(name: str, **overrides) -> SwinTransformer:
    """Build a named config (or an alias such as ``"swin_t"``); ``overrides`` replace any constructor keyword."""
    return SwinTransformer(**{**MODEL_CONFIGS[resolve_model_name(name)], **overrides})


def list_models():
    """Names of the paper's configurations."""
    return list(MODEL_CONFIGS)


def _constructor(name: str) -> Callable[..., SwinTransformer]:
    def build(**overrides) -> SwinTransformer:
        return create_model(name, **overrides)

    cfg = MODEL_CONFIGS[name]
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"Swin {name.split('_')[1]} (embed_dim={cfg['embed_dim']}, depths={cfg['depths']}, "
                     f"heads={cfg['num_heads']}, window {cfg['window_size']}, {cfg['img_size']}px). "
                     f"Keyword arguments override the config.")
    return build


swin_tiny_patch4_window7_224 = _constructor("swin_tiny_patch4_window7_224")
swin_small_patch4_window7_224 = _constructor("swin_small_patch4_window7_224")
swin_base_patch4_window7_224 = _constructor("swin_base_patch4_window7_224")
swin_base_patch4_window12_384 = _constructor("swin_base_patch4_window12_384")
swin_large_patch4_window7_224 = _constructor("swin_large_patch4_window7_224")
swin_large_patch4_window12_384 = _constructor("swin_large_patch4_window12_384")
__all__ += list(MODEL_CONFIGS)
