"""Timing, environment and progress helpers shared by ``bench/`` and the ``swin-fused`` command.

Everything that makes one measurement comparable with another lives here: which device and software
produced it (:func:`environment`), a timer that synchronizes the device around every call
(:func:`time_calls`), a profiler timer of named kernels alone (:func:`profiled_time_per_call`), peak memory
(:class:`PeakMemory`), and a progress bar that uses tqdm when the ``progress`` extra is installed and a plain
stderr line otherwise. Nothing here touches CUDA at import.
"""
from __future__ import annotations

import functools
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, TypeVar

import torch

__all__ = [
    "DTYPES",
    "parse_dtype",
    "resolve_device",
    "device_name",
    "git_commit",
    "environment",
    "synchronize",
    "time_calls",
    "name_matches",
    "Timing",
    "device_time_us",
    "profiled_time_per_call",
    "PeakMemory",
    "progress",
    "cuda_unavailable_reason",
    "fused_unavailable_reason",
    "inference_step",
    "training_step",
    "format_table",
]

DTYPES: Dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp64": torch.float64, "float64": torch.float64,
}

T = TypeVar("T")


def parse_dtype(name: str) -> torch.dtype:
    """``"bf16"`` -> ``torch.bfloat16``; unknown names are a clear error."""
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(sorted(DTYPES))}") from None


def resolve_device(name: Optional[str] = None) -> torch.device:
    """``None``/``"auto"`` -> cuda when available, else cpu. ``"cuda"`` without a GPU is a clear error."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


@functools.lru_cache(maxsize=None)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device) -> str:
    """GPU name, or the CPU model and the number of threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()} ({torch.get_num_threads()} threads)"


@functools.lru_cache(maxsize=None)
def git_commit() -> str:
    """Commit of this package (``-dirty`` when modified), or ``"unknown"``: stamped at build time into an
    installed copy (``_commit.txt``, see setup.py), else asked of the checkout it runs from (editable
    installs, a bare checkout)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # swin_fused/, this file is in tools/
    try:
        with open(os.path.join(package, "_commit.txt")) as f:
            stamped = f.read().strip()
        if stamped:
            return stamped
    except OSError:
        pass
    root = os.path.dirname(package)
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "") if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # not installed, or broken: either way not part of this run
        return "not installed"


def environment(device: torch.device, dtype: Optional[torch.dtype] = None, batch: Optional[int] = None) -> dict:
    """What produced a measurement: device, software versions, commit (and dtype / batch when given)."""
    info = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": _version("triton"),
        "cuda": torch.version.cuda or "none",
        "python": platform.python_version(),
        "commit": git_commit(),
    }
    if dtype is not None:
        info["dtype"] = str(dtype).replace("torch.", "")
    if batch is not None:
        info["batch"] = batch
    return info


#: torch.compile modes the benchmarks run, and the suffix of their rows (``"default"`` is ``-compiled``).
COMPILE_MODES = {None: "eager", "default": "compiled", "max-autotune": "max-autotune",
                 "reduce-overhead": "reduce-overhead"}


def compile_mode(compile) -> Optional[str]:
    """``None`` (eager) or a ``torch.compile`` mode, from a mode name or a bool (True: ``"default"``)."""
    if compile is True:
        return "default"
    if not compile:
        return None
    if compile not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {compile!r}; expected one of {', '.join(m for m in COMPILE_MODES if m)}")
    return compile


def impl_id(source: str, backend: Optional[str], compile=None, optimized: bool = False) -> str:
    """The name a model row goes by in benchmark records, tables and plots, e.g. ``ours-fused-eager``,
    ``timm-compiled``, ``torchvision-max-autotune``, ``ours-optimized-timm-eager`` (timm's model after
    ``swin_fused.optimize``): the same for ``pytest bench/`` and ``swin-fused bench --json``. ``compile``: None /
    False (eager), True or a torch.compile mode."""
    mode = COMPILE_MODES[compile_mode(compile)]
    if optimized:
        return f"ours-optimized-{source}-{mode}"
    label = {"triton": "fused", "torch": "torch_path"}.get(backend, source)
    return ("ours-" + label if source == "ours" else label) + "-" + mode


def compiled(model: torch.nn.Module, compile) -> torch.nn.Module:
    """``model`` under ``torch.compile`` in the given mode (see :func:`compile_mode`), or itself (eager)."""
    mode = compile_mode(compile)
    return model if mode is None else torch.compile(model, mode=mode)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds per call of a timed function."""

    times: List[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        return min(self.times)

    def per_second(self, items: int) -> float:
        """Throughput (e.g. images/s) of ``items`` per call, from the median."""
        return items / self.median


def name_matches(name: str, spec: str) -> bool:
    """Whether ``name`` passes the filter ``spec``: "all", "none", or comma-separated substrings (any one
    contained in ``name`` selects it). The command line's ``--shapes`` and the bench suites' variables."""
    spec = spec.strip()
    if spec in ("all", "none"):
        return spec == "all"
    return any(part.strip() and part.strip() in name for part in spec.split(","))


def time_calls(fn: Callable[[], object], device: torch.device, iters: int, warmup: int = 1) -> Timing:
    """Run ``fn`` ``warmup`` times, then time ``iters`` calls, synchronizing the device around each."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return Timing(times)


def device_time_us(event) -> float:
    """Self device time (µs) of a profiler event or ``key_averages()`` row, whatever the torch version."""
    for attr in ("self_device_time_total", "self_cuda_time_total"):  # renamed *_cuda_* -> *_device_* in torch 2.4
        if hasattr(event, attr):
            return float(getattr(event, attr))
    return 0.0


def profiled_time_per_call(fn: Callable[[], object], device: torch.device, iters: int, warmup: int = 1,
                           name_prefix: str = "") -> float:
    """Seconds per call spent in ``fn``'s profiler events whose name starts with ``name_prefix``.

    Runs ``fn`` ``warmup`` times, then ``iters`` calls under ``torch.profiler``. On CUDA the matching events
    are kernels and their summed device time counts, so host work (launch overhead, Python) is left out;
    on the CPU their summed self CPU time counts. Returns total / ``iters``; when the number of matching
    events is not ``iters`` (a call is expected to launch exactly one), warns with the time per event.
    Raises ``RuntimeError`` naming ``name_prefix`` and the events seen when none matches.
    """
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    on_cuda = device.type == "cuda"
    for _ in range(warmup):
        fn()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(iters):
            fn()
        synchronize(device)  # the last kernels must finish inside the profiled window
    averages = prof.key_averages()
    # On CUDA only the kernel rows: a CPU-side range of the same name would count its kernels' time again.
    kind = DeviceType.CUDA if on_cuda else DeviceType.CPU
    named = [e for e in averages if e.key.startswith(name_prefix)]
    found = [e for e in named if e.device_type == kind]
    if on_cuda and not found:  # a torch whose kernel rows are not tagged CUDA: the rows that took device time
        found = [e for e in named if device_time_us(e) > 0]
    if not found:
        seen = ", ".join(sorted({e.key for e in averages})) or "none"
        raise RuntimeError(f"profiler recorded no {device.type} event named {name_prefix!r}*; events seen: {seen}")
    total_us = sum(device_time_us(e) if on_cuda else float(e.self_cpu_time_total) for e in found)
    launches = sum(e.count for e in found)
    if launches != iters:
        warnings.warn(f"{launches} {name_prefix!r} events over {iters} calls ({total_us / launches:.1f} µs each); "
                      f"reporting their total per call", RuntimeWarning, stacklevel=2)
    return total_us * 1e-6 / iters


def autotuned_call(fn: Callable[[], object]) -> Dict[str, Dict[str, float]]:
    """Run ``fn`` once; for each fused kernel whose autotuner tuned a new shape class during it, every
    candidate config's time (ms, Triton's median) keyed by the config, the chosen one marked with ``*``.
    Empty when nothing was tuned (cached key, autotuning off, no CUDA): which candidates win on a device
    decides which stay in the kernels' config lists."""
    from ..kernels import window_attention_bwd, window_attention_fwd

    tuners = {"forward": window_attention_fwd._window_attention_fwd_autotuned,
              "backward": window_attention_bwd._window_attention_bwd_autotuned}
    before = {name: len(tuner.cache) for name, tuner in tuners.items()}
    fn()
    tuned = {}
    for name, tuner in tuners.items():
        timings = getattr(tuner, "configs_timings", None)  # the last tuned key's, in Triton 2.2+
        if len(tuner.cache) == before[name] or not timings:
            continue
        best = getattr(tuner, "best_config", None)
        tuned[name] = {f"{config}{' *' if config is best else ''}": float(t[0] if isinstance(t, (list, tuple)) else t)
                       for config, t in timings.items()}
    return tuned


class PeakMemory:
    """Peak memory over a ``with`` block: CUDA ``max_memory_allocated``, or the process's peak RSS on CPU.

    On the CPU the number is the whole process's high-water mark (``getrusage``), not the block's own.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes: Optional[int] = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            try:
                import resource

                self.bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
            except (ImportError, OSError):
                self.bytes = None

    @property
    def kind(self) -> str:
        return "cuda max_memory_allocated" if self.device.type == "cuda" else "process peak RSS"

    def as_dict(self) -> dict:
        return {"peak_memory_bytes": self.bytes, "peak_memory_kind": self.kind}


class _StderrProgress:
    """The fallback progress bar: one line per step on stderr."""

    def __init__(self, iterable: Iterable[T], total: Optional[int], desc: str):
        self.iterable, self.total, self.desc = iterable, total, desc
        self._postfix = ""

    def __iter__(self) -> Iterator[T]:
        start = time.perf_counter()
        for i, item in enumerate(self.iterable, 1):
            yield item
            total = f"/{self.total}" if self.total is not None else ""
            print(f"{self.desc}: {i}{total} [{time.perf_counter() - start:.1f}s] {self._postfix}".rstrip(),
                  file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str) -> None:
        self._postfix = text


def progress(iterable: Iterable[T], desc: str, total: Optional[int] = None, enabled: bool = True):
    """Wrap ``iterable`` in a progress bar on stderr: tqdm if installed, else a minimal line printer."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _StderrProgress(iterable, total, desc)
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False)


def cuda_unavailable_reason(device: torch.device) -> Optional[str]:
    """Why a CUDA-only measurement cannot run on ``device`` (None when it can)."""
    if device.type != "cuda":
        return "needs CUDA" + ("" if torch.cuda.is_available() else " (no GPU on this machine)")
    return None


def fused_unavailable_reason(device: torch.device) -> Optional[str]:
    """Why the fused Triton kernels cannot be measured on ``device`` (None when they can)."""
    reason = cuda_unavailable_reason(device)
    if reason:
        return reason
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "TRITON_INTERPRET is set: the interpreter is never benchmarked"
    try:
        import swin_fused.ops  # noqa: F401
    except ImportError as error:
        return f"fused op unavailable ({error})"
    return None


def _autocast(device: torch.device, dtype: torch.dtype):
    """Autocast to ``dtype`` for half types (fp32 master weights); a no-op context otherwise."""
    import contextlib

    if dtype in (torch.float16, torch.bfloat16):
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


def inference_step(model: torch.nn.Module, images: torch.Tensor, backend: Optional[str] = None,
                   compile=False) -> Callable[[], torch.Tensor]:
    """``step()`` runs one ``torch.no_grad`` forward of ``model`` (already in eval mode, dtype, device);
    ``compile``: False, True or a torch.compile mode (``"max-autotune"``, ``"reduce-overhead"``)."""
    from ..backend import use_backend

    run = compiled(model, compile)

    def step() -> torch.Tensor:
        with torch.no_grad(), use_backend(backend or "auto"):
            return run(images)

    return step


def training_step(model: torch.nn.Module, images: torch.Tensor, dtype: torch.dtype, backend: Optional[str] = None,
                  compile=False) -> Callable[[], torch.Tensor]:
    """``step()`` runs forward, cross-entropy, backward and an SGD step (autocast to ``dtype`` for half types).

    ``model`` keeps fp32 weights; ``images`` are fp32 on the model's device.
    """
    from ..backend import use_backend

    model.train()
    run = compiled(model, compile)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 1000, (images.shape[0],), generator=gen).to(images.device)

    def step() -> torch.Tensor:
        with use_backend(backend or "auto"), _autocast(images.device, dtype):
            loss = torch.nn.functional.cross_entropy(run(images).float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def format_table(headers: List[str], rows: List[List[object]]) -> str:
    """Plain-text table with aligned columns (numbers right-aligned, text left-aligned)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def numeric(text: str) -> bool:
        if text == "—":  # a missing number sits where the numbers are
            return True
        return text.replace(",", "").replace(".", "", 1).replace("x", "").replace("%", "").strip().isdigit()

    def line(row: List[str]) -> str:
        return "  ".join(c.rjust(w) if numeric(c) else c.ljust(w) for c, w in zip(row, widths)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])
