"""The fused backward kernel and the autograd op against the PyTorch reference.

Gradients (dqkv, bias table, qkv bias of padding tokens) vs float64 autograd of the reference, with the 3x
rule for gradients; dqkv NaN-poisoned; the bias-table gradient bit-identical across runs; nothing N x N saved.
"""
import pytest
import torch
from conftest import HAS_CUDA
from numerics import assert_within_torch_error
from test_fused_forward import CASES, DEVICE, DTYPES, _ids, _reference, make_inputs

import swin_fused
from swin_fused.kernels import window_attention_bwd as bwd_module
from swin_fused.kernels.window_attention_bwd import window_attention_bwd
from swin_fused.kernels.window_attention_fwd import window_attention_fwd

BWD_CASES = [CASES[i] for i in (0, 1, 2, 3, 4, 5, 7, 9, 11)]


def _reference_grads(qkv, table, pad_qkv, kw, dout, dtype, table_dtype=None):
    """Autograd of the reference with every input cast to ``dtype`` (table to ``table_dtype``)."""
    leaves = [t.to(DEVICE, dtype).requires_grad_() if t is not None else None for t in (qkv, pad_qkv)]
    tab = table.to(DEVICE, table_dtype or dtype).requires_grad_()
    out = _reference(leaves[0], tab, leaves[1], kw)
    out.backward(dout.to(DEVICE, dtype))
    return leaves[0].grad, tab.grad, (leaves[1].grad if leaves[1] is not None else None)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", BWD_CASES, ids=_ids)
def test_backward_matches_reference(case, dtype):
    qkv, table, pad_qkv, kw, cast = make_inputs(case, dtype)
    args = (kw["num_heads"], kw["window_size"], kw["shift_size"], kw["scale"])
    x, t, p = cast(qkv, dtype), cast(table, torch.float32), cast(pad_qkv, dtype)
    out, lse = window_attention_fwd(x, t, *args, p, kw["shift_before_pad"], kw["table_window"], return_lse=True)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    dqkv = torch.full_like(x, float("nan"))
    dqkv, dtable, dpad, _ = window_attention_bwd(dout, x, lse, t, *args, p, kw["shift_before_pad"],
                                              kw["table_window"], dqkv=dqkv)

    ref = _reference_grads(qkv, table, pad_qkv, kw, dout, torch.float64)
    same = _reference_grads(qkv, table, pad_qkv, kw, dout, dtype)
    name = _ids(case)
    assert_within_torch_error(f"{name} dqkv", dqkv, same[0], ref[0], dtype, factor=3.0)
    assert_within_torch_error(f"{name} dtable", dtable, same[1], ref[1], dtype, factor=3.0)
    if ref[2] is None:  # nothing padded: the qkv bias gets no gradient through padding tokens
        assert dpad is None
    else:
        assert_within_torch_error(f"{name} dpad", dpad, same[2], ref[2], dtype, factor=3.0)
        assert torch.all(dpad[: dpad.numel() // 3] == 0), "padding queries' outputs are cropped: no q gradient"


def _forward_and_reference_grads(case, dtype):
    """A case's kernel inputs in ``dtype``, the fused forward's lse, a dO, and the reference's gradients in
    float64 (``ref``) and in ``dtype`` (``same``, for the error bound)."""
    qkv, table, pad_qkv, kw, cast = make_inputs(case, dtype)
    args = (kw["num_heads"], kw["window_size"], kw["shift_size"], kw["scale"])
    x, t, p = cast(qkv, dtype), cast(table, torch.float32), cast(pad_qkv, dtype)
    out, lse = window_attention_fwd(x, t, *args, p, kw["shift_before_pad"], kw["table_window"], return_lse=True)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    ref = _reference_grads(qkv, table, pad_qkv, kw, dout, torch.float64)
    same = _reference_grads(qkv, table, pad_qkv, kw, dout, dtype)
    return x, t, p, args, kw, lse, dout, ref, same


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != torch.float32], ids=str)
@pytest.mark.parametrize("case", [CASES[7], CASES[8]], ids=_ids)
def test_every_tiled_backward_config_matches_reference(monkeypatch, case, dtype):
    """Each autotune candidate of the tiled backward (fp16/bf16 windows of more than 64 tokens), forced in
    turn: gradients within the error bound of float64 autograd, every dqkv element written. Programs cover 4
    windows (the 12x12 case's 6 windows: groups of 4 and 2), so the program-private dS and dq scratches are
    reused across windows."""
    x, t, p, args, kw, lse, dout, ref, same = _forward_and_reference_grads(case, dtype)
    monkeypatch.setattr(bwd_module, "autotuning", lambda: False)  # launch exactly the config under test
    monkeypatch.setattr(bwd_module, "_windows_per_program", lambda n_windows, num_heads: 4)
    for config in bwd_module._BWD_TILED_CONFIGS:
        monkeypatch.setattr(bwd_module, "bwd_launch_config", lambda *shape, config=config: config)
        dqkv = torch.full_like(x, float("nan"))
        dqkv, dtable, dpad, _ = window_attention_bwd(dout, x, lse, t, *args, p, kw["shift_before_pad"],
                                                  kw["table_window"], dqkv=dqkv)
        name = f"{_ids(case)} {config}"
        assert_within_torch_error(f"{name} dqkv", dqkv, same[0], ref[0], dtype, factor=3.0)
        assert_within_torch_error(f"{name} dtable", dtable, same[1], ref[1], dtype, factor=3.0)
        if ref[2] is not None:
            assert_within_torch_error(f"{name} dpad", dpad, same[2], ref[2], dtype, factor=3.0)


# 10x10 in timm's order from the central rows of a 12x12 table (keys padded to 128), a non-square 8x12 window
# (96 tokens: a query tile spans one and a half window rows), and 12x12 with padding.
RESIDENT_CASES = [(1, 11, 14, 2, 32, (10, 10), (5, 5), True, True, (12, 12), None),
                  (1, 13, 20, 1, 24, (8, 12), (4, 6), True, False, None, None), CASES[7]]


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != torch.float32], ids=str)
@pytest.mark.parametrize("case", RESIDENT_CASES, ids=_ids)
def test_keys_resident_backward_matches_reference(monkeypatch, case, dtype):
    """The keys-resident path (fp16/bf16 windows of 65-256 tokens): programs of 3 windows (groups that cross
    images and end short), each query tile's dS folded into the program's row partial; gradients within the
    bound of float64 autograd, every dqkv element written, and bit-identical on a second run."""
    win = case[5]
    assert 64 < win[0] * win[1] <= bwd_module.RESIDENT_KEYS
    config = bwd_module.bwd_launch_config(win[0] * win[1], dtype, 32)
    assert config.kwargs["BLOCK_N"] >= win[0] * win[1] > config.kwargs["BLOCK"], config  # the path under test
    x, t, p, args, kw, lse, dout, ref, same = _forward_and_reference_grads(case, dtype)
    monkeypatch.setattr(bwd_module, "_windows_per_program", lambda n_windows, num_heads: 3)
    runs = []
    for _ in range(2):
        dqkv = torch.full_like(x, float("nan"))
        runs.append(window_attention_bwd(dout, x, lse, t, *args, p, kw["shift_before_pad"], kw["table_window"],
                                         dqkv=dqkv))
    dqkv, dtable, dpad, _ = runs[0]
    name = _ids(case)
    assert_within_torch_error(f"{name} dqkv", dqkv, same[0], ref[0], dtype, factor=3.0)
    assert_within_torch_error(f"{name} dtable", dtable, same[1], ref[1], dtype, factor=3.0)
    if ref[2] is not None:
        assert_within_torch_error(f"{name} dpad", dpad, same[2], ref[2], dtype, factor=3.0)
    assert all(a is b or torch.equal(a, b) for a, b in zip(runs[0][:3], runs[1][:3])), "not bit-identical"


# One-tile windows (fp16 7x7, padded or not), keys resident (fp16 12x12) and the tiled path (fp32 7x7; fp16
# 12x12 forced by test_every_tiled_backward_config_matches_reference).
NORMALISER_CASES = [(CASES[1], torch.float16), (CASES[2], torch.float16), (CASES[1], torch.float32),
                    (CASES[7], torch.float16)] + ([(CASES[1], torch.bfloat16)] if HAS_CUDA else [])


@pytest.mark.parametrize("case, dtype", NORMALISER_CASES, ids=[f"{_ids(c)}-{d}" for c, d in NORMALISER_CASES])
def test_backward_normalises_its_own_probabilities(case, dtype):
    """The backward must not trust the forward's lse to normalise its recomputed scores: when the forward summed q.k
    in another order (another tile shape, a transposed dot, another BLAS kernel under the interpreter), the two
    differ by ulps of the score, 0.06 in base-2 units at fp16 scores beyond 65504. Here the lse is off by up to
    that much per row; the gradients must still meet the bound (one-tile windows and resident keys do not read the
    lse at all: bit-identical). Taking the lse as the exact normaliser gave P off by 4% and, in the fp16 overflow
    test, dq off by 0.15."""
    qkv, table, pad_qkv, kw, cast = make_inputs(case, dtype)
    args = (kw["num_heads"], kw["window_size"], kw["shift_size"], kw["scale"])
    x, t, p = cast(qkv, dtype), cast(table, torch.float32), cast(pad_qkv, dtype)
    geometry = (*args, p, kw["shift_before_pad"], kw["table_window"])
    out, lse = window_attention_fwd(x, t, *geometry, return_lse=True)
    g = torch.Generator().manual_seed(1)
    dout = torch.randn(out.shape, generator=g).to(DEVICE, dtype)
    off = (torch.rand(lse.shape, generator=g) * 0.12 - 0.06).to(DEVICE)
    exact = window_attention_bwd(dout, x, lse, t, *geometry)
    shifted = window_attention_bwd(dout, x, lse + off, t, *geometry)
    ref = _reference_grads(qkv, table, pad_qkv, kw, dout, torch.float64)
    same = _reference_grads(qkv, table, pad_qkv, kw, dout, dtype)
    name = _ids(case)
    assert_within_torch_error(f"{name} dqkv", shifted[0], same[0], ref[0], dtype, factor=3.0)
    assert_within_torch_error(f"{name} dtable", shifted[1], same[1], ref[1], dtype, factor=3.0)
    if bwd_module.bwd_launch_config(case[5][0] * case[5][1], dtype, 32).kwargs["BLOCK_N"] >= case[5][0] * case[5][1]:
        # one-tile windows and resident keys see whole rows of scores: they do not read the lse at all
        assert all(torch.equal(a, b) for a, b in zip(exact[:2], shifted[:2])), "a whole-row path read the lse"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_one_token_windows_give_an_exactly_zero_table_gradient(dtype):
    """With one token per window, softmax over one key is 1 whatever the score, so dS = P (dP - delta) = 0 and
    the bias table gets no gradient at all: exactly 0, as PyTorch gets (the kernel normalises its own P, so
    P = 1 and delta = dP bit for bit; 2e-6 with the forward's lse and delta = rowsum(dO * O))."""
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(2, 3, 5, 3 * 2 * 40, generator=g).to(DEVICE, dtype)
    table = torch.randn(1, 2, generator=g).to(DEVICE)
    out, lse = window_attention_fwd(qkv, table, 2, (1, 1), (0, 0), None, return_lse=True)
    dout = torch.randn(out.shape, generator=g).to(DEVICE, dtype)
    dqkv, dtable, _, _ = window_attention_bwd(dout, qkv, lse, table, 2, (1, 1), (0, 0), None)
    assert torch.equal(dtable, torch.zeros_like(dtable)), dtable
    assert torch.equal(dqkv[..., :2 * 80], torch.zeros_like(dqkv[..., :2 * 80])), "dq and dk must be 0 too"
    torch.testing.assert_close(dqkv[..., 2 * 80:], dout, rtol=0, atol=0)  # out = v, so dv = dO exactly


def test_autograd_op_matches_torch_backend():
    """swin_fused.window_attention under the triton backend differentiates like the torch backend."""
    case = (2, 10, 13, 2, 24, (7, 7), (3, 3), True, False, None, None)
    qkv, table, pad_qkv, kw, cast = make_inputs(case, torch.float32)
    grads = {}
    for backend in ("torch", "triton"):
        leaves = [cast(t, torch.float32).requires_grad_() for t in (qkv, table, pad_qkv)]
        with swin_fused.use_backend(backend):
            out = swin_fused.window_attention(leaves[0], leaves[1], pad_qkv=leaves[2], **kw)
        (out * torch.linspace(-1, 1, out.shape[-1], device=DEVICE)).sum().backward()
        grads[backend] = [leaf.grad for leaf in leaves]
    for name, a, b in zip(("qkv", "table", "pad"), grads["triton"], grads["torch"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("padded", [False, True])
def test_block_gradients_match_reference(padded):
    """Whole block (qkv/proj weights, norms, MLP, bias table) through the fused op: 3x rule vs float64."""
    H, W = (10, 13) if padded else (14, 14)
    block = swin_fused.SwinBlock(dim=48, input_resolution=(H, W), num_heads=2, window_size=7, shift_size=3)
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, H, W, 48)
    g = torch.randn(2, H, W, 48)

    def grads(dtype, backend):
        b = block.to(DEVICE, dtype)
        b.zero_grad()
        with swin_fused.use_backend(backend):
            b(x.to(DEVICE, dtype)).backward(g.to(DEVICE, dtype))
        return {n: p.grad.clone() for n, p in b.named_parameters()}

    ref = grads(torch.float64, "torch")
    same = grads(torch.float32, "torch")
    fused = grads(torch.float32, "triton")
    for name in ref:
        assert_within_torch_error(name, fused[name], same[name], ref[name], torch.float32, factor=3.0)


def test_bias_table_gradient_is_deterministic():
    """Repeated backward passes are bit-identical (on a GPU, with a batch large enough for races to show)."""
    B = 64 if HAS_CUDA else 2
    case = (B, 14, 14, 3, 32, (7, 7), (3, 3), False, False, None, None)
    qkv, table, _, kw, cast = make_inputs(case, torch.float32)
    x, t = cast(qkv, torch.float32), cast(table, torch.float32)
    out, lse = window_attention_fwd(x, t, 3, (7, 7), (3, 3), None, return_lse=True)
    dout = torch.randn_like(out)
    first = window_attention_bwd(dout, x, lse, t, 3, (7, 7), (3, 3), None)
    for _ in range(10 if HAS_CUDA else 2):
        again = window_attention_bwd(dout, x, lse, t, 3, (7, 7), (3, 3), None)
        assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])


def test_saves_no_attention_matrix():
    """What autograd keeps for the fused op: its inputs and the fp32 lse; not the output (the backward derives
    delta from its own probabilities), nothing N x N."""
    saved = []

    def pack(t):
        saved.append(t)
        return t

    qkv = torch.randn(2, 14, 14, 3 * 64, device=DEVICE, requires_grad=True)
    table = torch.randn(169, 2, device=DEVICE, requires_grad=True)
    with swin_fused.use_backend("triton"), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = swin_fused.window_attention(qkv, table, 2, 7, 3)
    n_tokens = 2 * 14 * 14
    assert all(t.shape[-2:] != (49, 49) for t in saved), [tuple(t.shape) for t in saved]
    # Besides the inputs: one lse per (token, head), and (eager route) the head-major copy of the table that
    # both launchers read, made once in the forward.
    assert all(t is not out for t in saved)
    total = sum(t.numel() for t in saved if t is not qkv and t is not table)
    assert total in (n_tokens * 2, n_tokens * 2 + table.numel())


def test_gradient_to_table_in_fp32_under_half_qkv():
    """AMP-style mixed dtypes: fp16 qkv with an fp32 table and fp32 qkv bias; grads in each input's dtype."""
    qkv = torch.randn(1, 10, 13, 3 * 32, device=DEVICE, dtype=torch.float16, requires_grad=True)
    table = torch.randn(169, 2, device=DEVICE, requires_grad=True)
    bias = torch.randn(96, device=DEVICE, requires_grad=True)
    with swin_fused.use_backend("triton"):
        swin_fused.window_attention(qkv, table, 2, 7, 3, pad_qkv=bias).float().sum().backward()
    assert qkv.grad.dtype == torch.float16 and table.grad.dtype == torch.float32 and bias.grad.dtype == torch.float32
    assert all(torch.isfinite(t).all() for t in (qkv.grad, table.grad, bias.grad))
