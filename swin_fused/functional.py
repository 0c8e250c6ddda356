"""``window_attention``: the functional op behind every Swin block of the package.

It validates its arguments at the public boundary (once per call signature: see ``_signature``), then dispatches
on the backend (see :mod:`swin_fused.backend`): the PyTorch path, or the fused Triton op (:mod:`swin_fused.ops`).
"""
from __future__ import annotations

import numbers
from typing import Optional

import torch

from .backend import get_backend, resolve_backend
from .checks import IntOrPair, check_cosine_args, check_scale, check_window_attention_args, fail
from .geometry import MASK_VALUE, needs_padding
from .reference import window_attention_reference

__all__ = ["window_attention", "check_window_attention_args"]

_FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _fused_supports(qkv: torch.Tensor, dropout_p: float, backend: Optional[str]) -> bool:
    """Whether the fused op runs this call; else the PyTorch path does.

    Attention dropout (training with attn_drop > 0) always takes the PyTorch path. Other dtypes (float64)
    fall back under "auto" and are a clear error under an explicit "triton".
    """
    if dropout_p > 0.0:
        return False
    if qkv.dtype not in _FUSED_DTYPES:
        if (backend or get_backend()) == "triton":
            raise TypeError(f"window_attention: the 'triton' backend supports float32, float16 and bfloat16, "
                            f"got {qkv.dtype}; use set_backend('torch') (or 'auto', which falls back) for it")
        return False
    return True


def _fused_op():
    """The fused op, its module imported on first use (so importing swin_fused needs neither Triton nor a GPU)
    and kept (an import statement costs about a microsecond a call); the function is looked up on every call,
    so a replaced one (tests spy on it) is what runs."""
    global _OPS
    if _OPS is None:
        try:
            from . import ops
        except ImportError as e:
            raise RuntimeError(f"the 'triton' backend needs Triton (pip install triton; Linux with a CUDA GPU, or "
                               f"TRITON_INTERPRET=1 on the CPU): {e}") from e
        _OPS = ops
    return _OPS.fused_window_attention


_OPS = None


def _check(qkv, table, num_heads, window_size, shift_size, scale, pad_qkv, shift_before_pad, table_window, dropout_p,
           cosine_scale, mask_value):
    """Every argument check of :func:`window_attention`; ``(window, shift, table_window, num_heads, padded)``."""
    window, shift, twin, _ = check_window_attention_args(
        qkv, table, num_heads, window_size, shift_size, pad_qkv, table_window
    )
    num_heads = int(num_heads)
    check_scale(scale)
    check_cosine_args(qkv, num_heads, scale, cosine_scale, mask_value)
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real) or not 0 <= dropout_p < 1:
        fail(f"dropout_p must be a float in [0, 1), got {dropout_p!r}")
    if not isinstance(shift_before_pad, (bool, numbers.Integral)) or shift_before_pad not in (0, 1):
        raise TypeError(f"window_attention: shift_before_pad must be a bool, got {shift_before_pad!r}")
    return window, shift, twin, num_heads, needs_padding(qkv.shape[1], qkv.shape[2], window)


#: The checks' results per call signature (:func:`_signature`): a model calls the op with a few signatures over and
#: over, and checking each call costs about 7 us of host time (a quarter of an eager call's own host code). Cleared
#: when full; holds no tensors.
_CHECKED: dict = {}
_CHECKED_MAX = 4096
_TENSORS = (torch.Tensor, torch.nn.Parameter)
_NUMBERS = (int, float)


def _int_or_pair(value) -> bool:
    return type(value) is int or (type(value) is tuple and len(value) == 2 and type(value[0]) is int
                                  and type(value[1]) is int)


def _signature(qkv, table, num_heads, window_size, shift_size, scale, pad_qkv, shift_before_pad, table_window,
               dropout_p, cosine_scale, mask_value):
    """Everything the checks read, as a key, for a call whose arguments all have the exact types a model passes
    (plain tensors, ``int`` and ``(int, int)`` sizes, ``float`` / ``int`` numbers, a ``bool``); None for any other
    call, which is then checked in full. Exact types make equal keys pass or fail alike: ``True == 1`` and
    ``2.0 == 2`` would otherwise share the key of a valid call and skip the error they get."""
    if not (type(qkv) is torch.Tensor and type(table) in _TENSORS and type(num_heads) is int
            and _int_or_pair(window_size) and _int_or_pair(shift_size)
            and (table_window is None or _int_or_pair(table_window)) and (scale is None or type(scale) in _NUMBERS)
            and type(shift_before_pad) is bool and type(dropout_p) in _NUMBERS and type(mask_value) in _NUMBERS
            and (pad_qkv is None or type(pad_qkv) in _TENSORS)
            and (cosine_scale is None or type(cosine_scale) in _TENSORS)):
        return None
    pad = None if pad_qkv is None else (pad_qkv.shape, pad_qkv.dtype, pad_qkv.device)
    cosine = None if cosine_scale is None else (cosine_scale.shape, cosine_scale.dtype, cosine_scale.device)
    return (qkv.shape, qkv.dtype, qkv.device, table.shape, table.dtype, table.device, pad, cosine, num_heads,
            window_size, shift_size, table_window, scale, shift_before_pad, dropout_p, mask_value)


def window_attention(
    qkv: torch.Tensor,
    table: torch.Tensor,
    num_heads: int,
    window_size: IntOrPair,
    shift_size: IntOrPair = 0,
    scale: Optional[float] = None,
    pad_qkv: Optional[torch.Tensor] = None,
    shift_before_pad: bool = False,
    table_window: Optional[IntOrPair] = None,
    dropout_p: float = 0.0,
    backend: Optional[str] = None,
    *,
    cosine_scale: Optional[torch.Tensor] = None,
    mask_value: float = MASK_VALUE,
) -> torch.Tensor:
    """Shifted-window multi-head self-attention with relative position bias, on a channels-last map.

    Does, in one op, what a Swin block does between its qkv and proj Linears: cyclic shift, window
    partition, ``softmax(q k^T * scale + bias + mask) v`` per window and head, reverse partition and
    reverse shift. Sizes that are not multiples of the window are padded (virtually, by the kernels).

    Args:
        qkv: ``[B, H, W, 3 * heads * head_dim]``, channels ordered (q|k|v, head, head_dim).
        table: ``[(2 TWh - 1)(2 TWw - 1), heads]`` relative position bias table (fp32 under AMP is fine).
        num_heads: heads.
        window_size: ``Wh`` or ``(Wh, Ww)``.
        shift_size: ``S`` or ``(Sh, Sw)``, each ``0 <= S < window``; the official mask value -100 separates
            the regions that the roll brought together.
        scale: q scale; ``head_dim ** -0.5`` if None.
        pad_qkv: ``[3 * heads * head_dim]``: q/k/v of padding tokens, i.e. the qkv bias (None: zeros).
        shift_before_pad: timm's order (roll, then pad) instead of the package's (pad, then roll).
        table_window: the window the table was built for, if larger than ``window_size`` (a map smaller
            than the configured window uses the central part of the table). Defaults to ``window_size``.
        dropout_p: attention dropout (training only). Runs on the PyTorch path, as does float64 under
            the "auto" backend.
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` for this call only (None: the one in force, see
            :func:`swin_fused.set_backend`); unlike ``use_backend`` it works inside ``torch.compile``.
        cosine_scale: ``[heads]``, Swin V2: scaled cosine attention, ``softmax(normalize(q) normalize(k)^T *
            cosine_scale[h] + bias + mask) v`` (``F.normalize``'s eps 1e-12), with ``cosine_scale`` =
            ``exp(clamp(logit_scale, max=log(100)))`` and ``scale`` None. Gradients flow to it.
        mask_value: the value between tokens of different shift regions: -100 (official); HF transformers'
            Swin V2 adds its mask twice (-200).

    Returns:
        ``[B, H, W, heads * head_dim]`` in ``qkv``'s dtype.
    """
    args = (qkv, table, num_heads, window_size, shift_size, scale, pad_qkv, shift_before_pad, table_window, dropout_p,
            cosine_scale, mask_value)
    key = None if torch.compiler.is_compiling() else _signature(*args)
    checked = _CHECKED.get(key) if key is not None else None
    if checked is None:
        checked = _check(*args)
        if key is not None:
            if len(_CHECKED) >= _CHECKED_MAX:
                _CHECKED.clear()
            _CHECKED[key] = checked
    window, shift, twin, num_heads, padded = checked
    mask_value = float(mask_value) if isinstance(mask_value, (int, float)) else mask_value
    if not padded:
        pad_qkv = None  # nothing is padded: callers may always pass the qkv bias; it gets no gradient here
    if not torch.compiler.is_compiling() and torch._C._functorch.peek_interpreter_stack() is not None:
        # torch.func (grad, vmap, jvp, jacrev, jacfwd, ...): the fused op has no forward-mode rule (a jvp would
        # come out zero) and the PyTorch path's autograd Functions no vmap rule. The reference is plain
        # differentiable ops, so every transform composes with it.
        return window_attention_reference(qkv, table, num_heads, window, shift, scale, pad_qkv,
                                          bool(shift_before_pad), twin, dropout_p, cosine_scale, mask_value)
    if resolve_backend(qkv, backend) == "triton" and _fused_supports(qkv, dropout_p, backend):
        return _fused_op()(qkv, table, num_heads, window, shift, scale, pad_qkv, shift_before_pad, twin,
                           cosine_scale, mask_value)
    from .torch_path import window_attention_torch

    return window_attention_torch(
        qkv, table, num_heads, window, shift, scale, pad_qkv, shift_before_pad, twin, dropout_p, cosine_scale,
        mask_value,
    )
