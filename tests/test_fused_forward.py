"""The fused forward kernel against the PyTorch reference (CPU: Triton interpreter; GPU: the same tests).

Criterion: max error vs a float64 reference <= 2x PyTorch's own error in the same dtype + a small floor;
outputs are NaN-poisoned before each launch so an unwritten element fails.
"""
import pytest
import torch
from conftest import HAS_CUDA
from numerics import assert_within_torch_error, nan_filled_empty

import swin_fused
from swin_fused.kernels import window_attention_fwd as fwd_module
from swin_fused.kernels.window_attention_fwd import window_attention_fwd
from swin_fused.reference import window_attention_reference

DEVICE = "cuda" if HAS_CUDA else "cpu"
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if HAS_CUDA else [])  # interpreter mishandles bf16

# (B, H, W, heads, head_dim, window, shift, pad_qkv, shift_before_pad, table_window, scale)
CASES = [
    (2, 14, 14, 3, 32, (7, 7), (0, 0), False, False, None, None),  # divisible, W-MSA
    (2, 14, 14, 3, 32, (7, 7), (3, 3), False, False, None, None),  # divisible, SW-MSA
    (1, 10, 13, 2, 24, (7, 7), (3, 3), True, False, None, None),  # not divisible, H != W, odd head_dim
    (1, 10, 13, 2, 40, (7, 7), (3, 3), True, True, None, None),  # timm's order
    (1, 9, 23, 1, 16, (7, 7), (3, 3), False, False, None, None),  # padding with zeros (no qkv bias)
    (1, 5, 6, 2, 32, (5, 5), (0, 0), True, False, (7, 7), None),  # map smaller than window: central table
    (1, 16, 16, 4, 32, (8, 8), (4, 4), False, False, None, None),  # window 8: N = 64, one full tile
    (1, 20, 26, 2, 16, (12, 12), (6, 6), True, False, None, None),  # window 12: key-tile loop
    (1, 16, 16, 1, 48, (16, 16), (8, 8), False, False, None, 0.3),  # window 16, custom scale
    (1, 9, 20, 2, 20, (4, 5), (2, 1), True, False, None, None),  # non-square window and shift
    (1, 7, 7, 1, 128, (7, 7), (0, 0), False, False, None, None),  # head_dim 128
    (3, 7, 14, 5, 8 * 3, (7, 7), (3, 3), True, True, None, None),  # 5 heads, batch 3
]


def _ids(case):
    B, H, W, heads, hd, win, shift, pad, sbp, tw, scale = case
    return (f"B{B}-{H}x{W}-h{heads}-d{hd}-w{win[0]}x{win[1]}-s{shift[0]}{shift[1]}"
            f"{'-pad' if pad else ''}{'-timm' if sbp else ''}{'-tw' if tw else ''}{'-scale' if scale else ''}")


def make_inputs(case, dtype, device=DEVICE, seed=0):
    B, H, W, heads, hd, win, shift, pad, sbp, tw, scale = case
    g = torch.Generator().manual_seed(seed)
    C = heads * hd
    twin = tw or win
    qkv = torch.randn(B, H, W, 3 * C, generator=g)
    table = torch.randn((2 * twin[0] - 1) * (2 * twin[1] - 1), heads, generator=g)  # large: bias matters
    pad_qkv = torch.randn(3 * C, generator=g) if pad else None
    kwargs = dict(num_heads=heads, window_size=win, shift_size=shift, scale=scale, shift_before_pad=sbp,
                  table_window=twin)
    cast = (lambda t, dt: None if t is None else t.to(device=device, dtype=dt))
    return qkv, table, pad_qkv, kwargs, cast


def _reference(qkv, table, pad_qkv, kw):
    return window_attention_reference(qkv, table, kw["num_heads"], kw["window_size"], kw["shift_size"],
                                      kw["scale"], pad_qkv, kw["shift_before_pad"], kw["table_window"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_forward_matches_reference(case, dtype):
    qkv, table, pad_qkv, kw, cast = make_inputs(case, dtype)
    ref64 = _reference(cast(qkv, torch.float64), cast(table, torch.float64), cast(pad_qkv, torch.float64), kw)
    torch_dt = _reference(cast(qkv, dtype), cast(table, dtype), cast(pad_qkv, dtype), kw)
    x = cast(qkv, dtype)
    out = torch.full(x.shape[:-1] + (x.shape[-1] // 3,), float("nan"), device=DEVICE, dtype=dtype)
    window_attention_fwd(x, cast(table, torch.float32), kw["num_heads"], kw["window_size"], kw["shift_size"],
                         kw["scale"], cast(pad_qkv, dtype), kw["shift_before_pad"], kw["table_window"], out=out)
    assert_within_torch_error(_ids(case), out, torch_dt, ref64, dtype)


def test_lse_is_the_log_sum_exp_of_the_scores():
    """The saved statistic is log2(sum(exp(scores))) per (window, head, token), checked independently."""
    case = (1, 14, 14, 2, 16, (7, 7), (3, 3), False, False, None, None)
    qkv, table, _, kw, cast = make_inputs(case, torch.float32)
    x = cast(qkv, torch.float32)
    _, lse = window_attention_fwd(x, cast(table, torch.float32), 2, (7, 7), (3, 3), None, return_lse=True)
    # Independent recomputation: rolled map, windows in row-major order, scores with bias and -100 mask.
    rolled = torch.roll(qkv.double(), (-3, -3), (1, 2)).view(1, 2, 7, 2, 7, 3, 2, 16)
    win = rolled.permute(0, 1, 3, 2, 4, 5, 6, 7).reshape(4, 49, 3, 2, 16)
    q, k = win[:, :, 0].transpose(1, 2), win[:, :, 1].transpose(1, 2)  # 4, heads, 49, 16
    yy, xx = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    rows = (yy[:, None] - yy[None] + 6) * 13 + (xx[:, None] - xx[None] + 6)
    scores = q @ k.transpose(-1, -2) / 4.0 + table.double()[rows].permute(2, 0, 1)
    label = torch.zeros(14, 14)
    for i, hs in enumerate((slice(0, 7), slice(7, 11), slice(11, 14))):
        for j, ws in enumerate((slice(0, 7), slice(7, 11), slice(11, 14))):
            label[hs, ws] = 3 * i + j
    lab = label.view(2, 7, 2, 7).permute(0, 2, 1, 3).reshape(4, 49)
    scores = scores + torch.where(lab[:, None, :, None] != lab[:, None, None, :], -100.0, 0.0).double()
    expected = torch.logsumexp(scores, -1) / torch.log(torch.tensor(2.0, dtype=torch.float64))
    torch.testing.assert_close(lse.double().cpu(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_several_windows_per_program_match_one(monkeypatch, dtype):
    """The autotuner's multi-window configs (bias tile gathered once per program) compute each window as the
    one-window config does. Forced here, with 9 windows over programs of 4 (the last one short), padding, a
    shift and the lse: outputs and lse bit-identical, in NaN-filled fresh buffers (every element written)."""
    case = (1, 19, 20, 2, 16, (7, 7), (3, 3), True, False, None, None)
    qkv, table, pad_qkv, kw, cast = make_inputs(case, dtype)
    args = (cast(qkv, dtype), cast(table, torch.float32), 2, (7, 7), (3, 3), None, cast(pad_qkv, dtype))
    monkeypatch.setattr(fwd_module, "_autotuning", lambda: False)  # launch exactly the config under test
    one = window_attention_fwd(*args, return_lse=True)
    several = [c for c in fwd_module._window_configs(fwd_module._FWD_CONFIGS, 7, 7)
               if c.kwargs["WINDOWS_PER_PROGRAM"] > 1]
    assert several, "no multi-window config for 7 x 7 windows"
    for config in several:
        monkeypatch.setattr(fwd_module, "_heuristic_config", lambda *shape, c=config: c)
        with nan_filled_empty():
            out, lse = window_attention_fwd(*args, return_lse=True)
        assert torch.equal(out, one[0]) and torch.equal(lse, one[1]), config


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", [CASES[7], CASES[8]], ids=_ids)
def test_every_large_window_config_matches_reference(monkeypatch, case, dtype):
    """Each autotune candidate for windows of more than 64 tokens (on the device the autotuner may pick any
    of them), forced in turn: within the error bound of the float64 reference, every element written."""
    qkv, table, pad_qkv, kw, cast = make_inputs(case, dtype)
    ref64 = _reference(cast(qkv, torch.float64), cast(table, torch.float64), cast(pad_qkv, torch.float64), kw)
    torch_dt = _reference(cast(qkv, dtype), cast(table, dtype), cast(pad_qkv, dtype), kw)
    args = (cast(qkv, dtype), cast(table, torch.float32), kw["num_heads"], kw["window_size"], kw["shift_size"],
            kw["scale"], cast(pad_qkv, dtype), kw["shift_before_pad"], kw["table_window"])
    configs = fwd_module._window_configs(fwd_module._FWD_CONFIGS, *kw["window_size"])
    assert {c.kwargs["BLOCK_M"] for c in configs} == {16, 32, 64}, configs
    monkeypatch.setattr(fwd_module, "_autotuning", lambda: False)  # launch exactly the config under test
    for config in configs:
        monkeypatch.setattr(fwd_module, "_heuristic_config", lambda *shape, c=config: c)
        with nan_filled_empty():
            out, _ = window_attention_fwd(*args)
        assert_within_torch_error(f"{_ids(case)} {config}", out, torch_dt, ref64, dtype)


def test_no_lse_when_not_asked():
    case = CASES[0]
    qkv, table, _, kw, cast = make_inputs(case, torch.float32)
    out, lse = window_attention_fwd(cast(qkv, torch.float32), cast(table, torch.float32), 3, (7, 7), (0, 0), None)
    assert lse is None and out.shape == (2, 14, 14, 96)


def test_strided_inputs_are_handled():
    """qkv as a slice of a wider tensor and a transposed table give the same result as contiguous ones."""
    case = (1, 10, 13, 2, 24, (7, 7), (3, 3), True, False, None, None)
    qkv, table, pad_qkv, kw, cast = make_inputs(case, torch.float32)
    wide = torch.randn(1, 10, 13, 3 * 48 + 7).to(DEVICE)
    wide[..., 5:5 + 144] = cast(qkv, torch.float32)
    strided_qkv = wide[..., 5:5 + 144]  # channel stride 1, row strides of the wider tensor
    strided_table = cast(table, torch.float32).t().contiguous().t()  # column-major
    x_map = torch.randn(1, 20, 13, 144).to(DEVICE)
    x_map[:, ::2] = cast(qkv, torch.float32)
    every_other_row = x_map[:, ::2]
    args = (2, (7, 7), (3, 3), None, cast(pad_qkv, torch.float32))
    expected, _ = window_attention_fwd(cast(qkv, torch.float32), cast(table, torch.float32), *args)
    for q, t in ((strided_qkv, cast(table, torch.float32)), (cast(qkv, torch.float32), strided_table),
                 (every_other_row, cast(table, torch.float32))):
        got, _ = window_attention_fwd(q, t, *args)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_functional_triton_backend_matches_torch_backend():
    """Through the public op and the backend switch (what the modules call)."""
    case = (2, 10, 13, 2, 24, (7, 7), (3, 3), True, False, None, None)
    qkv, table, pad_qkv, kw, cast = make_inputs(case, torch.float32)
    args = (cast(qkv, torch.float32), cast(table, torch.float32))
    kw = {**kw, "pad_qkv": cast(pad_qkv, torch.float32)}
    with swin_fused.use_backend("torch"):
        expected = swin_fused.window_attention(*args, **kw)
    with swin_fused.use_backend("triton"):
        got = swin_fused.window_attention(*args, **kw)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=2e-5)


def test_swin_tiny_triton_backend_matches_torch_backend():
    """Whole model, end to end: Swin-T at 224 with the Triton backend equals the torch backend."""
    model = swin_fused.swin_tiny_patch4_window7_224(drop_path_rate=0.0).eval().to(DEVICE)
    with torch.no_grad():
        for p in model.parameters():  # move every weight off its init so bias tables and biases matter
            p.add_(torch.randn_like(p) * 0.02)
        x = torch.randn(1, 3, 224, 224, device=DEVICE)
        with swin_fused.use_backend("torch"):
            expected = model(x)
        with swin_fused.use_backend("triton"):
            got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
