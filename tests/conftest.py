"""Test configuration. TRITON_INTERPRET must be decided before anything imports the kernels.

Without a GPU the Triton kernels run on the CPU through Triton's interpreter. On a GPU machine run
``TRITON_INTERPRET=0 pytest`` (or leave it unset: CUDA is detected here, in the test process only).
"""
import os
import platform

# Under the interpreter every tl.dot is a NumPy matmul, i.e. OpenBLAS, whose kernel (and so the order it sums a
# dot's products in) is chosen per CPU: a verdict seen on an AVX-512 machine could differ on CI's AMD EPYC.
# One kernel for every x86-64 machine (AVX2, which all of them have), set before anything loads NumPy; set the
# variable yourself to try another.
if platform.machine() in ("x86_64", "AMD64"):
    os.environ.setdefault("OPENBLAS_CORETYPE", "Haswell")

if "TRITON_INTERPRET" not in os.environ:
    import torch

    os.environ["TRITON_INTERPRET"] = "0" if torch.cuda.is_available() else "1"

import pytest  # noqa: E402
import torch  # noqa: E402

HAS_CUDA = torch.cuda.is_available()
INTERPRET = os.environ["TRITON_INTERPRET"] not in ("", "0")


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU; run the suite on a GPU machine (see CONTRIBUTING.md)")
    for item in items:
        if item.get_closest_marker("cuda") is not None and not HAS_CUDA:
            item.add_marker(skip_cuda)


@pytest.fixture(autouse=True)
def _seed_and_backend():
    """Every test starts from a fixed seed, the default backend and empty torch.compile caches.

    Dynamo caches compiled code on the code object (``SwinTransformer.forward``), not the model, so without the
    reset the tests that share an xdist worker count toward one another's recompile limit (8), and which of them
    hits it under ``fullgraph=True`` depends on how the suite was split across workers.
    """
    import swin_fused

    torch.manual_seed(0)
    before = swin_fused.get_backend()
    yield
    swin_fused.set_backend(before)
    torch._dynamo.reset()


@pytest.fixture
def whole_window_tiles(monkeypatch):
    """Under the interpreter, launch every window as one tile (forward and backward), for model-level tests.

    The interpreter pays per tile operation, not per FLOP: a 16x16 window's tiled backward (32-token fp32 tiles,
    three passes over 64 tile pairs) took 342 s for one Swin V2-T stage-1 layer, as one 256-token tile 10 s. The
    tiled paths keep their own kernel-level tests (test_fused_backward.py, test_cosine_attention.py); a model
    test checks what the adapters and the model feed the op, which the tiling does not change. No effect on a
    GPU, where the launch configs are the compiled kernels' own.
    """
    if not INTERPRET:
        return
    import triton

    from swin_fused.kernels import window_attention_bwd as bwd
    from swin_fused.kernels import window_attention_fwd as fwd
    from swin_fused.kernels.launch import next_power_of_2

    def tile(tokens):
        return max(16, next_power_of_2(tokens))

    monkeypatch.setattr(fwd, "_heuristic_config", lambda wh, ww, dtype, block_d=32: triton.Config(
        {"BLOCK_M": tile(wh * ww), "BLOCK_N": tile(wh * ww), "WINDOWS_PER_PROGRAM": 1}, num_warps=4))
    monkeypatch.setattr(bwd, "bwd_launch_config", lambda tokens, dtype, block_d=32: triton.Config(
        {"BLOCK": tile(tokens), "BLOCK_N": tile(tokens), "DQ_IN_PASS_A": False}, num_warps=4))
