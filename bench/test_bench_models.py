"""Whole models: inference and training-step throughput (images/s), the package vs timm vs torchvision, eager and
under ``torch.compile`` in the modes a speed-minded user picks.

Rows: ``ours`` on the fused backend (CUDA) and on its PyTorch backend, timm's and torchvision's models; each
eager and (CUDA) compiled: ``default`` and ``max-autotune`` at the throughput batch, ``reduce-overhead`` (CUDA
graphs) at batch 1, where launch latency decides. Inference runs the model in the benchmark dtype under
``torch.no_grad``; a training step is forward + cross-entropy + backward + SGD with fp32 weights and autocast to
the benchmark dtype. ``extra_info``: ``images_per_s`` (batch / median step time), ``compile_s`` (the first
call: compilation and autotuning), peak memory (conftest). Compiled rows are selected with ``-k compiled``,
``-k max-autotune``, ``-k reduce-overhead``; eager rows with ``-k eager``. Also eager: timm's and torchvision's
models after ``swin_fused.optimize`` and the package's model with PyTorch's LayerNorms (see ``ROWS``).
"""
import time

import pytest
import torch

import swin_fused
from bench_settings import DEVICE, DTYPE, MODEL_ROUNDS, ON_CUDA, selected
from swin_fused.tools.baselines import build_model, model_unavailable_reason
from swin_fused.norm import use_fused_norms
from swin_fused.tools.benchmarking import (fused_unavailable_reason, impl_id, inference_step, synchronize,
                                           training_step)

#: name: (inference batch, training batch) on CUDA at throughput. The CPU run keeps to Swin-T at batch 1.
CUDA_BATCHES = {
    "swin_tiny_patch4_window7_224": (256, 128),
    "swin_small_patch4_window7_224": (256, 128),
    "swin_base_patch4_window7_224": (128, 64),
    "swin_base_patch4_window12_384": (64, 32),
}
MODELS = [m for m in (CUDA_BATCHES if ON_CUDA else ["swin_tiny_patch4_window7_224"])
          if selected(m, "SWIN_FUSED_BENCH_MODELS")]
#: (source, backend, torch.compile mode or None, batch kind, variant). Variants (eager, CUDA): ``optimized``, the
#: library's model after ``swin_fused.optimize(model, backend="triton")`` (``ours-optimized-timm-eager``: its
#: attention and LayerNorms fused); ``attention_only``, the package's model with PyTorch's LayerNorms
#: (``ours-fused_attention-eager``, the before to ``ours-fused-eager``'s after of the fused norms).
ROWS = [
    *[(source, backend, None, kind, None) for source, backend in (("ours", "triton"), ("ours", "torch"), ("timm", None),
                                                                  ("torchvision", None))
      for kind in ("throughput", "latency")],
    *[(source, "triton", None, kind, variant) for source, variant in (("ours", "attention_only"),
                                                                      ("timm", "optimized"),
                                                                      ("torchvision", "optimized"))
      for kind in ("throughput", "latency")],
    *[(source, backend, mode, "throughput", None) for mode in ("default", "max-autotune")
      for source, backend in (("ours", "triton"), ("timm", None), ("torchvision", None))],
    *[(source, backend, "reduce-overhead", "latency", None) for source, backend in (("ours", "triton"),
                                                                                   ("timm", None),
                                                                                   ("torchvision", None))],
]


def _impl(source, backend, compile_mode, variant):
    if variant == "attention_only":
        return "ours-fused_attention-eager"
    return impl_id(source, backend, compile_mode, optimized=variant == "optimized")


def _row_id(row):
    source, backend, compile_mode, kind, variant = row
    return f"{_impl(source, backend, compile_mode, variant)}-{kind}"


@pytest.mark.parametrize("mode", ["infer", "train"])
@pytest.mark.parametrize("row", ROWS, ids=_row_id)
@pytest.mark.parametrize("name", MODELS)
def test_model_throughput(measure, name, row, mode):
    source, backend, compile_mode, kind, variant = row
    if backend == "triton":
        reason = fused_unavailable_reason(DEVICE)
        if reason:
            pytest.skip(reason)
    if compile_mode and not ON_CUDA:
        pytest.skip("torch.compile rows run on CUDA only (compiling a Swin on 2 CPU cores takes minutes)")
    reason = model_unavailable_reason(source, name)
    if reason:
        pytest.skip(reason)
    batch = (CUDA_BATCHES[name][mode == "train"] if ON_CUDA else 1) if kind == "throughput" else 1
    if not ON_CUDA and kind == "latency":
        pytest.skip("the CPU run measures one batch size (1); latency rows are the CUDA batch-1 ones")
    img = 384 if "384" in name else 224
    model = build_model(source, name, DEVICE)
    if variant == "optimized":
        report = swin_fused.optimize(model, backend="triton", verbose=False)
        assert report.patched and not report.left_alone and report.norms, f"optimize() left blocks: {report}"
    images = torch.randn(batch, 3, img, img, device=DEVICE)
    if mode == "infer":
        model = model.eval().to(DTYPE)
        step = inference_step(model, images.to(DTYPE), backend=backend, compile=compile_mode)
    else:
        step = training_step(model, images, DTYPE, backend=backend, compile=compile_mode)
    with use_fused_norms(variant != "attention_only"):  # this thread's setting, for the warm-up and the rounds
        start = time.perf_counter()
        step()  # compilation, autotuning and CUDA-graph capture happen here, outside the timing
        synchronize(DEVICE)
        compile_s = time.perf_counter() - start
        measure(step, rounds=MODEL_ROUNDS, group=f"model {name} {mode} {kind}", dtype=DTYPE, batch=batch,
                images=batch, kind="model", impl=_impl(source, backend, compile_mode, variant), mode=mode, model=name,
                source=source, compiled=compile_mode or False, batch_kind=kind, compile_s=compile_s)
