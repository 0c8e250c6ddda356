"""The blocks' LayerNorms through the fused kernel (``kernels/layer_norm.py``) where it applies.

:func:`layer_norm` is ``norm(x)`` with the same values, computed by the fused kernel in plain eager CUDA calls
with the Triton backend: the statistics and affine transform in fp32 whatever the dtypes, as PyTorch's CUDA
LayerNorm does, the output written once in the dtype its consumer reads. Under autocast, PyTorch runs a
LayerNorm in fp32 and the Linear after it casts the fp32 output to the autocast dtype; with ``feeds_linear``
the kernel writes that dtype directly (the same values as the cast, without the fp32 round trip through
memory). Everything else (torch.compile, which fuses norms itself; export; dispatch modes; torch.func; the CPU;
other norm layers, hooked modules, tensor subclasses, more than the kernel's 4096 channels) calls ``norm(x)``, as
does everything with ``SWIN_FUSED_NORM=0`` in the environment (read at import) or inside
``use_fused_norms(False)`` (the benchmarks' "before" row). :func:`swin_fused.optimize` sends other libraries'
block norms here too, through :func:`patched_forward`.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator, Optional

import torch
from torch import nn

from .backend import global_hooks, has_hooks, plain_eager, resolve_backend

__all__ = ["layer_norm", "use_fused_norms", "fused_norms_enabled"]


class _State(threading.local):
    enabled = os.environ.get("SWIN_FUSED_NORM", "1") not in ("", "0")  # each thread starts from the environment


_state = _State()


def fused_norms_enabled() -> bool:
    """Whether the blocks' norms may take the fused kernel in this thread (``SWIN_FUSED_NORM``, read at import,
    or :func:`use_fused_norms`)."""
    return _state.enabled


@contextlib.contextmanager
def use_fused_norms(enabled: bool) -> Iterator[None]:
    """``with use_fused_norms(False): ...`` runs the block with PyTorch's LayerNorms in this thread (as
    ``use_backend``), then restores the previous setting."""
    previous = _state.enabled
    _state.enabled = bool(enabled)
    try:
        yield
    finally:
        _state.enabled = previous


def layer_norm(norm: nn.Module, x: torch.Tensor, feeds_linear: bool = False,
               backend: Optional[str] = None) -> torch.Tensor:
    """``norm(x)`` for a block's ``norm`` (``[..., C]`` tokens), fused where it applies (see the module
    docstring). ``feeds_linear``: the output goes straight into an ``nn.Linear`` (qkv, fc1, a merge's reduction),
    so under autocast it may be written in the autocast dtype. ``backend``: as :func:`swin_fused.window_attention`'s
    (None: the one in force). A norm with hooks or an instance-level ``forward`` (a wrapper) is called as it is."""
    if "forward" in norm.__dict__ or observed(norm) or not _fused_applies(norm, x, backend):
        return norm(x)
    return _fused(norm, x, feeds_linear)


def patched_forward(norm: nn.Module, x: torch.Tensor, feeds_linear: bool, backend: Optional[str]) -> torch.Tensor:
    """The body of an ``nn.LayerNorm``'s ``forward`` that :func:`swin_fused.optimize` replaced (its ``__call__``
    runs the hooks around it): fused where it applies, else ``nn.LayerNorm.forward``. The caller decides
    ``feeds_linear`` (see :mod:`swin_fused.interop._patching`)."""
    if not _fused_applies(norm, x, backend):
        return nn.LayerNorm.forward(norm, x)
    return _fused(norm, x, feeds_linear)


def _fused(norm: nn.Module, x: torch.Tensor, feeds_linear: bool) -> torch.Tensor:
    if torch.is_autocast_enabled(x.device.type):
        out_dtype = torch.get_autocast_dtype(x.device.type) if feeds_linear else torch.float32
    else:
        out_dtype = x.dtype
    return _FusedLayerNorm.apply(x, norm.weight, norm.bias, norm.eps, out_dtype)


def _fused_applies(norm: nn.Module, x: torch.Tensor, backend: Optional[str]) -> bool:
    """A plain eager call on CUDA with the Triton backend, of a plain ``nn.LayerNorm`` over the last dimension
    (with weight and bias, within the kernel's channels), on plain tensors (no subclass's ``__torch_function__``,
    no DTensor, no FX Proxy; the weights plain tensors too, as nn.DataParallel's replicas hold them). Hooks are the
    caller's business (:func:`layer_norm` vs :func:`patched_forward`)."""
    if torch.compiler.is_compiling():  # first: dynamo traces this function, and inductor fuses norms itself
        return False
    if not (type(x) is torch.Tensor and _on_gpu(x) and _state.enabled and type(norm) is nn.LayerNorm
            and norm.elementwise_affine and norm.bias is not None and len(norm.normalized_shape) == 1
            and x.dtype in _DTYPES and type(norm.weight) in _WEIGHTS and type(norm.bias) in _WEIGHTS
            and resolve_backend(x, backend) == "triton" and plain_eager()):
        return False
    kernels = _kernels()
    return kernels is not None and norm.normalized_shape[0] <= kernels.MAX_CHANNELS


def _kernels():
    """``kernels.layer_norm``, imported on first use (importing the package needs no Triton) and kept; None without
    Triton (the window attention says so; the norms stay PyTorch's)."""
    global _KERNELS
    if _KERNELS is None:
        try:
            from .kernels import layer_norm as kernels
        except ImportError:
            return None
        _KERNELS = kernels
    return _KERNELS


_KERNELS = None


def observed(norm: nn.Module) -> bool:
    """Whether anything but the Linear after it sees ``norm``'s call: hooks of its own (forward, pre-forward,
    backward: a backward hook sees the output's gradient, in the output's dtype) or every module's."""
    return has_hooks(norm) or global_hooks()


_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_WEIGHTS = (nn.Parameter, torch.Tensor)


def _on_gpu(x: torch.Tensor) -> bool:
    """CUDA tensors only: under Triton's interpreter the norms would cost every CPU model test minutes (the
    tests run the kernels on the CPU through this seam, replaced)."""
    return x.is_cuda


class _FusedLayerNorm(torch.autograd.Function):
    """LayerNorm through the fused kernels; saves x and the fp32 row statistics (as PyTorch's does)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        y, mean, rstd = _kernels().layer_norm_fwd(x, weight, bias, eps, out_dtype)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        ctx.eps, ctx.out_dtype = eps, out_dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True, e.g. a gradient penalty
            return (*_differentiable_gradients(dy, x, weight, bias, ctx.eps, ctx.out_dtype), None, None)
        dx, dw, db = _kernels().layer_norm_bwd(dy, x, weight, mean, rstd)
        return dx, dw.to(weight.dtype), db.to(bias.dtype), None, None


def _differentiable_gradients(dy, x, weight, bias, eps, out_dtype):
    """Gradients that are themselves differentiable, for ``create_graph=True``: PyTorch's LayerNorm recomputed
    from the saved inputs (in fp32, as the kernel computes) and differentiated with ``create_graph``."""
    inputs = (x, weight, bias)
    leaves = [t for t in inputs if t.requires_grad]
    out = torch.nn.functional.layer_norm(x.float(), x.shape[-1:], weight.float(), bias.float(), eps).to(out_dtype)
    grads = iter(torch.autograd.grad(out, leaves, dy, create_graph=True, allow_unused=True))
    return tuple(next(grads) if t.requires_grad else None for t in inputs)
