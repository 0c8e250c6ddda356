"""``swin-fused profile``: where a model's time goes, kernel by kernel (torch.profiler), and by category.

Runs ``--warmup`` untimed steps (compilation, autotuning and caches out of the way), then profiles ``--steps``
steps, each inside ``record_function`` ranges (``swin_fused.step``, ``forward``, ``backward``, ``optimizer``),
and prints ``key_averages()`` sorted by self device time on CUDA (self CPU time on a CPU). The fused Triton
kernels appear as ``_window_attention_fwd_kernel`` / ``_window_attention_bwd_kernel``.

Then the same time by category (``gemm``, ``window_attention``, ``inductor_fused``, ``norm``, ``elementwise``,
``reduction``, ``copy``, ``optimizer``, ...; see ``CATEGORY_PATTERNS``), per step, with each category's top
kernels, and one line naming the largest non-GEMM cost: what the next fusion should target. On CUDA only the
device rows count (kernels, memcpy, memset), each once; on a CPU every op's self CPU time.

``--compile MODE`` profiles the model under ``torch.compile`` as the benchmarks compile it (the training step
compiles the model; loss, backward and optimizer run around it), after enough warm-up steps that compiling,
autotuning and CUDA-graph recording stay out of the profiled window (``MIN_COMPILED_WARMUP``). Under
``reduce-overhead`` the kernels replayed inside CUDA graphs count as the profiler reports them. ``--json PATH`` writes the breakdown with the
environment; ``--trace`` writes a Chrome trace (open in chrome://tracing or https://ui.perfetto.dev).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from ..backend import use_backend
from .benchmarking import (_autocast, compiled, device_time_us, environment, format_table, fused_unavailable_reason,
                           progress, synchronize)

__all__ = ["add_arguments", "run", "FUSED_KERNELS", "CATEGORIES", "CATEGORY_PATTERNS", "kernel_category",
           "profiled_rows", "category_breakdown", "largest_non_gemm_line", "format_breakdown"]

FUSED_KERNELS = ("_window_attention_fwd_kernel", "_window_attention_bwd_kernel")

#: ``--compile`` choices; "none" is eager.
COMPILE_CHOICES = ("none", "default", "max-autotune", "reduce-overhead")
#: Fewest warm-up steps that leave compilation out of the profiled window: the first step compiles (forward,
#: then the backward at its first call) and autotunes; the second shows nothing recompiles. CUDA-graph trees run
#: a function eagerly at its first call and record it at the second, so replays start at the third.
MIN_COMPILED_WARMUP = {"default": 2, "max-autotune": 2, "reduce-overhead": 3}

#: The printed and written order of the categories.
CATEGORIES = ("gemm", "window_attention", "attention", "inductor_fused", "norm", "elementwise", "reduction", "copy",
              "optimizer", "other")


def _aten(*ops: str) -> str:
    """A pattern for the CPU rows of these aten ops (exact names)."""
    return r"^aten::(" + "|".join(ops) + r")$"


#: (category, regex) per kernel or op name, first match wins; searched case-insensitively anywhere in the name,
#: so C++ template arguments count too, which is why some rules come before the broad ones they would
#: otherwise lose to. Extend here when the "other" row names kernels that belong somewhere.
CATEGORY_PATTERNS: Tuple[Tuple[str, str], ...] = (
    # autograd's nodes (CPU rows only): their self time is the engine's host work, not the op they are named for
    ("other", r"^autograd::|^torch::autograd::|^(?-i:\w+Backward\d*)$"),  # AddmmBackward0, not *_backward
    ("window_attention", r"_window_attention_\w*kernel"),  # this package's fused kernels (FUSED_KERNELS)
    # SDPA's and FlexAttention's kernels (timm, torchvision): before gemm, their templates name cutlass types
    ("attention", r"flash_(fwd|bwd)|fmha|efficient_attention|flex_attention|_sdpa_|^aten::_scaled_dot_product"),
    # multi_tensor_apply templates name elementwise functors; triton_for_ is inductor's foreach (a compiled step)
    ("optimizer", r"multi_tensor_apply|foreach|fused_(adam|adamw|sgd)|^optimizer\.|^triton_for_"),
    # inductor: GEMM / conv templates, then its generated kernels (layer norm split out), whose descriptive
    # names list the aten ops they fused. On the CPU the generated C++ runs untraced inside the graph's range.
    ("gemm", r"^triton_tem_fused_\w*(mm|conv)"),
    ("norm", r"^(triton_(poi|red|per)|cpp_fused)_\w*layer_norm"),
    ("inductor_fused", r"^triton_(poi|red|per|tem)_|^cpp_fused_|^## Call CompiledFxGraph"),
    # data movement and fills: before gemm (cudnn's layout transforms) and elementwise (copies are
    # elementwise_kernel<direct_copy_kernel...> templates)
    ("copy", r"^memcpy|^memset|copy_kernel|direct_copy|CatArrayBatchedCopy|index_|indexSelect|indexFunc|gather|"
             r"scatter|roll_cuda|FillFunctor|nchwToNhwc|nhwcToNchw|"
             + _aten("copy_", "_to_copy", "clone", "contiguous", "cat", "stack", r"index\w*", "_index_put_impl_",
                     "gather", r"scatter\w*", "roll", "fill_", "zero_", "zeros", "new_zeros", "repeat", "flip",
                     "narrow_copy", "nonzero", r"embedding\w*", r"_unsafe_index\w*")),
    # matmul and convolution (implicit GEMM; Swin's one conv is the patch embedding), cuBLAS(Lt) incl. split-K
    ("gemm", r"gemm|gemv|xmma|nvjet|cutlass|cublas|cudnn|fprop|dgrad|wgrad|convolve|"
             + _aten("mm", "addmm", "bmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "matmul", "linear",
                     "_scaled_mm", r"\w*convolution\w*", r"conv\dd")),
    ("norm", r"layer_norm|layernorm|GammaBeta|rms_norm|group_norm|batch_norm"),
    ("reduction", r"reduce|softmax|nll_loss|cross_entropy|"
                  + _aten("sum", "mean", "amax", "amin", "max", "min", "argmax", "argmin", "cumsum", "any", "all",
                          "norm", r"linalg_\w*norm", r"var\w*", r"std\w*")),
    ("elementwise", r"elementwise|gelu|dropout|bernoulli|distribution_|"
                    + _aten(r"add_?", r"sub_?", r"mul_?", r"div_?", r"neg_?", r"exp_?", r"pow_?", r"sqrt_?",
                            r"rsqrt_?", r"clamp\w*", r"where", r"masked_fill_?", r"ne", r"eq", r"ge", r"gt", r"le",
                            r"lt", r"bitwise_\w+", r"threshold_backward", r"addcmul_?", r"addcdiv_?", r"lerp_?",
                            r"abs_?", r"sign_?", r"sigmoid\w*", r"tanh\w*", r"silu\w*", r"relu_?")),
)
_COMPILED_PATTERNS = tuple((category, re.compile(pattern, re.IGNORECASE)) for category, pattern in CATEGORY_PATTERNS)


def kernel_category(name: str) -> str:
    """The category of a kernel (CUDA) or op (CPU) name: the first ``CATEGORY_PATTERNS`` rule that matches,
    else ``"other"``."""
    for category, pattern in _COMPILED_PATTERNS:
        if pattern.search(name):
            return category
    return "other"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .options import add_device_options, non_negative_int, positive_int

    add_device_options(parser)
    parser.add_argument("--model", default="swin_tiny_patch4_window7_224", help="config name (default Swin-T)")
    parser.add_argument("--batch", type=positive_int, help="images per step (default: 64 on CUDA, 1 on CPU)")
    parser.add_argument("--mode", choices=["infer", "train"], default="infer")
    parser.add_argument("--backend", choices=["auto", "torch", "triton"], default="auto",
                        help="window-attention backend (auto: fused on CUDA, PyTorch on CPU)")
    parser.add_argument("--compile", choices=COMPILE_CHOICES, default="none",
                        help="torch.compile mode of the model, as the benchmarks compile it (default: none, eager; "
                             "reduce-overhead: CUDA graphs)")
    parser.add_argument("--steps", type=positive_int, default=3, help="profiled steps")
    parser.add_argument("--warmup", type=non_negative_int,
                        help="untimed steps first (default 1; compiled, at least: "
                             + ", ".join(f"{n} {m}" for m, n in MIN_COMPILED_WARMUP.items()) + ")")
    parser.add_argument("--row-limit", type=positive_int, default=25, help="rows of the kernel table")
    parser.add_argument("--top", type=positive_int, default=3, help="kernels listed per category (default 3)")
    parser.add_argument("--json", metavar="PATH", help="also write the category breakdown and environment (JSON)")
    parser.add_argument("--trace", metavar="PATH", help="also write a Chrome trace (JSON)")


def _sort_key(on_cuda: bool) -> str:
    from torch.autograd.profiler_util import FunctionEventAvg

    if not on_cuda:
        return "self_cpu_time_total"
    # renamed from *_cuda_* to *_device_* in torch 2.4
    return "self_device_time_total" if hasattr(FunctionEventAvg, "self_device_time_total") else "self_cuda_time_total"


def _warmup_steps(requested: Optional[int], mode: Optional[str]) -> int:
    """``--warmup``, defaulted; a compiled run must warm up enough to compile outside the profiled window."""
    from .options import CommandError

    least = MIN_COMPILED_WARMUP.get(mode, 0)
    if requested is None:
        return max(1, least)
    if requested < least:
        raise CommandError(f"--warmup {requested} with --compile {mode} would profile compilation; expected "
                           f"--warmup >= {least}")
    return requested


def profiled_rows(averages: Iterable, on_cuda: bool) -> List[Tuple[str, float, int]]:
    """``(name, µs, count)`` of the ``key_averages()`` rows that own the profiled time, each time once.

    On CUDA: the device rows (kernels, memcpy, memset) and their device time, not the CPU ops that launched
    them (an op's self device time is its kernels' time again) nor the ``record_function`` ranges the profiler
    mirrors onto the device timeline (user annotations). A torch whose kernel rows are not tagged with their
    device: the CPU rows' self device time instead (each op's own kernels). On a CPU: every op's self CPU time.
    """
    from torch.autograd import DeviceType

    averages = list(averages)
    if not on_cuda:
        return [(e.key, float(e.self_cpu_time_total), e.count) for e in averages
                if e.device_type == DeviceType.CPU and e.self_cpu_time_total > 0]
    device = [e for e in averages if e.device_type != DeviceType.CPU and not getattr(e, "is_user_annotation", False)]
    if not device:
        device = [e for e in averages if e.device_type == DeviceType.CPU and device_time_us(e) > 0]
    return [(e.key, device_time_us(e), e.count) for e in device if device_time_us(e) > 0]


def category_breakdown(rows: Iterable[Tuple[str, float, int]], steps: int, top: int = 3) -> dict:
    """Time per step by category from ``(name, µs over all steps, count)`` rows (see :func:`profiled_rows`).

    Returns ``{"steps", "total_us_per_step", "categories", "largest_non_gemm"}``: every category of
    ``CATEGORIES`` (zeros included) with ``us_per_step``, ``share_pct`` (of the total; they sum to 100),
    ``count`` and ``count_per_step`` (kernel launches on CUDA, op calls on a CPU), ``kernels`` (distinct names)
    and ``top``, its ``top`` largest names with the same fields; ``largest_non_gemm`` is the category other than
    ``gemm`` with the most time (``{"category", "share_pct", "us_per_step", "top"}``), or None when none took any.
    """
    if steps < 1 or top < 1:
        raise ValueError(f"steps and top must be >= 1, got steps={steps}, top={top}")
    merged: Dict[str, List[float]] = {}  # key_averages() can split one name over rows (device, annotation)
    for name, us, count in rows:
        total = merged.setdefault(name, [0.0, 0])
        total[0] += us
        total[1] += count
    grand_total = sum(us for us, _ in merged.values())

    def entry(us: float, count: int) -> dict:
        return {"us_per_step": us / steps, "share_pct": 100.0 * us / grand_total if grand_total else 0.0,
                "count": count, "count_per_step": count / steps}

    members: Dict[str, List[Tuple[str, float, int]]] = {category: [] for category in CATEGORIES}
    for name, (us, count) in merged.items():
        members[kernel_category(name)].append((name, us, count))
    categories = {}
    for category, named in members.items():
        named.sort(key=lambda row: -row[1])
        categories[category] = {**entry(sum(r[1] for r in named), sum(r[2] for r in named)), "kernels": len(named),
                                "top": [{"name": name, **entry(us, count)} for name, us, count in named[:top]]}
    candidates = [c for c in CATEGORIES if c != "gemm" and categories[c]["us_per_step"] > 0]
    largest = max(candidates, key=lambda c: categories[c]["us_per_step"], default=None)
    return {"steps": steps, "total_us_per_step": grand_total / steps, "categories": categories,
            "largest_non_gemm": None if largest is None else {
                "category": largest, "share_pct": categories[largest]["share_pct"],
                "us_per_step": categories[largest]["us_per_step"], "top": categories[largest]["top"][0]}}


def _short(name: str, width: int = 90) -> str:
    """A kernel name for a table cell: C++ signatures lose ``void`` and are cut at ``width``."""
    name = name[5:] if name.startswith("void ") else name
    return name if len(name) <= width else name[:width - 1] + "…"


def _per_step(count_per_step: float) -> str:
    return f"{count_per_step:.0f}" if float(count_per_step).is_integer() else f"{count_per_step:.1f}"


def largest_non_gemm_line(breakdown: dict) -> str:
    """``largest non-GEMM cost: <category> <share>% — <top kernel> ...``: what the next fusion should target."""
    largest = breakdown["largest_non_gemm"]
    if largest is None:
        return "largest non-GEMM cost: none (no time recorded outside gemm)"
    top = largest["top"]
    line = (f"largest non-GEMM cost: {largest['category']} {largest['share_pct']:.1f}% "
            f"({largest['us_per_step'] / 1e3:,.3f} ms/step) — {_short(top['name'])}: {top['us_per_step'] / 1e3:,.3f} "
            f"ms/step over {_per_step(top['count_per_step'])} calls/step")
    if largest["category"] == "other":
        line += " (no CATEGORY_PATTERNS rule matches these names: add one in swin_fused/tools/profiling.py)"
    return line


def format_breakdown(breakdown: dict, items: str = "kernels") -> str:
    """The categories that took time, largest first, each followed by its top ``items`` (indented)."""
    rows: List[List[object]] = []
    categories = breakdown["categories"]
    for category in sorted((c for c in CATEGORIES if categories[c]["us_per_step"] > 0),
                           key=lambda c: -categories[c]["us_per_step"]):
        for label, item in [(category, categories[category])] + [("  " + _short(t["name"]), t)
                                                                 for t in categories[category]["top"]]:
            rows.append([label, f"{item['us_per_step'] / 1e3:,.3f}", f"{item['share_pct']:.1f}%",
                         _per_step(item["count_per_step"])])
    rows.append(["total", f"{breakdown['total_us_per_step'] / 1e3:,.3f}", "100.0%" if rows else "0.0%", ""])
    return format_table([f"category / top {items}", "ms/step", "share", "calls/step"], rows)


def _notes(averages: Sequence, mode: Optional[str], on_cuda: bool) -> List[str]:
    """What a reader of the breakdown needs to know about how this run's time was attributed."""
    notes = []
    if not on_cuda:
        notes.append("on a CPU the profiler ranges' and autograd's own host time counts too (in other), and the "
                     "optimizer's per-parameter ops (SGD's loop off CUDA) count as elementwise"
                     + ("; inductor's generated C++ runs untraced inside each '## Call CompiledFxGraph' range "
                        "(inductor_fused)" if mode else ""))
    if mode == "reduce-overhead":
        if not on_cuda:
            notes.append("reduce-overhead on a CPU: no CUDA graphs, so this is the default mode's code")
        else:
            launches = sum(e.count for e in averages if e.key == "cudaGraphLaunch")
            # CUPTI reports a replay's kernels one by one on recent drivers, tied to the cudaGraphLaunch (not to
            # the aten ops that recorded them); whether it did here can only be read off the rows themselves.
            notes.append(f"reduce-overhead: {launches} cudaGraphLaunch call(s) in the profiled steps; the kernels "
                         "inside the graphs are counted as the profiler reports them, each replayed kernel as its own "
                         "device row where it traces graph nodes (if the rows above miss the model's kernels, it "
                         "did not, and the breakdown covers only the work outside the graphs)"
                         + ("" if launches else "; none replayed, so inductor ran without CUDA graphs (see its "
                                                "'skipping cudagraphs' message)"))
    return notes


def run(args: argparse.Namespace) -> int:
    from .options import CommandError, device_and_dtype
    from ..configs import create_model, model_config, resolve_model_name

    mode = None if args.compile == "none" else args.compile
    warmup = _warmup_steps(args.warmup, mode)
    device, dtype = device_and_dtype(args)
    args.model = resolve_model_name(args.model)
    on_cuda = device.type == "cuda"
    if args.backend == "triton":
        reason = fused_unavailable_reason(device)
        if reason:
            raise CommandError(f"--backend triton cannot be profiled here: {reason}")
    batch = args.batch or (64 if on_cuda else 1)
    img = model_config(args.model)["img_size"]
    with torch.device(device):
        model = create_model(args.model)
    images = torch.randn(batch, 3, img, img, device=device)
    if args.mode == "infer":
        model = model.eval().to(dtype)
        images = images.to(dtype)
        optimizer = None
    else:
        model.train()
        # the benchmarks' training step (benchmarking.training_step), so a profile explains its row
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        target = torch.zeros(batch, dtype=torch.long, device=device)
    run_model = compiled(model, mode)  # the benchmarks' torch.compile call

    def step() -> None:
        with record_function("swin_fused.step"), use_backend(args.backend):
            if optimizer is None:
                with torch.no_grad(), record_function("forward"):
                    run_model(images)
                return
            with _autocast(device, dtype), record_function("forward"):
                loss = torch.nn.functional.cross_entropy(run_model(images).float(), target)
            with record_function("backward"):
                loss.backward()
            with record_function("optimizer"):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

    show = not args.no_progress
    start = time.perf_counter()
    for _ in progress(range(warmup), desc="warmup" + (" (compiling)" if mode else ""), enabled=show):
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - start
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    if not on_cuda:
        # Kineto (read at the profiler's first start) otherwise prints "gpuGetDeviceCount failed" and its
        # start/stop lines to stderr on a machine without a GPU: noise for a CPU profile. On CUDA its messages
        # (CUPTI permissions, say) matter and stay.
        os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=activities, record_shapes=False) as prof:
        for _ in progress(range(args.steps), desc="profile", enabled=show):
            step()
            synchronize(device)

    env = environment(device, dtype, batch)
    sort = _sort_key(on_cuda)
    print(f"{args.model}, {args.mode}, batch {batch}, {env['dtype']}, backend {args.backend}, compile {args.compile} "
          f"on {env['device']} (torch {env['torch']}, triton {env['triton']}, commit {env['commit']}); {warmup} "
          f"warm-up step(s) in {warmup_s:.1f} s, {args.steps} profiled step(s), sorted by {sort}")
    averages = prof.key_averages()
    print(averages.table(sort_by=sort, row_limit=args.row_limit))
    if on_cuda:
        found = [(e.key, device_time_us(e), e.count) for e in averages if e.key.startswith(FUSED_KERNELS)]
        if found:
            for key, us, count in found:
                print(f"fused kernel {key}: {us / 1e3:.2f} ms device time over {count} launches")
        else:
            print(f"fused kernels: none recorded (backend {args.backend}; expected {', '.join(FUSED_KERNELS)})")
    else:
        print(f"fused kernels ({', '.join(FUSED_KERNELS)}): skipped, {fused_unavailable_reason(device)}")

    notes = _notes(averages, mode, on_cuda)
    breakdown = category_breakdown(profiled_rows(averages, on_cuda), args.steps, args.top)
    measure = "self device time (device rows: kernels, memcpy, memset)" if on_cuda else "self CPU time (every op)"
    print(f"\n{measure} per step by category, {args.steps} profiled step(s):")
    print(format_breakdown(breakdown, "kernels" if on_cuda else "ops"))
    for note in notes:
        print(f"note: {note}")
    print(largest_non_gemm_line(breakdown))

    if args.json:
        record = {"model": args.model, "mode": args.mode, "batch": batch, "dtype": env["dtype"],
                  "backend": args.backend, "compile": args.compile, "warmup": warmup, "warmup_s": warmup_s,
                  "measure": measure, "environment": env, "notes": notes, **breakdown}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=2)
        print(f"wrote breakdown {args.json}", file=sys.stderr)
    if args.trace:
        prof.export_chrome_trace(args.trace)
        print(f"wrote Chrome trace {args.trace}", file=sys.stderr)
    return 0

