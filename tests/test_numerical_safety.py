"""Numerical safety of the fused op: half-precision overflow, inf / NaN propagation, no cross-window damage.

- fp16 inputs whose scores q.k exceed the fp16 range (65504) give finite outputs and gradients wherever the
  fp32 reference is finite, on both backends: the kernels accumulate dots and run the softmax in fp32, and so
  does the torch backend (SDPA without gradients, fp32 scores in its autograd formulation). Plain fp16 PyTorch
  overflows on the same inputs (asserted, so the inputs really are out of range). Error bound: 2x (3x for
  gradients) the error of plain fp16 PyTorch where that survives, else of the fp32 reference rounded to fp16
  (the least any fp16-output op must lose).
- An fp32 bias table is added in fp32 under fp16 qkv (AMP's mix), even at magnitudes fp16 cannot resolve.
- A NaN in one token's q, k or v poisons exactly the outputs the math says it must (derived independently
  from the window geometry: one token x one head for q, the token's whole window x one head for k, the
  window x one channel for v), and nothing else: every other output, and the gradients of every token outside
  that window, are bit-identical to the clean run. inf / -inf inputs and a NaN in the qkv bias give the
  reference's pattern of non-finite outputs. Checked on both backends.

"""
import pytest
import torch
from conftest import HAS_CUDA
from numerics import assert_within_torch_error

import swin_fused
from swin_fused.reference import window_attention_reference

DEVICE = "cuda" if HAS_CUDA else "cpu"
BACKENDS = ["triton", "torch"]
# NumPy, under Triton's interpreter, warns about the inf - inf and 0 * inf these tests provoke on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def reference(qkv, table, heads, window, shift, scale=None, pad=None):
    return window_attention_reference(qkv, table, heads, window, shift, scale, pad)


# ----------------------------------------------------------------------------------------------------------
# fp16 overflow
# ----------------------------------------------------------------------------------------------------------

HEADS, HD = 2, 16
C = HEADS * HD


def overflow_inputs(magnitude=300.0):
    """fp16 qkv on an 8 x 8 map whose q and k are ~300: |q.k| reaches ~1e6, far beyond fp16's 65504."""
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(1, 8, 8, 3 * C, generator=g)
    qkv[..., :2 * C] *= magnitude
    return qkv.half().to(DEVICE), torch.randn(49, HEADS, generator=g).to(DEVICE), torch.randn(1, 8, 8, C, generator=g)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("window, shift", [(4, 2), (12, 6)], ids=["one-tile", "tiled"])
@pytest.mark.parametrize("scale", [None, 2e-5], ids=["default-scale-sharp-softmax", "tiny-scale-soft-softmax"])
def test_fp16_scores_beyond_half_range_stay_finite(scale, window, shift, backend):
    """(A 12 x 12 window on the 8 x 8 map: one padded window, the backward's tiled path.)"""
    qkv16, table, dout = overflow_inputs()
    table = torch.randn((2 * window - 1) ** 2, HEADS, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    dout16 = dout.to(DEVICE, torch.float16)

    def grads(fn, dtype, table_dtype):
        x = qkv16.to(dtype).detach().clone().requires_grad_()
        t = table.to(table_dtype).detach().clone().requires_grad_()
        out = fn(x, t)
        out.backward(dout16.to(dtype))
        return out.detach(), x.grad, t.grad

    def ref(x, t):
        return reference(x, t, HEADS, (window, window), (shift, shift), scale)

    ref64 = grads(ref, torch.float64, torch.float64)
    ref32 = grads(ref, torch.float32, torch.float32)
    plain16 = grads(ref, torch.float16, torch.float16)
    if scale is None:  # the inputs do overflow fp16: plain half-precision PyTorch gets inf / NaN
        assert not torch.isfinite(plain16[0]).all()
    with swin_fused.use_backend(backend):
        fused = grads(lambda x, t: swin_fused.window_attention(x, t, HEADS, window, shift, scale=scale),
                      torch.float16, torch.float32)
    for name, got, r32, p16, r64 in zip(("out", "dqkv", "dtable"), fused, ref32, plain16, ref64):
        assert torch.isfinite(r32).all()
        assert torch.isfinite(got).all(), f"{name}: non-finite where the fp32 reference is finite"
        # Baseline: plain fp16 PyTorch where it survives; where it overflowed, the fp32 result rounded to the
        # output dtype (what any fp16-output op must lose at least).
        baseline = p16 if torch.isfinite(p16).all() else r32.to(got.dtype)
        assert_within_torch_error(name, got, baseline, r64, torch.float16, factor=2.0 if name == "out" else 3.0)


def test_fp32_table_is_added_in_fp32_under_fp16_qkv():
    """Bias values fp16 cannot resolve (spacing 16 at 3e4): the kernel still matches float64 to fp16 rounding."""
    g = torch.Generator().manual_seed(1)
    qkv16 = torch.randn(1, 8, 8, 3 * C, generator=g).half().to(DEVICE)
    for magnitude in (3e4, 7e4):  # 7e4 is beyond fp16's range altogether
        table = (torch.randn(49, HEADS, generator=g) * magnitude).to(DEVICE)
        ref64 = reference(qkv16.double(), table.double(), HEADS, (4, 4), (2, 2))
        out = swin_fused.window_attention(qkv16, table, HEADS, 4, 2, backend="triton")
        assert_within_torch_error(f"table x {magnitude:g}", out, ref64.half(), ref64, torch.float16)


# ----------------------------------------------------------------------------------------------------------
# inf / NaN: propagation as in the reference, no damage outside the poisoned window
# ----------------------------------------------------------------------------------------------------------

B, H, W, WINDOW, SHIFT = 1, 10, 13, 7, 3  # padded to 14 x 14 and shifted: four windows per image
TOKEN = (2, 3)  # the poisoned token (map position)


def window_members(y0, x0):
    """[H, W] bool: map tokens in the same (padded, then shifted) window as (y0, x0), from the definition:
    window-frame position p = (map position - shift) mod padded size, window index = p // window."""
    Hp, Wp = -(-H // WINDOW) * WINDOW, -(-W // WINDOW) * WINDOW
    ys, xs = torch.arange(H), torch.arange(W)
    row = ((ys - SHIFT) % Hp) // WINDOW == ((y0 - SHIFT) % Hp) // WINDOW
    col = ((xs - SHIFT) % Wp) // WINDOW == ((x0 - SHIFT) % Wp) // WINDOW
    return row[:, None] & col[None, :]


def windows_with_padding():
    """[H, W] bool: tokens whose window contains at least one padding token."""
    members = [window_members(y, x) for y in range(H) for x in range(W)]
    counts = torch.stack([m.sum() for m in members]).view(H, W)
    return counts < WINDOW * WINDOW


@pytest.fixture(scope="module")
def clean():
    g = torch.Generator().manual_seed(2)
    qkv = torch.randn(B, H, W, 3 * C, generator=g)
    return dict(qkv=qkv, table=torch.randn(169, HEADS, generator=g), pad=torch.randn(3 * C, generator=g),
                dout=torch.randn(B, H, W, C, generator=g))


def run(qkv, table, pad, dout, backend):
    leaves = [t.to(DEVICE).detach().clone().requires_grad_() for t in (qkv, table, pad)]
    with swin_fused.use_backend(backend):
        out = swin_fused.window_attention(leaves[0], leaves[1], HEADS, WINDOW, SHIFT, pad_qkv=leaves[2])
    out.backward(dout.to(DEVICE))
    return [out.detach().cpu()] + [leaf.grad.cpu() for leaf in leaves]


@pytest.fixture(scope="module")
def clean_runs(clean):
    return {backend: run(clean["qkv"], clean["table"], clean["pad"], clean["dout"], backend) for backend in BACKENDS}


def channel(part, head, dim):
    """qkv channel of q (part 0), k (1) or v (2) for one head and dim."""
    return part * C + head * HD + dim


def head_channels(head):
    return slice(head * HD, (head + 1) * HD)


NAN_CASES = {
    # name: (q/k/v part, head, dim, which outputs the NaN must reach)
    "nan-in-q": (0, 1, 5, "token x head"),
    "nan-in-k": (1, 0, 3, "window x head"),
    "nan-in-v": (2, 1, 7, "window x channel"),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(NAN_CASES))
def test_nan_poisons_exactly_its_window(clean, clean_runs, backend, case):
    part, head, dim, reach = NAN_CASES[case]
    qkv = clean["qkv"].clone()
    qkv[0, TOKEN[0], TOKEN[1], channel(part, head, dim)] = float("nan")
    out, dqkv, dtable, _ = run(qkv, clean["table"], clean["pad"], clean["dout"], backend)
    clean_out, clean_dqkv, clean_dtable, _ = clean_runs[backend]

    members = window_members(*TOKEN)
    expected = torch.zeros(B, H, W, C, dtype=torch.bool)
    if reach == "token x head":
        expected[0, TOKEN[0], TOKEN[1], head_channels(head)] = True
    elif reach == "window x head":
        expected[0, :, :, head_channels(head)] = members[:, :, None]
    else:
        expected[0, :, :, head * HD + dim] = members
    assert torch.equal(torch.isnan(out), expected), f"NaN outputs: {torch.isnan(out).sum()} vs {expected.sum()}"
    assert torch.equal(out[~expected], clean_out[~expected]), "outputs outside the poisoned set changed"
    # The reference agrees on which outputs are NaN.
    ref = reference(qkv.double(), clean["table"].double(), HEADS, (WINDOW, WINDOW), (SHIFT, SHIFT),
                    pad=clean["pad"].double())
    assert torch.equal(torch.isnan(ref), expected)
    # Gradients: tokens of other windows are untouched; the table column of the other head too.
    outside = ~members
    assert torch.isfinite(dqkv[0][outside]).all()
    assert torch.equal(dqkv[0][outside], clean_dqkv[0][outside]), "gradients of other windows changed"
    other_head = 1 - head
    assert torch.equal(dtable[:, other_head], clean_dtable[:, other_head])
    assert torch.isnan(dtable[:, head]).any()


INF_CASES = {
    "+inf-in-k": (1, 0, 3, float("inf")),
    "-inf-in-whole-k-head": (1, 1, None, float("-inf")),
    "+inf-in-q": (0, 0, 0, float("inf")),
    "+inf-in-v": (2, 0, 4, float("inf")),
    "nan-in-qkv-bias": ("pad", 1, 2, float("nan")),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(INF_CASES))
def test_inf_and_bias_nan_follow_the_reference(clean, clean_runs, backend, case):
    part, head, dim, value = INF_CASES[case]
    qkv, pad = clean["qkv"].clone(), clean["pad"].clone()
    dims = slice(None) if dim is None else dim
    if part == "pad":  # a NaN in the k bias: every window that holds padding tokens
        pad[channel(1, head, 0):channel(1, head, 0) + HD][dims] = value
        reach = windows_with_padding()
    else:
        qkv[0, TOKEN[0], TOKEN[1], channel(part, head, 0):channel(part, head, 0) + HD][dims] = value
        reach = window_members(*TOKEN)
    out = run(qkv, clean["table"], pad, clean["dout"], backend)[0]
    ref = reference(qkv.double(), clean["table"].double(), HEADS, (WINDOW, WINDOW), (SHIFT, SHIFT), pad=pad.double())
    # Non-finite exactly where the float64 reference is non-finite (inf vs NaN may differ: on a GPU, exp2 flushes
    # a -100-masked weight to 0, and 0 * inf is NaN where the reference's e^-100 * inf is inf).
    assert torch.isfinite(ref).logical_not().any(), "the case must poison something"
    assert torch.equal(torch.isfinite(out), torch.isfinite(ref))
    finite = torch.isfinite(ref)
    torch.testing.assert_close(out[finite], ref[finite].float(), rtol=1e-4, atol=1e-5)
    # Tokens of windows the poisoned value cannot reach: the clean run's bits.
    untouched = ~reach
    assert untouched.any()
    assert torch.equal(out[0][untouched], clean_runs[backend][0][0][untouched])
