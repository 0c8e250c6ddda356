"""Swin Transformer V2 modules: the official constructors, parameter names and state-dict keys.

Layout follows microsoft/Swin-Transformer ``models/swin_transformer_v2.py`` so that official checkpoints load
with ``strict=True``; the data path is V1's (:mod:`swin_fused.model`), with what V2 changes:

- scaled cosine attention, ``normalize(q) normalize(k)^T * exp(clamp(logit_scale, max=log 100))``, sent through
  :func:`swin_fused.window_attention` (``cosine_scale=``), so the fused kernels run it;
- the continuous position bias ``16 * sigmoid(cpb_mlp(relative_coords_table))``, computed once per forward in
  PyTorch and handed to the op as its bias table;
- q and v biases with a zero k bias (``q_bias``, ``v_bias``; padding tokens' q/k/v are that bias);
- post-norm blocks, ``x + drop_path(norm1(attn(x)))``, ``x + drop_path(norm2(mlp(x)))``, whose norms start at
  zero (the official ``_init_respostnorm``);
- patch merging that reduces *then* normalises: Linear(4C, 2C) -> LayerNorm(2C).

``semantics=`` works as for V1: a block keeps its configured window and shift and decides per forward from the
map it gets (:mod:`swin_fused.semantics`). The blocks, stages and model borrow V1's methods rather than
inherit V1's classes, so that nothing dispatching on ``isinstance(m, SwinTransformer)`` (checkpoint converters,
``optimize``) mistakes a V2 model for a V1 one.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .functional import window_attention
from .geometry import relative_position_index, to_2tuple
from .model import (
    BasicLayer,
    DropPath,
    Mlp,
    PatchEmbed,
    PatchMerging,
    SwinTransformer,
    SwinTransformerBlock,
    WindowAttention,
    _check_config,
    _check_not_empty,
    _check_positive_int,
    _check_rates,
    _reject_unknown_keywords,
    _side,
    materialising_apply,
    shift_mask_buffer,
    stage_resolution,
    write_buffers,
)
from .semantics import size_rule

__all__ = [
    "V2_CONFIGS",
    "relative_coords_table",
    "WindowAttentionV2",
    "SwinTransformerBlockV2",
    "PatchMergingV2",
    "BasicLayerV2",
    "SwinTransformerV2",
]

Pair = Tuple[int, int]

#: The official clamp of ``logit_scale``: a cosine-attention temperature of at most 1 / 0.01.
LOGIT_SCALE_MAX = math.log(1.0 / 0.01)  # the same float32 as the official torch.log(torch.tensor(1. / 0.01))


def relative_coords_table(window: Pair, pretrained_window: Pair = (0, 0), device=None) -> torch.Tensor:
    """``[1, 2Wh-1, 2Ww-1, 2]`` float32: the (dy, dx) offsets of a window, log-spaced, the input of ``cpb_mlp``.

    Offsets are divided by ``pretrained_window - 1`` (or ``window - 1`` when no pretrained window is given),
    times 8, then ``sign(t) * log2(|t| + 1) / log2(8)``, in the official order of float32 operations. A side of
    1 has only the offset 0, which stays 0 (the official code divides it by 0, so a 1x1 window's bias is NaN).
    """
    wh, ww = window
    table = torch.stack(torch.meshgrid(
        torch.arange(-(wh - 1), wh, dtype=torch.float32, device=device),
        torch.arange(-(ww - 1), ww, dtype=torch.float32, device=device),
        indexing="ij")).permute(1, 2, 0).contiguous().unsqueeze(0)  # 1, 2Wh-1, 2Ww-1, 2
    norm = pretrained_window if pretrained_window[0] > 0 else window
    for axis in (0, 1):
        if norm[axis] > 1:
            table[..., axis] /= norm[axis] - 1
    table *= 8  # normalised to [-8, 8]
    return torch.sign(table) * torch.log2(torch.abs(table) + 1.0) / math.log2(8)


class WindowAttentionV2(nn.Module):
    """Window multi-head self-attention with scaled cosine attention and a continuous position bias.

    Official constructor and parameters (``qkv`` without bias, ``q_bias``, ``v_bias``, ``logit_scale``
    ``[heads, 1, 1]``, ``cpb_mlp``) and buffers (``relative_coords_table``, ``relative_position_index``, both
    saved, as the official code saves them). ``forward(x, mask)`` keeps the official window-batch interface;
    :meth:`forward_map` is the fused path the package's blocks use.

    Args:
        dim: channels C.
        window_size: ``(Wh, Ww)`` (an int is accepted) the coordinate table is built for.
        num_heads: heads; must divide ``dim``.
        qkv_bias: learnable q and v biases (k has none).
        attn_drop: dropout on attention probabilities.
        proj_drop: dropout on the output.
        pretrained_window_size: ``(Wh, Ww)`` of pre-training, which normalises the coordinates (0: none, use
            ``window_size``).
    """

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, attn_drop=0.0, proj_drop=0.0,
                 pretrained_window_size=(0, 0)):
        super().__init__()
        _check_positive_int("dim", dim)
        _check_positive_int("num_heads", num_heads)
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.dim = dim
        self.window_size = to_2tuple(window_size, "window_size")
        if min(self.window_size) <= 0:
            raise ValueError(f"window_size must be positive, got {window_size!r}")
        self.pretrained_window_size = to_2tuple(pretrained_window_size, "pretrained_window_size")
        if not (self.pretrained_window_size == (0, 0) or min(self.pretrained_window_size) >= 2):
            raise ValueError(f"pretrained_window_size must be 0 (none) or at least 2 on both sides (the "
                             f"coordinates are divided by it minus 1), got {pretrained_window_size!r}")
        self.num_heads = num_heads

        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((num_heads, 1, 1))))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512, bias=True), nn.ReLU(inplace=True),
                                     nn.Linear(512, num_heads, bias=False))
        self.register_buffer("relative_coords_table",
                             relative_coords_table(self.window_size, self.pretrained_window_size))
        # On the default device like the rest (a `with torch.device(...)` block); the cached index is on CPU.
        index = relative_position_index(self.window_size, torch.get_default_device())
        self.register_buffer("relative_position_index", index.clone())

        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = None
            self.v_bias = None
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.softmax = nn.Softmax(dim=-1)

    def qkv_bias(self) -> Optional[torch.Tensor]:
        """``[3C]`` = (q_bias, 0, v_bias), or None without biases."""
        if self.q_bias is None:
            return None
        return torch.cat((self.q_bias, torch.zeros_like(self.v_bias, requires_grad=False), self.v_bias))

    def bias_table(self) -> torch.Tensor:
        """``[(2Wh-1)(2Ww-1), heads]``: the continuous position bias, ``16 * sigmoid(cpb_mlp(coords))``."""
        return 16 * torch.sigmoid(self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads))

    def cosine_scale(self) -> torch.Tensor:
        """``[heads]``: each head's temperature, ``exp(clamp(logit_scale, max=log(100)))``."""
        return torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp().view(self.num_heads)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Official interface. x: ``[B * nW, N, C]`` windows; mask: ``[nW, N, N]`` (0 / -100) or None."""
        N_expected = self.window_size[0] * self.window_size[1]
        if x.dim() != 3 or x.shape[1] != N_expected or x.shape[2] != self.dim:
            raise ValueError(f"expected windows [B*nW, N={N_expected}, C={self.dim}] (window {self.window_size}), "
                             f"got shape {tuple(x.shape)}; use forward_map for [B, H, W, C] maps")
        B_, N, C = x.shape
        qkv = F.linear(x, self.qkv.weight, self.qkv_bias())
        q, k, v = qkv.reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1))
        attn = attn * self.cosine_scale().view(-1, 1, 1)
        bias = self.bias_table()[self.relative_position_index.view(-1)].view(N, N, -1).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_drop(self.softmax(attn))
        x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj_drop(self.proj(x))

    def forward_map(
        self,
        x: torch.Tensor,
        window_size: Optional[Pair] = None,
        shift_size: Pair = (0, 0),
        shift_before_pad: bool = False,
        mask_value: float = -100.0,
    ) -> torch.Tensor:
        """Fused path on a whole map: ``[B, H, W, C] -> [B, H, W, C]`` (qkv, cosine window attention, proj).

        ``window_size`` defaults to the table's window; a smaller one uses the table's central part.
        """
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"expected a [B, H, W, C={self.dim}] map, got shape {tuple(x.shape)}")
        window = self.window_size if window_size is None else to_2tuple(window_size, "window_size")
        bias = self.qkv_bias()
        qkv = F.linear(x, self.qkv.weight, bias)  # B, H, W, 3C
        out = window_attention(
            qkv,
            self.bias_table(),
            self.num_heads,
            window,
            shift_size,
            scale=None,
            pad_qkv=bias,  # q/k/v of padding tokens (k: 0), used only where the map is padded
            shift_before_pad=shift_before_pad,
            table_window=self.window_size,
            dropout_p=self.attn_drop.p if self.training else 0.0,
            cosine_scale=self.cosine_scale(),
            mask_value=mask_value,
        )
        return self.proj_drop(self.proj(out))

    flops = WindowAttention.flops  # the V1 count: cosine attention is counted as the dot products

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, window_size={self.window_size}, "
                f"pretrained_window_size={self.pretrained_window_size}, num_heads={self.num_heads}")

    _apply = materialising_apply

    def derived_buffers(self) -> Dict[str, torch.Tensor]:
        """Standard values (CPU) of the buffers this module derives from its windows: the coordinate table
        and the relative position index."""
        return {"relative_coords_table": relative_coords_table(self.window_size, self.pretrained_window_size, "cpu"),
                "relative_position_index": relative_position_index(self.window_size)}

    def reset_parameters(self) -> None:
        """The constructor's initialisation of this module's own state (``logit_scale`` log 10, zero q/v
        biases, standard buffers); ``qkv``, ``proj`` and ``cpb_mlp`` have their own. For ``to_empty``."""
        with torch.no_grad():
            self.logit_scale.copy_(torch.log(10 * torch.ones_like(self.logit_scale)))
            for bias in (self.q_bias, self.v_bias):
                if bias is not None:
                    bias.zero_()
        write_buffers(self, self.derived_buffers())

    # V1's: both buffers are derivable, so a dict may omit them (timm's do). A coordinate table that is there is
    # loaded: it is an input of cpb_mlp, honoured as given. The index must be the standard one.
    _load_from_state_dict = WindowAttention._load_from_state_dict


class SwinTransformerBlockV2(nn.Module):
    """Swin V2 block (post-norm): ``x + drop_path(norm1(attn(x)))``, then ``x + drop_path(norm2(mlp(x)))``.

    Official constructor, plus ``semantics`` (:mod:`swin_fused.semantics`); inputs, attributes and the
    per-forward window decision are those of :class:`swin_fused.SwinTransformerBlock`.
    """

    def __init__(
        self,
        dim,
        input_resolution,
        num_heads,
        window_size=7,
        shift_size=0,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop=0.0,
        attn_drop=0.0,
        drop_path=0.0,
        act_layer=nn.GELU,
        norm_layer=nn.LayerNorm,
        pretrained_window_size=0,
        semantics="official",
    ):
        super().__init__()
        self.dim = dim
        self.input_resolution = to_2tuple(input_resolution, "input_resolution")
        if min(self.input_resolution) <= 0:
            raise ValueError(f"input_resolution must be positive, got {input_resolution!r}")
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        _check_positive_int("window_size", window_size)
        if isinstance(shift_size, bool) or not isinstance(shift_size, int) or not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size must be an int in [0, window_size={window_size}), got {shift_size!r}")
        self.rule = size_rule(semantics)
        #: (window, shift) as configured; every forward decides from these and the map it gets.
        self.configured = (to_2tuple(window_size), to_2tuple(shift_size))
        self.built = self.rule.built(self.input_resolution, *self.configured)
        self.window_size, self.shift_size = _side(self.built.window), _side(self.built.shift)

        self.norm1 = norm_layer(dim)
        self.attn = WindowAttentionV2(
            dim, window_size=self.built.table_window, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
            proj_drop=drop, pretrained_window_size=to_2tuple(pretrained_window_size, "pretrained_window_size"),
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

        self.register_buffer("attn_mask", shift_mask_buffer(self.rule, self.input_resolution, self.built))

    # As V1: the mask is the block's own (derived from its geometry); a dict's is ignored, or may be absent.
    derived_buffers = SwinTransformerBlock.derived_buffers
    _apply = materialising_apply
    reset_parameters = SwinTransformerBlock.reset_parameters
    _load_from_state_dict = SwinTransformerBlock._load_from_state_dict

    semantics = SwinTransformerBlock.semantics
    window_and_shift = SwinTransformerBlock.window_and_shift
    forward = SwinTransformerBlock.forward  # [B, H, W, C] maps or official [B, L, C] tokens -> _forward_map
    extra_repr = SwinTransformerBlock.extra_repr
    flops = SwinTransformerBlock.flops  # the official V2 count is V1's

    def _forward_map(self, x: torch.Tensor) -> torch.Tensor:
        window, shift = self.window_and_shift(x.shape[1], x.shape[2])
        x = x + self.drop_path(self.norm1(self.attn.forward_map(x, window, shift, self.rule.shift_before_pad,
                                                                self.rule.mask_value)))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class PatchMergingV2(nn.Module):
    """2x2 neighbourhood concat ``[x0, x1, x2, x3]`` -> Linear(4C, 2C, bias=False) -> LayerNorm(2C).

    ``[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 2C]`` (or official ``[B, L, C]`` tokens); an odd H or W is
    zero-padded at the bottom/right.
    """

    def __init__(self, input_resolution, dim, norm_layer=nn.LayerNorm):
        super().__init__()
        self.input_resolution = to_2tuple(input_resolution, "input_resolution")
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4) or x.shape[-1] != self.dim:
            raise ValueError(f"expected a [B, H, W, C={self.dim}] map or [B, L, C={self.dim}] tokens, "
                             f"got shape {tuple(x.shape)}")
        _check_not_empty(x)
        if x.dim() == 3:  # official [B, L, C]
            B, L, C = x.shape
            H, W = self.input_resolution
            if L != H * W:
                raise ValueError(f"input has {L} tokens, expected {H}*{W} for input_resolution "
                                 f"{self.input_resolution}")
            return self.forward(x.view(B, H, W, C)).reshape(B, -1, 2 * C)
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
            H, W = H + H % 2, W + W % 2
        # cat([x0, x1, x2, x3], -1) as one permuted copy: channel block 2 * (column offset) + (row offset).
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H // 2, W // 2, 4 * C)
        return self.norm(self.reduction(x))

    extra_repr = PatchMerging.extra_repr

    def flops(self, resolution: Optional[Pair] = None) -> int:
        """The official V2 count (its norm term is ``H * W * C // 2``, the size of its 2C output)."""
        H, W = resolution or self.input_resolution
        return (H // 2) * (W // 2) * 4 * self.dim * 2 * self.dim + H * W * self.dim // 2


class BasicLayerV2(nn.Module):
    """One V2 stage: ``depth`` blocks alternating W-MSA (even j) and SW-MSA (odd j), then optional merging."""

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio=4.0, qkv_bias=True,
                 drop=0.0, attn_drop=0.0, drop_path=0.0, norm_layer=nn.LayerNorm, downsample=None,
                 use_checkpoint=False, pretrained_window_size=0, semantics="official"):
        super().__init__()
        self.dim = dim
        self.input_resolution = to_2tuple(input_resolution, "input_resolution")
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList([
            SwinTransformerBlockV2(
                dim=dim, input_resolution=input_resolution, num_heads=num_heads, window_size=window_size,
                shift_size=0 if (i % 2 == 0) else window_size // 2, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                drop=drop, attn_drop=attn_drop,
                drop_path=drop_path[i] if isinstance(drop_path, (list, tuple)) else drop_path,
                norm_layer=norm_layer, pretrained_window_size=pretrained_window_size, semantics=semantics,
            )
            for i in range(depth)
        ])
        self.downsample = downsample(input_resolution, dim=dim, norm_layer=norm_layer) if downsample else None

    forward_blocks = BasicLayer.forward_blocks
    forward = BasicLayer.forward
    extra_repr = BasicLayer.extra_repr

    def _init_respostnorm(self) -> None:
        """The official init of the post-norms: weight and bias 0, so every block starts as the identity."""
        for blk in self.blocks:
            for norm in (blk.norm1, blk.norm2):
                nn.init.constant_(norm.bias, 0)
                nn.init.constant_(norm.weight, 0)


class SwinTransformerV2(nn.Module):
    """Swin Transformer V2 (Liu et al., arXiv 2111.09883), official constructor and state-dict layout.

    Args:
        img_size, patch_size, in_chans, num_classes, embed_dim, depths, num_heads, window_size, mlp_ratio,
        qkv_bias, drop_rate, attn_drop_rate, drop_path_rate, norm_layer, ape, patch_norm, use_checkpoint,
        pretrained_window_sizes: as the official ``SwinTransformerV2`` (``pretrained_window_sizes``: one per
            stage, 0 for none; they normalise the continuous position bias's coordinates).
        semantics: as :class:`swin_fused.SwinTransformer`: whose rules decide window and shift at sizes other
            than the built one, and whether the patch embedding pads.

    ``img_size`` is the built size (it sets the stored buffers, the FLOP count and what rules decided at
    construction see); any size works at run time. Any other keyword is a TypeError naming it.
    """

    def __init__(
        self,
        img_size=224,
        patch_size=4,
        in_chans=3,
        num_classes=1000,
        embed_dim=96,
        depths=(2, 2, 6, 2),
        num_heads=(3, 6, 12, 24),
        window_size=7,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,
        norm_layer=nn.LayerNorm,
        ape=False,
        patch_norm=True,
        use_checkpoint=False,
        pretrained_window_sizes=(0, 0, 0, 0),
        semantics="official",
        **kwargs,
    ):
        super().__init__()
        if "qk_scale" in kwargs:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument 'qk_scale'; Swin V2's "
                            f"cosine attention has no q scale (each head learns its temperature, logit_scale)")
        _reject_unknown_keywords(type(self).__name__, kwargs, _CONSTRUCTOR_KEYWORDS)
        rule = size_rule(semantics)
        self._semantics = rule.name
        _check_config(img_size, patch_size, in_chans, num_classes, embed_dim, depths, num_heads, window_size)
        _check_rates(mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate)
        if len(pretrained_window_sizes) < len(depths):
            raise ValueError(f"pretrained_window_sizes {tuple(pretrained_window_sizes)} needs one entry per stage "
                             f"(depths {tuple(depths)}; 0 for none)")
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.ape = ape
        self.patch_norm = patch_norm
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))
        self.mlp_ratio = mlp_ratio
        self.window_size = window_size

        self.patch_embed = PatchEmbed(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
            norm_layer=norm_layer if self.patch_norm else None, pad=rule.pads_patches,
        )
        num_patches = self.patch_embed.num_patches
        self.patches_resolution = patches_resolution = self.patch_embed.patches_resolution
        if self.ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, num_patches, embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]
        self.layers = nn.ModuleList([
            BasicLayerV2(
                dim=int(embed_dim * 2**i),
                input_resolution=stage_resolution(patches_resolution, i, rule.name == "official"),
                depth=depths[i], num_heads=num_heads[i], window_size=window_size, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], norm_layer=norm_layer,
                downsample=PatchMergingV2 if (i < self.num_layers - 1) else None, use_checkpoint=use_checkpoint,
                pretrained_window_size=pretrained_window_sizes[i], semantics=rule,
            )
            for i in range(self.num_layers)
        ])

        self.norm = norm_layer(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        for layer in self.layers:
            layer._init_respostnorm()

    _init_weights = staticmethod(SwinTransformer._init_weights)
    semantics = SwinTransformer.semantics
    # The data path is V1's: embed (+ ape) -> stages on [B, H, W, C] maps -> norm -> average -> head.
    _embed = SwinTransformer._embed
    forward_pyramid = SwinTransformer.forward_pyramid
    forward_features = SwinTransformer.forward_features
    forward = SwinTransformer.forward
    flops = SwinTransformer.flops  # swin_fused.flops.model_flops: the official count at the nominal size
    reset_parameters = SwinTransformer.reset_parameters
    _load_from_state_dict = SwinTransformer._load_from_state_dict  # foreign V2 layouts (timm, torchvision, HF)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"absolute_pos_embed"}

    @torch.jit.ignore
    def no_weight_decay_keywords(self):
        return {"cpb_mlp", "logit_scale", "relative_position_bias_table"}


#: What the official SwinTransformerV2 takes (plus ``semantics``): anything else is a TypeError.
_CONSTRUCTOR_KEYWORDS = ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depths", "num_heads",
                         "window_size", "mlp_ratio", "qkv_bias", "drop_rate", "attn_drop_rate", "drop_path_rate",
                         "norm_layer", "ape", "patch_norm", "use_checkpoint", "pretrained_window_sizes", "semantics")

_T, _S, _B, _L = ((96, (2, 2, 6, 2), (3, 6, 12, 24)), (96, (2, 2, 18, 2), (3, 6, 12, 24)),
                  (128, (2, 2, 18, 2), (4, 8, 16, 32)), (192, (2, 2, 18, 2), (6, 12, 24, 48)))


def _config(size, img_size, window_size, drop_path_rate, pretrained_window_sizes=None) -> dict:
    embed_dim, depths, num_heads = size
    cfg = dict(img_size=img_size, embed_dim=embed_dim, depths=depths, num_heads=num_heads, window_size=window_size,
               drop_path_rate=drop_path_rate)
    if pretrained_window_sizes is not None:
        cfg["pretrained_window_sizes"] = pretrained_window_sizes
    return cfg


#: The official configs/swinv2/*.yaml (ImageNet-1K, 1000 classes). The 192 -> 256 / 384 models are the ImageNet-22K
#: pre-trained, 1K fine-tuned ones (the YAMLs' names end in ``_22kto1k_ft``), whose windows of pre-training
#: (12, 12, 12, 6 at 192) normalise the position bias's coordinates.
V2_CONFIGS: Dict[str, dict] = {
    "swinv2_tiny_patch4_window8_256": _config(_T, 256, 8, 0.2),
    "swinv2_tiny_patch4_window16_256": _config(_T, 256, 16, 0.2),
    "swinv2_small_patch4_window8_256": _config(_S, 256, 8, 0.3),
    "swinv2_small_patch4_window16_256": _config(_S, 256, 16, 0.3),
    "swinv2_base_patch4_window8_256": _config(_B, 256, 8, 0.5),
    "swinv2_base_patch4_window16_256": _config(_B, 256, 16, 0.5),
    "swinv2_base_patch4_window12to16_192to256": _config(_B, 256, 16, 0.2, (12, 12, 12, 6)),
    "swinv2_base_patch4_window12to24_192to384": _config(_B, 384, 24, 0.2, (12, 12, 12, 6)),
    "swinv2_large_patch4_window12to16_192to256": _config(_L, 256, 16, 0.2, (12, 12, 12, 6)),
    "swinv2_large_patch4_window12to24_192to384": _config(_L, 384, 24, 0.2, (12, 12, 12, 6)),
}


def _constructor(name: str) -> Callable[..., SwinTransformerV2]:
    def build(**overrides) -> SwinTransformerV2:
        return SwinTransformerV2(**{**V2_CONFIGS[name], **overrides})

    cfg = V2_CONFIGS[name]
    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"Swin V2 {name.split('_')[1]} (embed_dim={cfg['embed_dim']}, depths={cfg['depths']}, "
                     f"heads={cfg['num_heads']}, window {cfg['window_size']}, {cfg['img_size']}px"
                     + (f", pretrained windows {cfg['pretrained_window_sizes']}" if "pretrained_window_sizes" in cfg
                        else "") + "). Keyword arguments override the config.")
    return build


swinv2_tiny_patch4_window8_256 = _constructor("swinv2_tiny_patch4_window8_256")
swinv2_tiny_patch4_window16_256 = _constructor("swinv2_tiny_patch4_window16_256")
swinv2_small_patch4_window8_256 = _constructor("swinv2_small_patch4_window8_256")
swinv2_small_patch4_window16_256 = _constructor("swinv2_small_patch4_window16_256")
swinv2_base_patch4_window8_256 = _constructor("swinv2_base_patch4_window8_256")
swinv2_base_patch4_window16_256 = _constructor("swinv2_base_patch4_window16_256")
swinv2_base_patch4_window12to16_192to256 = _constructor("swinv2_base_patch4_window12to16_192to256")
swinv2_base_patch4_window12to24_192to384 = _constructor("swinv2_base_patch4_window12to24_192to384")
swinv2_large_patch4_window12to16_192to256 = _constructor("swinv2_large_patch4_window12to16_192to256")
swinv2_large_patch4_window12to24_192to384 = _constructor("swinv2_large_patch4_window12to24_192to384")
__all__ += list(V2_CONFIGS)
