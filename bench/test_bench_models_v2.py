"""Whole Swin V2 models: inference and training-step throughput (images/s) of timm's and torchvision's V2 models,
each as the library builds it and after ``swin_fused.optimize(model, backend="triton")``. CUDA only (skipped on the
CPU, with the reason).

Models: timm ``swinv2_tiny_window8_256`` and ``swinv2_tiny_window16_256``, torchvision ``swin_v2_t`` (window 8),
all at 256 px. Rows (``impl`` in the records):

- ``timm-eager`` / ``torchvision-eager``: the library's model as built;
- ``ours-fused-eager``: the same model (a fresh build of it) after ``swin_fused.optimize(model, backend="triton")``,
  every V2 block on the fused cosine-attention kernels;
- ``ours-dropin-fused-eager``: the package's drop-in ``swin_fused.SwinTransformerV2`` of the same layout (timm's
  names: the drop-in of ``swin_v2_t``'s layout is ``swinv2_tiny_window8_256``'s);
- ``*-compiled``: the library's model and the optimized one under ``torch.compile`` (default mode) at the
  throughput batch, selected with ``-k compiled`` (a compile takes 30 s or more on a fresh machine).

Inference runs the model in the benchmark dtype under ``torch.no_grad``; a training step is forward +
cross-entropy + backward + SGD with fp32 weights and autocast to the benchmark dtype (as in
test_bench_models.py). ``extra_info``: ``images_per_s``, ``compile_s`` (the first call), peak memory.
``SWIN_FUSED_BENCH_V2_MODELS``: comma-separated substrings of the model names (e.g. ``window8,swin_v2_t``).
"""
import time

import pytest
import torch

from bench_settings import DEVICE, DTYPE, MODEL_ROUNDS, ON_CUDA, V2_NO_CUDA, selected
from swin_fused.configs import resolve_model_name
from swin_fused.tools.baselines import build_model, model_unavailable_reason
from swin_fused.tools.benchmarking import (COMPILE_MODES, fused_unavailable_reason, impl_id, inference_step,
                                           synchronize, training_step)

pytestmark = pytest.mark.skipif(not ON_CUDA, reason=V2_NO_CUDA)

#: the library's name: (source, inference batch, training batch) on CUDA; each name is an alias of an official
#: config, under which every source builds it (``baselines.build_model``).
V2_MODELS = {
    "swinv2_tiny_window8_256": ("timm", 256, 128),
    "swinv2_tiny_window16_256": ("timm", 256, 128),
    "swin_v2_t": ("torchvision", 256, 128),
}
MODELS = [m for m in V2_MODELS if selected(m, "SWIN_FUSED_BENCH_V2_MODELS")]
#: (variant, torch.compile mode or None): the library's model, it after optimize(), the package's drop-in.
ROWS = [("library", None), ("optimized", None), ("dropin", None), ("library", "default"), ("optimized", "default")]
IMG = 256


def _impl(variant: str, source: str, compile_mode) -> str:
    if variant == "library":
        return impl_id(source, None, compile_mode)  # timm-eager, torchvision-compiled, ...
    if variant == "optimized":
        return impl_id(source, "triton", compile_mode, optimized=True)  # ours-optimized-timm-eager, ...
    return f"ours-dropin-fused-{COMPILE_MODES[compile_mode]}"


def _params():
    for name in MODELS:
        source = V2_MODELS[name][0]
        for variant, compile_mode in ROWS:
            if variant == "dropin" and source != "timm":
                continue  # the drop-in of swin_v2_t's layout is timm's swinv2_tiny_window8_256's
            row_id = "library" if variant == "library" else _impl(variant, source, None).rsplit("-", 1)[0]
            yield pytest.param(name, variant, compile_mode,
                               id=f"{name}-{row_id}-{COMPILE_MODES[compile_mode]}")


@pytest.mark.parametrize("mode", ["infer", "train"])
@pytest.mark.parametrize("name,variant,compile_mode", list(_params()))
def test_model_throughput_v2(measure, name, variant, compile_mode, mode):
    source, infer_batch, train_batch = V2_MODELS[name]
    if variant != "library":
        reason = fused_unavailable_reason(DEVICE)
        if reason:
            pytest.skip(reason)
    build_source = "ours" if variant == "dropin" else source
    official = resolve_model_name(name)
    reason = model_unavailable_reason(build_source, official)
    if reason:
        pytest.skip(reason)
    batch = train_batch if mode == "train" else infer_batch
    model = build_model(build_source, official, DEVICE)
    if mode == "infer":
        model = model.eval().to(DTYPE)
    backend = None
    if variant == "optimized":
        import swin_fused

        report = swin_fused.optimize(model, backend="triton", verbose=False)
        assert report.patched and not report.left_alone, f"optimize() did not route every block: {report}"
        backend = "triton"
    elif variant == "dropin":
        backend = "triton"
    images = torch.randn(batch, 3, IMG, IMG, device=DEVICE)
    if mode == "infer":
        step = inference_step(model, images.to(DTYPE), backend=backend, compile=compile_mode)
    else:
        step = training_step(model, images, DTYPE, backend=backend, compile=compile_mode)
    start = time.perf_counter()
    step()  # compilation and autotuning happen here, outside the timing
    synchronize(DEVICE)
    compile_s = time.perf_counter() - start
    measure(step, rounds=MODEL_ROUNDS, group=f"model {name} {mode} throughput", dtype=DTYPE, batch=batch,
            images=batch, kind="model", impl=_impl(variant, source, compile_mode), mode=mode, model=name,
            source=build_source, swin="v2", variant=variant, compiled=compile_mode or False,
            batch_kind="throughput", compile_s=compile_s)
