"""``torch.compile`` through the fused op's ``triton_op`` route: the compiled graph launches the kernels itself.

The fused forward and backward are ``torch.library.triton_op``s, so the AOT dispatcher decomposes them: each
kernel launch becomes a ``triton_kernel_wrapper`` node of the graph (which inductor generates the launch of and
CUDA graphs capture), the custom op disappears from it, and the compiled model equals the eager one in outputs and
gradients, fullgraph, with a dynamic batch. On the CPU the graph runs with ``aot_eager`` (the kernels through the
interpreter: inductor cannot launch Triton kernels on CPU tensors); on a GPU with inductor in its three modes.
"""
import pytest
import torch
from conftest import HAS_CUDA
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

import swin_fused

DEVICE = "cuda" if HAS_CUDA else "cpu"


def small_swin():
    torch.manual_seed(0)
    model = swin_fused.SwinTransformer(img_size=32, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 2),
                                       window_size=4, num_classes=5, drop_path_rate=0.0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.to(DEVICE)


class GraphRecorder:
    """An aot_autograd backend that records the forward and backward graphs' code and runs them eagerly."""

    def __init__(self):
        self.forward, self.backward = [], []

    def backend(self):
        def record(into):
            def compiler(gm, example_inputs):
                into.append(gm.code)
                return make_boxed_func(gm)

            return compiler

        return aot_autograd(fw_compiler=record(self.forward), bw_compiler=record(self.backward))


def grads_of(model, x):
    model.zero_grad()
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[-1], device=out.device)).sum().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()]


def test_the_compiled_graph_launches_the_kernels_itself():
    model = small_swin()
    recorder = GraphRecorder()
    compiled = torch.compile(model, fullgraph=True, backend=recorder.backend())
    x = torch.randn(2, 3, 36, 44, device=DEVICE)  # stage maps 9x11 / 5x6: padded and shifted
    with swin_fused.use_backend("triton"):
        grads_of(compiled, x)
    forward, backward = "\n".join(recorder.forward), "\n".join(recorder.backward)
    launch = "torch.ops.higher_order.triton_kernel_wrapper_functional("
    # Four blocks: four forward launches and four backward launches, no opaque custom op left.
    assert forward.count(launch) == 4 and backward.count(launch) == 4, (forward.count(launch), backward.count(launch))
    assert "swin_fused.window_attention" not in forward + backward


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_compiled_model_equals_eager_with_a_dynamic_batch(mode):
    model = small_swin()
    if mode == "inference":
        model.eval()
    compiled = torch.compile(model, fullgraph=True, dynamic=True,
                             backend="inductor" if HAS_CUDA else "aot_eager")
    with swin_fused.use_backend("triton"):
        for batch in (1, 3, 2):
            x = torch.randn(batch, 3, 36, 44, device=DEVICE)
            if mode == "inference":
                with torch.no_grad():
                    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)
                continue
            out, grads = grads_of(compiled, x)
            ref_out, ref_grads = grads_of(model, x)
            torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
            for g, r in zip(grads, ref_grads):
                torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["default", "max-autotune", "reduce-overhead"])
def test_inductor_modes_equal_eager(mode):
    """On a GPU: inductor generates the kernels' launches; reduce-overhead captures them in CUDA graphs."""
    model = small_swin()
    compiled = torch.compile(model, fullgraph=True, mode=mode)
    with swin_fused.use_backend("triton"):
        for batch in (2, 4):
            x = torch.randn(batch, 3, 36, 44, device=DEVICE)
            out, grads = grads_of(compiled, x)
            ref_out, ref_grads = grads_of(model, x)
            torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-5)
            for g, r in zip(grads, ref_grads):
                torch.testing.assert_close(g, r, rtol=1e-3, atol=1e-5)
