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
    """Every test starts from a fixed seed and the default backend."""
    import swin_fused

    torch.manual_seed(0)
    before = swin_fused.get_backend()
    yield
    swin_fused.set_backend(before)
