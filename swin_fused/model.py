"""Swin Transformer (V1) modules: the official constructors, parameter names and state-dict keys.

Layout follows microsoft/Swin-Transformer ``models/swin_transformer.py`` so that official checkpoints load
with ``strict=True``. Inside, blocks work on channels-last maps ``[B, H, W, C]`` of any size and send their
window attention through :func:`swin_fused.window_attention`, which the backend switch routes to the fused
Triton op or the PyTorch path. ``semantics=`` chooses which library's rule decides a block's window and shift
at sizes other than the built one (:mod:`swin_fused.semantics`); the state-dict layout is the official one
whatever the semantics.
"""
from __future__ import annotations

import difflib
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint

from .functional import window_attention
from .geometry import padded_size, relative_position_index, same_index, shift_mask, to_2tuple
from .norm import layer_norm
from .reference import relative_position_bias
from .semantics import size_rule

__all__ = [
    "STATE_DICT_CONVERTERS",
    "stage_resolution",
    "Mlp",
    "DropPath",
    "WindowAttention",
    "SwinTransformerBlock",
    "SwinBlock",
    "PatchMerging",
    "PatchEmbed",
    "BasicLayer",
    "SwinTransformer",
]

Pair = Tuple[int, int]

#: Renamers of foreign state-dict layouts (timm, torchvision, HF, detection ...) onto the official keys, which
#: ``SwinTransformer._load_from_state_dict`` runs so that ``model.load_state_dict(foreign_sd)`` just works.
#: :mod:`swin_fused.interop` registers its one when the package is imported (this module never imports it).
STATE_DICT_CONVERTERS: List[Callable[[dict, str], None]] = []


def _reject_unknown_keywords(owner: str, kwargs: dict, valid: Iterable[str]) -> None:
    """A keyword no constructor of the official code takes is a TypeError naming it and the closest valid one,
    never silently ignored (``num_clases=10`` would otherwise build a 1000-class model)."""
    for name in kwargs:
        close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        if _FOREIGN_KEYWORDS.get(name):
            hint = f"; {_FOREIGN_KEYWORDS[name]}"
        raise TypeError(f"{owner}() got an unexpected keyword argument {name!r}{hint}")


#: Keywords of other libraries' constructors, and what to do instead.
_FOREIGN_KEYWORDS = {
    "always_partition": "timm's always_partition has no equivalent here: semantics='detection' never clamps",
    "stochastic_depth_prob": "torchvision's stochastic_depth_prob is drop_path_rate here",
    "pretrained": "weights load with swin_fused.load_checkpoint(model, path)",
}


def _fixed_semantics(self, value) -> None:
    raise AttributeError(f"semantics is fixed at construction (every block decided its rule then); build the "
                         f"model with semantics={value!r} instead of assigning it")


def _side(pair: Pair):
    """An official attribute value: the int of a square window or shift, the pair otherwise."""
    return pair[0] if pair[0] == pair[1] else pair


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth per sample: zero a sample's residual branch with probability ``drop_prob``."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


class DropPath(nn.Module):
    """Stochastic depth (drop path) on the residual branch."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """Linear(C, hidden) -> act -> drop -> Linear(hidden, C) -> drop."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def _check_not_empty(x: torch.Tensor) -> None:
    """Blocks and merges take ``[B, H, W, C]`` maps or ``[B, L, C]`` tokens with every dimension >= 1."""
    if min(x.shape[:-1]) <= 0:
        layout = ("non-empty [B, L, C] tokens (B, L >= 1)" if x.dim() == 3
                  else "a non-empty [B, H, W, C] map (B, H, W >= 1)")
        raise ValueError(f"expected {layout}, got shape {tuple(x.shape)}")


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def write_buffers(module: nn.Module, values: Dict[str, torch.Tensor], like: Optional[torch.Tensor] = None) -> None:
    """Write standard values (``module.derived_buffers()``, or some of them) into a module's buffers.

    The buffers are functions of the module's geometry, so they are rebuilt rather than trusted wherever the
    storage may not hold them: a model built on the meta device and materialised with ``to_empty`` has garbage
    there, and one loaded with ``load_state_dict(..., assign=True)`` from a dict without them still has meta
    tensors. A meta buffer is replaced by the value on the device of ``like`` (default: the module's first
    non-meta parameter), in its dtype where both are floating; it stays meta where there is no such tensor.
    """
    with torch.no_grad():
        for name, value in values.items():
            own = module._buffers.get(name)
            if own is None:
                continue
            if not own.is_meta:
                own.copy_(value)
                continue
            if like is None:
                like = next((p for p in module.parameters() if not p.is_meta), None)
            if like is not None:
                dtype = like.dtype if like.is_floating_point() and own.is_floating_point() else own.dtype
                module._buffers[name] = value.to(device=like.device, dtype=dtype, copy=True)


def _refuse_nonstandard_index(module: nn.Module, state_dict: dict, prefix: str, error_msgs: List[str]) -> None:
    # The fused kernels compute the standard index from coordinates, so a checkpoint whose index differs cannot
    # be honoured. Compared with the formula, not with the module's buffer (garbage after ``to_empty``). One of
    # another shape is dropped: another window's (its table is reported) or one guessed for a clamped table.
    key = prefix + "relative_position_index"
    incoming = state_dict.get(key)
    standard = module.derived_buffers()["relative_position_index"]
    if isinstance(incoming, torch.Tensor) and incoming.shape != standard.shape:
        state_dict.pop(key)
    elif isinstance(incoming, torch.Tensor) and not same_index(incoming, standard):
        error_msgs.append(f"{key}: differs from the standard relative position index of window "
                          f"{module.window_size} ((yi - yj + Wh - 1) * (2Ww - 1) + xi - xj + Ww - 1), which the "
                          f"fused kernels compute; such a checkpoint cannot be loaded")
        state_dict.pop(key)


def _restore_derived(module: nn.Module, state_dict: dict, prefix: str, missing_keys: List[str]) -> None:
    # After the module's own entries are read (its children's come later): the derived buffers the dict did not
    # supply, or that were refused, are rebuilt, and are not reported missing (timm's and other libraries' dicts
    # omit them). A meta buffer (assign=True) takes the device and floating dtype of the dict's tensors for this
    # module, which its parameters are about to take.
    absent = {name: value for name, value in module.derived_buffers().items() if prefix + name not in state_dict}
    if not absent:
        return
    like = None
    if any(module._buffers[name] is not None and module._buffers[name].is_meta for name in absent):
        mine = [v for k, v in state_dict.items() if k.startswith(prefix) and isinstance(v, torch.Tensor)
                and not v.is_meta]
        like = next((v for v in mine if v.is_floating_point()), next(iter(mine), None))
    write_buffers(module, absent, like)
    for name in absent:
        if prefix + name in missing_keys:
            missing_keys.remove(prefix + name)


def materialising_apply(self: nn.Module, fn, recurse: bool = True) -> nn.Module:
    """``nn.Module._apply`` (behind ``to``, ``half``, ``to_empty`` ...), then each derived buffer that was on the
    meta device and no longer is written: materialised from nothing (``to_empty``, called on this module or on
    anything holding it), its storage is garbage, and loaders that fill a dict's missing keys from the model's
    own tensors (``torch.distributed.checkpoint``'s ``set_model_state_dict``) must find the standard values."""
    was_meta = [name for name, buf in self._buffers.items() if buf is not None and buf.is_meta]
    nn.Module._apply(self, fn, recurse)
    if was_meta:
        values = self.derived_buffers()
        write_buffers(self, {name: values[name] for name in was_meta
                             if name in values and not self._buffers[name].is_meta})
    return self


def shift_mask_buffer(rule, input_resolution: Pair, built, device=None) -> Optional[torch.Tensor]:
    """The official block's ``attn_mask`` at ``input_resolution`` (None where the rule keeps none or the block
    is not shifted there): kept for checkpoint compatibility only, since the fused and PyTorch paths derive the
    mask from indices for whatever size they are given."""
    if not (rule.keeps_mask_buffer and any(built.shift)):
        return None
    H, W = input_resolution
    ws = built.window
    return shift_mask(padded_size(H, ws[0]), padded_size(W, ws[1]), ws, built.shift, device=device)


class WindowAttention(nn.Module):
    """Window multi-head self-attention with relative position bias (W-MSA / SW-MSA).

    Official constructor and parameters (``qkv``, ``proj``, ``relative_position_bias_table``, buffer
    ``relative_position_index``). ``forward(x, mask)`` keeps the official window-batch interface;
    :meth:`forward_map` is the fused path the package's blocks use.

    Args:
        dim: channels C.
        window_size: ``(Wh, Ww)`` (an int is accepted) the table is built for.
        num_heads: heads; must divide ``dim``.
        qkv_bias: learnable bias on q, k, v.
        qk_scale: overrides ``head_dim ** -0.5``.
        attn_drop: dropout on attention probabilities.
        proj_drop: dropout on the output.
    """

    def __init__(self, dim, window_size, num_heads, qkv_bias=True, qk_scale=None, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        _check_positive_int("dim", dim)
        _check_positive_int("num_heads", num_heads)
        if dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide dim={dim}")
        self.dim = dim
        self.window_size = to_2tuple(window_size, "window_size")
        if min(self.window_size) <= 0:
            raise ValueError(f"window_size must be positive, got {window_size!r}")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = qk_scale or head_dim**-0.5

        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        # On the default device like the rest (a `with torch.device(...)` block); the cached index is on CPU.
        index = relative_position_index(self.window_size, torch.get_default_device())
        self.register_buffer("relative_position_index", index.clone())

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Official interface. x: ``[B * nW, N, C]`` windows; mask: ``[nW, N, N]`` (0 / -100) or None."""
        N_expected = self.window_size[0] * self.window_size[1]
        if x.dim() != 3 or x.shape[1] != N_expected or x.shape[2] != self.dim:
            raise ValueError(f"expected windows [B*nW, N={N_expected}, C={self.dim}] (window {self.window_size}), "
                             f"got shape {tuple(x.shape)}; use forward_map for [B, H, W, C] maps")
        B_, N, C = x.shape
        if mask is not None and (mask.dim() != 3 or mask.shape[1:] != (N, N) or B_ % mask.shape[0]):
            raise ValueError(f"mask must be [nW, N, N] = [nW, {N}, {N}] with nW dividing the {B_} windows of x, "
                             f"got shape {tuple(mask.shape)}")
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = attn + relative_position_bias(self.relative_position_bias_table, self.window_size).unsqueeze(0)
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
    ) -> torch.Tensor:
        """Fused path on a whole map: ``[B, H, W, C] -> [B, H, W, C]`` (qkv Linear, window attention, proj).

        ``window_size`` defaults to the table's window; a smaller one uses the table's central part.
        """
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"expected a [B, H, W, C={self.dim}] map, got shape {tuple(x.shape)}")
        window = self.window_size if window_size is None else to_2tuple(window_size, "window_size")
        if min(window) <= 0:
            raise ValueError(f"window_size must be positive, got {window}")
        qkv = self.qkv(x)  # B, H, W, 3C: one GEMM on the natural layout (a Linear commutes with the roll)
        out = window_attention(
            qkv,
            self.relative_position_bias_table,
            self.num_heads,
            window,
            shift_size,
            scale=self.scale,
            pad_qkv=self.qkv.bias,  # q/k/v of padding tokens, used only where the map is padded
            shift_before_pad=shift_before_pad,
            table_window=self.window_size,
            dropout_p=self.attn_drop.p if self.training else 0.0,
        )
        return self.proj_drop(self.proj(out))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}"

    _apply = materialising_apply

    def derived_buffers(self) -> Dict[str, torch.Tensor]:
        """Standard values (CPU) of the buffers this module derives from its window: the relative position index."""
        return {"relative_position_index": relative_position_index(self.window_size)}

    def reset_parameters(self) -> None:
        """The constructor's initialisation of this module's own state (truncated-normal bias table, standard
        index); its Linears have their own. For modules materialised with ``to_empty``."""
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        write_buffers(self, self.derived_buffers())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # The index is derivable, so a dict may omit it (timm's do); one that differs from the standard formula
        # is refused. (nn.Module named: V2's attention shares this.)
        _refuse_nonstandard_index(self, state_dict, prefix, error_msgs)
        nn.Module._load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                                        unexpected_keys, error_msgs)
        _restore_derived(self, state_dict, prefix, missing_keys)

    def flops(self, N: int) -> int:
        """Multiply-adds of one window of N tokens (the official count)."""
        flops = N * self.dim * 3 * self.dim
        flops += self.num_heads * N * (self.dim // self.num_heads) * N
        flops += self.num_heads * N * N * (self.dim // self.num_heads)
        flops += N * self.dim * self.dim
        return flops


class SwinTransformerBlock(nn.Module):
    """Swin Transformer block: ``x + drop_path(attn(norm1(x)))``, then ``x + drop_path(mlp(norm2(x)))``.

    Official constructor, plus ``semantics`` (:mod:`swin_fused.semantics`). Accepts ``[B, H, W, C]`` maps of
    any size, or the official ``[B, L, C]`` with ``L = H * W`` of ``input_resolution``. The block keeps the
    window and shift it was configured with and decides, on each forward, what it uses on the map it gets
    (:meth:`window_and_shift`). ``window_size`` / ``shift_size`` hold what it uses at ``input_resolution``
    (the official attributes: under the official rule a map no larger than the window is one unshifted
    window there).
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
        qk_scale=None,
        drop=0.0,
        attn_drop=0.0,
        drop_path=0.0,
        act_layer=nn.GELU,
        norm_layer=nn.LayerNorm,
        fused_window_process=False,
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
        self.attn = WindowAttention(
            dim, window_size=self.built.table_window, num_heads=num_heads, qkv_bias=qkv_bias,
            qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

        self.register_buffer("attn_mask", shift_mask_buffer(self.rule, self.input_resolution, self.built))

    _apply = materialising_apply

    def derived_buffers(self) -> Dict[str, torch.Tensor]:
        """Standard values (CPU) of the buffers this block derives from its geometry: ``attn_mask``, if it has one."""
        if self.attn_mask is None:
            return {}
        return {"attn_mask": shift_mask_buffer(self.rule, self.input_resolution, self.built, device="cpu")}

    def reset_parameters(self) -> None:
        """Rebuild this block's own state (the mask buffer); its children have their own. For ``to_empty``."""
        write_buffers(self, self.derived_buffers())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # The mask is derived from this block's geometry (and the kernels rebuild it from indices): a dict may
        # omit it, and one saved at another resolution (other shape, or a block shifted there but not here)
        # is ignored rather than reported. The block rebuilds its own. (nn.Module named: V2's block shares this.)
        state_dict.pop(prefix + "attn_mask", None)
        nn.Module._load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                                        unexpected_keys, error_msgs)
        _restore_derived(self, state_dict, prefix, missing_keys)

    semantics = property(lambda self: self.rule.name, _fixed_semantics,
                         doc="The size rule's name (fixed at construction).")

    def window_and_shift(self, H: int, W: int) -> Tuple[Pair, Pair]:
        """The ``(window, shift)`` this block uses on an ``H x W`` map, by its semantics' rule (host ints)."""
        return self.rule.at(H, W, self.configured, self.built)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (3, 4) or x.shape[-1] != self.dim:
            raise ValueError(f"expected a [B, H, W, C={self.dim}] map or [B, L, C={self.dim}] tokens, "
                             f"got shape {tuple(x.shape)}")
        _check_not_empty(x)
        if x.dim() == 3:  # official [B, L, C]
            B, L, C = x.shape
            H, W = self.input_resolution
            if L != H * W:
                raise ValueError(f"input has {L} tokens, expected H*W = {H}*{W} = {H * W} "
                                 f"for input_resolution {self.input_resolution}; pass a [B, H, W, C] map instead")
            return self._forward_map(x.view(B, H, W, C)).view(B, L, C)
        return self._forward_map(x)

    def _forward_map(self, x: torch.Tensor) -> torch.Tensor:
        window, shift = self.window_and_shift(x.shape[1], x.shape[2])
        # Both norms feed a Linear (qkv, fc1): fused, they write its autocast dtype directly (swin_fused.norm).
        x = x + self.drop_path(self.attn.forward_map(layer_norm(self.norm1, x, feeds_linear=True), window, shift,
                                                     self.rule.shift_before_pad))
        return x + self.drop_path(self.mlp(layer_norm(self.norm2, x, feeds_linear=True)))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, input_resolution={self.input_resolution}, num_heads={self.num_heads}, "
                f"window_size={self.window_size}, shift_size={self.shift_size}, mlp_ratio={self.mlp_ratio}"
                + (f", semantics={self.semantics}" if self.semantics != "official" else ""))

    def flops(self, resolution: Optional[Pair] = None) -> int:
        """Multiply-adds (official count) at ``resolution`` (default ``input_resolution``)."""
        H, W = resolution or self.input_resolution
        (wh, ww), _ = self.window_and_shift(H, W)
        flops = self.dim * H * W  # norm1
        nW = padded_size(H, wh) * padded_size(W, ww) / (wh * ww)
        flops += nW * self.attn.flops(wh * ww)
        flops += 2 * H * W * self.dim * self.dim * self.mlp_ratio  # mlp
        flops += self.dim * H * W  # norm2
        return int(flops)


#: The name the package's docs use for the fused block.
SwinBlock = SwinTransformerBlock


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat ``[x0, x1, x2, x3]`` -> LayerNorm(4C) -> Linear(4C, 2C, bias=False).

    ``[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), 2C]``; an odd H or W is zero-padded at the bottom/right.
    """

    def __init__(self, input_resolution, dim, norm_layer=nn.LayerNorm):
        super().__init__()
        self.input_resolution = to_2tuple(input_resolution, "input_resolution")
        self.dim = dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

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
            out = self.forward(x.view(B, H, W, C))
            return out.reshape(B, -1, 2 * C)
        B, H, W, C = x.shape
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
            H, W = H + H % 2, W + W % 2
        # The official cat([x0, x1, x2, x3], -1) of x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2] and
        # x[:, 1::2, 1::2]: channel block 2 * (column offset) + (row offset). One permuted copy; the four strided
        # slices' backward would zero-fill and copy the whole map eight times.
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).reshape(B, H // 2, W // 2, 4 * C)
        return self.reduction(layer_norm(self.norm, x, feeds_linear=True))

    def extra_repr(self) -> str:
        return f"input_resolution={self.input_resolution}, dim={self.dim}"

    def flops(self, resolution: Optional[Pair] = None) -> int:
        H, W = resolution or self.input_resolution
        return H * W * self.dim + (H // 2) * (W // 2) * 4 * self.dim * 2 * self.dim


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks alternating W-MSA (even j) and SW-MSA (odd j), then optional merging."""

    def __init__(
        self,
        dim,
        input_resolution,
        depth,
        num_heads,
        window_size,
        mlp_ratio=4.0,
        qkv_bias=True,
        qk_scale=None,
        drop=0.0,
        attn_drop=0.0,
        drop_path=0.0,
        norm_layer=nn.LayerNorm,
        downsample=None,
        use_checkpoint=False,
        fused_window_process=False,
        semantics="official",
    ):
        super().__init__()
        self.dim = dim
        self.input_resolution = to_2tuple(input_resolution, "input_resolution")
        self.depth = depth
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            [
                SwinTransformerBlock(
                    dim=dim, input_resolution=input_resolution, num_heads=num_heads, window_size=window_size,
                    shift_size=0 if (i % 2 == 0) else window_size // 2, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                    qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                    drop_path=drop_path[i] if isinstance(drop_path, (list, tuple)) else drop_path,
                    norm_layer=norm_layer, semantics=semantics,
                )
                for i in range(depth)
            ]
        )
        self.downsample = downsample(input_resolution, dim=dim, norm_layer=norm_layer) if downsample else None

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's blocks on a ``[B, H, W, C]`` map, before merging."""
        for blk in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():
                x = checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_blocks(x)
        return self.downsample(x) if self.downsample is not None else x

    def extra_repr(self) -> str:
        return f"dim={self.dim}, input_resolution={self.input_resolution}, depth={self.depth}"


class PatchEmbed(nn.Module):
    """Patch partition + linear embedding: Conv2d(k = s = patch) -> ``[B, H/p, W/p, C]`` -> LayerNorm.

    Images whose sides are not multiples of the patch are zero-padded at the bottom/right (``pad=True``: the
    official code, the detection backbone, HF) or lose the remainder to the strided convolution (``pad=False``:
    torchvision, timm).
    """

    def __init__(self, img_size=224, patch_size=4, in_chans=3, embed_dim=96, norm_layer=None, pad=True):
        super().__init__()
        self.pad = pad
        img_size, patch_size = to_2tuple(img_size, "img_size"), to_2tuple(patch_size, "patch_size")
        self.img_size = img_size
        self.patch_size = patch_size
        self.patches_resolution = (img_size[0] // patch_size[0], img_size[1] // patch_size[1])
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images [B, {self.in_chans}, H, W], got shape {tuple(x.shape)}")
        if min(x.shape[0], x.shape[2], x.shape[3]) <= 0:
            raise ValueError(f"expected a non-empty batch of images [B, {self.in_chans}, H, W] (B, H, W >= 1), "
                             f"got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected floating-point images (the model's dtype, "
                            f"{self.proj.weight.dtype}), got {x.dtype}: convert and normalise first, e.g. "
                            f"x.float() / 255 followed by the mean/std normalisation the weights were trained with")
        H, W = x.shape[2:]
        ph, pw = self.patch_size
        if self.pad and (H % ph or W % pw):
            x = F.pad(x, (0, -W % pw, 0, -H % ph))
        elif H < ph or W < pw:
            raise ValueError(f"images of {H}x{W} are smaller than one {ph}x{pw} patch")
        x = self.proj(x).permute(0, 2, 3, 1)  # B, H/p, W/p, C
        return self.norm(x) if self.norm is not None else x

    def flops(self, resolution: Optional[Pair] = None) -> int:
        Ho, Wo = resolution or self.patches_resolution
        flops = Ho * Wo * self.embed_dim * self.in_chans * (self.patch_size[0] * self.patch_size[1])
        if self.norm is not None:
            flops += Ho * Wo * self.embed_dim
        return flops


class SwinTransformer(nn.Module):
    """Swin Transformer (Liu et al., arXiv 2103.14030), official constructor and state-dict layout.

    Args:
        img_size: nominal input size (the built size: sets the stored ``attn_mask`` buffers, the FLOP count and
            what rules decided at construction see); any size works at run time.
        patch_size, in_chans, num_classes, embed_dim, depths, num_heads, window_size, mlp_ratio, qkv_bias,
        qk_scale, drop_rate, attn_drop_rate, drop_path_rate, norm_layer, ape, patch_norm, use_checkpoint,
        fused_window_process: as the official ``SwinTransformer`` (the last does nothing here: the fused op
            replaces the official fused window-process kernel).
        semantics: whose rules decide window and shift at sizes other than the built one, and whether the
            patch embedding pads: ``"official"`` (default), ``"detection"`` (also ``"mmdet"``, ``"mmseg"``),
            ``"torchvision"``, ``"timm"`` or ``"transformers"``; see :mod:`swin_fused.semantics`. With the
            weights of that library, the outputs are that library's at every input size.

    Any other keyword is a TypeError naming it and the closest valid one.
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
        qk_scale=None,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.1,
        norm_layer=nn.LayerNorm,
        ape=False,
        patch_norm=True,
        use_checkpoint=False,
        fused_window_process=False,
        semantics="official",
        **kwargs,
    ):
        super().__init__()
        _reject_unknown_keywords(type(self).__name__, kwargs, _CONSTRUCTOR_KEYWORDS)
        rule = size_rule(semantics)
        self._semantics = rule.name
        _check_config(img_size, patch_size, in_chans, num_classes, embed_dim, depths, num_heads, window_size)
        _check_rates(mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate)
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
        patches_resolution = self.patch_embed.patches_resolution
        self.patches_resolution = patches_resolution

        if self.ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, num_patches, embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(p=drop_rate)

        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, sum(depths), device="cpu")]
        self.layers = nn.ModuleList()
        for i_layer in range(self.num_layers):
            layer = BasicLayer(
                dim=int(embed_dim * 2**i_layer),
                input_resolution=stage_resolution(patches_resolution, i_layer, rule.name == "official"),
                depth=depths[i_layer],
                num_heads=num_heads[i_layer],
                window_size=window_size,
                mlp_ratio=self.mlp_ratio,
                qkv_bias=qkv_bias,
                qk_scale=qk_scale,
                drop=drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i_layer]) : sum(depths[: i_layer + 1])],
                norm_layer=norm_layer,
                downsample=PatchMerging if (i_layer < self.num_layers - 1) else None,
                use_checkpoint=use_checkpoint,
                semantics=rule,
            )
            self.layers.append(layer)

        self.norm = norm_layer(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def reset_parameters(self) -> None:
        """Initialise every parameter and buffer as the constructor does (the same distributions, not the same
        draws): for a model built on the meta device (``with torch.device("meta"):``) and materialised with
        ``to_empty``. Loading a checkpoint instead needs no call: loading rebuilds the derived buffers."""
        with torch.no_grad():
            for m in self.modules():  # each module's own state: Linear/Conv/LayerNorm defaults, tables, buffers
                if m is not self and callable(getattr(m, "reset_parameters", None)):
                    m.reset_parameters()
            if self.ape:
                nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
            self.apply(SwinTransformer._init_weights)
            for layer in self.layers:
                if hasattr(layer, "_init_respostnorm"):  # V2: the post-norms start at zero
                    layer._init_respostnorm()

    semantics = property(lambda self: self._semantics, _fixed_semantics,
                         doc="The size rule's name (fixed at construction).")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # Runs before the children read the dict: rename a recognisably foreign dict (timm, torchvision, HF, ...)
        # to official keys so that model.load_state_dict(foreign_sd) just works. (nn.Module named: V2 and the
        # backbone share this.)
        for convert in STATE_DICT_CONVERTERS:
            convert(state_dict, prefix)
        nn.Module._load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                                        unexpected_keys, error_msgs)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"absolute_pos_embed"}

    @torch.jit.ignore
    def no_weight_decay_keywords(self):
        return {"relative_position_bias_table"}

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # B, H, W, C
        if self.ape:
            B, H, W, C = x.shape
            if (H, W) != tuple(self.patches_resolution):
                raise ValueError(f"absolute position embedding is built for {self.patches_resolution} patches, "
                                 f"got a {H}x{W} patch map")
            x = x + self.absolute_pos_embed.view(1, H, W, C)
        return self.pos_drop(x)

    def forward_pyramid(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Feature pyramid for detection/segmentation: each stage's output map (before merging), NCHW.

        ``[B, 3, H, W] -> [[B, C, H/4, W/4], [B, 2C, H/8, W/8], [B, 4C, H/16, W/16], [B, 8C, H/32, W/32]]``
        (sizes rounded up).
        """
        x = self._embed(x)
        outs = []
        for layer in self.layers:
            x = layer.forward_blocks(x)
            outs.append(x.permute(0, 3, 1, 2).contiguous())
            if layer.downsample is not None:
                x = layer.downsample(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W] -> [B, num_features]``: final norm, then average over tokens (as official)."""
        x = self._embed(x)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x).flatten(1, 2)  # B, L, C
        return torch.flatten(self.avgpool(x.transpose(1, 2)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def flops(self, img_size: Optional[Sequence[int]] = None) -> int:
        """Multiply-adds of one forward pass (the paper's convention), at ``img_size`` or the nominal size."""
        from .flops import model_flops

        return model_flops(self, img_size)


#: What the official SwinTransformer takes (plus ``semantics``): anything else is a TypeError.
_CONSTRUCTOR_KEYWORDS = ("img_size", "patch_size", "in_chans", "num_classes", "embed_dim", "depths", "num_heads",
                         "window_size", "mlp_ratio", "qkv_bias", "qk_scale", "drop_rate", "attn_drop_rate",
                         "drop_path_rate", "norm_layer", "ape", "patch_norm", "use_checkpoint", "fused_window_process",
                         "semantics")


def stage_resolution(patches_resolution: Pair, stage: int, floor: bool) -> Pair:
    """Map size of ``stage`` at the built size: the official code divides the patch grid by 2^stage (it only
    runs divisible sizes); merging pads odd sides, so the map really is the ceiling (what timm builds with)."""
    scale = 2**stage
    if floor:
        return patches_resolution[0] // scale, patches_resolution[1] // scale
    return -(-patches_resolution[0] // scale), -(-patches_resolution[1] // scale)


def _check_config(img_size, patch_size, in_chans, num_classes, embed_dim, depths, num_heads, window_size):
    for name, value in (("in_chans", in_chans), ("embed_dim", embed_dim), ("window_size", window_size)):
        _check_positive_int(name, value)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
    if len(depths) != len(num_heads) or len(depths) == 0:
        raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} must have the same, "
                         f"non-zero length")
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
            raise ValueError(f"depths[{i}] must be an int >= 0, got {depth!r}")
        _check_positive_int(f"num_heads[{i}]", heads)
        dim = embed_dim * 2**i
        if dim % heads:
            raise ValueError(f"stage {i}: num_heads={heads} must divide its dim embed_dim*2^{i}={dim}")
    patch, img = to_2tuple(patch_size, "patch_size"), to_2tuple(img_size, "img_size")
    if min(patch) <= 0:
        raise ValueError(f"patch_size must be positive, got {patch_size!r}")
    if img[0] < patch[0] or img[1] < patch[1]:
        raise ValueError(f"img_size {img} must be at least patch_size {patch} (it sets the nominal patch grid; "
                         f"any image size works at run time)")


def _check_rates(mlp_ratio, drop_path_rate):
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not mlp_ratio > 0:
        raise ValueError(f"mlp_ratio must be a positive number, got {mlp_ratio!r}")
    if isinstance(drop_path_rate, bool) or not isinstance(drop_path_rate, (int, float)) \
            or not 0 <= drop_path_rate <= 1:
        raise ValueError(f"drop_path_rate must be a number in [0, 1], got {drop_path_rate!r}")
