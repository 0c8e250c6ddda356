"""Named constructors for the configurations of the paper's results table (ImageNet-1K, 1000 classes).

``swin_tiny_patch4_window7_224()`` etc. build a :class:`swin_fused.SwinTransformer`; keyword arguments
override the config (``num_classes=0`` for a backbone, ``drop_path_rate=...``). ``MODEL_CONFIGS`` and
``PAPER_TABLE`` hold the numbers the ``table`` command reproduces.
"""
from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Optional

from .model import SwinTransformer

__all__ = ["MODEL_CONFIGS", "PAPER_TABLE", "PaperRow", "create_model", "list_models"]


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


def create_model(name: str, **overrides) -> SwinTransformer:
    """Build a named config; ``overrides`` replace any constructor keyword."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODEL_CONFIGS)}")
    return SwinTransformer(**{**MODEL_CONFIGS[name], **overrides})


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
