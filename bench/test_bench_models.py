"""Whole models: inference and training-step throughput (images/s), the package vs timm vs torchvision, eager and
under ``torch.compile`` in the modes a speed-minded user picks.

Rows: ``ours`` on the fused backend (CUDA) and on its PyTorch backend, timm's and torchvision's models; each
eager and (CUDA) compiled: ``default`` and ``max-autotune`` at the throughput batch, ``reduce-overhead`` (CUDA
graphs) at batch 1, where launch latency decides. Inference runs the model in the benchmark dtype under
``torch.no_grad``; a training step is forward + cross-entropy + backward + SGD with fp32 weights and autocast to
the benchmark dtype. ``extra_info``: ``images_per_s`` (batch / median step time), ``compile_s`` (the first
call: compilation and autotuning), peak memory (conftest). Compiled rows are selected with ``-k compiled``,
``-k max-autotune``, ``-k reduce-overhead``; eager rows with ``-k eager``.
"""
import time

import pytest
import torch

from bench_settings import DEVICE, DTYPE, MODEL_ROUNDS, ON_CUDA, selected
from swin_fused.tools.baselines import build_model, model_unavailable_reason
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
#: (source, backend, torch.compile mode or None, batch kind)
ROWS = [
    *[(source, backend, None, kind) for source, backend in (("ours", "triton"), ("ours", "torch"), ("timm", None),
                                                            ("torchvision", None))
      for kind in ("throughput", "latency")],
    *[(source, backend, mode, "throughput") for mode in ("default", "max-autotune")
      for source, backend in (("ours", "triton"), ("timm", None), ("torchvision", None))],
    *[(source, backend, "reduce-overhead", "latency") for source, backend in (("ours", "triton"), ("timm", None),
                                                                             ("torchvision", None))],
]


def _row_id(row):
    source, backend, mode, kind = row
    return f"{impl_id(source, backend, mode)}-{kind}"


@pytest.mark.parametrize("mode", ["infer", "train"])
@pytest.mark.parametrize("row", ROWS, ids=_row_id)
@pytest.mark.parametrize("name", MODELS)
def test_model_throughput(measure, name, row, mode):
    source, backend, compile_mode, kind = row
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
    images = torch.randn(batch, 3, img, img, device=DEVICE)
    if mode == "infer":
        model = model.eval().to(DTYPE)
        step = inference_step(model, images.to(DTYPE), backend=backend, compile=compile_mode)
    else:
        step = training_step(model, images, DTYPE, backend=backend, compile=compile_mode)
    start = time.perf_counter()
    step()  # compilation, autotuning and CUDA-graph capture happen here, outside the timing
    synchronize(DEVICE)
    compile_s = time.perf_counter() - start
    measure(step, rounds=MODEL_ROUNDS, group=f"model {name} {mode} {kind}", dtype=DTYPE, batch=batch, images=batch,
            kind="model", impl=impl_id(source, backend, compile_mode), mode=mode, model=name, source=source,
            compiled=compile_mode or False, batch_kind=kind, compile_s=compile_s)
