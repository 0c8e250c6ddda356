"""Named constructors for the configurations of the paper's results table (ImageNet-1K, 1000 classes).

``swin_tiny_patch4_window7_224()`` etc. build a :class:`swin_fused.SwinTransformer`; keyword arguments
override the config (``num_classes=0`` for a backbone, ``drop_path_rate=...``). ``MODEL_CONFIGS`` and
``PAPER_TABLE`` hold the numbers the ``table`` command reproduces. :func:`create_model` also builds the official
Swin V2 configs (``swinv2_tiny_patch4_window8_256`` ..., :data:`swin_fused.model_v2.V2_CONFIGS`).
"""
from __future__ import annotations

import difflib
from typing import Callable, Dict, NamedTuple, Optional

from .model import SwinTransformer
from .model_v2 import V2_CONFIGS, SwinTransformerV2

__all__ = ["MODEL_CONFIGS", "MODEL_ALIASES", "PAPER_TABLE", "PaperRow", "create_model", "list_models",
           "model_config", "resolve_model_name"]


class PaperRow(NamedTuple):
    """Published numbers: parameters (official count, 1000 classes; None where only a rounded count was
    published), GFLOPs, V100 images/s, top-1."""

    params: Optional[int]
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
    # Swin V2 (arXiv 2111.09883; the official repository's ImageNet-1K table: 28M / 50M / 88M / 197M parameters).
    "swinv2_tiny_patch4_window8_256": PaperRow(None, 5.9, None, "81.8"),
    "swinv2_tiny_patch4_window16_256": PaperRow(None, 6.6, None, "82.8"),
    "swinv2_small_patch4_window8_256": PaperRow(None, 11.5, None, "83.7"),
    "swinv2_small_patch4_window16_256": PaperRow(None, 12.6, None, "84.1"),
    "swinv2_base_patch4_window8_256": PaperRow(None, 20.3, None, "84.2"),
    "swinv2_base_patch4_window16_256": PaperRow(None, 21.8, None, "84.6"),
    "swinv2_base_patch4_window12to16_192to256": PaperRow(None, 21.8, None, "86.2 (22K)"),
    "swinv2_base_patch4_window12to24_192to384": PaperRow(None, 54.7, None, "87.1 (22K)"),
    "swinv2_large_patch4_window12to16_192to256": PaperRow(None, 47.5, None, "86.9 (22K)"),
    "swinv2_large_patch4_window12to24_192to384": PaperRow(None, 115.4, None, "87.6 (22K)"),
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
    # Swin V2: timm's names (``swinv2_tiny_window8_256``: the official name less ``patch4_``) and torchvision's.
    **{name.replace("patch4_", ""): name for name in V2_CONFIGS},
    "swin_v2_t": "swinv2_tiny_patch4_window8_256",
    "swin_v2_s": "swinv2_small_patch4_window8_256",
    "swin_v2_b": "swinv2_base_patch4_window8_256",
}


def resolve_model_name(name: str) -> str:
    """A config name, or an alias of one (:data:`MODEL_ALIASES`), -> the config's name in :data:`MODEL_CONFIGS`
    or :data:`swin_fused.model_v2.V2_CONFIGS`.

    Raises ValueError naming the closest names for anything else."""
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    if name in MODEL_CONFIGS or name in V2_CONFIGS:
        return name
    key = name.strip().lower().replace("-", "_")
    if key in MODEL_CONFIGS or key in V2_CONFIGS:
        return key
    if key in MODEL_ALIASES:
        return MODEL_ALIASES[key]
    close = difflib.get_close_matches(key, [*MODEL_CONFIGS, *V2_CONFIGS, *MODEL_ALIASES], n=3, cutoff=0.5)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    raise ValueError(f"unknown model {name!r}{hint}; expected one of {', '.join(MODEL_CONFIGS)}, a Swin V2 config "
                     f"({', '.join(V2_CONFIGS)}) or a short name such as "
                     f"{', '.join(sorted(set(MODEL_ALIASES) - set(MODEL_CONFIGS))[:6])}")


def create_model(name: str, **overrides):
    """Build a named config (or an alias such as ``"swin_t"``): a :class:`SwinTransformer`, or for the V2 names a
    :class:`SwinTransformerV2`; ``overrides`` replace any constructor keyword."""
    name = resolve_model_name(name)
    if name in V2_CONFIGS:
        return SwinTransformerV2(**{**V2_CONFIGS[name], **overrides})
    return SwinTransformer(**{**MODEL_CONFIGS[name], **overrides})


def is_v2(name: str) -> bool:
    """Whether a named config (or alias) is a Swin V2 one."""
    return resolve_model_name(name) in V2_CONFIGS


def model_config(name: str) -> dict:
    """The constructor keywords of a named config (V1 or V2)."""
    name = resolve_model_name(name)
    return dict(V2_CONFIGS[name] if name in V2_CONFIGS else MODEL_CONFIGS[name])


def list_models():
    """Names of the paper's configurations, then the official Swin V2 ones."""
    return [*MODEL_CONFIGS, *V2_CONFIGS]


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
