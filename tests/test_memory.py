"""Memory: nothing outlives a training step, repeated steps do not grow memory, and a fused block saves no
attention matrix.

- Every tensor autograd saves during a block's forward (tracked with saved_tensors_hooks and weak references)
  is freed once backward has run and the output is dropped, on both backends.
- Repeated forward/backward steps: the number of live tensors (gc) is constant after warm-up (both
  backends); the process's resident memory (/proc/self/statm) does not grow by anything like a step's
  activations (torch backend; Linux). CUDA variant: torch.cuda.memory_allocated is flat across steps.
- A whole SwinBlock under the fused op saves nothing as large as one [windows, heads, N, N] attention
  matrix (the shapes are chosen so that such a matrix would be the largest saved tensor); the reference
  formulation, as a control, does. The saved totals are reported as test properties.
"""
import gc
import os
import warnings
import weakref

import pytest
import torch
from conftest import HAS_CUDA

import swin_fused
from swin_fused.reference import window_attention_reference

DEVICE = "cuda" if HAS_CUDA else "cpu"
BACKENDS = ["triton", "torch"]


class SavedTensors:
    """Collects (weak references to, sizes of) the floating-point tensors autograd saves in the ``with`` block."""

    def __init__(self, exclude=()):
        self.refs, self.shapes, self.nbytes = [], [], 0
        self.excluded = {t.untyped_storage().data_ptr() for t in exclude}

    def _pack(self, t):
        # Activations only: parameters (and views of them) stay alive, and so do the integer index tables the
        # torch backend keeps in its bounded geometry cache.
        if t.is_floating_point() and t.untyped_storage().data_ptr() not in self.excluded:
            self.refs.append(weakref.ref(t))
            self.shapes.append(tuple(t.shape))
            self.nbytes += t.numel() * t.element_size()
        return t

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)

    def alive(self):
        gc.collect()
        return [shape for ref, shape in zip(self.refs, self.shapes) if ref() is not None]


def block_and_input(dim=32, heads=2, H=9, W=10, window=4, batch=1):
    torch.manual_seed(0)
    block = swin_fused.SwinBlock(dim, (H, W), heads, window_size=window, shift_size=window // 2).to(DEVICE)
    return block, torch.randn(batch, H, W, dim, device=DEVICE)


@pytest.mark.parametrize("backend", BACKENDS)
def test_saved_tensors_are_freed_after_backward(backend):
    block, x = block_and_input()
    x.requires_grad_()
    with swin_fused.use_backend(backend), SavedTensors(exclude=[*block.parameters(), x]) as saved:
        out = block(x)
    out_ref = weakref.ref(out)
    assert len(saved.refs) > 5, "the hooks saw nothing: the test would be vacuous"
    out.square().mean().backward()
    del out
    assert out_ref() is None
    assert saved.alive() == [], "tensors saved for backward outlived the step"


def live_tensor_count():
    gc.collect()
    with warnings.catch_warnings():  # isinstance() on some torch module proxies warns about deprecations
        warnings.simplefilter("ignore")
        return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def train_steps(model, x, steps, backend):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with swin_fused.use_backend(backend):
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            opt.step()


@pytest.mark.parametrize("backend", BACKENDS)
def test_live_tensors_do_not_accumulate_over_steps(backend):
    torch.manual_seed(0)
    model = swin_fused.SwinTransformer(img_size=16, embed_dim=16, depths=(2,), num_heads=(1,), window_size=4,
                                       num_classes=3).to(DEVICE)
    x = torch.randn(1, 3, 20, 20, device=DEVICE)  # 5 x 5 map, window 4: padded and shifted
    train_steps(model, x, 2, backend)  # warm-up: optimizer state, geometry caches, autotuning
    before = live_tensor_count()
    train_steps(model, x, 4, backend)
    assert live_tensor_count() == before


def resident_bytes():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_resident_memory_does_not_grow_over_training_steps(record_property):
    """40 steps of a block on a 28 x 28 map (torch backend): RSS after warm-up stays within a quarter of what
    leaking each step's saved activations would add (and of 64 MiB: allocator noise)."""
    block, x = block_and_input(dim=64, heads=2, H=28, W=28, window=7, batch=4)
    block = block.cpu()
    x = x.cpu()
    with SavedTensors(exclude=list(block.parameters())) as saved:
        block(x).sum()
    step_activations = saved.nbytes
    assert step_activations > 8 * 2**20  # a leak of one step's activations per step would be obvious
    train_steps(block, x, 5, "torch")
    start = resident_bytes()
    steps = 40
    train_steps(block, x, steps, "torch")
    growth = resident_bytes() - start
    record_property("rss_growth_mib", round(growth / 2**20, 2))
    record_property("activations_per_step_mib", round(step_activations / 2**20, 2))
    assert growth < min(steps * step_activations / 4, 64 * 2**20), (
        f"RSS grew {growth / 2**20:.1f} MiB over {steps} steps ({step_activations / 2**20:.1f} MiB per step)")


@pytest.mark.cuda
@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_memory_is_flat_across_steps(backend):
    block, x = block_and_input(dim=96, heads=3, H=56, W=56, window=7, batch=8)
    train_steps(block, x, 3, backend)
    torch.cuda.synchronize()
    allocated = []
    for _ in range(10):
        train_steps(block, x, 1, backend)
        torch.cuda.synchronize()
        allocated.append(torch.cuda.memory_allocated())
    assert max(allocated) == min(allocated), allocated


def test_fused_block_saves_no_attention_matrix(record_property):
    """head_dim 8 (4 C < heads * N): an attention matrix for all windows and heads would be the largest tensor
    a block saves. Under the fused op none that large is saved; the reference formulation saves one."""
    heads, hd, window, H, W = 4, 8, 7, 10, 13
    block, x = block_and_input(dim=heads * hd, heads=heads, H=H, W=W, window=window)
    n_windows = -(-H // window) * -(-W // window)
    attention_numel = n_windows * heads * (window * window) ** 2
    params = list(block.parameters())
    x.requires_grad_()
    totals = {}
    for backend in BACKENDS:
        with swin_fused.use_backend(backend), SavedTensors(exclude=params) as saved:
            block(x)
        totals[backend] = saved
    record_property("saved_bytes", {b: s.nbytes for b, s in totals.items()})
    fused_largest = max(torch.Size(s).numel() for s in totals["triton"].shapes)
    assert fused_largest < attention_numel, (fused_largest, attention_numel)
    assert not any(s[-2:] == (window * window,) * 2 for s in totals["triton"].shapes)
    assert totals["triton"].nbytes < totals["torch"].nbytes
    # Control: the same detector sees the reference formulation's attention matrix.
    qkv = block.attn.qkv(block.norm1(x))
    with SavedTensors(exclude=params) as reference:
        window_attention_reference(qkv, block.attn.relative_position_bias_table, heads, (window, window), (3, 3))
    assert max(torch.Size(s).numel() for s in reference.shapes) >= attention_numel
