"""The backend switch (swin_fused.backend) and the import-time promises of the package.

- set_backend / get_backend / use_backend: nesting, restoring (also on errors), thread scope, clear errors.
- SWIN_FUSED_BACKEND is read once at import (checked in fresh interpreters).
- "auto" means the PyTorch path for CPU tensors and the fused op for CUDA ones; window_attention dispatches
  accordingly.
- Importing the package (every submodule) never queries or initializes CUDA, even after building and running
  a model on the CPU, and never imports a top-level module named ``kernels``.
"""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from conftest import HAS_CUDA

import swin_fused
from swin_fused import backend, get_backend, set_backend, use_backend

# The directory holding the swin_fused under test (the checkout or site-packages), for child interpreters.
PACKAGE_ROOT = str(Path(swin_fused.__file__).resolve().parents[1])


def run_python(code, tmp_path, **env_overrides):
    """Run ``code`` in a fresh interpreter that imports the same swin_fused as this process."""
    env = {k: v for k, v in os.environ.items() if k not in ("SWIN_FUSED_BACKEND", "TRITON_INTERPRET")}
    env["PYTHONPATH"] = PACKAGE_ROOT
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


# --------------------------------------------------------------------------------------------------------------
# set / get / use
# --------------------------------------------------------------------------------------------------------------


def test_default_is_auto():
    assert get_backend() == "auto"
    assert backend.BACKENDS == ("auto", "torch", "triton")


def test_set_backend_sets_and_normalizes_case():
    set_backend("torch")
    assert get_backend() == "torch"
    set_backend("TRITON")
    assert get_backend() == "triton"
    set_backend("auto")
    assert get_backend() == "auto"


def test_use_backend_nests_and_restores():
    set_backend("triton")
    with use_backend("torch") as name:
        assert name == "torch" and get_backend() == "torch"
        with use_backend("auto"):
            assert get_backend() == "auto"
            with use_backend("triton"):
                assert get_backend() == "triton"
            assert get_backend() == "auto"
        assert get_backend() == "torch"
    assert get_backend() == "triton"


def test_use_backend_restores_after_an_exception():
    with pytest.raises(RuntimeError, match="boom"):
        with use_backend("torch"):
            raise RuntimeError("boom")
    assert get_backend() == "auto"
    set_backend("triton")
    with pytest.raises(RuntimeError):
        with use_backend("auto"):
            with use_backend("torch"):
                raise RuntimeError("boom")
    assert get_backend() == "triton"


def test_use_backend_is_scoped_to_its_thread_and_set_backend_is_the_default():
    seen = {}

    def probe(key):
        seen[key] = get_backend()

    with use_backend("torch"):
        thread = threading.Thread(target=probe, args=("inside use_backend",))
        thread.start()
        thread.join()
    set_backend("triton")
    thread = threading.Thread(target=probe, args=("after set_backend",))
    thread.start()
    thread.join()
    assert seen == {"inside use_backend": "auto", "after set_backend": "triton"}


# ids spelled out: a bare "cuda" id would count as the `cuda` marker keyword in conftest's skip hook.
@pytest.mark.parametrize("bad", ["cuda", "", "Torch ", None, 1],
                         ids=["device-name", "empty", "trailing-space", "none", "int"])
def test_invalid_backend_is_a_clear_error_naming_the_value(bad):
    for call in (set_backend, lambda name: use_backend(name).__enter__()):
        with pytest.raises(ValueError, match=r"unknown backend .*expected one of auto, torch, triton") as info:
            call(bad)
        assert repr(bad) in str(info.value)
    assert get_backend() == "auto"  # a rejected name changes nothing


# --------------------------------------------------------------------------------------------------------------
# Resolution and dispatch
# --------------------------------------------------------------------------------------------------------------


def test_auto_resolves_to_torch_on_cpu_tensors():
    x = torch.zeros(2)
    assert backend.resolve_backend(x) == "torch"
    for name in ("torch", "triton"):
        with use_backend(name):
            assert backend.resolve_backend(x) == name


@pytest.mark.cuda
def test_auto_resolves_to_triton_on_cuda_tensors():
    x = torch.zeros(2, device="cuda")
    assert backend.resolve_backend(x) == "triton"
    with use_backend("torch"):
        assert backend.resolve_backend(x) == "torch"


@pytest.fixture
def dispatch_log(monkeypatch):
    """Record which implementation window_attention hands each call to (calling through to it)."""
    import swin_fused.ops
    import swin_fused.torch_path

    log = []

    def spy(module, name, label):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            log.append(label)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    spy(swin_fused.torch_path, "window_attention_torch", "torch")
    spy(swin_fused.ops, "fused_window_attention", "triton")
    return log


@pytest.mark.parametrize("name, dtype, dropout_p, expected", [
    ("auto", torch.float32, 0.0, "triton" if HAS_CUDA else "torch"),  # CUDA where there is a GPU, else CPU
    ("torch", torch.float32, 0.0, "torch"),
    ("triton", torch.float32, 0.0, "triton"),  # CPU: Triton interpreter
    ("triton", torch.float32, 0.1, "torch"),  # attention dropout runs on the PyTorch path
    ("auto", torch.float64, 0.0, "torch"),
])
def test_window_attention_dispatches_on_the_backend(dispatch_log, name, dtype, dropout_p, expected):
    device = "cuda" if HAS_CUDA else "cpu"  # the compiled kernels (TRITON_INTERPRET=0) need CUDA tensors
    qkv = torch.randn(1, 5, 6, 3 * 2 * 16, dtype=dtype, device=device)  # 2 heads of 16, 5 x 6 map, window 2
    table = torch.randn(3 * 3, 2, dtype=dtype, device=device)
    with use_backend(name):
        out = swin_fused.window_attention(qkv, table, 2, 2, 1, dropout_p=dropout_p)
    assert out.shape == (1, 5, 6, 32)
    assert dispatch_log == [expected]


def test_explicit_triton_backend_rejects_float64_clearly():
    qkv = torch.randn(1, 4, 4, 3 * 2 * 16, dtype=torch.float64)
    table = torch.randn(3 * 3, 2, dtype=torch.float64)
    with use_backend("triton"), pytest.raises(TypeError, match="float64"):
        swin_fused.window_attention(qkv, table, 2, 2, 1)


def test_model_forward_follows_the_backend(dispatch_log):
    model = swin_fused.SwinTransformer(img_size=32, embed_dim=16, depths=(2,), num_heads=(1,), window_size=4,
                                       num_classes=3).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model(x)
        assert dispatch_log == ["torch", "torch"]
        dispatch_log.clear()
        with use_backend("triton"):
            model(x)
        assert dispatch_log == ["triton", "triton"]


# --------------------------------------------------------------------------------------------------------------
# Import time, in fresh interpreters
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [("torch", "torch"), ("TRITON", "triton")])
def test_env_var_sets_the_default_at_import(tmp_path, value, expected):
    code = ("import threading, swin_fused\n"
            "seen = []\n"
            "t = threading.Thread(target=lambda: seen.append(swin_fused.get_backend())); t.start(); t.join()\n"
            "print(swin_fused.get_backend(), seen[0])")
    result = run_python(code, tmp_path, SWIN_FUSED_BACKEND=value)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [expected, expected]


def test_invalid_env_var_fails_the_import_clearly(tmp_path):
    result = run_python("import swin_fused", tmp_path, SWIN_FUSED_BACKEND="cuda")
    assert result.returncode != 0
    assert "ValueError: SWIN_FUSED_BACKEND: unknown backend 'cuda'; expected one of auto, torch, triton" \
        in result.stderr


IMPORT_PROBE = r"""
import importlib, json, pkgutil, sys
import torch

queried = []

def refuse(name):
    def call(*args, **kwargs):
        queried.append(name)
        raise AssertionError(f"torch.cuda.{name} called during import")
    return call

# Any CUDA query while the package's modules import is a bug (the package must import on GPU-less machines).
CUDA_QUERIES = ("is_available", "device_count", "current_device", "get_device_properties",
                "get_device_capability", "get_device_name", "init", "_lazy_init", "synchronize")
saved = {name: getattr(torch.cuda, name) for name in CUDA_QUERIES}
for name in CUDA_QUERIES:
    setattr(torch.cuda, name, refuse(name))

import swin_fused
imported, skipped = [], []
for info in pkgutil.walk_packages(swin_fused.__path__, "swin_fused."):
    if info.name.endswith(".__main__"):  # `python -m swin_fused` runs the CLI on import
        continue
    try:
        importlib.import_module(info.name)
        imported.append(info.name)
    except ImportError as error:  # optional dependencies only (the CLI's plotting, interop with timm, ...)
        if error.name not in ("matplotlib", "tqdm", "timm", "torchvision"):
            raise
        skipped.append(info.name)
for name, fn in saved.items():
    setattr(torch.cuda, name, fn)

model = swin_fused.SwinTransformer(img_size=64, embed_dim=16, depths=(2, 2), num_heads=(2, 4), window_size=4)
out = model(torch.randn(1, 3, 50, 61))
out.sum().backward()

print(json.dumps({
    "queried": queried,
    "cuda_initialized": torch.cuda.is_initialized(),
    "imported": imported,
    "skipped": skipped,
    "top_level_kernels": sorted(m for m in sys.modules if m == "kernels" or m.startswith("kernels.")),
    "kernels_modules": sorted(m for m in sys.modules if m.startswith("swin_fused.kernels")),
}))
"""


@pytest.fixture(scope="module")
def import_probe(tmp_path_factory):
    """One fresh interpreter: import every swin_fused module with CUDA queries refused, then run a model."""
    result = run_python(IMPORT_PROBE, tmp_path_factory.mktemp("probe"))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_never_queries_or_initializes_cuda(import_probe):
    assert import_probe["queried"] == []
    assert import_probe["cuda_initialized"] is False
    assert "swin_fused.model" in import_probe["imported"]
    assert "swin_fused.kernels" in import_probe["imported"]


def test_no_top_level_kernels_module_is_imported(import_probe):
    assert import_probe["top_level_kernels"] == []
    assert "swin_fused.kernels" in import_probe["kernels_modules"]
    import swin_fused.kernels

    assert swin_fused.kernels.__name__ == "swin_fused.kernels"
