"""Which implementation runs the window attention: the one seam every kernel plugs into.

- ``"auto"`` (default): Triton kernels for CUDA tensors, the PyTorch path for everything else.
- ``"torch"``: always the PyTorch path.
- ``"triton"``: always the Triton kernels; on CPU tensors they run through Triton's interpreter, which
  needs ``TRITON_INTERPRET=1`` in the environment before the kernels are first imported (that is how CI
  checks the kernels without a GPU).

Set it with :func:`set_backend`, for a scope with :func:`use_backend`, or with the environment variable
``SWIN_FUSED_BACKEND`` (read once, at import). Nothing here touches CUDA.

Also the call-time questions every fused route asks before it may take its shortcut: is this call traced
(:func:`tracing`, :func:`plain_eager`), may a constant be cached (:func:`eager_cache`), and would skipping a
module skip someone's hooks (:func:`has_hooks`, :func:`global_hooks`).
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from typing import Iterator, Optional

import torch
from torch import nn
from torch.nn.modules import module as _nn_module

__all__ = ["BACKENDS", "set_backend", "get_backend", "use_backend", "resolve_backend", "plain_eager", "tracing",
           "eager_cache", "has_hooks", "global_hooks"]

BACKENDS = ("auto", "torch", "triton")


def _check(name: object, origin: str) -> str:
    if not isinstance(name, str) or name.lower() not in BACKENDS:
        raise ValueError(f"{origin}: unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name.lower()


_state = threading.local()
_default = _check(os.environ.get("SWIN_FUSED_BACKEND", "auto"), "SWIN_FUSED_BACKEND")


def get_backend() -> str:
    """The backend in force in this thread: ``"auto"``, ``"torch"`` or ``"triton"``."""
    return getattr(_state, "backend", _default)


def set_backend(name: str) -> None:
    """Set the backend for this thread (and the default for threads that have not set one)."""
    global _default
    name = _check(name, "set_backend")
    _default = name
    _state.backend = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """``with use_backend("torch"): ...`` runs the block with that backend, then restores the previous one."""
    name = _check(name, "use_backend")
    previous = getattr(_state, "backend", None)
    _state.backend = name
    try:
        yield name
    finally:
        if previous is None:
            del _state.backend
        else:
            _state.backend = previous


def interpreter_enabled() -> bool:
    """True when Triton kernels run on the CPU through the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(x: torch.Tensor, name: Optional[str] = None) -> str:
    """``"torch"`` or ``"triton"``: what backend ``name`` (default: the one in force) means for ``x``'s device."""
    name = get_backend() if name is None else _check(name, "backend")
    if name == "auto":
        return "triton" if x.is_cuda else "torch"
    return name


try:  # imported once: the launchers ask on every call
    from torch.utils._python_dispatch import is_in_torch_dispatch_mode as _in_dispatch_mode
except ImportError:  # an older torch: treat every call as traced (the fused ops then take their registered route)
    def _in_dispatch_mode() -> bool:
        return True


def tracing() -> bool:
    """True while anything records or fakes this call: torch.compile / export (Dynamo), a dispatch mode
    (FakeTensorMode, make_fx in every tracing mode, functionalization, FlopCounterMode) or ``torch.jit.trace``.
    Then tensors may be fake or symbolic, or every op is recorded: nothing may launch a kernel outside a
    registered op, read values, or fill a cache that later eager calls read."""
    return torch.compiler.is_compiling() or _in_dispatch_mode() or torch.jit.is_tracing()


def plain_eager() -> bool:
    """True when nothing traces or transforms this call: not :func:`tracing` and no torch.func transform (whose
    wrapped tensors a launch cannot take). The fused ops launch directly only then."""
    return not (tracing() or torch._C._functorch.peek_interpreter_stack() is not None)


def eager_cache(maxsize: int):
    """``functools.lru_cache`` for builders of constant tensors (index tables, masks), consulted in eager calls
    only. While :func:`tracing`, the builder runs afresh: inside a FakeTensorMode its tensors are fake, and a
    cached fake tensor would be served to every later eager caller (one call under FakeTensorMode would leave
    the process's next real models with fake index tables); under Dynamo the uncached builder traces into the
    graph as constants, without Dynamo's warning about lru_cache wrappers."""

    def wrap(build):
        cached = functools.lru_cache(maxsize=maxsize)(build)

        @functools.wraps(build)
        def get(*args):
            return build(*args) if tracing() else cached(*args)

        get.cache_clear, get.cache_info = cached.cache_clear, cached.cache_info
        return get

    return wrap


# Hooks: a patched path that skips a module (or fuses it with its neighbour) must not skip hooks someone set on it.
# Dict-truthiness tests only: cheap in eager mode, no graph break under torch.compile.


def has_hooks(module: nn.Module) -> bool:
    """Whether calling ``module`` runs hooks of its own (forward, pre-forward or backward)."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks)


def global_hooks() -> bool:
    """Whether module calls run global hooks (``torch.nn.modules.module.register_module_forward_hook`` ...)."""
    return bool(_nn_module._global_forward_hooks or _nn_module._global_forward_pre_hooks
                or _nn_module._global_backward_hooks or _nn_module._global_backward_pre_hooks)
