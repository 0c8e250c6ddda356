"""Bad input at every public entry is a clear error; unusual memory layouts give the right answer.

- ``swin_fused.window_attention``: one table of invalid arguments, run on both backends (validation happens
  before dispatch, so the error is the same whichever backend is in force). Each case asserts the exception
  type and a message that names the offending value and what was expected.
- The kernel launchers (``window_attention_fwd`` / ``_bwd``) validate like the public op when called directly,
  plus what only they take (``out``, ``lse``, ``dout``) and the kernels' own limits.
- float64: a TypeError naming float64 and the alternatives under an explicit "triton" backend; under "auto"
  on the CPU it runs on the PyTorch path, gradients included (gradcheck).
- Modules (WindowAttention, SwinBlock, PatchMerging, SwinTransformer) and the checkpoint functions' ``model``
  argument. Damaged checkpoint files and missing / unexpected / mis-shaped keys are covered by
  tests/test_checkpoint.py (test_unreadable_files_are_named_..., test_mismatched_dicts_...), not repeated here.
- Strided inputs (channels-last views, transposed maps, sliced batches, expanded stride-0 tensors, channel
  slices, storage offsets, non-contiguous tables, bias vectors and output gradients) give bit-identical outputs
  and gradients to the same values made contiguous, on both backends.
"""
import re

import numpy as np
import pytest
import torch
from conftest import HAS_CUDA

import swin_fused
import swin_fused.functional as functional
from swin_fused import SwinBlock, SwinTransformer, WindowAttention, load_checkpoint, save_checkpoint
from swin_fused.kernels.window_attention_bwd import window_attention_bwd
from swin_fused.kernels.window_attention_fwd import window_attention_fwd
from swin_fused.model import PatchMerging

BACKENDS = ["torch", "triton"]
DEVICE = "cuda" if HAS_CUDA else "cpu"  # where the kernels run: CUDA, else the interpreter on the CPU

# A valid call: 2 heads of 16 on a 5 x 6 map, window 2 (table (2*2-1)^2 = 9 rows), shift 1, padded.
HEADS, HEAD_DIM, C3 = 2, 16, 3 * 2 * 16


def valid_args():
    g = torch.Generator().manual_seed(1)
    qkv, table, pad = (torch.randn(shape, generator=g).to(DEVICE) for shape in ((1, 5, 6, C3), (9, HEADS), (C3,)))
    return dict(qkv=qkv, table=table, num_heads=HEADS, window_size=2, shift_size=1, pad_qkv=pad)


def _replace(**overrides):
    """A case builder: the valid call with some arguments replaced (callables get the valid args)."""
    def build():
        args = valid_args()
        for name, value in overrides.items():
            args[name] = value(args) if callable(value) else value
        return args
    return build


# (id, arguments, exception type, regex the message must match: the value and what was expected)
INVALID = [
    ("qkv-rank3", _replace(qkv=lambda a: a["qkv"][0]), ValueError,
     r"qkv must be a 4-D tensor \[B, H, W, 3\*heads\*head_dim\], got \(5, 6, 96\)"),
    ("qkv-not-a-tensor", _replace(qkv=[[1.0]]), ValueError, r"qkv must be a 4-D tensor .*got list"),
    ("qkv-int", _replace(qkv=lambda a: a["qkv"].long()), ValueError,
     r"qkv must be a floating-point tensor \(float32, float16, bfloat16 or float64\), got dtype torch.int64"),
    ("qkv-float8", _replace(qkv=lambda a: a["qkv"].to(torch.float8_e4m3fn)), ValueError,
     r"qkv must be a floating-point tensor \(.*\), got dtype torch.float8_e4m3fn"),
    ("qkv-empty-batch", _replace(qkv=lambda a: a["qkv"][:0]), ValueError,
     r"qkv has an empty dimension: shape \(0, 5, 6, 96\), expected B, H, W and channels >= 1"),
    ("qkv-empty-channels", _replace(qkv=lambda a: a["qkv"][..., :0]), ValueError,
     r"empty dimension: shape \(1, 5, 6, 0\)"),
    ("channels-not-3-heads-hd", _replace(qkv=lambda a: a["qkv"][..., :95]), ValueError,
     r"qkv's last dimension 95 is not 3 \* num_heads \* head_dim for num_heads=2"),
    ("heads-not-dividing", _replace(num_heads=5), ValueError,
     r"last dimension 96 is not 3 \* num_heads \* head_dim for num_heads=5"),
    ("heads-zero", _replace(num_heads=0), ValueError, r"num_heads must be a positive int, got 0"),
    ("heads-float", _replace(num_heads=2.0), ValueError, r"num_heads must be a positive int, got 2.0"),
    ("heads-bool", _replace(num_heads=True), ValueError, r"num_heads must be a positive int, got True"),
    ("heads-bool-one", _replace(qkv=lambda a: a["qkv"][..., :48], table=lambda a: a["table"][:, :1],
                                pad_qkv=lambda a: a["pad_qkv"][:48], num_heads=True),
     ValueError, r"num_heads must be a positive int, got True"),  # True == 1 and hash(True) == hash(1)
    ("window-zero", _replace(window_size=0), ValueError, r"window_size must be positive, got \(0, 0\)"),
    ("window-negative", _replace(window_size=(-1, 2)), ValueError, r"window_size must be positive, got \(-1, 2\)"),
    ("window-float", _replace(window_size=2.5), TypeError, r"window_size must be an int or a pair of ints, got 2.5"),
    ("window-float-equal", _replace(window_size=2.0), TypeError, r"window_size must be an int or a pair .*got 2.0"),
    ("window-float-pair", _replace(window_size=(2, 2.0)), TypeError, r"window_size must be an int or a pair"),
    ("window-string", _replace(window_size="2"), TypeError, r"window_size must be an int or a pair .*got '2'"),
    ("window-3-items", _replace(window_size=(2, 2, 2)), ValueError,
     r"window_size must be an int or a pair of ints, got \(2, 2, 2\)"),
    ("shift-equal-window", _replace(shift_size=2), ValueError,
     r"shift_size must satisfy 0 <= shift < window in each dimension, got shift \(2, 2\) for window \(2, 2\)"),
    ("shift-beyond-window-w", _replace(shift_size=(0, 3)), ValueError,
     r"0 <= shift < window .*got shift \(0, 3\) for window \(2, 2\) \(w\)"),
    ("shift-negative", _replace(shift_size=-1), ValueError, r"got shift \(-1, -1\) for window \(2, 2\)"),
    ("shift-float", _replace(shift_size=0.5), TypeError, r"shift_size must be an int or a pair of ints, got 0.5"),
    ("shift-bool", _replace(shift_size=True), TypeError, r"shift_size must be an int or a pair of ints, got True"),
    ("table-window-smaller", _replace(table_window=1), ValueError,
     r"table_window \(1, 1\) must not be smaller than window_size \(2, 2\)"),
    ("table-rows", _replace(table=torch.randn(8, HEADS)), ValueError,
     r"table must have shape \(\(2\*2-1\)\*\(2\*2-1\), num_heads\) = \(9, 2\), got \(8, 2\)"),
    ("table-heads", _replace(table=torch.randn(9, 3)), ValueError, r"= \(9, 2\), got \(9, 3\)"),
    ("table-rank3", _replace(table=torch.randn(1, 9, 2)), ValueError, r"= \(9, 2\), got \(1, 9, 2\)"),
    ("table-for-larger-window", _replace(table=torch.randn(25, HEADS)), ValueError,
     r"= \(9, 2\), got \(25, 2\)"),  # a 3x3-window table needs table_window=3
    ("table-numpy", _replace(table=np.zeros((9, 2), np.float32)), ValueError, r"= \(9, 2\), got ndarray"),
    ("table-int", _replace(table=torch.ones(9, HEADS, dtype=torch.long)), TypeError,
     r"bias table must be a floating-point tensor, got dtype torch.int64"),
    ("table-other-device", _replace(table=torch.randn(9, HEADS, device="meta")), ValueError,
     r"table is on meta but qkv is on (cpu|cuda:0)"),
    ("pad-shape", _replace(pad_qkv=torch.randn(5)), ValueError,
     r"pad_qkv must have shape \(96,\) \(the qkv bias\), got \(5,\)"),
    ("pad-int", _replace(pad_qkv=torch.ones(C3, dtype=torch.long)), TypeError,
     r"pad_qkv must be None or a floating-point tensor of shape \(96,\).*got torch.int64"),
    ("pad-list", _replace(pad_qkv=[0.0] * C3), TypeError, r"pad_qkv must be None or a floating-point .*got list"),
    ("pad-other-device", _replace(pad_qkv=torch.randn(C3, device="meta")), ValueError,
     r"pad_qkv is on meta but qkv is on (cpu|cuda:0)"),
    ("scale-string", _replace(scale="a"), TypeError, r"scale must be None or a Python float, got 'a' \(str\)"),
    ("scale-tensor", _replace(scale=torch.tensor(0.5)), TypeError,
     r"scale must be None or a Python float, got tensor\(0.5000\) \(Tensor\)"),
    ("scale-nan", _replace(scale=float("nan")), ValueError,
     r"scale must be a finite float \(or None for head_dim \*\* -0.5\), got nan"),
    ("scale-inf", _replace(scale=float("inf")), ValueError, r"scale must be a finite float.*got inf"),
    ("dropout-one", _replace(dropout_p=1.0), ValueError, r"dropout_p must be a float in \[0, 1\), got 1.0"),
    ("dropout-negative", _replace(dropout_p=-0.1), ValueError, r"dropout_p must be a float in \[0, 1\), got -0.1"),
    ("dropout-nan", _replace(dropout_p=float("nan")), ValueError, r"dropout_p must be a float in \[0, 1\), got nan"),
    ("dropout-string", _replace(dropout_p="0.1"), ValueError, r"dropout_p must be a float in \[0, 1\), got '0.1'"),
    ("shift-before-pad-string", _replace(shift_before_pad="no"), TypeError,
     r"shift_before_pad must be a bool, got 'no'"),
    ("backend-unknown", _replace(backend="cuda"), ValueError,
     r"unknown backend 'cuda'; expected one of auto, torch, triton"),
]


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "after-valid-calls"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("build, error, pattern", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_window_attention_rejects_invalid_arguments(backend, build, error, pattern, warm):
    """Also after valid calls of the same shapes, whose checks the op keeps per call signature: a cached signature
    must never let an invalid call through (``2.0 == 2``, ``True == 1``)."""
    with swin_fused.use_backend(backend):
        if warm:
            args = valid_args()
            swin_fused.window_attention(**args)
            one_head = {**args, "qkv": args["qkv"][..., :48], "table": args["table"][:, :1],
                        "pad_qkv": args["pad_qkv"][:48], "num_heads": 1}
            swin_fused.window_attention(**one_head)
        with pytest.raises(error, match=pattern):
            swin_fused.window_attention(**build())


def test_the_checks_run_once_per_call_signature(monkeypatch):
    """The op checks a signature (shapes, dtypes, devices, every other argument) once; a new one is checked."""
    calls = []
    real = functional.check_window_attention_args
    monkeypatch.setattr(functional, "check_window_attention_args", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(functional, "_CHECKED", {})
    args = valid_args()
    with swin_fused.use_backend("torch"):
        for _ in range(3):
            swin_fused.window_attention(**args)
        swin_fused.window_attention(**{**args, "table": torch.nn.Parameter(args["table"].clone())})
        assert len(calls) == 1
        swin_fused.window_attention(**{**args, "qkv": torch.cat([args["qkv"]] * 2)})  # another batch
        swin_fused.window_attention(**{**args, "shift_size": (1, 0)})
        swin_fused.window_attention(**{**args, "num_heads": np.int64(HEADS)})  # not an int: checked every call
        swin_fused.window_attention(**{**args, "num_heads": np.int64(HEADS)})
        assert len(calls) == 5
        monkeypatch.setattr(functional, "_CHECKED_MAX", 2)
        swin_fused.window_attention(**{**args, "shift_size": 0})  # a full cache starts over
        assert len(functional._CHECKED) == 1 and len(calls) == 6


def test_valid_base_call_runs_on_both_backends():
    """The table above perturbs this call; it must itself be valid (else every case tests nothing)."""
    outs = []
    for backend in BACKENDS:
        with swin_fused.use_backend(backend):
            outs.append(swin_fused.window_attention(**valid_args()))
            # Integers from NumPy count as ints, as they do for the window (a config read from a file).
            outs.append(swin_fused.window_attention(**{**valid_args(), "num_heads": np.int64(HEADS)}))
    assert outs[0].shape == (1, 5, 6, HEADS * HEAD_DIM)
    assert torch.equal(outs[0], outs[1])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)


def test_mixed_float_dtypes_are_accepted_and_cast():
    """A table or qkv bias in another float dtype than qkv (AMP: fp32 table, fp16 qkv) is not an error."""
    args = valid_args()
    expected = swin_fused.window_attention(**args, backend="torch")
    for backend in BACKENDS:
        for table, pad in ((args["table"].double(), args["pad_qkv"]), (args["table"], args["pad_qkv"].double()),
                           (args["table"].half().float(), args["pad_qkv"].half())):
            got = swin_fused.window_attention(**{**args, "table": table, "pad_qkv": pad}, backend=backend)
            torch.testing.assert_close(got, expected, rtol=2e-3, atol=2e-3)


# ----------------------------------------------------------------------------------------------------------
# Kernel launchers and the kernels' limits
# ----------------------------------------------------------------------------------------------------------


def _launch(**overrides):
    a = valid_args()
    a.update(overrides)
    return window_attention_fwd(a["qkv"], a["table"], a["num_heads"], a.get("window", (2, 2)),
                                a.get("shift", (1, 1)), None, a["pad_qkv"], False, a.get("table_window"))


@pytest.mark.parametrize("overrides, error, pattern", [
    (dict(qkv=torch.randn(5, 6, C3)), ValueError, r"qkv must be a 4-D tensor .*got \(5, 6, 96\)"),
    (dict(shift=(2, 1)), ValueError, r"0 <= shift < window .*got shift \(2, 1\) for window \(2, 2\) \(h\)"),
    (dict(window=(0, 2)), ValueError, r"window_size must be positive, got \(0, 2\)"),
    (dict(num_heads=5), ValueError, r"last dimension 96 is not 3 \* num_heads \* head_dim for num_heads=5"),
    (dict(table=torch.randn(8, 2)), ValueError, r"= \(9, 2\), got \(8, 2\)"),
    (dict(table_window=(1, 1)), ValueError, r"table_window \(1, 1\) must not be smaller"),
    (dict(pad_qkv=torch.randn(4)), ValueError, r"pad_qkv must have shape \(96,\)"),
    (dict(qkv=torch.randn(1, 5, 6, C3, dtype=torch.float64, device=DEVICE)), TypeError,
     r"supports float32, float16 and bfloat16, got torch.float64; use the 'torch' backend"),
    (dict(qkv=torch.randn(1, 4, 4, 3 * 200, device=DEVICE), table=torch.randn(9, 1, device=DEVICE), num_heads=1,
          pad_qkv=None), ValueError, r"supports head_dim 1..128, got 200"),
    (dict(qkv=torch.randn(1, 25, 25, 6, device=DEVICE), table=torch.randn(49 * 49, 1, device=DEVICE), num_heads=1,
          window=(25, 25), shift=(0, 0), pad_qkv=None), ValueError, r"windows of up to 576 tokens \(24x24\), got 625"),
], ids=["rank", "shift", "window", "heads", "table", "table-window", "pad", "float64", "head-dim-200",
        "window-25x25"])
def test_forward_launcher_validates(overrides, error, pattern):
    with pytest.raises(error, match=pattern):
        _launch(**overrides)


def test_launcher_buffers_are_validated():
    a = valid_args()
    qkv, table, pad = a["qkv"], a["table"], a["pad_qkv"]
    args = (HEADS, (2, 2), (1, 1), None, pad, False, None)
    with pytest.raises(ValueError, match=r"out must be a \(1, 5, 6, 32\) torch.float32 tensor .*"
                                         r"got \(1, 5, 6, 31\)"):
        window_attention_fwd(qkv, table, *args, out=torch.empty(1, 5, 6, 31, device=DEVICE))
    with pytest.raises(ValueError, match=r"out must be .* torch.float32 tensor .*got \(1, 5, 6, 32\) torch.float16"):
        window_attention_fwd(qkv, table, *args, out=torch.empty(1, 5, 6, 32, dtype=torch.float16, device=DEVICE))
    out, lse = window_attention_fwd(qkv, table, *args, return_lse=True)
    dout = torch.randn_like(out)
    with pytest.raises(ValueError, match=r"lse must be the forward's float32 \[B \* nW, heads, N\] = \(9, 2, 4\) "
                                         r"log-sum-exp .*got \(9, 2\) torch.float32"):
        window_attention_bwd(dout, qkv, lse[..., 0], table, *args)
    with pytest.raises(ValueError, match=r"lse must be .*got \(9, 2, 4\) torch.float16"):
        window_attention_bwd(dout, qkv, lse.half(), table, *args)
    with pytest.raises(ValueError, match=r"dout must be \[B, H, W, C\] = \(1, 5, 6, 32\) .*got \(1, 5, 5, 32\)"):
        window_attention_bwd(dout[:, :, :5], qkv, lse, table, *args)
    with pytest.raises(ValueError, match=r"dqkv must be a \(1, 5, 6, 96\) torch.float32 tensor .*got \(1, 5, 6, 95\)"):
        window_attention_bwd(dout, qkv, lse, table, *args, dqkv=torch.empty(1, 5, 6, 95, device=DEVICE))
    # Buffers whose rows overlap (every program would write the same row) or that alias the input.
    overlapping = {"out": torch.empty(32, device=DEVICE).expand(1, 5, 6, 32), "in qkv": qkv[..., :32]}
    for name, buffer in overlapping.items():
        with pytest.raises(ValueError, match=r"out must be .*neither overlap each other nor share memory with the "
                                             r"input"):
            window_attention_fwd(qkv, table, *args, out=buffer)
    with pytest.raises(ValueError, match=r"dqkv must be .*neither overlap"):
        window_attention_bwd(dout, qkv, lse, table, *args, dqkv=qkv)
    # An lse with the forward's values in other strides: read as the forward wrote it, not misindexed.
    reference = window_attention_bwd(dout, qkv, lse, table, *args)
    strided_lse = lse.transpose(0, 2).contiguous().transpose(0, 2)
    for got, want in zip(window_attention_bwd(dout, qkv, strided_lse, table, *args), reference):
        assert (got is None and want is None) or torch.equal(got, want)
    with pytest.raises(ValueError, match=r"shift_size must satisfy .*got shift \(3, 1\)"):
        window_attention_bwd(dout, qkv, lse, table, HEADS, (2, 2), (3, 1), None, pad)


def test_ops_refuses_gradient_without_lse():
    """The raw custom op called with need_lse=False cannot be differentiated: a clear error, not garbage."""
    import swin_fused.ops  # noqa: F401  (registers the op)

    a = valid_args()
    qkv = a["qkv"].requires_grad_()  # on DEVICE: the op really runs
    out, _ = torch.ops.swin_fused.window_attention(qkv, a["table"], None, None, HEADS, [2, 2], [1, 1], 0.25, False,
                                                   [2, 2], -100.0, False)
    with pytest.raises(RuntimeError, match=r"need_lse=False but a gradient was requested"):
        out.sum().backward()


# ----------------------------------------------------------------------------------------------------------
# float64
# ----------------------------------------------------------------------------------------------------------


def test_float64_on_explicit_triton_is_a_type_error_naming_the_alternatives():
    a = {k: (v.double() if isinstance(v, torch.Tensor) else v) for k, v in valid_args().items()}
    for context, kwargs in ((swin_fused.use_backend("triton"), {}), (swin_fused.use_backend("auto"),
                                                                     {"backend": "triton"})):
        with context, pytest.raises(TypeError) as info:
            swin_fused.window_attention(**a, **kwargs)
        message = str(info.value)
        assert "torch.float64" in message and "float32, float16 and bfloat16" in message
        assert "'torch'" in message and "'auto'" in message


def test_float64_under_auto_runs_on_the_torch_path_with_correct_gradients():
    """auto + CPU + float64 just works; gradcheck verifies the gradients (qkv, table, qkv bias) numerically."""
    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(1, 3, 5, 3 * 2 * 2, generator=g, dtype=torch.float64, requires_grad=True)
    table = torch.randn(9, 2, generator=g, dtype=torch.float64, requires_grad=True)
    pad = torch.randn(12, generator=g, dtype=torch.float64, requires_grad=True)
    with swin_fused.use_backend("auto"):
        assert torch.autograd.gradcheck(
            lambda q, t, p: swin_fused.window_attention(q, t, 2, 2, 1, pad_qkv=p), (qkv, table, pad))


def test_float64_model_under_auto_and_triton():
    model = SwinTransformer(img_size=32, embed_dim=16, depths=(2,), num_heads=(2,), window_size=4,
                            num_classes=3).double().eval()
    x = torch.randn(1, 3, 20, 28, dtype=torch.float64)
    with swin_fused.use_backend("auto"), torch.no_grad():
        assert model(x).dtype == torch.float64
    with swin_fused.use_backend("triton"), pytest.raises(TypeError, match=r"got torch.float64; use "
                                                                          r"set_backend\('torch'\)"):
        model(x)


# ----------------------------------------------------------------------------------------------------------
# Modules and checkpoint functions
# ----------------------------------------------------------------------------------------------------------


def test_window_attention_module_errors():
    with pytest.raises(ValueError, match=r"dim must be a positive int, got 0"):
        WindowAttention(0, 7, 1)
    with pytest.raises(TypeError, match=r"window_size must be an int or a pair of ints, got 7.0"):
        WindowAttention(32, 7.0, 2)
    attn = WindowAttention(32, (4, 4), 2)
    for shape in ((2, 4, 16, 32), (2, 16, 31), (2, 15, 32)):
        with pytest.raises(ValueError, match=re.escape(f"expected windows [B*nW, N=16, C=32] (window (4, 4)), got "
                                                       f"shape {shape}; use forward_map")):
            attn(torch.randn(shape))
    for mask_shape in ((3, 16, 16), (2, 15, 15), (16, 16)):
        with pytest.raises(ValueError, match=re.escape(f"mask must be [nW, N, N] = [nW, 16, 16] with nW dividing "
                                                       f"the 2 windows of x, got shape {mask_shape}")):
            attn(torch.randn(2, 16, 32), torch.zeros(mask_shape))


def test_window_attention_forward_map_errors():
    attn = WindowAttention(32, (4, 4), 2)
    x = torch.randn(1, 8, 8, 32)
    for shape in ((1, 64, 32), (1, 8, 8, 31)):
        with pytest.raises(ValueError, match=re.escape(f"expected a [B, H, W, C=32] map, got shape {shape}")):
            attn.forward_map(torch.randn(shape))
    with pytest.raises(ValueError, match=r"window_size must be positive, got \(0, 4\)"):
        attn.forward_map(x, (0, 4))
    with pytest.raises(ValueError, match=r"table_window \(4, 4\) must not be smaller than window_size \(5, 5\)"):
        attn.forward_map(x, 5)
    with pytest.raises(ValueError, match=r"got shift \(4, 0\) for window \(4, 4\)"):
        attn.forward_map(x, (4, 4), (4, 0))
    with torch.no_grad():  # an int window is a square one
        torch.testing.assert_close(attn.forward_map(x, 2, 1), attn.forward_map(x, (2, 2), (1, 1)))


def test_block_and_merging_errors():
    with pytest.raises(ValueError, match=r"input_resolution must be positive, got 0"):
        SwinBlock(32, 0, 2, window_size=4)
    with pytest.raises(ValueError, match=r"input_resolution must be positive, got \(-1, 8\)"):
        SwinBlock(32, (-1, 8), 2, window_size=4)
    block = SwinBlock(32, 8, 2, window_size=4, shift_size=2)
    merging = PatchMerging(8, 32)
    for module in (block, merging):  # the error names the caller's input, empty tokens as well as maps
        for shape in ((0, 8, 8, 32), (1, 0, 8, 32), (1, 8, 0, 32)):
            with pytest.raises(ValueError, match=re.escape(f"expected a non-empty [B, H, W, C] map (B, H, W >= 1), "
                                                           f"got shape {shape}")):
                module(torch.randn(shape))
        with pytest.raises(ValueError, match=re.escape("expected non-empty [B, L, C] tokens (B, L >= 1), got "
                                                       "shape (0, 64, 32)")):
            module(torch.randn(0, 64, 32))
    with pytest.raises(ValueError, match=re.escape("[B, L, C=32] tokens, got shape (1, 64, 16)")):
        block(torch.randn(1, 64, 16))
    merging = PatchMerging(8, 16)
    with pytest.raises(ValueError, match=re.escape("expected a [B, H, W, C=16] map or [B, L, C=16] tokens, got "
                                                   "shape (1, 8, 8, 8)")):
        merging(torch.randn(1, 8, 8, 8))


SMALL = dict(img_size=32, embed_dim=16, depths=(2,), num_heads=(2,), window_size=4, num_classes=3)


@pytest.mark.parametrize("overrides, error, pattern", [
    (dict(depths=(-1,)), ValueError, r"depths\[0\] must be an int >= 0, got -1"),
    (dict(depths=(2.0,)), ValueError, r"depths\[0\] must be an int >= 0, got 2.0"),
    (dict(num_heads=("2",)), ValueError, r"num_heads\[0\] must be a positive int, got '2'"),
    (dict(num_heads=(0,)), ValueError, r"num_heads\[0\] must be a positive int, got 0"),
    (dict(patch_size=0), ValueError, r"patch_size must be positive, got 0"),
    (dict(img_size=2), ValueError, r"img_size \(2, 2\) must be at least patch_size \(4, 4\)"),
    (dict(img_size=(32, 0)), ValueError, r"img_size \(32, 0\) must be at least patch_size \(4, 4\)"),
    (dict(mlp_ratio=0), ValueError, r"mlp_ratio must be a positive number, got 0"),
    (dict(drop_path_rate=2.0), ValueError, r"drop_path_rate must be a number in \[0, 1\], got 2.0"),
    (dict(window_size=(4, 4)), ValueError, r"window_size must be a positive int, got \(4, 4\)"),
], ids=lambda v: None if isinstance(v, dict) else "")
def test_model_constructor_errors(overrides, error, pattern):
    with pytest.raises(error, match=pattern):
        SwinTransformer(**{**SMALL, **overrides})


def test_model_forward_errors():
    model = SwinTransformer(**SMALL)
    for shape in ((0, 3, 32, 32), (1, 3, 0, 32)):
        with pytest.raises(ValueError, match=re.escape(f"expected a non-empty batch of images [B, 3, H, W] "
                                                       f"(B, H, W >= 1), got shape {shape}")):
            model(torch.randn(shape))
    with pytest.raises(ValueError, match=re.escape("expected images [B, 3, H, W], got shape (1, 32, 32, 3)")):
        model(torch.randn(1, 32, 32, 3))  # channels-last images: a clear error, not a wrong answer
    with pytest.raises(TypeError, match=r"expected floating-point images \(the model's dtype, torch.float32\), "
                                        r"got torch.uint8: convert and normalise first"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))  # a decoded image, straight from the loader


def test_checkpoint_functions_name_a_model_that_is_not_a_module(tmp_path):
    model = SwinTransformer(**SMALL)
    path = tmp_path / "m.pth"
    save_checkpoint(model, path)
    with pytest.raises(TypeError, match=r"load_checkpoint: model must be a torch.nn.Module, got PosixPath "
                                        r"\(arguments swapped\? the model comes first"):
        load_checkpoint(path, model)
    with pytest.raises(TypeError, match=r"load_checkpoint: model must be a torch.nn.Module, got NoneType$"):
        load_checkpoint(None, path)
    with pytest.raises(TypeError, match=r"save_checkpoint: model must be a torch.nn.Module, got str \(arguments"):
        save_checkpoint(str(path), model)


# ----------------------------------------------------------------------------------------------------------
# Strided and non-contiguous inputs: same bits as the contiguous copy
# ----------------------------------------------------------------------------------------------------------

B, H, W, SMALL_HEADS, HD = 2, 5, 6, 1, 16
SC3 = 3 * SMALL_HEADS * HD
WINDOW, SHIFT = (3, 4), (1, 2)  # non-square, padded (5x6 -> 6x8: four windows per image), shifted


def _layouts():
    """name -> function(contiguous qkv [B, H, W, 3C]) -> a tensor with the same values and other strides."""
    def channels_last_view(q):  # an NCHW tensor seen as NHWC: channel stride H*W
        return q.permute(0, 3, 1, 2).contiguous().permute(0, 2, 3, 1)

    def transposed_map(q):  # H and W strides swapped
        return q.transpose(1, 2).contiguous().transpose(1, 2)

    def sliced_batch(q):  # every other image of a larger batch
        return torch.stack([q, torch.randn_like(q)], 1).flatten(0, 1)[::2]

    def every_other_row(q):
        return torch.stack([q, torch.randn_like(q)], 2).flatten(1, 2)[:, ::2]

    def channel_slice(q):  # rows of a wider tensor: flattens to evenly spaced rows without a copy
        wide = torch.randn(*q.shape[:-1], q.shape[-1] + 9, device=q.device)
        wide[..., 4:4 + q.shape[-1]] = q
        return wide[..., 4:4 + q.shape[-1]]

    def storage_offset_1(q):  # misaligned start (one element into the storage)
        flat = torch.randn(q.numel() + 1, device=q.device)
        flat[1:] = q.reshape(-1)
        return flat[1:].view(q.shape)

    def transposed_channels(q):  # channel stride 2: each channel interleaved with junk
        return torch.stack([q, torch.randn_like(q)], -1)[..., 0]

    return {f.__name__: f for f in (channels_last_view, transposed_map, sliced_batch, every_other_row, channel_slice,
                                    storage_offset_1, transposed_channels)}


LAYOUTS = _layouts()


def _expanded_inputs():
    """Stride-0 tensors: a batch expanded from one image, and a map whose tokens all share one qkv row."""
    g = torch.Generator().manual_seed(5)
    one_image = torch.randn(1, H, W, SC3, generator=g).to(DEVICE).expand(B, H, W, SC3)
    one_token = torch.randn(1, 1, 1, SC3, generator=g).to(DEVICE).expand(B, H, W, SC3)
    return {"expanded_batch": one_image, "expanded_tokens": one_token}


def _run(qkv, table, pad, dout, backend):
    """Output and gradients (qkv, table, pad) of the public op with autograd, leaves keeping their strides."""
    leaves = [t.detach().requires_grad_() for t in (qkv, table, pad)]
    with swin_fused.use_backend(backend):
        out = swin_fused.window_attention(leaves[0], leaves[1], SMALL_HEADS, WINDOW, SHIFT, pad_qkv=leaves[2])
    out.backward(dout)
    return [out.detach()] + [leaf.grad for leaf in leaves]


def _assert_same(got, expected, what):
    for name, a, b in zip(("out", "dqkv", "dtable", "dpad"), got, expected):
        assert a.shape == b.shape, f"{what} {name}: shape {tuple(a.shape)} != {tuple(b.shape)}"
        assert torch.equal(a, b), f"{what} {name}: max diff {(a - b).abs().max().item():.3e}"


@pytest.fixture(scope="module")
def strided_case():
    g = torch.Generator().manual_seed(4)
    tensors = dict(qkv=torch.randn(B, H, W, SC3, generator=g), table=torch.randn(5 * 7, SMALL_HEADS, generator=g),
                   pad=torch.randn(SC3, generator=g), dout=torch.randn(B, H, W, SMALL_HEADS * HD, generator=g))
    return {name: t.to(DEVICE) for name, t in tensors.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layout", list(LAYOUTS) + list(_expanded_inputs()))
def test_strided_qkv_gives_the_contiguous_result(strided_case, backend, layout):
    c = strided_case
    if layout in LAYOUTS:
        qkv = LAYOUTS[layout](c["qkv"])
        assert torch.equal(qkv, c["qkv"]) and (not qkv.is_contiguous() or qkv.storage_offset() != 0)
    else:
        qkv = _expanded_inputs()[layout]
        assert 0 in qkv.stride()
    expected = _run(qkv.contiguous(), c["table"], c["pad"], c["dout"], backend)
    _assert_same(_run(qkv, c["table"], c["pad"], c["dout"], backend), expected, f"{backend}/{layout}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_table_pad_and_output_gradient(strided_case, backend):
    """Column-major and head-expanded tables, a strided qkv bias, transposed and expanded output gradients."""
    c = strided_case
    expected = _run(c["qkv"], c["table"], c["pad"], c["dout"], backend)
    column_of_wider = torch.cat([torch.randn_like(c["table"]), c["table"]], 1)[:, 1:]
    strided_pad = torch.stack([c["pad"], torch.randn_like(c["pad"])], 1)[:, 0]
    transposed_dout = c["dout"].transpose(1, 2).contiguous().transpose(1, 2)
    for what, table, pad, dout, strided in (
            ("table column of a wider tensor", column_of_wider, c["pad"], c["dout"], column_of_wider),
            ("strided pad", c["table"], strided_pad, c["dout"], strided_pad),
            ("transposed dout", c["table"], c["pad"], transposed_dout, transposed_dout)):
        assert not strided.is_contiguous()
        _assert_same(_run(c["qkv"], table, pad, dout, backend), expected, f"{backend}/{what}")
    # Stride-0 output gradients: out.sum() hands backward an expanded tensor of ones.
    ones = torch.ones_like(c["dout"])
    expected = _run(c["qkv"], c["table"], c["pad"], ones, backend)
    _assert_same(_run(c["qkv"], c["table"], c["pad"], ones[:1, :1, :1].expand_as(ones), backend), expected,
                 f"{backend}/expanded dout")
    # A table shared by all heads (stride 0 over heads) of a 2-head call.
    shared = torch.randn(35, 1, device=DEVICE).expand(35, 2)
    qkv2 = torch.randn(1, H, W, 3 * 2 * HD, device=DEVICE)
    with swin_fused.use_backend(backend):
        got = swin_fused.window_attention(qkv2, shared, 2, WINDOW, SHIFT)
        want = swin_fused.window_attention(qkv2, shared.contiguous(), 2, WINDOW, SHIFT)
    assert torch.equal(got, want)


def test_strided_inputs_give_the_same_answer_on_both_backends(strided_case):
    """The bit-identity above is per backend; across backends the answers agree to fp32 rounding."""
    c = strided_case
    qkv = LAYOUTS["channels_last_view"](c["qkv"])
    results = [_run(qkv, c["table"], c["pad"], c["dout"], backend) for backend in BACKENDS]
    for name, a, b in zip(("out", "dqkv", "dtable", "dpad"), *results):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_and_block_accept_strided_inputs(backend):
    """Images in channels_last memory format or sliced from a larger batch, and a block fed an NCHW tensor
    permuted to NHWC: the same numbers as contiguous inputs (convolution algorithms may differ by rounding)."""
    torch.manual_seed(0)
    model = SwinTransformer(**{**SMALL, "num_heads": (1,)}).eval().to(DEVICE)
    images = torch.randn(4, 3, 20, 24, device=DEVICE)
    block = SwinBlock(16, (5, 6), 1, window_size=4, shift_size=2).eval().to(DEVICE)
    nchw = torch.randn(1, 16, 5, 6, device=DEVICE)
    with swin_fused.use_backend(backend), torch.no_grad():
        expected = model(images[::2].contiguous())
        for strided in (images.to(memory_format=torch.channels_last)[::2], images[::2]):
            torch.testing.assert_close(model(strided), expected, rtol=1e-5, atol=1e-6)
        nhwc_view = nchw.permute(0, 2, 3, 1)
        assert not nhwc_view.is_contiguous()
        assert torch.equal(block(nhwc_view), block(nhwc_view.contiguous()))
