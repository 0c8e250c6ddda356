"""Whole models: inference and training-step throughput (images/s), the package vs timm vs torchvision.

Rows: ``ours`` on the fused backend (CUDA) and on its PyTorch backend, timm's and torchvision's models,
each eager and (CUDA) ``torch.compile``-d. Inference runs the model in the benchmark dtype under
``torch.no_grad``; a training step is forward + cross-entropy + backward + SGD with fp32 weights and
autocast to the benchmark dtype. ``extra_info["images_per_s"]`` is batch / median step time.
"""
import pytest
import torch

from bench_settings import DEVICE, DTYPE, MODEL_ROUNDS, ON_CUDA, selected
from swin_fused.tools.baselines import build_model, model_unavailable_reason
from swin_fused.tools.benchmarking import fused_unavailable_reason, impl_id, inference_step, training_step

#: name: (inference batch, training batch) on CUDA. The CPU run keeps to Swin-T at batch 1.
CUDA_BATCHES = {
    "swin_tiny_patch4_window7_224": (256, 128),
    "swin_small_patch4_window7_224": (256, 128),
    "swin_base_patch4_window7_224": (128, 64),
    "swin_base_patch4_window12_384": (64, 32),
}
MODELS = [m for m in (CUDA_BATCHES if ON_CUDA else ["swin_tiny_patch4_window7_224"])
          if selected(m, "SWIN_FUSED_BENCH_MODELS")]
#: (source, backend, compiled)
ROWS = [
    ("ours", "triton", False), ("ours", "torch", False), ("ours", "triton", True),
    ("timm", None, False), ("timm", None, True),
    ("torchvision", None, False), ("torchvision", None, True),
]


def _row_id(row):
    return impl_id(*row)


@pytest.mark.parametrize("mode", ["infer", "train"])
@pytest.mark.parametrize("row", ROWS, ids=_row_id)
@pytest.mark.parametrize("name", MODELS)
def test_model_throughput(measure, name, row, mode):
    source, backend, compiled = row
    if backend == "triton":
        reason = fused_unavailable_reason(DEVICE)
        if reason:
            pytest.skip(reason)
    if compiled and not ON_CUDA:
        pytest.skip("torch.compile rows run on CUDA only (compiling a Swin on 2 CPU cores takes minutes)")
    reason = model_unavailable_reason(source, name)
    if reason:
        pytest.skip(reason)
    batch = CUDA_BATCHES[name][mode == "train"] if ON_CUDA else 1
    img = 384 if "384" in name else 224
    model = build_model(source, name, DEVICE)
    images = torch.randn(batch, 3, img, img, device=DEVICE)
    if mode == "infer":
        model = model.eval().to(DTYPE)
        step = inference_step(model, images.to(DTYPE), backend=backend, compile=compiled)
    else:
        step = training_step(model, images, DTYPE, backend=backend, compile=compiled)
    measure(step, rounds=MODEL_ROUNDS, group=f"model {name} {mode}", dtype=DTYPE, batch=batch, images=batch,
            kind="model", impl=_row_id(row), mode=mode, model=name, source=source, compiled=compiled)
