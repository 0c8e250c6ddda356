"""Multiply-add counts in the paper's convention (one multiply-add counted once, as the official ``flops()``).

Counted analytically per layer at the actual stage resolutions, so any input size works; at the nominal size
the result equals the official code's ``model.flops()``.
"""
from __future__ import annotations

from typing import Optional, Sequence

from .geometry import to_2tuple


def model_flops(model, img_size: Optional[Sequence[int]] = None) -> int:
    """Multiply-adds of one image through a :class:`swin_fused.SwinTransformer` at ``img_size`` (H, W)."""
    pe = model.patch_embed
    H, W = to_2tuple(img_size, "img_size") if img_size is not None else pe.img_size
    if getattr(pe, "pad", True):  # the image is padded to whole patches; else the remainder is dropped
        res = (-(-H // pe.patch_size[0]), -(-W // pe.patch_size[1]))
    else:
        res = (H // pe.patch_size[0], W // pe.patch_size[1])
    flops = pe.flops(res)
    # The official count of the final norm divides the stage-1 token count by 2**num_layers (not 4**...):
    # kept, so that the nominal-size number is the official one.
    flops += model.num_features * res[0] * res[1] // (2 ** model.num_layers)
    for layer in model.layers:
        flops += sum(blk.flops(res) for blk in layer.blocks)
        if layer.downsample is not None:
            flops += layer.downsample.flops(res)
            res = (-(-res[0] // 2), -(-res[1] // 2))
    flops += model.num_features * model.num_classes  # head
    return int(flops)
