"""What both launchers share: support checks, the window grid of a call, and tensors as ``[rows, channels]``.

Everything here is plain Python run at launch time; nothing touches CUDA at import.
"""
from __future__ import annotations

import contextlib
import os
import weakref
from typing import NamedTuple, Optional, Tuple

import torch
from triton import knobs
from triton.runtime.autotuner import Autotuner

from ..backend import tracing
from ..checks import check_window_attention_args
from ..geometry import MASK_VALUE, padded_size

Pair = Tuple[int, int]

#: Error floors per dtype (absolute, on unit-scale inputs): tests allow err <= 2 * err(PyTorch) + floor.
ERROR_FLOOR = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 128
MAX_WINDOW_AREA = 576  # 24x24, Swin V2's largest released window
LOG2E = 1.4426950408889634


def interpreting() -> bool:
    """True when kernels run on the CPU through Triton's interpreter (fixed when the kernels were imported:
    Triton reads TRITON_INTERPRET when ``@triton.jit`` wraps them)."""
    return _INTERPRETING


_INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def autotuning() -> bool:
    """Whether launchers with several candidate configs let Triton's autotuner pick one. Off under the
    interpreter; with SWIN_FUSED_AUTOTUNE=0, which keeps one heuristic config per window size (fast first
    calls, e.g. the CUDA tests); and under ``torch.use_deterministic_algorithms(True)``: the tile sizes set
    the summation order, and the autotuner's timing could pick other tiles in another process."""
    return (not interpreting() and os.environ.get("SWIN_FUSED_AUTOTUNE", "1") not in ("", "0")
            and not torch.are_deterministic_algorithms_enabled())


def next_power_of_2(n: int) -> int:
    """Smallest power of two >= n (>= 1); plain Python, as launches are on the host's critical path."""
    return 1 << max(0, n - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for ints; plain Python (``triton.cdiv`` is a constexpr function: ~6 us a call on the host)."""
    return -(-a // b)


def check_kernel_inputs(qkv: torch.Tensor, table: torch.Tensor, head_dim: int, window_area: int,
                        cosine_scale: Optional[torch.Tensor] = None, num_heads: Optional[int] = None) -> None:
    """What the kernels support, checked at launch with messages that name the value."""
    if cosine_scale is not None and (tuple(cosine_scale.shape) != (num_heads,) or cosine_scale.device != qkv.device
                                     or not cosine_scale.is_floating_point()):
        raise ValueError(f"cosine_scale must be a floating-point ({num_heads},) tensor on {qkv.device}, got "
                         f"{tuple(cosine_scale.shape)} {cosine_scale.dtype} on {cosine_scale.device}")
    if qkv.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"fused window attention supports float32, float16 and bfloat16, got {qkv.dtype}; "
                        f"use the 'torch' backend for other dtypes")
    if not table.is_floating_point():
        raise TypeError(f"relative position bias table must be floating point, got {table.dtype}")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"fused window attention supports head_dim 1..{MAX_HEAD_DIM}, got {head_dim}")
    if window_area > MAX_WINDOW_AREA:
        raise ValueError(f"fused window attention supports windows of up to {MAX_WINDOW_AREA} tokens "
                         f"(24x24), got {window_area}")
    if qkv.device != table.device:
        raise ValueError(f"qkv is on {qkv.device} but the table is on {table.device}")
    if qkv.device.type != "cuda" and not interpreting():
        raise RuntimeError(f"fused window attention got a tensor on {qkv.device}: the Triton kernels run on CUDA, "
                           f"or on the CPU only through Triton's interpreter (set TRITON_INTERPRET=1 before "
                           f"importing swin_fused); use the 'torch' or 'auto' backend on the CPU")


def check_launch_args(qkv: torch.Tensor, table: torch.Tensor, num_heads: int, window: Pair, shift: Pair,
                      pad_qkv: Optional[torch.Tensor], table_window: Optional[Pair]) -> None:
    """The public op's argument checks (shapes, window, shift, table, pad vector), for callers that launch the
    kernels directly; a few microseconds."""
    check_window_attention_args(qkv, table, num_heads, window, shift, pad_qkv, table_window)


def as_rows(x: torch.Tensor) -> Tuple[torch.Tensor, int]:
    """``[B, H, W, ch]`` as ``[B * H * W, ch]`` rows with contiguous channels, and the stride between rows.

    Any map whose batch and spatial dimensions flatten into evenly spaced rows (contiguous tensors, channel
    slices of wider ones, expanded rows) goes through without a copy; anything else is made contiguous.
    """
    as_is, stride = row_layout(x)
    return (x if as_is else x.contiguous()).view(-1, x.shape[-1]), stride


def row_layout(x: torch.Tensor) -> Tuple[bool, int]:
    """``(as_is, stride)``: whether ``x``'s rows flatten without a copy, and the stride between the rows that
    ``as_rows`` gives (``x``'s own, 0 for expanded rows, or ``x.shape[-1]``: its contiguous copy's)."""
    ch = x.shape[-1]
    try:
        rows = x.view(-1, ch)
    except (RuntimeError, ValueError):  # the dimensions do not flatten (fake tensors raise ValueError)
        return False, ch
    if ch > 1 and rows.stride(1) != 1:
        return False, ch
    return True, rows.stride(0)


def launch(kernel, grid, *args, **kwargs):
    """``kernel[grid](*args, **kwargs)``, by the cheapest route the context allows: through ``wrap_triton``
    while tracing (:func:`launchable`), through Triton's interpreter on the CPU, and in eager CUDA calls with
    ``SWIN_FUSED_DIRECT_LAUNCH=1`` straight into the compiled kernel of the call's launch class
    (:func:`_direct_launch`). Returns nothing. A :class:`Launch` with no scalars resolved ahead."""
    Launch(kernel, grid, (), kwargs)(*args)


class Launch:
    """One launch site resolved for one call signature: the kernel, its grid, the arguments after the tensors
    (ints and floats: strides, sizes, scales) and the keywords. A call passes only the tensors, and a direct
    launch classifies only them (the scalars' launch classes are computed here, once). Launchers keep one per
    cached plan (:class:`PlanCache`)."""

    __slots__ = ("kernel", "grid", "scalars", "kwargs", "_scalar_classes")

    def __init__(self, kernel, grid, scalars: tuple, kwargs: dict):
        self.kernel, self.grid, self.scalars, self.kwargs = kernel, grid, tuple(scalars), kwargs
        self._scalar_classes = tuple(map(_launch_class, self.scalars))

    def __call__(self, *tensors: torch.Tensor) -> None:
        if not eager() or interpreting() or not direct_launches():
            launchable(self.kernel)[self.grid](*tensors, *self.scalars, **self.kwargs)
        else:
            _direct_launch(self.kernel, self.grid, tensors + self.scalars, self.kwargs,
                           tuple(map(_launch_class, tensors)) + self._scalar_classes)


def direct_launches() -> bool:
    """Whether eager CUDA launches skip Triton's per-call binding (``SWIN_FUSED_DIRECT_LAUNCH=1``; off by
    default until a GPU run has compared it with Triton's own path: bench/gpu_report.sh runs the kernel tests
    and bench/launch_overhead.py with it on)."""
    return os.environ.get("SWIN_FUSED_DIRECT_LAUNCH", "0") not in ("", "0")


#: (kernel, device, launch class) -> (compiled kernel, the values of its parameters after the positional ones).
_COMPILED: dict = {}


def _launch_class(arg):
    """What Triton specializes a positional argument on (``JITFunction.run``'s binder, Triton 3.x): a tensor's
    dtype and whether its address is 16-byte aligned; an int's value 1 (a constant), divisibility by 16 and
    width (i32 or wider); floats not at all. Two calls of one kernel whose arguments agree on these, and on
    every keyword, run the same compiled kernel."""
    if isinstance(arg, torch.Tensor):
        return arg.dtype, arg.data_ptr() % 16 == 0
    if isinstance(arg, bool):
        return bool, arg
    if isinstance(arg, int):
        return arg == 1, arg % 16 == 0, -(2**31) <= arg < 2**31
    if isinstance(arg, float):
        return float
    return arg


def _direct_launch(kernel, grid, args, kwargs, classes):
    """Launch the compiled kernel of this call's launch class (``classes``: ``_launch_class`` of each of
    ``args``) directly, with every parameter in the kernel's order (``CompiledKernel[grid](*params)``, as
    ``JITFunction.run`` does after binding). The first call of a class goes through Triton's own path, which
    compiles (or autotunes) and returns the kernel; its constexprs and the autotuner's chosen config then make
    up the parameters after the positional ones."""
    jit = kernel.fn if isinstance(kernel, Autotuner) else kernel
    if jit.pre_run_hooks or knobs.runtime.add_stages_inspection_hook is not None:
        kernel[grid](*args, **kwargs)  # what Triton's own path runs around a launch
        return
    # The options JITFunction.run adds to every call's (debug, instrumentation) are part of the class too.
    key = (id(kernel), torch.cuda.current_device(), classes, tuple(kwargs.items()),
           jit.debug or knobs.runtime.debug, knobs.compilation.instrumentation_mode)
    found = _COMPILED.get(key)
    if found is None:
        compiled = kernel[grid](*args, **kwargs)
        values = {**kwargs, **(kernel.best_config.kwargs if isinstance(kernel, Autotuner) else {})}
        names = jit.arg_names[len(args):]
        if compiled is not None and all(name in values for name in names):
            _COMPILED[key] = (compiled, jit.arg_names, tuple(values[name] for name in names))
        return
    compiled, names, tail = found
    if callable(grid):  # an autotuned launch's grid depends on the chosen config, as in JITFunction.run
        grid = grid(dict(zip(names, (*args, *tail))))
    compiled[tuple(grid) + (1,) * (3 - len(grid))](*args, *tail)


class PlanCache:
    """What a launcher derives from a call's metadata alone (grid, config, scalar arguments, checks passed), kept
    per call signature for plain eager calls, so that a repeated call only allocates its outputs and launches.
    The key must hold everything the plan depends on: shapes, strides, dtypes and devices of the tensors, every
    non-tensor argument, and the launch settings read from the environment. Bounded: a model sees a few dozen
    signatures; a detector on ever-new image sizes would otherwise grow it without end."""

    MAX_ENTRIES = 1024

    def __init__(self):
        self._plans: dict = {}
        _PLAN_CACHES.add(self)

    def get(self, key, build):
        """The plan for ``key``, made by ``build()`` on first use (``key`` None: not cached, e.g. while tracing)."""
        if key is None:
            return build()
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= self.MAX_ENTRIES:
                self._plans.clear()
            plan = self._plans[key] = build()
        return plan

    def clear(self) -> None:
        self._plans.clear()

    def __len__(self) -> int:
        return len(self._plans)


_PLAN_CACHES: "weakref.WeakSet[PlanCache]" = weakref.WeakSet()


def clear_plans() -> None:
    """Forget every launcher's plans (after replacing something a plan is made from that its key does not hold,
    e.g. ``head_major`` in bench/launch_overhead.py's layout experiment)."""
    for cache in _PLAN_CACHES:
        cache.clear()


def eager() -> bool:
    """True in plain eager calls: nothing compiles or traces the launcher (not :func:`swin_fused.backend.tracing`),
    so metadata is concrete and launches go to Triton, not into a graph."""
    return not tracing()


def tensor_signature(t: Optional[torch.Tensor]):
    """What a plan may depend on in a tensor: shape, strides, dtype, device (None for None)."""
    return None if t is None else (t.shape, t.stride(), t.dtype, t.device)


def launchable(kernel):
    """``kernel`` as a launch site calls it: as it is in plain eager calls; through ``torch.library.wrap_triton``
    while anything traces the launcher (``torch.compile`` / ``torch.export`` running the fused ops' fake and
    functional passes), so that the launch becomes a node of the graph, which inductor then generates (and CUDA
    graphs capture) instead of calling back into Python. Under Triton's interpreter the kernels are
    ``InterpretedFunction``s, which ``wrap_triton`` cannot trace: they are traced as a ``JITFunction`` that
    runs in the interpreter (:class:`_InterpretedJIT`), so the CPU tests take the compiled route too."""
    if eager():
        return kernel
    from torch.library import wrap_triton

    return wrap_triton(_interpreted_jit(kernel) if interpreting() else kernel)


def placeholder(like: torch.Tensor, traced: bool) -> torch.Tensor:
    """A pointer argument the kernel never dereferences (its constexpr switches the use off): ``like`` itself in
    eager calls (nothing allocated); a one-element tensor of ``like``'s dtype and device while tracing
    (``traced``: ``not eager()``, asked once per call), because functionalization treats every argument a kernel
    may write (all of them, when it cannot analyse the kernel) as a new value of its storage, and an unused alias
    of an output would then overwrite it."""
    return like.new_empty(1) if traced else like


_INTERPRETED_JIT: dict = {}


def _interpreted_jit(kernel):
    """The :class:`_InterpretedJIT` of an interpreted top-level kernel (one per kernel)."""
    found = _INTERPRETED_JIT.get(id(kernel))
    if found is None:
        found = _INTERPRETED_JIT[id(kernel)] = _make_interpreted_jit(kernel)
    return found


def _make_interpreted_jit(kernel):
    from triton.runtime.jit import JITFunction

    class _InterpretedJIT(JITFunction):
        """A kernel for ``wrap_triton`` to trace (it takes only ``JITFunction``s) that launches through Triton's
        interpreter, as the ``InterpretedFunction`` it wraps does."""

        def __init__(self, interpreted):
            super().__init__(interpreted.fn)
            self.interpreted = interpreted

        @property
        def cache_key(self) -> str:  # JITFunction's hashes its callees, which the interpreter has replaced
            return f"interpreted:{self.fn.__module__}.{self.fn.__qualname__}"

        def run(self, *args, grid, warmup, **kwargs):
            return self.interpreted.run(*args, grid=grid, warmup=warmup, **kwargs)

    return _InterpretedJIT(kernel)


def launch_device(x: torch.Tensor):
    """A context making ``x``'s CUDA device the current one for a launch: Triton launches on the current device
    (and its current stream) whatever device the arguments live on. A no-op when it already is, and on the
    CPU (the interpreter)."""
    if x.device.type != "cuda" or x.device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(x.device)


def check_output(name: str, out: torch.Tensor, rows: torch.Tensor, row_stride: int, shape: tuple,
                 like: torch.Tensor) -> None:
    """A caller's output buffer: ``shape`` in ``like``'s dtype and device, rows that flatten without a copy
    (``as_rows`` gave a view), do not overlap each other (every program writes its own rows) and do not
    overlap ``like`` (the kernel reads it while writing)."""
    if (tuple(out.shape) != tuple(shape) or out.dtype != like.dtype or out.device != like.device
            or rows.data_ptr() != out.data_ptr() or row_stride < shape[-1] or _overlap(out, like)):
        raise ValueError(f"{name} must be a {tuple(shape)} {like.dtype} tensor on {like.device} whose rows flatten "
                         f"and neither overlap each other nor share memory with the input, got {tuple(out.shape)} "
                         f"{out.dtype} on {out.device} with strides {out.stride()}")


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the byte ranges ``a`` and ``b`` span intersect (conservative: strided gaps count as covered)."""
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False

    def span(t):
        extent = sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride())) + 1
        return t.data_ptr(), t.data_ptr() + extent * t.element_size()

    (a0, a1), (b0, b1) = span(a), span(b)
    return a0 < b1 and b0 < a1


def head_major(table: torch.Tensor) -> torch.Tensor:
    """The ``[rows, heads]`` bias table laid out head by head (strides ``(1, rows)``), copied if it is not.

    Each program gathers its head's bias from scattered rows: with the parameter's usual row-major layout a
    head's rows are ``heads * 4`` bytes apart, so a warp's gather touches up to 32 cache lines (Swin-T stage
    4: 24 heads, 96 B apart); head by head, the 169 rows of a 7x7 table fit in 6. The copy is
    (2Wh-1)(2Ww-1) x heads values, not an expanded ``[heads, N, N]`` bias.
    """
    return table if table.stride(0) == 1 else table.t().contiguous().t()


def head_major_strides(table: torch.Tensor) -> Tuple[int, int]:
    """The strides ``head_major(table)`` has, without copying (its branches: kept as is, or ``contiguous()``
    keeps a transpose that already is contiguous, or copies it)."""
    if table.stride(0) == 1 or table.t().is_contiguous():
        return tuple(table.stride())
    return 1, table.shape[0]


class WindowGrid(NamedTuple):
    """The windows of one call: map, padded map, window and shift, and what the kernels specialize on."""

    B: int
    H: int
    W: int
    C: int  # heads * head_dim
    num_heads: int
    head_dim: int
    Hp: int
    Wp: int
    window: Pair
    shift: Pair
    table_window: Pair
    shift_before_pad: bool

    @classmethod
    def of(cls, qkv: torch.Tensor, num_heads: int, window: Pair, shift: Pair, table_window: Optional[Pair],
           shift_before_pad: bool) -> "WindowGrid":
        B, H, W, C3 = qkv.shape
        # What the kernels specialize on must be concrete: under torch.compile(dynamic=True) a window clamped to a
        # symbolic map size arrives as a SymInt, and int() specializes on it (a guard, a recompile per value).
        window, shift = (int(window[0]), int(window[1])), (int(shift[0]), int(shift[1]))
        table_window = (int(table_window[0]), int(table_window[1])) if table_window is not None else window
        wh, ww = window
        return cls(B, H, W, int(C3) // 3, int(num_heads), int(C3) // 3 // int(num_heads), padded_size(H, wh),
                   padded_size(W, ww), window, shift, table_window, bool(shift_before_pad))

    @property
    def n_win_w(self) -> int:
        return self.Wp // self.window[1]

    @property
    def n_win(self) -> int:
        """Windows per image."""
        return (self.Hp // self.window[0]) * self.n_win_w

    @property
    def tokens(self) -> int:
        """Tokens per window, N."""
        return self.window[0] * self.window[1]

    @property
    def block_d(self) -> int:
        """Lanes per head in the kernels: head_dim rounded up to a power of two, at least 16 (tl.dot's minimum)."""
        return max(16, next_power_of_2(self.head_dim))

    @property
    def padded(self) -> bool:
        return bool(self.Hp != self.H or self.Wp != self.W)  # bool(): a guard when the sizes are symbolic

    def geometry_args(self) -> tuple:
        """Runtime arguments every kernel takes, in order: H, W, Hp, Wp, n_win_w, n_win, shift_h, shift_w."""
        return (self.H, self.W, self.Hp, self.Wp, self.n_win_w, self.n_win, self.shift[0], self.shift[1])

    def constexprs(self, dtype: torch.dtype, has_pad: bool, cosine: bool = False,
                   mask_value: float = MASK_VALUE) -> dict:
        """Compile-time arguments every kernel takes (``cosine``: Swin V2's scaled cosine attention)."""
        return dict(
            HEAD_DIM=self.head_dim, BLOCK_D=self.block_d,
            WH=self.window[0], WW=self.window[1], TWH=self.table_window[0], TWW=self.table_window[1],
            HAS_PAD=has_pad, HAS_SHIFT=any(self.shift), SHIFT_BEFORE_PAD=self.shift_before_pad,
            COSINE=bool(cosine), MASK_VALUE=float(mask_value),
            # fp32 dots in IEEE precision, not TF32: fp32 results must match PyTorch's fp32.
            DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32",
        )
