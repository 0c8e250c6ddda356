"""One Swin block (norm, qkv, shifted-window attention, proj, MLP), forward and forward + backward.

The package's block on the fused backend (``fused``: fused attention and LayerNorms; ``fused_attention``: the
fused attention with PyTorch's LayerNorms, the row before the norms were fused) and on its PyTorch backend, and
timm's block with the same weights layout, at the Swin-T stage shapes (shifted blocks; stage 4 has no shift).
"""
import pytest
import torch

from bench_settings import DEVICE, DTYPE, ON_CUDA, OP_BATCH, OP_ROUNDS
from swin_fused import SwinBlock
from swin_fused.norm import use_fused_norms
from swin_fused.tools.benchmarking import fused_unavailable_reason
from swin_fused.tools.costs import stage_shapes

# One block per stage, the shifted one where the stage has a shift; CPU: stage 3 (14x14) only.
_SHAPES = {s.H: s for s in stage_shapes("swin_tiny_patch4_window7_224", "T")}  # last shape per map wins
SHAPES = [s for s in _SHAPES.values() if ON_CUDA or s.H == 14]
IMPLS = ["fused", "fused_attention", "torch_path", "timm"]


def _block(impl, shape):
    if impl == "timm":
        timm_swin = pytest.importorskip("timm.models.swin_transformer", reason="timm is not installed")
        try:
            return timm_swin.SwinTransformerBlock(dim=shape.dim, input_resolution=(shape.H, shape.W),
                                                  num_heads=shape.heads, window_size=7, shift_size=shape.shift[0])
        except TypeError as error:  # constructor differs between timm versions
            pytest.skip(f"timm's SwinTransformerBlock signature not supported here: {error}")
    return SwinBlock(dim=shape.dim, input_resolution=(shape.H, shape.W), num_heads=shape.heads, window_size=7,
                     shift_size=shape.shift[0])


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name.replace(" ", "-"))
def test_swin_block(measure, shape, impl, mode):
    if impl.startswith("fused"):
        reason = fused_unavailable_reason(DEVICE)
        if reason:
            pytest.skip(reason)
    backend = {"fused": "triton", "fused_attention": "triton", "torch_path": "torch"}.get(impl, "auto")
    fused_norms = impl != "fused_attention"
    block = _block(impl, shape).to(device=DEVICE, dtype=DTYPE)
    x = torch.randn(OP_BATCH, shape.H, shape.W, shape.dim, device=DEVICE, dtype=DTYPE)

    import swin_fused

    if mode == "fwd":
        block.eval()

        def call():
            with torch.no_grad(), swin_fused.use_backend(backend), use_fused_norms(fused_norms):
                return block(x)
    else:
        block.train()
        x.requires_grad_(True)
        dout = torch.randn_like(x)

        def call():
            with swin_fused.use_backend(backend), use_fused_norms(fused_norms):
                out = block(x)
            out.backward(dout)
            x.grad = None
            block.zero_grad(set_to_none=True)

    measure(call, rounds=OP_ROUNDS, group=f"block {shape.name} {mode}", dtype=DTYPE, batch=OP_BATCH,
            kind="block", impl=impl, mode=mode, shape=shape.name)
