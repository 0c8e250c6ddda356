"""Direct launches (``kernels/launch.py``, ``SWIN_FUSED_DIRECT_LAUNCH=1``): an eager CUDA call launches the
compiled kernel of its launch class without Triton's per-call binding.

On the CPU, with stand-ins for a kernel and its compiled form, the bookkeeping: the first call of a class goes
through Triton (which compiles or autotunes), later calls of that class launch the compiled kernel with every
parameter in the kernel's order, and anything Triton specializes on (a tensor's dtype and 16-byte alignment, an
int being 1, divisible by 16, wider than 32 bits, any keyword) makes a new class. On a GPU (``-m cuda``), the
fused op's values and gradients through direct launches equal Triton's own path bit for bit.
"""
import pytest
import torch
from conftest import HAS_CUDA
from triton.runtime.autotuner import Autotuner

from swin_fused.kernels import launch as launch_module


class Compiled:
    """A compiled kernel's stand-in: records ``compiled[grid](*params)``."""

    def __init__(self, log):
        self.log = log

    def __getitem__(self, grid):
        return lambda *params: self.log.append(("direct", grid, params))


class Kernel:
    """A JITFunction's stand-in: ``kernel[grid](*args, **kwargs)`` runs Triton's path and returns the compiled
    kernel of the call (one per call here, so a test can tell which one a direct launch used)."""

    arg_names = ["X", "n", "scale", "BLOCK", "FLAG"]
    pre_run_hooks = []
    debug = False

    def __init__(self):
        self.log = []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.log.append(("triton", grid, args, kwargs))
            return Compiled(self.log)

        return run


class Tuned(Autotuner):
    """An autotuner's stand-in over ``Kernel``: its run picks ``best_config`` (BLOCK) and returns the kernel."""

    def __init__(self, fn, best_block):
        self.fn, self.best_block = fn, best_block

    def run(self, *args, grid, warmup, **kwargs):
        import triton

        self.best_config = triton.Config({"BLOCK": self.best_block})
        return self.fn[grid](*args, **kwargs, BLOCK=self.best_block)


@pytest.fixture
def direct(monkeypatch):
    monkeypatch.setattr(launch_module, "interpreting", lambda: False)
    monkeypatch.setenv("SWIN_FUSED_DIRECT_LAUNCH", "1")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(launch_module, "_COMPILED", {})


def _kinds(log):
    return [entry[0] for entry in log]


def test_the_second_call_of_a_class_launches_the_compiled_kernel(direct):
    kernel = Kernel()
    x = torch.zeros(64, dtype=torch.float16)
    launch_module.launch(kernel, (4, 2), x, 32, 0.5, BLOCK=16, FLAG=True, num_warps=4)
    launch_module.launch(kernel, (8, 2), x, 48, 0.25, BLOCK=16, FLAG=True, num_warps=4)  # same class
    assert _kinds(kernel.log) == ["triton", "direct"]
    _, grid, params = kernel.log[1]
    assert grid == (8, 2, 1)  # padded to three dimensions, the new grid
    assert params[0] is x and params[1:] == (48, 0.25, 16, True)  # every parameter, in the kernel's order


@pytest.mark.parametrize("change", ["dtype", "alignment", "one", "divisibility", "width", "keyword"])
def test_what_triton_specializes_on_makes_a_new_class(direct, change):
    kernel = Kernel()
    x = torch.zeros(64, dtype=torch.float16)
    first = dict(x=x, n=32, block=16)
    other = dict(first)
    if change == "dtype":
        other["x"] = torch.zeros(64, dtype=torch.bfloat16)
    elif change == "alignment":
        other["x"] = x[1:]  # 2 bytes past a 16-byte boundary
        assert other["x"].data_ptr() % 16 != 0
    elif change == "one":
        other["n"] = 1
    elif change == "divisibility":
        other["n"] = 33
    elif change == "width":
        other["n"] = 2**32
    else:
        other["block"] = 32
    for args in (first, other, other):
        launch_module.launch(kernel, (1,), args["x"], args["n"], 1.0, BLOCK=args["block"], FLAG=False)
    assert _kinds(kernel.log) == ["triton", "triton", "direct"]


def test_an_autotuned_kernel_launches_with_the_chosen_config(direct):
    kernel = Kernel()
    tuned = Tuned(kernel, best_block=64)
    x = torch.zeros(64, dtype=torch.float32)
    for _ in range(2):
        launch_module.launch(tuned, (3,), x, 16, 2.0, FLAG=False)
    assert _kinds(kernel.log) == ["triton", "direct"]
    assert kernel.log[1][2][1:] == (16, 2.0, 64, False)  # BLOCK from the autotuner's choice


def test_a_grid_function_gets_every_parameter_by_name(direct):
    """An autotuned launch's grid depends on the chosen config (the forward's ``grid(meta)``): the direct launch
    calls it with every parameter by name, as ``JITFunction.run`` does."""
    kernel = Kernel()
    tuned = Tuned(kernel, best_block=32)
    x = torch.zeros(64)
    seen = []

    def grid(meta):
        seen.append(dict(meta))
        return (meta["n"] // meta["BLOCK"],)

    for n in (64, 128):
        launch_module.launch(tuned, grid, x, n, 1.0, FLAG=True)
    assert _kinds(kernel.log) == ["triton", "direct"]
    assert kernel.log[1][1] == (4, 1, 1)  # 128 // 32
    assert seen[-1] == {"X": x, "n": 128, "scale": 1.0, "BLOCK": 32, "FLAG": True}


def test_a_resolved_launch_shares_the_class_of_the_same_call(direct):
    """``Launch`` (what launchers keep per plan) classifies only its tensors per call, its scalars once: a call
    through it and the same call through ``launch`` are one launch class (one compile), and a misaligned tensor
    is still a new one."""
    kernel = Kernel()
    x = torch.zeros(64, dtype=torch.float16)
    resolved = launch_module.Launch(kernel, (2,), (32, 0.5), dict(BLOCK=16, FLAG=True))
    launch_module.launch(kernel, (2,), x, 32, 0.5, BLOCK=16, FLAG=True)
    resolved(x)
    resolved(x[1:])
    resolved(x[1:])
    assert _kinds(kernel.log) == ["triton", "direct", "triton", "direct"]
    assert kernel.log[1][2] == (x, 32, 0.5, 16, True)


def test_debug_and_hooks_take_triton_s_path(direct, monkeypatch):
    """Triton's debug mode makes another binary (a new class); pre-run hooks run only on Triton's path."""
    from triton import knobs

    kernel = Kernel()
    x = torch.zeros(64)
    launch_module.launch(kernel, (1,), x, 32, 1.0, BLOCK=16, FLAG=False)
    monkeypatch.setattr(knobs.runtime, "debug", True)
    launch_module.launch(kernel, (1,), x, 32, 1.0, BLOCK=16, FLAG=False)
    monkeypatch.setattr(knobs.runtime, "debug", False)
    monkeypatch.setattr(kernel, "pre_run_hooks", [lambda *a, **k: None])
    launch_module.launch(kernel, (1,), x, 32, 1.0, BLOCK=16, FLAG=False)
    assert _kinds(kernel.log) == ["triton", "triton", "triton"]


def test_off_by_default_and_never_under_the_interpreter(monkeypatch):
    monkeypatch.delenv("SWIN_FUSED_DIRECT_LAUNCH", raising=False)
    assert not launch_module.direct_launches()
    monkeypatch.setenv("SWIN_FUSED_DIRECT_LAUNCH", "1")
    monkeypatch.setattr(launch_module, "_COMPILED", {})
    kernel = Kernel()
    if launch_module.interpreting():  # CI: the interpreter runs every launch itself
        for _ in range(2):
            launch_module.launch(kernel, (1,), torch.zeros(4), 16, 1.0, BLOCK=16, FLAG=False)
        assert _kinds(kernel.log) == ["triton", "triton"] and not launch_module._COMPILED


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("window, shift, dtype, autotune", [
    ((7, 7), (3, 3), torch.bfloat16, False), ((12, 12), (6, 6), torch.float16, False),
    ((24, 24), (12, 12), torch.bfloat16, False), ((7, 7), (0, 0), torch.float32, False),
    ((7, 7), (3, 3), torch.bfloat16, True),  # the autotuned forward: launched with the config it chose
])
def test_direct_launches_equal_triton_on_cuda(monkeypatch, window, shift, dtype, autotune):
    """Values and all gradients through direct launches equal Triton's path bit for bit, over batches, a
    misaligned view and a channel slice (row stride not a multiple of 16): new launch classes, each called twice
    (the second call is the direct one, counted)."""
    import swin_fused

    monkeypatch.setenv("SWIN_FUSED_AUTOTUNE", "1" if autotune else "0")
    monkeypatch.setattr(launch_module, "_COMPILED", {})
    direct_calls = []
    real = launch_module._direct_launch

    def counted(kernel, grid, args, kwargs, classes):
        before = len(launch_module._COMPILED)
        real(kernel, grid, args, kwargs, classes)
        direct_calls.append(len(launch_module._COMPILED) == before)  # True: launched a cached kernel

    monkeypatch.setattr(launch_module, "_direct_launch", counted)
    g = torch.Generator().manual_seed(0)
    heads, hd = 2, 32
    C = heads * hd
    table = torch.randn((2 * window[0] - 1) * (2 * window[1] - 1), heads, generator=g).cuda()
    inputs = []
    for batch, offset, extra in ((2, 0, 0), (3, 0, 0), (2, 1, 0), (2, 0, 8)):
        base = torch.randn(batch * 30 * 26 * (3 * C + extra) + offset, generator=g).to("cuda", dtype)
        full = base[offset:].view(batch, 30, 26, 3 * C + extra)  # offset 1: misaligned; extra 8: a channel slice
        inputs.append(full[..., :3 * C])
    results = {}
    for direct in ("0", "1"):
        monkeypatch.setenv("SWIN_FUSED_DIRECT_LAUNCH", direct)
        results[direct] = []
        for x in inputs + inputs:
            qkv, t = x.detach().requires_grad_(), table.clone().requires_grad_()
            out = swin_fused.window_attention(qkv, t, heads, window, shift, backend="triton")
            out.backward(torch.ones_like(out))
            results[direct].append((out.detach(), qkv.grad, t.grad))
    for a, b in zip(results["0"], results["1"]):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    # every call of the second round of inputs (a forward and a backward each) hit a cached kernel
    assert sum(direct_calls) >= 2 * len(inputs), direct_calls
