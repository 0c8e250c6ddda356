"""An independent transcription of mmdetection's own Swin backbone (mmdet >= 2.17) and its checkpoint converter.

Test oracle only: written from open-mmlab/mmdetection ``mmdet/models/backbones/swin.py`` (WindowMSA,
ShiftWindowMSA, SwinBlock, SwinBlockSequence, SwinTransformer, as in the 2.x series; mmsegmentation's
``mmseg/models/backbones/swin.py`` is the same) and ``swin_converter`` (2.x ``mmdet/models/utils/ckpt_convert.py``,
3.x the bottom of ``swin.py``), plus the mmcv pieces they build: ``mmcv/cnn/bricks/transformer.py``
(AdaptivePadding, PatchEmbed, PatchMerging, FFN) and ``mmcv/cnn/bricks/drop.py`` (DropPath). Imports nothing
from ``swin_fused``, timm, mmcv or mmdet; registries, ``*_cfg`` builders, BaseModule / init_cfg, checkpoint
loading and ``with_cp`` are dropped (LN is ``nn.LayerNorm``, GELU ``nn.GELU``). State-dict keys are mmdet's.
Against the official code: the relative index is built with ``double_step_seq`` + flip (same values), the
shift mask is built inside ShiftWindowMSA per forward from slices of the padded map, FFN adds the residual
itself, and PatchMerging gathers the 2x2 neighbourhood with ``nn.Unfold`` (channel-major, so the official
reduction / norm weights need ``swin_converter``'s reordering).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def to_2tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


class DropPath(nn.Module):
    """mmcv's DropPath (``build_dropout(dict(type='DropPath', drop_prob=p))``); identity at eval or p == 0."""

    def __init__(self, drop_prob=0.1):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        random_tensor = keep_prob + torch.rand(shape, dtype=x.dtype, device=x.device)
        return x.div(keep_prob) * random_tensor.floor()


class AdaptivePadding(nn.Module):
    """mmcv: pad so the input is fully covered by the filter; "corner" pads bottom / right."""

    def __init__(self, kernel_size=1, stride=1, dilation=1, padding="corner"):
        super().__init__()
        assert padding in ("same", "corner")
        self.padding = padding
        self.kernel_size = to_2tuple(kernel_size)
        self.stride = to_2tuple(stride)
        self.dilation = to_2tuple(dilation)

    def get_pad_shape(self, input_shape):
        input_h, input_w = input_shape
        kernel_h, kernel_w = self.kernel_size
        stride_h, stride_w = self.stride
        output_h = math.ceil(input_h / stride_h)
        output_w = math.ceil(input_w / stride_w)
        pad_h = max((output_h - 1) * stride_h + (kernel_h - 1) * self.dilation[0] + 1 - input_h, 0)
        pad_w = max((output_w - 1) * stride_w + (kernel_w - 1) * self.dilation[1] + 1 - input_w, 0)
        return pad_h, pad_w

    def forward(self, x):
        pad_h, pad_w = self.get_pad_shape(x.size()[-2:])
        if pad_h > 0 or pad_w > 0:
            if self.padding == "corner":
                x = F.pad(x, [0, pad_w, 0, pad_h])
            elif self.padding == "same":
                x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return x


class PatchEmbed(nn.Module):
    """mmcv PatchEmbed (conv ``projection``), as built by mmdet's Swin: Conv2d, kernel = stride, corner padding."""

    def __init__(self, in_channels=3, embed_dims=768, kernel_size=16, stride=16, padding="corner", dilation=1,
                 bias=True, norm_layer=None):
        super().__init__()
        self.embed_dims = embed_dims
        if stride is None:
            stride = kernel_size
        kernel_size, stride, dilation = to_2tuple(kernel_size), to_2tuple(stride), to_2tuple(dilation)
        if isinstance(padding, str):
            self.adaptive_padding = AdaptivePadding(kernel_size=kernel_size, stride=stride, dilation=dilation,
                                                    padding=padding)
            padding = 0  # disable the padding of conv
        else:
            self.adaptive_padding = None
        padding = to_2tuple(padding)
        self.projection = nn.Conv2d(in_channels, embed_dims, kernel_size=kernel_size, stride=stride,
                                    padding=padding, dilation=dilation, bias=bias)
        self.norm = norm_layer(embed_dims) if norm_layer is not None else None

    def forward(self, x):
        if self.adaptive_padding:
            x = self.adaptive_padding(x)
        x = self.projection(x)
        out_size = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        if self.norm is not None:
            x = self.norm(x)
        return x, out_size


class PatchMerging(nn.Module):
    """mmcv PatchMerging: corner padding, ``nn.Unfold`` (B, 4C, L), norm(4C), ``reduction`` Linear(4C, out)."""

    def __init__(self, in_channels, out_channels, kernel_size=2, stride=None, padding="corner", dilation=1,
                 bias=False, norm_layer=nn.LayerNorm):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        stride = stride if stride else kernel_size
        kernel_size, stride, dilation = to_2tuple(kernel_size), to_2tuple(stride), to_2tuple(dilation)
        if isinstance(padding, str):
            self.adaptive_padding = AdaptivePadding(kernel_size=kernel_size, stride=stride, dilation=dilation,
                                                    padding=padding)
            padding = 0  # disable the padding of unfold
        else:
            self.adaptive_padding = None
        padding = to_2tuple(padding)
        self.sampler = nn.Unfold(kernel_size=kernel_size, dilation=dilation, padding=padding, stride=stride)
        sample_dim = kernel_size[0] * kernel_size[1] * in_channels
        self.norm = norm_layer(sample_dim) if norm_layer is not None else None
        self.reduction = nn.Linear(sample_dim, out_channels, bias=bias)

    def forward(self, x, input_size):
        B, L, C = x.shape
        H, W = input_size
        assert L == H * W, "input feature has wrong size"
        x = x.view(B, H, W, C).permute([0, 3, 1, 2])  # B, C, H, W
        if self.adaptive_padding:
            x = self.adaptive_padding(x)
            H, W = x.shape[-2:]
        x = self.sampler(x)  # B, 4*C, H/2*W/2 (channel-major: index c * 4 + kh * 2 + kw)
        s = self.sampler
        out_h = (H + 2 * s.padding[0] - s.dilation[0] * (s.kernel_size[0] - 1) - 1) // s.stride[0] + 1
        out_w = (W + 2 * s.padding[1] - s.dilation[1] * (s.kernel_size[1] - 1) - 1) // s.stride[1] + 1
        output_size = (out_h, out_w)
        x = x.transpose(1, 2)  # B, H/2*W/2, 4*C
        x = self.norm(x) if self.norm else x
        x = self.reduction(x)
        return x, output_size


class FFN(nn.Module):
    """mmcv FFN (num_fcs=2, add_identity=True): identity + dropout_layer(layers(x))."""

    def __init__(self, embed_dims=256, feedforward_channels=1024, num_fcs=2, act_layer=nn.GELU, ffn_drop=0.0,
                 dropout_layer=None, add_identity=True):
        super().__init__()
        assert num_fcs >= 2
        self.embed_dims = embed_dims
        self.feedforward_channels = feedforward_channels
        self.num_fcs = num_fcs
        layers = []
        in_channels = embed_dims
        for _ in range(num_fcs - 1):
            layers.append(nn.Sequential(nn.Linear(in_channels, feedforward_channels), act_layer(),
                                        nn.Dropout(ffn_drop)))
            in_channels = feedforward_channels
        layers.append(nn.Linear(feedforward_channels, embed_dims))
        layers.append(nn.Dropout(ffn_drop))
        self.layers = nn.Sequential(*layers)
        self.dropout_layer = dropout_layer if dropout_layer is not None else nn.Identity()
        self.add_identity = add_identity

    def forward(self, x, identity=None):
        out = self.layers(x)
        if not self.add_identity:
            return self.dropout_layer(out)
        if identity is None:
            identity = x
        return identity + self.dropout_layer(out)


class WindowMSA(nn.Module):
    def __init__(self, embed_dims, num_heads, window_size, qkv_bias=True, qk_scale=None, attn_drop_rate=0.0,
                 proj_drop_rate=0.0):
        super().__init__()
        self.embed_dims = embed_dims
        self.window_size = window_size  # Wh, Ww
        self.num_heads = num_heads
        head_embed_dims = embed_dims // num_heads
        self.scale = qk_scale or head_embed_dims**-0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))
        Wh, Ww = self.window_size
        rel_index_coords = self.double_step_seq(2 * Ww - 1, Wh, 1, Ww)
        rel_position_index = rel_index_coords + rel_index_coords.T
        rel_position_index = rel_position_index.flip(1).contiguous()
        self.register_buffer("relative_position_index", rel_position_index)
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop_rate)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)
        self.softmax = nn.Softmax(dim=-1)

    def init_weights(self):
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x, mask=None):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        relative_position_bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
            self.window_size[0] * self.window_size[1], self.window_size[0] * self.window_size[1], -1)
        relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()
        attn = attn + relative_position_bias.unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.softmax(attn)
        attn = self.attn_drop(attn)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))

    @staticmethod
    def double_step_seq(step1, len1, step2, len2):
        seq1 = torch.arange(0, step1 * len1, step1)
        seq2 = torch.arange(0, step2 * len2, step2)
        return (seq1[:, None] + seq2[None, :]).reshape(1, -1)


class ShiftWindowMSA(nn.Module):
    def __init__(self, embed_dims, num_heads, window_size, shift_size=0, qkv_bias=True, qk_scale=None,
                 attn_drop_rate=0, proj_drop_rate=0, drop_path_rate=0.0):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        assert 0 <= self.shift_size < self.window_size
        self.w_msa = WindowMSA(embed_dims=embed_dims, num_heads=num_heads, window_size=to_2tuple(window_size),
                               qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop_rate=attn_drop_rate,
                               proj_drop_rate=proj_drop_rate)
        self.drop = DropPath(drop_path_rate)  # dropout_layer=dict(type='DropPath', drop_prob=drop_path_rate)

    def forward(self, query, hw_shape):
        B, L, C = query.shape
        H, W = hw_shape
        assert L == H * W, "input feature has wrong size"
        query = query.view(B, H, W, C)
        # pad feature maps to multiples of window size
        pad_r = (self.window_size - W % self.window_size) % self.window_size
        pad_b = (self.window_size - H % self.window_size) % self.window_size
        query = F.pad(query, (0, 0, 0, pad_r, 0, pad_b))
        H_pad, W_pad = query.shape[1], query.shape[2]
        if self.shift_size > 0:
            shifted_query = torch.roll(query, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            # attention mask for SW-MSA
            img_mask = torch.zeros((1, H_pad, W_pad, 1), device=query.device)
            h_slices = (slice(0, -self.window_size), slice(-self.window_size, -self.shift_size),
                        slice(-self.shift_size, None))
            w_slices = (slice(0, -self.window_size), slice(-self.window_size, -self.shift_size),
                        slice(-self.shift_size, None))
            cnt = 0
            for h in h_slices:
                for w in w_slices:
                    img_mask[:, h, w, :] = cnt
                    cnt += 1
            mask_windows = self.window_partition(img_mask)  # nW, window_size, window_size, 1
            mask_windows = mask_windows.view(-1, self.window_size * self.window_size)
            attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
            attn_mask = attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))
        else:
            shifted_query = query
            attn_mask = None
        query_windows = self.window_partition(shifted_query)
        query_windows = query_windows.view(-1, self.window_size**2, C)
        attn_windows = self.w_msa(query_windows, mask=attn_mask)
        attn_windows = attn_windows.view(-1, self.window_size, self.window_size, C)
        shifted_x = self.window_reverse(attn_windows, H_pad, W_pad)
        if self.shift_size > 0:
            x = torch.roll(shifted_x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        else:
            x = shifted_x
        if pad_r > 0 or pad_b:
            x = x[:, :H, :W, :].contiguous()
        x = x.view(B, H * W, C)
        return self.drop(x)

    def window_reverse(self, windows, H, W):
        window_size = self.window_size
        B = int(windows.shape[0] / (H * W / window_size / window_size))
        x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
        return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)

    def window_partition(self, x):
        B, H, W, C = x.shape
        window_size = self.window_size
        x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
        windows = x.permute(0, 1, 3, 2, 4, 5).contiguous()
        return windows.view(-1, window_size, window_size, C)


class SwinBlock(nn.Module):
    def __init__(self, embed_dims, num_heads, feedforward_channels, window_size=7, shift=False, qkv_bias=True,
                 qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, act_layer=nn.GELU,
                 norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(embed_dims)
        self.attn = ShiftWindowMSA(embed_dims=embed_dims, num_heads=num_heads, window_size=window_size,
                                   shift_size=window_size // 2 if shift else 0, qkv_bias=qkv_bias,
                                   qk_scale=qk_scale, attn_drop_rate=attn_drop_rate, proj_drop_rate=drop_rate,
                                   drop_path_rate=drop_path_rate)
        self.norm2 = norm_layer(embed_dims)
        self.ffn = FFN(embed_dims=embed_dims, feedforward_channels=feedforward_channels, num_fcs=2,
                       ffn_drop=drop_rate, dropout_layer=DropPath(drop_path_rate), act_layer=act_layer,
                       add_identity=True)

    def forward(self, x, hw_shape):
        identity = x
        x = self.norm1(x)
        x = self.attn(x, hw_shape)
        x = x + identity
        identity = x
        x = self.norm2(x)
        x = self.ffn(x, identity=identity)
        return x


class SwinBlockSequence(nn.Module):
    def __init__(self, embed_dims, num_heads, feedforward_channels, depth, window_size=7, qkv_bias=True,
                 qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, downsample=None,
                 act_layer=nn.GELU, norm_layer=nn.LayerNorm):
        super().__init__()
        if isinstance(drop_path_rate, list):
            drop_path_rates = drop_path_rate
            assert len(drop_path_rates) == depth
        else:
            drop_path_rates = [drop_path_rate for _ in range(depth)]
        self.blocks = nn.ModuleList()
        for i in range(depth):
            self.blocks.append(SwinBlock(
                embed_dims=embed_dims, num_heads=num_heads, feedforward_channels=feedforward_channels,
                window_size=window_size, shift=False if i % 2 == 0 else True, qkv_bias=qkv_bias, qk_scale=qk_scale,
                drop_rate=drop_rate, attn_drop_rate=attn_drop_rate, drop_path_rate=drop_path_rates[i],
                act_layer=act_layer, norm_layer=norm_layer))
        self.downsample = downsample

    def forward(self, x, hw_shape):
        for block in self.blocks:
            x = block(x, hw_shape)
        if self.downsample:
            x_down, down_hw_shape = self.downsample(x, hw_shape)
            return x_down, down_hw_shape, x, hw_shape
        return x, hw_shape, x, hw_shape


class SwinTransformer(nn.Module):
    def __init__(self, pretrain_img_size=224, in_channels=3, embed_dims=96, patch_size=4, window_size=7, mlp_ratio=4,
                 depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), strides=(4, 2, 2, 2), out_indices=(0, 1, 2, 3),
                 qkv_bias=True, qk_scale=None, patch_norm=True, drop_rate=0.0, attn_drop_rate=0.0,
                 drop_path_rate=0.1, use_abs_pos_embed=False, act_layer=nn.GELU, norm_layer=nn.LayerNorm,
                 frozen_stages=-1):
        super().__init__()
        self.frozen_stages = frozen_stages
        if isinstance(pretrain_img_size, int):
            pretrain_img_size = to_2tuple(pretrain_img_size)
        elif isinstance(pretrain_img_size, tuple):
            if len(pretrain_img_size) == 1:
                pretrain_img_size = to_2tuple(pretrain_img_size[0])
            assert len(pretrain_img_size) == 2
        num_layers = len(depths)
        self.out_indices = out_indices
        self.use_abs_pos_embed = use_abs_pos_embed
        assert strides[0] == patch_size, "Use non-overlapping patch embed."
        self.patch_embed = PatchEmbed(in_channels=in_channels, embed_dims=embed_dims, kernel_size=patch_size,
                                      stride=strides[0], norm_layer=norm_layer if patch_norm else None)
        if self.use_abs_pos_embed:
            patch_row = pretrain_img_size[0] // patch_size
            patch_col = pretrain_img_size[1] // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros((1, embed_dims, patch_row, patch_col)))
        self.drop_after_pos = nn.Dropout(p=drop_rate)
        total_depth = sum(depths)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, total_depth)]
        self.stages = nn.ModuleList()
        in_channels = embed_dims
        for i in range(num_layers):
            if i < num_layers - 1:
                downsample = PatchMerging(in_channels=in_channels, out_channels=2 * in_channels,
                                          stride=strides[i + 1], norm_layer=norm_layer if patch_norm else None)
            else:
                downsample = None
            self.stages.append(SwinBlockSequence(
                embed_dims=in_channels, num_heads=num_heads[i], feedforward_channels=mlp_ratio * in_channels,
                depth=depths[i], window_size=window_size, qkv_bias=qkv_bias, qk_scale=qk_scale,
                drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                drop_path_rate=dpr[sum(depths[:i]):sum(depths[:i + 1])], downsample=downsample,
                act_layer=act_layer, norm_layer=norm_layer))
            if downsample:
                in_channels = downsample.out_channels
        self.num_features = [int(embed_dims * 2**i) for i in range(num_layers)]
        for i in out_indices:  # a norm layer for each output
            self.add_module(f"norm{i}", norm_layer(self.num_features[i]))

    def train(self, mode=True):
        """Convert the model into training mode while keep layers freezed."""
        super().train(mode)
        self._freeze_stages()
        return self

    def _freeze_stages(self):
        if self.frozen_stages >= 0:
            self.patch_embed.eval()
            for param in self.patch_embed.parameters():
                param.requires_grad = False
            if self.use_abs_pos_embed:
                self.absolute_pos_embed.requires_grad = False
            self.drop_after_pos.eval()
        for i in range(1, self.frozen_stages + 1):
            if (i - 1) in self.out_indices:
                norm_layer = getattr(self, f"norm{i - 1}")
                norm_layer.eval()
                for param in norm_layer.parameters():
                    param.requires_grad = False
            m = self.stages[i - 1]
            m.eval()
            for param in m.parameters():
                param.requires_grad = False

    def init_weights(self):
        """The original's from-scratch branch (``init_cfg is None``); the children's init_weights are not called."""
        if self.use_abs_pos_embed:
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.02, a=-2.0, b=2.0)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0.0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.weight, 1.0)
                nn.init.constant_(m.bias, 0.0)

    def forward(self, x):
        x, hw_shape = self.patch_embed(x)
        if self.use_abs_pos_embed:
            # [1:3] of the [1, C, H, W] parameter is (C, H), as in the original: the embedding is interpolated
            # unless hw_shape happens to equal (C, H) (bicubic to the same size is the identity anyway).
            h, w = self.absolute_pos_embed.shape[1:3]
            if hw_shape[0] != h or hw_shape[1] != w:
                absolute_pos_embed = F.interpolate(self.absolute_pos_embed, size=hw_shape, mode="bicubic",
                                                   align_corners=False).flatten(2).transpose(1, 2)
            else:
                absolute_pos_embed = self.absolute_pos_embed.flatten(2).transpose(1, 2)
            x = x + absolute_pos_embed
        x = self.drop_after_pos(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw_shape, out, out_hw_shape = stage(x, hw_shape)
            if i in self.out_indices:
                norm_layer = getattr(self, f"norm{i}")
                out = norm_layer(out)
                out = out.view(-1, *out_hw_shape, self.num_features[i]).permute(0, 3, 1, 2).contiguous()
                outs.append(out)
        return outs


def swin_converter(ckpt):
    """mmdet's ``swin_converter``: official (Microsoft) keys -> mmdet keys, each prefixed ``backbone.``.

    Drops ``head.*``; ``layers`` -> ``stages``, ``attn.`` -> ``attn.w_msa.``, ``mlp.fc1.`` -> ``ffn.layers.0.0.``,
    ``mlp.fc2.`` -> ``ffn.layers.1.``, ``patch_embed.proj`` -> ``patch_embed.projection``; reorders the
    PatchMerging reduction / norm from the official [x0, x1, x2, x3] concat to nn.Unfold's channel-major order;
    any other key (``norm.*``, ``norm{i}.*``, ``absolute_pos_embed``) is kept. mmdet's ``init_weights`` then
    keeps only the ``backbone.``-prefixed keys and strips the prefix before ``load_state_dict``.
    """
    new_ckpt = {}

    def correct_unfold_reduction_order(x):
        out_channel, in_channel = x.shape
        x = x.reshape(out_channel, 4, in_channel // 4)
        x = x[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(out_channel, in_channel)
        return x

    def correct_unfold_norm_order(x):
        in_channel = x.shape[0]
        x = x.reshape(4, in_channel // 4)
        x = x[[0, 2, 1, 3], :].transpose(0, 1).reshape(in_channel)
        return x

    for k, v in ckpt.items():
        if k.startswith("head"):
            continue
        elif k.startswith("layers"):
            new_v = v
            if "attn." in k:
                new_k = k.replace("attn.", "attn.w_msa.")
            elif "mlp." in k:
                if "mlp.fc1." in k:
                    new_k = k.replace("mlp.fc1.", "ffn.layers.0.0.")
                elif "mlp.fc2." in k:
                    new_k = k.replace("mlp.fc2.", "ffn.layers.1.")
                else:
                    new_k = k.replace("mlp.", "ffn.")
            elif "downsample" in k:
                new_k = k
                if "reduction." in k:
                    new_v = correct_unfold_reduction_order(v)
                elif "norm." in k:
                    new_v = correct_unfold_norm_order(v)
            else:
                new_k = k
            new_k = new_k.replace("layers", "stages", 1)
        elif k.startswith("patch_embed"):
            new_v = v
            if "proj" in k:
                new_k = k.replace("proj", "projection")
            else:
                new_k = k
        else:
            new_v = v
            new_k = k
        new_ckpt["backbone." + new_k] = new_v
    return new_ckpt


if __name__ == "__main__":
    import official_swin_detection

    torch.manual_seed(0)
    net = SwinTransformer(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7).eval()
    for hw in ((224, 224), (200, 264)):
        with torch.no_grad():
            outs = net(torch.randn(2, 3, *hw))
        print(f"{hw}: outputs {[tuple(o.shape) for o in outs]}")
    sd = net.state_dict()
    for k in ("patch_embed.projection.weight", "stages.0.blocks.1.attn.w_msa.relative_position_bias_table",
              "stages.0.blocks.0.ffn.layers.0.0.weight", "stages.0.blocks.0.ffn.layers.1.weight",
              "stages.0.downsample.reduction.weight", "stages.0.downsample.norm.weight", "norm0.weight"):
        assert k in sd, k

    # The official detection backbone, random weights -> swin_converter -> this backbone: same outputs.
    for ape in (False, True):
        torch.manual_seed(1)
        cfg = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7, drop_path_rate=0.0,
                   ape=ape)
        det = official_swin_detection.SwinTransformer(**cfg).double().eval()
        with torch.no_grad():
            for p in det.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        converted = swin_converter(det.state_dict())
        state = {k[len("backbone."):]: v for k, v in converted.items() if k.startswith("backbone.")}
        mm = SwinTransformer(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7,
                             drop_path_rate=0.0, use_abs_pos_embed=ape).double().eval()
        own_index = {k: v.clone() for k, v in mm.state_dict().items() if k.endswith("relative_position_index")}
        assert all(torch.equal(v, state[k]) for k, v in own_index.items())  # double_step_seq + flip == official
        result = mm.load_state_dict(state, strict=True)
        print(f"ape={ape}: {len(det.state_dict())} official keys -> {len(state)} mmdet keys, strict load: {result}")
        for hw in ((224, 224), (200, 264)):
            img = torch.randn(2, 3, *hw, dtype=torch.float64)
            with torch.no_grad():
                a, b = det(img), mm(img)
            diffs = [(x - y).abs().max().item() for x, y in zip(a, b)]
            print(f"  {hw}: {[tuple(x.shape) for x in b]} max |diff| per stage {['%.1e' % d for d in diffs]}")
            assert len(a) == len(b) == 4 and all(x.shape == y.shape for x, y in zip(a, b))
            assert max(diffs) < 1e-5
    print("ok")
