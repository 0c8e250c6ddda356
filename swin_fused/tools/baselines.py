"""What the fused kernels are measured against: window-attention implementations and whole-model builders.

Op implementations (all ``fn(qkv, table, shape, scale=None) -> out`` on a ``[B, H, W, 3C]`` map):

- ``fused``: :func:`swin_fused.window_attention` on the Triton backend (CUDA only in benchmarks);
- ``torch_path``: the same call on the package's PyTorch backend (:mod:`swin_fused.torch_path`);
- ``reference``: :func:`swin_fused.reference.window_attention_reference`, the spec the tests use: roll,
  partition, matmul, bias, mask, softmax, matmul, reverse, as the official code does it;
- ``sdpa``: the reference's data movement with ``F.scaled_dot_product_attention`` and the bias + shift mask
  materialized as one ``[B*nW, heads, N, N]`` additive mask (timm's fused-attention path);
- ``flex``: FlexAttention with a ``score_mod`` adding bias and mask from ``[heads, N, N]`` / ``[nW, N, N]``
  tensors (CUDA only, compiled).

Swin V2 op implementations (``OP_IMPLS_V2``, all ``fn(qkv, table, cosine_scale, shape) -> out``), where ``table``
is the continuous position bias MLP's output ``[(2Wh-1)(2Ww-1), heads]`` *before* ``16 * sigmoid`` and
``cosine_scale`` the ``[heads]`` temperature ``exp(clamp(logit_scale, max=log 100))``, as a V2 model computes them
on each call (the MLP and the clamp / exp of ``heads`` values are left out of every implementation alike):

- ``fused`` / ``torch_path``: :func:`swin_fused.window_attention` with ``cosine_scale=`` and the table
  ``16 * sigmoid(table)``, on the Triton / PyTorch backend (what ``swin_fused.optimize`` runs);
- ``library``: timm's and torchvision's own V2 attention, transcribed: pad, roll, partition, normalize q and k,
  matmul, ``* logit_scale``, ``+ 16 * sigmoid(bias)`` (gathered, then the sigmoid, as they do), ``+ mask``,
  softmax, matmul, reverse; for half inputs under autocast, as those models train (the ``N x N`` scores then
  become fp32 at ``* logit_scale``, an fp32 parameter);
- ``sdpa``: q and k normalised, q times the per-head temperature, ``F.scaled_dot_product_attention(q, k, v,
  attn_mask=bias + mask, scale=1.0)`` with the bias + shift mask materialized ``[B*nW, heads, N, N]``.

Model builders give the package's model and timm's / torchvision's equivalents of a named config, V1 or V2
(timm's ``swinv2_*`` and torchvision's ``swin_v2_t/s/b`` for the official V2 names; ``ours`` is then the drop-in
``swin_fused.SwinTransformerV2``).
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..backend import use_backend
from .costs import OpShape
from ..functional import window_attention
from ..geometry import pad_map, padded_size, shift_mask, window_partition, window_reverse
from ..reference import relative_position_bias, window_attention_reference

__all__ = [
    "OP_IMPLS",
    "op_unavailable_reason",
    "make_op_inputs",
    "MODEL_SOURCES",
    "TORCHVISION_NAMES",
    "build_model",
    "model_unavailable_reason",
    "OP_IMPLS_V2",
    "make_v2_op_inputs",
]

OpFn = Callable[..., torch.Tensor]


def _fused(qkv, table, shape: OpShape, scale=None):
    with use_backend("triton"):
        return window_attention(qkv, table, shape.heads, shape.window, shape.shift, scale)


def _torch_path(qkv, table, shape: OpShape, scale=None):
    with use_backend("torch"):
        return window_attention(qkv, table, shape.heads, shape.window, shape.shift, scale)


def _reference(qkv, table, shape: OpShape, scale=None):
    return window_attention_reference(qkv, table, shape.heads, shape.window, shape.shift, scale)


def _partition_qkv(qkv: torch.Tensor, shape: OpShape):
    """Pad, roll, partition as the reference does; q, k, v ``[B*nW, heads, N, hd]``."""
    B, H, W, _ = qkv.shape
    (wh, ww), (sh, sw) = shape.window, shape.shift
    Hp, Wp = padded_size(H, wh), padded_size(W, ww)
    x = pad_map(qkv, Hp, Wp)
    if sh or sw:
        x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
    windows = window_partition(x, shape.window)  # B*nW, N, 3C
    q, k, v = windows.view(windows.shape[0], wh * ww, 3, shape.heads, shape.head_dim).permute(2, 0, 3, 1, 4)
    return q, k, v, Hp, Wp


def _merge_windows(out: torch.Tensor, shape: OpShape, B: int, H: int, W: int, Hp: int, Wp: int):
    """``[B*nW, heads, N, hd]`` -> ``[B, H, W, C]``: reverse partition, roll back, crop."""
    out = out.transpose(1, 2).reshape(out.shape[0], -1, shape.dim)
    x = window_reverse(out, shape.window, Hp, Wp)
    if any(shape.shift):
        x = torch.roll(x, shifts=shape.shift, dims=(1, 2))
    return x[:, :H, :W].contiguous()


def _sdpa_windows(q, k, v, table, shape: OpShape, B: int, H: int, W: int, Hp: int, Wp: int, scale):
    """SDPA over partitioned windows with the bias (``table``) + shift mask materialized ``[B*nW, heads, N, N]``,
    merged back to ``[B, H, W, C]``."""
    N = q.shape[2]
    mask = relative_position_bias(table, shape.window).to(q.dtype).unsqueeze(0)  # 1, heads, N, N
    if any(shape.shift):
        shifted = shift_mask(Hp, Wp, shape.window, shape.shift, device=q.device, dtype=q.dtype)  # nW, N, N
        mask = (mask + shifted.unsqueeze(1)).unsqueeze(0).expand(B, -1, -1, -1, -1).reshape(-1, shape.heads, N, N)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return _merge_windows(out, shape, B, H, W, Hp, Wp)


def _sdpa(qkv, table, shape: OpShape, scale=None):
    q, k, v, Hp, Wp = _partition_qkv(qkv, shape)
    return _sdpa_windows(q, k, v, table, shape, *qkv.shape[:3], Hp, Wp, scale)


def _flex_core(q, k, v, bias, region_mask: Optional[torch.Tensor], scale: Optional[float]):
    """FlexAttention with bias ``[heads, N, N]`` and an optional region mask ``[nW, N, N]`` (batch = B * nW)."""
    from torch.nn.attention.flex_attention import flex_attention

    if region_mask is None:
        def score_mod(score, b, h, q_idx, kv_idx):
            return score + bias[h, q_idx, kv_idx]
    else:
        n_win = region_mask.shape[0]

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + bias[h, q_idx, kv_idx] + region_mask[b % n_win, q_idx, kv_idx]
    return flex_attention(q, k, v, score_mod=score_mod, scale=scale)


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    # Compiled once; Dynamo specializes per shape (dynamic=False), the FlexAttention kernel is generated inside.
    return torch.compile(_flex_core, dynamic=False)


def _flex(qkv, table, shape: OpShape, scale=None):
    B, H, W, _ = qkv.shape
    q, k, v, Hp, Wp = _partition_qkv(qkv, shape)
    bias = relative_position_bias(table, shape.window)  # heads, N, N (differentiable)
    region_mask = (shift_mask(Hp, Wp, shape.window, shape.shift, device=qkv.device) if any(shape.shift)
                   else None)  # nW, N, N
    out = _compiled_flex()(q.contiguous(), k.contiguous(), v.contiguous(), bias, region_mask, scale)
    return _merge_windows(out, shape, B, H, W, Hp, Wp)


OP_IMPLS: Dict[str, OpFn] = {
    "fused": _fused,
    "torch_path": _torch_path,
    "reference": _reference,
    "sdpa": _sdpa,
    "flex": _flex,
}


# ---------------------------------------------------------------------------------------------- Swin V2


def _v2_table(table: torch.Tensor) -> torch.Tensor:
    """The bias table the op takes: ``16 * sigmoid`` of the position-bias MLP's output (``optimize``'s
    ``v2_terms`` does the same on the ``[rows, heads]`` table)."""
    return 16 * torch.sigmoid(table)


def _fused_v2(qkv, table, cosine_scale, shape: OpShape):
    return window_attention(qkv, _v2_table(table), shape.heads, shape.window, shape.shift,
                            cosine_scale=cosine_scale, backend="triton")


def _torch_path_v2(qkv, table, cosine_scale, shape: OpShape):
    return window_attention(qkv, _v2_table(table), shape.heads, shape.window, shape.shift,
                            cosine_scale=cosine_scale, backend="torch")


def _library_v2(qkv, table, cosine_scale, shape: OpShape):
    """timm's ``WindowAttention.forward`` / torchvision's ``shifted_window_attention`` (V2) around the qkv and
    proj Linears, per window, in their order of operations."""
    half = qkv.dtype in (torch.float16, torch.bfloat16)
    autocast = torch.autocast(qkv.device.type, dtype=qkv.dtype) if half else contextlib.nullcontext()
    with autocast:
        B, H, W, _ = qkv.shape
        q, k, v, Hp, Wp = _partition_qkv(qkv, shape)  # pad, roll, partition: B*nW, heads, N, hd
        N = q.shape[2]
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)  # cosine attention
        attn = attn * cosine_scale.view(shape.heads, 1, 1)  # the libraries' clamped, exp'd [heads, 1, 1] logit_scale
        bias = relative_position_bias(table, shape.window)  # gathered [heads, N, N], then the sigmoid
        attn = attn + (16 * torch.sigmoid(bias)).unsqueeze(0)
        if any(shape.shift):
            mask = shift_mask(Hp, Wp, shape.window, shape.shift, device=qkv.device, dtype=attn.dtype)  # nW, N, N
            n_win = mask.shape[0]
            attn = attn.view(-1, n_win, shape.heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, shape.heads, N, N)
        attn = F.softmax(attn, dim=-1)
        out = attn @ v
        return _merge_windows(out.to(qkv.dtype), shape, B, H, W, Hp, Wp)


def _sdpa_v2(qkv, table, cosine_scale, shape: OpShape):
    q, k, v, Hp, Wp = _partition_qkv(qkv, shape)
    q = F.normalize(q, dim=-1) * cosine_scale.to(q.dtype).view(shape.heads, 1, 1)
    k = F.normalize(k, dim=-1)
    return _sdpa_windows(q, k, v, _v2_table(table), shape, *qkv.shape[:3], Hp, Wp, 1.0)


OP_IMPLS_V2: Dict[str, OpFn] = {
    "fused": _fused_v2,
    "torch_path": _torch_path_v2,
    "library": _library_v2,
    "sdpa": _sdpa_v2,
}


def make_v2_op_inputs(shape: OpShape, batch: int, dtype: torch.dtype, device: torch.device,
                      requires_grad: bool = False, seed: int = 0
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ``qkv [B, H, W, 3C]`` in ``dtype``, an fp32 position-bias MLP output ``table [rows, heads]``
    (unit scale: ``16 * sigmoid`` spreads it over most of (0, 16)) and an fp32 ``cosine_scale [heads]`` around
    the libraries' initial temperature 10, as a V2 model under AMP has them."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(shape.qkv_shape(batch), generator=gen).to(device=device, dtype=dtype)
    table = torch.randn(shape.table_rows, shape.heads, generator=gen).to(device)
    cosine_scale = (10.0 * torch.exp(0.3 * torch.randn(shape.heads, generator=gen))).clamp(max=100.0).to(device)
    return (qkv.requires_grad_(requires_grad), table.requires_grad_(requires_grad),
            cosine_scale.requires_grad_(requires_grad))


def op_unavailable_reason(impl: str, device: torch.device) -> Optional[str]:
    """Why ``impl`` (of :data:`OP_IMPLS` or :data:`OP_IMPLS_V2`) cannot be benchmarked on ``device`` (None when
    it can)."""
    from .benchmarking import cuda_unavailable_reason, fused_unavailable_reason

    if impl not in OP_IMPLS and impl not in OP_IMPLS_V2:
        known = ", ".join(dict.fromkeys([*OP_IMPLS, *OP_IMPLS_V2]))
        raise ValueError(f"unknown implementation {impl!r}; expected one of {known}")
    if impl == "fused":
        return fused_unavailable_reason(device)
    if impl == "flex":
        reason = cuda_unavailable_reason(device)
        if reason:
            return f"FlexAttention is benchmarked compiled on CUDA only: {reason}"
        try:
            import torch.nn.attention.flex_attention  # noqa: F401
        except ImportError:
            return f"torch {torch.__version__} has no torch.nn.attention.flex_attention"
    return None


def make_op_inputs(shape: OpShape, batch: int, dtype: torch.dtype, device: torch.device,
                   requires_grad: bool = False, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random ``qkv [B, H, W, 3C]`` in ``dtype`` and an fp32 bias ``table`` (as a model under AMP has them)."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(shape.qkv_shape(batch), generator=gen).to(device=device, dtype=dtype)
    table = (0.02 * torch.randn(shape.table_rows, shape.heads, generator=gen)).to(device)
    return qkv.requires_grad_(requires_grad), table.requires_grad_(requires_grad)


# ---------------------------------------------------------------------------------------------- models

#: Where a model comes from: the package (``ours``), timm, torchvision.
MODEL_SOURCES = ("ours", "timm", "torchvision")

#: torchvision builds only the 224-pixel, window-7 V1 configs and the 256-pixel, window-8 V2 ones.
TORCHVISION_NAMES = {
    "swin_tiny_patch4_window7_224": "swin_t",
    "swin_small_patch4_window7_224": "swin_s",
    "swin_base_patch4_window7_224": "swin_b",
    "swinv2_tiny_patch4_window8_256": "swin_v2_t",
    "swinv2_small_patch4_window8_256": "swin_v2_s",
    "swinv2_base_patch4_window8_256": "swin_v2_b",
}


def _timm_name(name: str) -> str:
    """timm's name of a config: the official one for V1, less ``patch4_`` for V2 (``swinv2_tiny_window8_256``)."""
    from ..configs import is_v2

    return name.replace("patch4_", "") if name.startswith("swinv2_") and is_v2(name) else name


def model_unavailable_reason(source: str, name: str) -> Optional[str]:
    """Why ``source`` cannot build ``name`` here (None when it can)."""
    if source == "ours":
        return None
    if source == "timm":
        try:
            import timm
        except ImportError:
            return "timm is not installed (pip install 'swin-fused[interop]')"
        if _timm_name(name) not in timm.list_models(_timm_name(name)):
            return f"timm {timm.__version__} has no model {_timm_name(name)!r}"
        return None
    if source == "torchvision":
        try:
            import torchvision  # noqa: F401
        except ImportError:
            return "torchvision is not installed (pip install 'swin-fused[interop]')"
        if name not in TORCHVISION_NAMES:
            return f"torchvision has no {name} (it builds {', '.join(TORCHVISION_NAMES)})"
        return None
    raise ValueError(f"unknown model source {source!r}; expected one of {', '.join(MODEL_SOURCES)}")


def build_model(source: str, name: str, device: torch.device) -> nn.Module:
    """A randomly initialised ``name`` (a config's official name, V1 or V2) from ``source``, built directly on
    ``device`` (fast init on GPUs)."""
    reason = model_unavailable_reason(source, name)
    if reason:
        raise RuntimeError(reason)
    with torch.device(device):
        if source == "ours":
            from ..configs import create_model

            return create_model(name)
        if source == "timm":
            import timm

            return timm.create_model(_timm_name(name), pretrained=False)
        import torchvision

        return getattr(torchvision.models, TORCHVISION_NAMES[name])(weights=None)
