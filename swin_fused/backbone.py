"""``SwinBackbone``: the official detection / segmentation backbone (SwinTransformer/Swin-Transformer-Object-
Detection, ``mmdet/models/backbones/swin_transformer.py``) on the fused op, for a detector to swap in.

Same constructor, same state-dict keys (``patch_embed.*``, ``absolute_pos_embed``, ``layers.{i}.blocks.{j}.*``,
``layers.{i}.downsample.*``, per-stage output norms ``norm{i}`` for each of ``out_indices``; no final norm, no
head) and the same ``forward``: a tuple of ``[B, C_i, H_i, W_i]`` maps, one per ``out_indices`` entry, each
stage's output before merging, through its norm. The size rule is the detection code's (``semantics=
"detection"``: pad then shift, odd blocks always shifted, windows never clamped); the images are zero-padded to
a multiple of the patch. ``frozen_stages`` freezes and keeps in eval mode the patch embedding (0), the absolute
position embedding (1) and the first ``frozen_stages - 1`` stages, as the official backbone does.

Checkpoints: :func:`swin_fused.load_checkpoint` reads the official backbone's, mmdet's / mmseg's and HF's
``SwinBackbone``'s (a detector's whole checkpoint loads its ``backbone.*``), and classification checkpoints
of every source for initialisation (``strict=False``: the per-stage norms start fresh, as the official
``init_weights(pretrained)`` leaves them).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .geometry import to_2tuple
from .model import (BasicLayer, PatchEmbed, PatchMerging, SwinTransformer, _check_config,
                    _check_rates, _fixed_semantics, _reject_unknown_keywords, stage_resolution)
from .semantics import size_rule

__all__ = ["SwinBackbone"]

#: What ``init_weights(pretrained)`` loads a checkpoint path with: :mod:`swin_fused.interop` registers its
#: ``load_checkpoint`` when the package is imported (this module never imports it).
CHECKPOINT_LOADERS: List[Callable] = []

_CONSTRUCTOR_KEYWORDS = ("pretrain_img_size", "patch_size", "in_chans", "embed_dim", "depths", "num_heads",
                         "window_size", "mlp_ratio", "qkv_bias", "qk_scale", "drop_rate", "attn_drop_rate",
                         "drop_path_rate", "norm_layer", "ape", "patch_norm", "out_indices", "frozen_stages",
                         "pretrained", "use_checkpoint", "semantics")


class SwinBackbone(nn.Module):
    """Swin Transformer backbone for detection and segmentation: the official detection backbone's interface.

    Args:
        pretrain_img_size: the image size of the pretraining, which sizes ``absolute_pos_embed`` (``ape``).
        patch_size, in_chans, embed_dim, depths, num_heads, window_size, mlp_ratio, qkv_bias, qk_scale, drop_rate,
        attn_drop_rate, drop_path_rate, norm_layer, ape, patch_norm, use_checkpoint: as the official backbone.
        out_indices: the stages whose outputs ``forward`` returns (each through its own ``norm{i}``).
        frozen_stages: -1 (none) or how far to freeze (see the module docstring).
        pretrained: a checkpoint path or None, as the official constructor takes it: the weights load when the
            detector calls ``init_weights()`` (or ``init_weights(path)``, or :func:`swin_fused.load_checkpoint`).
        semantics: the size rule, ``"detection"`` by default (:mod:`swin_fused.semantics`).

    ``forward``: ``[B, in_chans, H, W] -> tuple of [B, embed_dim * 2^i, ceil(H / 2^(i+2)), ceil(W / 2^(i+2))]``.
    """

    def __init__(
        self,
        pretrain_img_size=224,
        patch_size=4,
        in_chans=3,
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size=7,
        mlp_ratio=4.0,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.2,
        norm_layer=nn.LayerNorm,
        ape=False,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        pretrained=None,
        use_checkpoint=False,
        semantics="detection",
        **kwargs,
    ):
        super().__init__()
        _reject_unknown_keywords(type(self).__name__, kwargs, _CONSTRUCTOR_KEYWORDS)
        rule = size_rule(semantics)
        self._semantics = rule.name
        _check_config(pretrain_img_size, patch_size, in_chans, 0, embed_dim, depths, num_heads, window_size)
        _check_rates(mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate)
        self.num_layers = len(depths)
        out_indices = tuple(out_indices)
        if not out_indices or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.num_layers
                                  for i in out_indices):
            raise ValueError(f"out_indices must be stage indices in [0, {self.num_layers}), got {out_indices!r}")
        if isinstance(frozen_stages, bool) or not isinstance(frozen_stages, int) or frozen_stages < -1:
            raise ValueError(f"frozen_stages must be an int >= -1, got {frozen_stages!r}")
        self.pretrain_img_size = pretrain_img_size
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        if pretrained is not None and not isinstance(pretrained, str):
            raise TypeError(f"pretrained must be a str (a checkpoint path) or None, got {type(pretrained).__name__}")
        self.pretrained = pretrained  # what init_weights() loads when the detector calls it without a path

        self.patch_embed = PatchEmbed(img_size=pretrain_img_size, patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=embed_dim, norm_layer=norm_layer if patch_norm else None,
                                      pad=rule.pads_patches)
        patches_resolution = self.patch_embed.patches_resolution
        if ape:
            # The detection code's layout: NCHW, resized (bicubic) to whatever map the image gives.
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *patches_resolution))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]
        self.layers = nn.ModuleList([
            BasicLayer(
                dim=int(embed_dim * 2**i), input_resolution=stage_resolution(patches_resolution, i, False),
                depth=depths[i], num_heads=num_heads[i], window_size=window_size, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]): sum(depths[: i + 1])], norm_layer=norm_layer,
                downsample=PatchMerging if i < self.num_layers - 1 else None, use_checkpoint=use_checkpoint,
                semantics=rule,
            )
            for i in range(self.num_layers)
        ])
        self.num_features = [int(embed_dim * 2**i) for i in range(self.num_layers)]
        for i in out_indices:
            self.add_module(f"norm{i}", norm_layer(self.num_features[i]))
        self.apply(SwinTransformer._init_weights)  # the constructor initialises; init_weights() also loads
        self._freeze_stages()

    semantics = property(lambda self: self._semantics, _fixed_semantics,
                         doc="The size rule's name (fixed at construction).")

    def init_weights(self, pretrained: Optional[str] = None) -> None:
        """Truncated-normal Linears and unit LayerNorms, as the official backbone; then, given a path (or the
        constructor's ``pretrained``), the checkpoint (any source :func:`swin_fused.load_checkpoint` reads,
        ``strict=False``; an ``ape`` table in the classification layout is reshaped as the official loader
        does, bias tables of another window are not resized)."""
        pretrained = pretrained if pretrained is not None else getattr(self, "pretrained", None)
        if pretrained is not None and not isinstance(pretrained, str):
            raise TypeError(f"pretrained must be a str (a checkpoint path) or None, got {type(pretrained).__name__}")
        self.apply(SwinTransformer._init_weights)  # the official backbone's init is the classifier's
        if pretrained is not None:
            CHECKPOINT_LOADERS[-1](self, pretrained, strict=False)

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            self.patch_embed.eval()
            for param in self.patch_embed.parameters():
                param.requires_grad = False
        if self.frozen_stages >= 1 and self.ape:
            self.absolute_pos_embed.requires_grad = False
        if self.frozen_stages >= 2:
            self.pos_drop.eval()
            for layer in self.layers[: self.frozen_stages - 1]:
                layer.eval()
                for param in layer.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True) -> "SwinBackbone":
        """As ``nn.Module.train``, keeping the frozen stages in eval mode."""
        super().train(mode)
        self._freeze_stages()
        return self

    _load_from_state_dict = SwinTransformer._load_from_state_dict  # foreign layouts (mmdet, HF ...) renamed
    reset_parameters = SwinTransformer.reset_parameters
    no_weight_decay = SwinTransformer.no_weight_decay
    no_weight_decay_keywords = SwinTransformer.no_weight_decay_keywords

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.patch_embed(x)  # B, Wh, Ww, C
        if self.ape:
            pos = F.interpolate(self.absolute_pos_embed, size=x.shape[1:3], mode="bicubic")
            x = x + pos.permute(0, 2, 3, 1)
        x = self.pos_drop(x)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer.forward_blocks(x)
            if i in self.out_indices:
                outs.append(getattr(self, f"norm{i}")(x).permute(0, 3, 1, 2).contiguous())
            if layer.downsample is not None:
                x = layer.downsample(x)
        return tuple(outs)

    def flops(self, img_size: Optional[Sequence[int]] = None) -> int:
        """Multiply-adds of one forward (the official counting; no head) at ``img_size`` (default: pretraining)."""
        H, W = to_2tuple(img_size if img_size is not None else self.pretrain_img_size, "img_size")
        ph, pw = self.patch_embed.patch_size
        res = (-(-H // ph), -(-W // pw)) if self.patch_embed.pad else (H // ph, W // pw)
        flops = self.patch_embed.flops(res)
        for i, layer in enumerate(self.layers):
            for block in layer.blocks:
                flops += block.flops(res)
            if i in self.out_indices:
                flops += res[0] * res[1] * self.num_features[i]
            if layer.downsample is not None:
                flops += layer.downsample.flops(res)
                res = (-(-res[0] // 2), -(-res[1] // 2))
        return int(flops)
