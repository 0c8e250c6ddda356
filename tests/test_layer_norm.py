"""The fused LayerNorm (``kernels/layer_norm.py``, ``swin_fused/norm.py``) against a float64 reference built here:
values and all three gradients within a small multiple of PyTorch's own error in the same dtypes, at awkward
sizes (odd channel counts, rows that do not fill a tile, strided tokens), the output written in the dtype a Linear
reads under autocast, bit-reproducible reruns, clear errors, a differentiable double backward, and the model's
blocks with the fused norms equal to their plain ``nn.LayerNorm`` forward and backward."""
import pytest
import torch
import torch.nn.functional as F

import swin_fused
from swin_fused import norm as norm_module
from swin_fused.kernels import layer_norm as ln
from swin_fused.kernels.launch import ERROR_FLOOR

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference(x, w, b, eps):
    """LayerNorm in float64 from its definition: biased variance over the last dimension."""
    x, w, b = x.double(), w.double(), b.double()
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def _inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    C = shape[-1]
    x = (torch.randn(shape, generator=g) * 3 + 1).to(DEVICE, dtype)  # an offset mean: one-pass variance would lose
    w = (1 + 0.5 * torch.randn(C, generator=g)).to(DEVICE)
    b = (0.5 * torch.randn(C, generator=g)).to(DEVICE)
    return x, w, b


def _error(got, want):
    return (got.double() - want).abs().max().item()


def _grads(fn, x, w, b, dy):
    leaves = [t.detach().requires_grad_() for t in (x, w, b)]
    out = fn(*leaves)
    out.backward(dy)
    return out.detach(), [t.grad for t in leaves]


@pytest.mark.parametrize("shape", [(3, 7), (2, 5, 96), (1, 3, 4, 100), (37, 384), (1, 9, 1536), (4, 1)])
@pytest.mark.parametrize("dtype, out_dtype", [(torch.float32, torch.float32), (torch.float16, torch.float16),
                                              (torch.float32, torch.float16)])
def test_values_and_gradients_match_float64(shape, dtype, out_dtype):
    eps = 1e-5
    x, w, b = _inputs(shape, dtype)
    dy = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(DEVICE, out_dtype)
    want, want_grads = _grads(lambda *t: reference(*t, eps), x, w, b, dy.double())
    # PyTorch's own error in the same dtypes: its LayerNorm in x's dtype, the output cast to out_dtype
    torch_out, torch_grads = _grads(lambda x, w, b: F.layer_norm(x.float() if x.dtype != w.dtype else x, shape[-1:],
                                                                 w, b, eps).to(out_dtype), x, w, b, dy)
    got, got_grads = _grads(lambda x, w, b: norm_module._FusedLayerNorm.apply(x, w, b, eps, out_dtype), x, w, b, dy)
    assert got.dtype == out_dtype and got.shape == x.shape
    floor = ERROR_FLOOR[out_dtype] if out_dtype != torch.float32 else ERROR_FLOOR[dtype]
    assert _error(got, want) <= 2 * _error(torch_out, want) + floor
    for name, g, t, r in zip(("dx", "dweight", "dbias"), got_grads, torch_grads, want_grads):
        assert g.dtype == t.dtype and g.shape == t.shape, name
        # dweight/dbias sum over every row: the floor grows with the rows (fp16 dy rounds each term)
        assert _error(g, r) <= 2 * _error(t, r) + floor * max(1.0, x.numel() / shape[-1]) ** 0.5, name


@pytest.mark.parametrize("layout", ["channel slice", "transposed map", "expanded rows"])
def test_strided_tokens_give_the_contiguous_result(layout):
    x, w, b = _inputs((2, 6, 5, 48), torch.float32)
    if layout == "channel slice":
        strided = torch.cat([x, torch.randn_like(x)], -1)[..., :48]
    elif layout == "transposed map":
        strided = x.transpose(1, 2).contiguous().transpose(1, 2)
    else:
        x = x[:1, :1, :1].expand_as(x)
        strided = x
    dy = torch.randn_like(x)
    fused = lambda x, w, b: norm_module._FusedLayerNorm.apply(x, w, b, 1e-5, torch.float32)  # noqa: E731
    expected = _grads(fused, x.contiguous(), w, b, dy)
    got = _grads(fused, strided, w, b, dy.transpose(1, 2).contiguous().transpose(1, 2))
    assert torch.equal(got[0], expected[0])
    assert all(torch.equal(g, e) for g, e in zip(got[1], expected[1]))


def test_reruns_are_bit_identical():
    x, w, b = _inputs((3, 50, 96), torch.float16)
    dy = torch.randn_like(x)
    fused = lambda x, w, b: norm_module._FusedLayerNorm.apply(x, w, b, 1e-5, torch.float16)  # noqa: E731
    first, again = _grads(fused, x, w, b, dy), _grads(fused, x, w, b, dy)
    assert torch.equal(first[0], again[0]) and all(torch.equal(a, c) for a, c in zip(first[1], again[1]))


def test_autocast_output_is_the_linears_dtype_with_the_same_values():
    """Under autocast PyTorch's norm gives fp32 and the Linear casts it; fed to a Linear, the fused norm writes the
    autocast dtype directly: the same values up to the norm's fp32 rounding."""
    x, w, b = _inputs((2, 16, 96), torch.float32)
    norm = torch.nn.LayerNorm(96).to(DEVICE)
    with torch.no_grad():
        norm.weight.copy_(w), norm.bias.copy_(b)
    lowp = torch.float16
    with torch.autocast(x.device.type, dtype=lowp), swin_fused.use_backend("triton"), \
            pytest.MonkeyPatch.context() as mp:
        mp.setattr(norm_module, "_on_gpu", lambda x: True)
        plain = norm(x)
        fused = norm_module.layer_norm(norm, x, feeds_linear=True)
        not_fed = norm_module.layer_norm(norm, x)
    assert plain.dtype == torch.float32 and fused.dtype == lowp and not_fed.dtype == torch.float32
    assert (fused.float() - plain.to(lowp).float()).abs().max().item() <= 2 ** -10 * plain.abs().max().item()
    torch.testing.assert_close(not_fed, plain, rtol=1e-5, atol=1e-5)


def test_double_backward_is_pytorch_s():
    x, w, b = _inputs((4, 24), torch.float32)
    results = []
    for fn in (lambda x, w, b: F.layer_norm(x, (24,), w, b, 1e-5),
               lambda x, w, b: norm_module._FusedLayerNorm.apply(x, w, b, 1e-5, torch.float32)):
        leaves = [t.detach().requires_grad_() for t in (x, w, b)]
        out = fn(*leaves)
        gx, gw = torch.autograd.grad((out * out.detach().sin()).sum(), leaves[:2], create_graph=True)
        penalty = (gx ** 2).sum() + (gw ** 2).sum()
        results.append(torch.autograd.grad(penalty, leaves[:2]))  # the bias drops out of the penalty
    for a, c in zip(*results):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-5)


def test_bad_inputs_get_clear_errors():
    x, w, b = _inputs((2, 8), torch.float32)
    with pytest.raises(TypeError, match="float64"):
        ln.layer_norm_fwd(x.double(), w, b, 1e-5, torch.float64)
    with pytest.raises(ValueError, match="1..4096 channels, got 4097"):
        big = torch.zeros(1, 4097, device=DEVICE)
        ln.layer_norm_fwd(big, torch.ones(4097, device=DEVICE), torch.zeros(4097, device=DEVICE), 1e-5,
                          torch.float32)
    with pytest.raises(ValueError, match=r"\(8,\) weight"):
        ln.layer_norm_fwd(x, w[:4], b, 1e-5, torch.float32)
    with pytest.raises(ValueError, match="output gradient"):
        ln.layer_norm_bwd(torch.zeros(2, 9, device=DEVICE), x, w, torch.zeros(2, device=DEVICE),
                          torch.ones(2, device=DEVICE))


class _Subclass(torch.Tensor):
    pass


class _LayerNormSubclass(torch.nn.LayerNorm):
    pass


def test_the_fused_norms_are_only_used_where_they_apply(monkeypatch):
    """Only a plain eager call of a plain, unhooked nn.LayerNorm within the kernel's channels, on the GPU with the
    Triton backend, takes the fused kernel; everything else keeps ``norm(x)`` (whose hooks, subclass and
    ``__torch_function__`` behaviour the fused call would skip)."""
    x = torch.randn(2, 8)
    calls = []
    monkeypatch.setattr(norm_module._FusedLayerNorm, "apply", lambda *a: calls.append(a) or a[0])
    norm = torch.nn.LayerNorm(8)
    with swin_fused.use_backend("triton"):
        norm_module.layer_norm(norm, x)  # a CPU tensor
        monkeypatch.setattr(norm_module, "_on_gpu", lambda x: True)
        norm_module.layer_norm(torch.nn.LayerNorm(8, elementwise_affine=False), x)
        norm_module.layer_norm(torch.nn.LayerNorm(8, bias=False), x)
        norm_module.layer_norm(_LayerNormSubclass(8), x)
        norm_module.layer_norm(torch.nn.GroupNorm(1, 8), x.view(2, 8, 1))
        norm_module.layer_norm(torch.nn.LayerNorm(4097), torch.randn(2, 4097))  # wider than the kernel
        norm_module.layer_norm(norm, x.as_subclass(_Subclass))
        with norm_module.use_fused_norms(False):
            norm_module.layer_norm(norm, x)
        torch.compile(lambda x: norm_module.layer_norm(norm, x), backend="eager", fullgraph=True)(x)
        hooked = torch.nn.LayerNorm(8)
        hooked.register_forward_hook(lambda module, args, out: out * 2)
        assert torch.equal(norm_module.layer_norm(hooked, x), 2 * hooked.forward(x))
        with torch.nn.modules.module.register_module_forward_pre_hook(lambda module, args: None):
            norm_module.layer_norm(norm, x)
        assert not calls
        norm_module.layer_norm(norm, x)
        assert len(calls) == 1
    with swin_fused.use_backend("torch"):
        norm_module.layer_norm(norm, x)
    assert len(calls) == 1


def test_many_programs_and_row_loops(monkeypatch):
    """The GPU's shape of work on the CPU: tiles of two rows (a GPU tile is 1..32 rows), so the forward runs
    thousands of programs and each backward program loops over several tiles before writing its partials."""
    monkeypatch.setattr(ln, "rows_config", lambda C: (max(16, 1 << (C - 1).bit_length()), 2, 4))
    x, w, b = _inputs((4099, 24), torch.float32)  # 2050 tiles of 2 rows: 684 backward programs of 3 tiles
    dy = torch.randn_like(x)
    want, want_grads = _grads(lambda *t: reference(*t, 1e-5), x, w, b, dy.double())
    got, got_grads = _grads(lambda x, w, b: norm_module._FusedLayerNorm.apply(x, w, b, 1e-5, torch.float32),
                            x, w, b, dy)
    assert _error(got, want) <= 1e-5
    for g, r in zip(got_grads, want_grads):
        assert _error(g, r) <= 1e-5 * max(1.0, r.abs().max().item())


def test_weight_and_bias_gradients_do_not_share_storage():
    x, w, b = _inputs((3, 16), torch.float32)
    _, (_, gw, gb) = _grads(lambda x, w, b: norm_module._FusedLayerNorm.apply(x, w, b, 1e-5, torch.float32),
                            x, w, b, torch.ones_like(x))
    assert gw.untyped_storage().data_ptr() != gb.untyped_storage().data_ptr()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bf16: the interpreter truncates)")
@pytest.mark.parametrize("dtype, out_dtype", [(torch.float32, torch.bfloat16), (torch.bfloat16, torch.bfloat16)])
def test_bf16_on_cuda_matches_float64(dtype, out_dtype):
    """The autocast case (fp32 residual stream in, bf16 out) and a bf16 model, at Swin widths, with the GPU's own
    tiles; bf16 rounding only on the GPU (Triton's interpreter truncates to bf16)."""
    for shape in ((2, 3136, 96), (5, 49, 768), (3, 7, 3072)):
        x, w, b = _inputs(shape, dtype)
        dy = torch.randn(shape, device=DEVICE).to(out_dtype)
        want, want_grads = _grads(lambda *t: reference(*t, 1e-5), x, w, b, dy.double())
        torch_out, torch_grads = _grads(
            lambda x, w, b: F.layer_norm(x.float(), shape[-1:], w, b, 1e-5).to(out_dtype), x, w, b, dy)
        got, got_grads = _grads(lambda x, w, b: norm_module._FusedLayerNorm.apply(x, w, b, 1e-5, out_dtype),
                                x, w, b, dy)
        assert _error(got, want) <= 2 * _error(torch_out, want) + ERROR_FLOOR[out_dtype]
        for g, t, r in zip(got_grads, torch_grads, want_grads):
            assert _error(g, r) <= 2 * _error(t, r) + ERROR_FLOOR[out_dtype] * r.abs().max().item()


def _model_run(model, images, fused, autocast, monkeypatch, calls):
    """The model's output and parameter gradients, its norms fused (on the CPU, through the interpreter) or not."""
    real_apply = norm_module._FusedLayerNorm.apply
    model.zero_grad(set_to_none=True)
    with monkeypatch.context() as mp:
        if fused:
            mp.setattr(norm_module, "_on_gpu", lambda x: True)
            mp.setattr(norm_module, "resolve_backend", lambda x, backend: "triton")
            mp.setattr(norm_module._FusedLayerNorm, "apply", lambda *a: calls.append(a[0].shape) or real_apply(*a))
        with swin_fused.use_backend("torch"), torch.autocast(DEVICE, torch.float16, enabled=autocast):
            out = model(images)
            out.float().square().sum().backward()
    return [out.detach().float()] + [p.grad for p in model.parameters()]


def test_a_model_with_fused_norms_equals_its_plain_norms(monkeypatch):
    """A small Swin (padded stage, patch merging) forward and backward with every block and merge norm fused
    against the same model with nn.LayerNorm, the attention on the PyTorch path in both, so only the norms differ:
    in fp32 equal to rounding; under fp16 autocast (the fused norms hand the Linears fp16 directly, the plain ones
    fp32 that the Linears cast) within twice the plain model's own autocast error against its fp32 run."""
    torch.manual_seed(0)
    model = swin_fused.SwinTransformer(img_size=40, patch_size=4, embed_dim=24, depths=(2, 1), num_heads=(2, 3),
                                       window_size=4, num_classes=5).to(DEVICE)
    images = torch.randn(2, 3, 40, 40, device=DEVICE)
    calls = []
    exact = _model_run(model, images, False, False, monkeypatch, calls)
    fused = _model_run(model, images, True, False, monkeypatch, calls)
    assert len(calls) == 2 * 3 + 1  # two per block, one per merge
    for got, want in zip(fused, exact):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    plain_amp = _model_run(model, images, False, True, monkeypatch, calls)
    fused_amp = _model_run(model, images, True, True, monkeypatch, calls)
    for got, plain, want in zip(fused_amp, plain_amp, exact):
        err, plain_err = (got - want).abs().max().item(), (plain - want).abs().max().item()
        assert err <= 2 * plain_err + 1e-6 * want.abs().max().item(), (err, plain_err)
