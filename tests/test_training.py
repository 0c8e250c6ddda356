"""Training through the fused op: torch.compile, AMP, activation checkpointing, loss-curve equivalence.

On the CPU the Triton kernels run in the interpreter, so models here are small; the Swin-T step is the one
exception (a single step at a small resolution). On a GPU the same tests run on CUDA.
"""
import pytest
import torch
from conftest import HAS_CUDA

import swin_fused

DEVICE = "cuda" if HAS_CUDA else "cpu"


def small_swin(**kw):
    """Two stages, window 4 on 8x8 / 4x4 maps at 32px: shifted, unshifted and window-clamped blocks."""
    cfg = dict(img_size=32, patch_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=4,
               num_classes=10, drop_path_rate=0.0)
    return swin_fused.SwinTransformer(**{**cfg, **kw})


def _perturbed(model):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@pytest.mark.parametrize("compiler", ["eager", "default"])
def test_compile_fullgraph_traces_the_fused_op(compiler):
    """No graph breaks: the custom op's fake and autograd registrations carry the model through Dynamo and
    AOTAutograd (aot_eager here, to keep CI fast; the CUDA run uses Inductor). Dynamo's ``"eager"`` backend
    (the usual first debugging step) runs the registered forward and backward ops on real tensors: their
    returns must not alias (the unpadded blocks' backward returns no pad and no cosine gradient)."""
    if compiler == "default":
        compiler = "inductor" if HAS_CUDA else "aot_eager"
    model = _perturbed(small_swin()).to(DEVICE)
    x = torch.randn(2, 3, 32, 32, device=DEVICE)
    with swin_fused.use_backend("triton"):
        eager = model(x)
        eager.square().mean().backward()
        eager_grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        compiled = torch.compile(model, fullgraph=True, backend=compiler)
        out = compiled(x)
        out.square().mean().backward()
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-5)
    for p, g in zip(model.parameters(), eager_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-3, atol=1e-5)


def test_compile_dynamic_shapes_across_resolutions():
    """One compiled model, three resolutions (incl. sizes that need padding) without recompiling per size
    being an error; every output equals eager."""
    model = _perturbed(small_swin()).eval().to(DEVICE)
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    with swin_fused.use_backend("triton"), torch.no_grad():
        for size in ((32, 32), (36, 44), (40, 28)):
            x = torch.randn(1, 3, *size, device=DEVICE)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16] + ([torch.bfloat16] if HAS_CUDA else []), ids=str)
def test_autocast_matches_torch_backend(dtype):
    """Under AMP the op sees half qkv and fp32 bias table / qkv bias; results and grads match the torch path
    within half-precision tolerance."""
    model = _perturbed(small_swin()).to(DEVICE)
    x = torch.randn(2, 3, 36, 44, device=DEVICE)  # needs padding at both stages
    results = {}
    for backend in ("torch", "triton"):
        model.zero_grad()
        with swin_fused.use_backend(backend), torch.autocast(DEVICE, dtype=dtype):
            out = model(x)
        out.float().square().mean().backward()
        results[backend] = (out.float(), [p.grad.clone() for p in model.parameters()])
    tol = dict(rtol=2e-2, atol=2e-2) if dtype == torch.bfloat16 else dict(rtol=5e-3, atol=5e-3)
    torch.testing.assert_close(results["triton"][0], results["torch"][0], **tol)
    for a, b in zip(results["triton"][1], results["torch"][1]):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=5e-2, atol=5e-3)


def test_activation_checkpointing_gives_identical_gradients():
    model = _perturbed(small_swin()).to(DEVICE)
    ckpt = _perturbed(small_swin(use_checkpoint=True)).to(DEVICE)
    ckpt.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32, device=DEVICE)
    with swin_fused.use_backend("triton"):
        for m in (model, ckpt):
            m(x).square().mean().backward()
    for (name, a), b in zip(model.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=lambda m: f"{name}: {m}")


def _train(backend, steps=20):
    torch.manual_seed(0)
    model = small_swin(num_heads=(1, 2)).to(DEVICE)  # few programs: the interpreter runs them one by one
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 20, 20, generator=g).to(DEVICE)  # 5x5 map, window 4: padded, shifted
    labels = torch.randint(0, 10, (2,), generator=g).to(DEVICE)
    losses = []
    with swin_fused.use_backend(backend):
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


def test_training_loss_curves_agree():
    """20 AdamW steps, fixed seed: the fused and PyTorch backends follow the same loss curve."""
    torch_losses = _train("torch")
    fused_losses = _train("triton")
    assert torch_losses[-1] < 0.7 * torch_losses[0], "the reference run should learn (else the test is vacuous)"
    torch.testing.assert_close(torch.tensor(fused_losses), torch.tensor(torch_losses), rtol=2e-3, atol=2e-4)


def test_swin_tiny_trains_with_the_triton_backend():
    """One full Swin-T training step through the fused kernels: same loss and gradients as the torch path."""
    model = _perturbed(swin_fused.swin_tiny_patch4_window7_224(num_classes=10, drop_path_rate=0.0)).to(DEVICE)
    x = torch.randn(1, 3, 100, 100, device=DEVICE)  # 25x25 stage-1 map: padded and shifted everywhere
    y = torch.tensor([3], device=DEVICE)
    grads = {}
    for backend in ("torch", "triton"):
        model.zero_grad()
        with swin_fused.use_backend(backend):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        grads[backend] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(grads["triton"][0], grads["torch"][0], rtol=1e-5, atol=1e-6)
    for name, g in grads["torch"][1].items():
        torch.testing.assert_close(grads["triton"][1][name], g, rtol=1e-3, atol=1e-6,
                                   msg=lambda m: f"{name}: {m}")


def test_compile_raises_no_warning_of_ours():
    """Dynamo warns about every lru_cache-wrapped function it traces (the geometry caches); compiling a model
    must print nothing a user has to investigate."""
    import warnings

    model = small_swin(depths=(2,), num_heads=(2,)).to(DEVICE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.compile(model, backend="eager")(torch.randn(1, 3, 32, 32, device=DEVICE))
    ours = [str(w.message) for w in caught if "lru_cache" in str(w.message) or "swin_fused" in w.filename]
    assert not ours, ours
