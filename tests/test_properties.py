"""Property-based tests (hypothesis): random valid geometries agree with float64; random invalid ones fail cleanly.

Valid: B 1-2, H and W 1-15, window 1-8 per axis (non-square too), shift < window per axis, heads 1-3,
head_dim in {1, 3, 8, 16, 24, 32, 40}, both shift/pad orders, with or without the qkv bias, a bias table for a
window at least as large, a default or custom scale, fp32 or fp16. The Triton backend (the interpreter on the
CPU) and the torch backend must each stay within flash-attention's bound of a float64 reference:
``err <= 2 x err(plain PyTorch in the same dtype) + floor`` (3x for gradients), see tests/numerics.py.
head_dim < 16 and 1-token windows are legal: the kernels pad head_dim to BLOCK_D >= 16 and tiles to >= 16 with
masked lanes.

Invalid: one argument of a valid call broken at random; the error must be a ValueError or TypeError (never an
internal crash) whose message names the parameter.

Reproducible: derandomized, no example database; sizes bounded so that a launch stays at a dozen programs
(the interpreter runs each one in Python). ``SWIN_FUSED_PROPERTY_SCALE=N`` runs N times as many examples
(a sweep outside CI: about 3 s per gradient example on one core).
"""
import math
import os

import pytest
import torch
from conftest import HAS_CUDA
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from numerics import assert_within_torch_error

import swin_fused
from swin_fused.kernels.window_attention_fwd import window_attention_fwd
from swin_fused.reference import window_attention_reference

DEVICE = "cuda" if HAS_CUDA else "cpu"
HEAD_DIMS = [1, 3, 8, 16, 24, 32, 40]
MAX_PROGRAMS = 12  # B * windows * heads per launch on the CPU interpreter

# No "explain" phase: it reruns a failing example dozens of times, minutes under the interpreter.
PROPERTY = settings(deadline=None, derandomize=True, database=None, print_blob=True,
                    phases=[Phase.explicit, Phase.generate, Phase.shrink],
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SCALE = int(os.environ.get("SWIN_FUSED_PROPERTY_SCALE", "1"))


def examples(n: int) -> int:
    """``n`` generated examples per test in CI, ``SWIN_FUSED_PROPERTY_SCALE`` times as many in a sweep."""
    return n * SCALE


@st.composite
def geometries(draw, dtypes=(torch.float32, torch.float16)):
    """A valid call of window_attention, as a dict of plain values (tensors are built from ``seed``)."""
    B = draw(st.integers(1, 2))
    heads = draw(st.integers(1, 3))
    head_dim = draw(st.sampled_from(HEAD_DIMS))
    window = (draw(st.integers(1, 8)), draw(st.integers(1, 8)))
    windows_per_image = max(1, MAX_PROGRAMS // (B * heads))
    # Draw the number of windows per axis, then a map size that needs exactly that many (padding included).
    n_h = draw(st.integers(1, min(math.ceil(15 / window[0]), windows_per_image)))
    n_w = draw(st.integers(1, min(math.ceil(15 / window[1]), max(1, windows_per_image // n_h))))
    H = draw(st.integers((n_h - 1) * window[0] + 1, min(15, n_h * window[0])))
    W = draw(st.integers((n_w - 1) * window[1] + 1, min(15, n_w * window[1])))
    shift = (draw(st.integers(0, window[0] - 1)), draw(st.integers(0, window[1] - 1)))
    table_window = draw(st.one_of(st.none(), st.tuples(st.integers(window[0], 8), st.integers(window[1], 8))))
    return dict(
        B=B, H=H, W=W, heads=heads, head_dim=head_dim, window=window, shift=shift, table_window=table_window,
        shift_before_pad=draw(st.booleans()), with_pad=draw(st.booleans()),
        scale=draw(st.one_of(st.none(), st.floats(0.05, 1.0))), dtype=draw(st.sampled_from(dtypes)),
        seed=draw(st.integers(0, 2**16)),
    )


def make_tensors(geo):
    """float64 qkv, table, pad_qkv (or None) and an output gradient, from the geometry's seed."""
    g = torch.Generator().manual_seed(geo["seed"])
    C = geo["heads"] * geo["head_dim"]
    tw = geo["table_window"] or geo["window"]
    qkv = torch.randn(geo["B"], geo["H"], geo["W"], 3 * C, generator=g, dtype=torch.float64)
    table = torch.randn((2 * tw[0] - 1) * (2 * tw[1] - 1), geo["heads"], generator=g, dtype=torch.float64)
    pad = torch.randn(3 * C, generator=g, dtype=torch.float64) if geo["with_pad"] else None
    dout = torch.randn(geo["B"], geo["H"], geo["W"], C, generator=g, dtype=torch.float64)
    return qkv, table, pad, dout


def op_kwargs(geo):
    return dict(num_heads=geo["heads"], window_size=geo["window"], shift_size=geo["shift"], scale=geo["scale"],
                shift_before_pad=geo["shift_before_pad"], table_window=geo["table_window"])


def reference(qkv, table, pad, geo):
    return window_attention_reference(qkv, table, geo["heads"], geo["window"], geo["shift"], geo["scale"], pad,
                                      geo["shift_before_pad"], geo["table_window"])


def _to(t, dtype):
    return None if t is None else t.to(DEVICE, dtype)


def _geo(B, H, W, heads, head_dim, window, shift, table_window=None, shift_before_pad=False, with_pad=True,
         scale=None, dtype=torch.float32, seed=7):
    return dict(B=B, H=H, W=W, heads=heads, head_dim=head_dim, window=window, shift=shift,
                table_window=table_window, shift_before_pad=shift_before_pad, with_pad=with_pad, scale=scale,
                dtype=dtype, seed=seed)


# Edges every run covers, whatever the generator draws: 1-token windows with head_dim 1, the largest window
# with the largest shift in timm's order, a 1 x 8 window with head_dim 3, Swin's own 7 x 7 / shift 3.
EDGES = [
    _geo(1, 3, 4, 1, 1, (1, 1), (0, 0), dtype=torch.float16),
    _geo(1, 9, 9, 3, 40, (8, 8), (7, 7), table_window=(8, 8), shift_before_pad=True, dtype=torch.float16),
    _geo(1, 2, 15, 3, 3, (1, 8), (0, 7), table_window=(3, 8), scale=0.7),
    _geo(2, 10, 13, 1, 24, (7, 7), (3, 3)),
]


def with_edges(test):
    for geo in EDGES:
        test = example(geo=geo)(test)
    return test


def describe(geo):
    return ", ".join(f"{k}={v}" for k, v in geo.items())


@settings(PROPERTY, max_examples=examples(22))
@given(geo=geometries())
@with_edges
def test_forward_matches_float64_on_both_backends(geo):
    qkv, table, pad, _ = make_tensors(geo)
    dtype = geo["dtype"]
    ref64 = reference(_to(qkv, torch.float64), _to(table, torch.float64), _to(pad, torch.float64), geo)
    plain = reference(_to(qkv, dtype), _to(table, dtype), _to(pad, dtype), geo)  # plain PyTorch, same dtype
    for backend in ("triton", "torch"):
        # AMP's mix: the table stays fp32, qkv and its bias are in the compute dtype.
        out = swin_fused.window_attention(_to(qkv, dtype), _to(table, torch.float32), pad_qkv=_to(pad, dtype),
                                          backend=backend, **op_kwargs(geo))
        assert out.dtype == dtype and out.shape == ref64.shape
        assert_within_torch_error(f"{backend} forward [{describe(geo)}]", out, plain, ref64, dtype)


@settings(PROPERTY, max_examples=examples(12))
@given(geo=geometries())
@with_edges
def test_gradients_match_float64_on_both_backends(geo):
    qkv, table, pad, dout = make_tensors(geo)
    dtype = geo["dtype"]

    def grads(backend, dtype, table_dtype, op):
        leaves = [_to(t, d).detach().requires_grad_() if t is not None else None
                  for t, d in ((qkv, dtype), (table, table_dtype), (pad, dtype))]
        out = op(leaves, backend)
        out.backward(_to(dout, dtype))
        return [leaf.grad if leaf is not None else None for leaf in leaves]

    def public_op(leaves, backend):
        return swin_fused.window_attention(leaves[0], leaves[1], pad_qkv=leaves[2], backend=backend,
                                           **op_kwargs(geo))

    def reference_op(leaves, backend):
        return reference(leaves[0], leaves[1], leaves[2], geo)

    ref64 = grads(None, torch.float64, torch.float64, reference_op)
    plain = grads(None, dtype, dtype, reference_op)
    for backend in ("triton", "torch"):
        got = grads(backend, dtype, torch.float32, public_op)
        for name, g, p, r in zip(("dqkv", "dtable", "dpad"), got, plain, ref64):
            if r is None:
                continue
            assert g is not None and g.shape == r.shape, f"{backend} {name}: no gradient"
            assert_within_torch_error(f"{backend} {name} [{describe(geo)}]", g, p, r, dtype, factor=3.0)


def test_geometry_strategy_reaches_the_edges():
    """The strategy is not vacuous: among a few hundred draws are 1-token windows, head_dim 1 and 40,
    non-square windows, maps smaller than the window, both orders, and both dtypes."""
    seen = []

    @settings(PROPERTY, max_examples=300)
    @given(geo=geometries())
    def collect(geo):
        seen.append(geo)

    collect()
    assert any(g["window"] == (1, 1) for g in seen)
    assert {1, 40} <= {g["head_dim"] for g in seen}
    assert any(g["window"][0] != g["window"][1] for g in seen)
    assert any(g["H"] < g["window"][0] or g["W"] < g["window"][1] for g in seen)
    assert {True, False} == {g["shift_before_pad"] for g in seen} == {g["with_pad"] for g in seen}
    assert {torch.float32, torch.float16} == {g["dtype"] for g in seen}
    assert all(g["B"] * g["heads"] * math.ceil(g["H"] / g["window"][0]) * math.ceil(g["W"] / g["window"][1])
               <= max(MAX_PROGRAMS, g["B"] * g["heads"]) for g in seen)


# ----------------------------------------------------------------------------------------------------------
# Invalid calls
# ----------------------------------------------------------------------------------------------------------

# name -> (parameter named in the message, how to break a valid call given a draw function)
BREAKERS = {
    "window_zero": ("window_size", lambda kw, d: kw.update(window_size=(0, kw["window_size"][1]))),
    "window_negative": ("window_size", lambda kw, d: kw.update(
        window_size=(kw["window_size"][0], -d(st.integers(1, 9))))),
    "window_float": ("window_size", lambda kw, d: kw.update(window_size=float(kw["window_size"][0]) + 0.5)),
    "shift_too_large": ("shift_size", lambda kw, d: kw.update(
        shift_size=(kw["window_size"][0] + d(st.integers(0, 5)), 0))),
    "shift_negative": ("shift_size", lambda kw, d: kw.update(shift_size=(0, -d(st.integers(1, 5))))),
    "heads_not_dividing": ("num_heads", lambda kw, d: kw.update(num_heads=kw["qkv"].shape[-1] + 1)),
    "heads_nonpositive": ("num_heads", lambda kw, d: kw.update(num_heads=-d(st.integers(0, 3)))),
    "table_rows": ("table", lambda kw, d: kw.update(table=torch.randn(kw["table"].shape[0] + d(st.integers(1, 4)),
                                                                       kw["table"].shape[1]))),
    "table_heads": ("table", lambda kw, d: kw.update(table=torch.randn(kw["table"].shape[0], kw["num_heads"] + 1))),
    "table_int": ("table", lambda kw, d: kw.update(table=kw["table"].long())),
    "table_window_small": ("table_window", lambda kw, d: kw.update(table_window=(kw["window_size"][0] - 1,
                                                                                  kw["window_size"][1]))),
    "pad_length": ("pad_qkv", lambda kw, d: kw.update(pad_qkv=torch.randn(kw["qkv"].shape[-1] - 1))),
    "qkv_rank": ("qkv", lambda kw, d: kw.update(qkv=kw["qkv"].flatten(1, 2))),
    "qkv_empty": ("qkv", lambda kw, d: kw.update(qkv=kw["qkv"][:, :0])),
    "float64_on_triton": ("float64", lambda kw, d: kw.update(qkv=kw["qkv"].double(), backend="triton")),
    "scale_not_finite": ("scale", lambda kw, d: kw.update(scale=d(st.sampled_from([math.nan, math.inf, -math.inf])))),
    "scale_not_a_number": ("scale", lambda kw, d: kw.update(scale=d(st.sampled_from(["0.1", [0.1], torch.ones(1)])))),
    "dropout_out_of_range": ("dropout_p", lambda kw, d: kw.update(dropout_p=d(st.sampled_from([1.0, -0.5, 3.0])))),
    "backend_unknown": ("backend", lambda kw, d: kw.update(backend=d(st.sampled_from(["gpu", "Triton2", ""])))),
}


@settings(PROPERTY, max_examples=examples(80))
@given(geo=geometries(dtypes=(torch.float32,)), breaker=st.sampled_from(sorted(BREAKERS)), data=st.data())
def test_invalid_calls_fail_cleanly_naming_the_parameter(geo, breaker, data):
    qkv, table, pad, _ = make_tensors(geo)
    kwargs = dict(qkv=qkv.float(), table=table.float(), pad_qkv=None if pad is None else pad.float(),
                  num_heads=geo["heads"], window_size=geo["window"], shift_size=geo["shift"], scale=geo["scale"],
                  shift_before_pad=geo["shift_before_pad"], table_window=geo["table_window"] or geo["window"],
                  backend=data.draw(st.sampled_from(["torch", "triton", "auto"])))
    if breaker == "table_window_small" and kwargs["window_size"][0] == 1:
        kwargs["window_size"] = (2, kwargs["window_size"][1])  # so that a smaller table window exists
        kwargs["shift_size"] = (0, kwargs["shift_size"][1])
    if breaker == "pad_length" and kwargs["pad_qkv"] is None:
        kwargs["pad_qkv"] = torch.randn(qkv.shape[-1])
    parameter, breaks = BREAKERS[breaker]
    breaks(kwargs, data.draw)
    try:
        swin_fused.window_attention(**kwargs)
    except (ValueError, TypeError) as error:
        assert parameter in str(error), f"{breaker}: {type(error).__name__} does not name {parameter}: {error}"
    except Exception as error:  # noqa: BLE001 -- the point: anything else is an internal crash
        pytest.fail(f"{breaker}: internal {type(error).__name__} instead of a ValueError/TypeError: {error}")
    else:
        pytest.fail(f"{breaker}: no error for {kwargs}")


@settings(PROPERTY, max_examples=examples(30))
@given(geo=geometries(dtypes=(torch.float32,)), breaker=st.sampled_from(
    ["window_zero", "shift_too_large", "shift_negative", "heads_not_dividing", "table_rows", "table_window_small",
     "pad_length", "qkv_rank"]), data=st.data())
def test_launcher_rejects_what_the_public_op_rejects(geo, breaker, data):
    """The forward launcher, called directly, validates the same way (no kernel runs on a bad geometry)."""
    qkv, table, pad, _ = make_tensors(geo)
    kwargs = dict(qkv=qkv.float(), table=table.float(), pad_qkv=torch.randn(qkv.shape[-1]), num_heads=geo["heads"],
                  window_size=geo["window"], shift_size=geo["shift"], table_window=geo["table_window"] or geo["window"])
    if breaker == "table_window_small" and kwargs["window_size"][0] == 1:
        kwargs["window_size"], kwargs["shift_size"] = (2, kwargs["window_size"][1]), (0, kwargs["shift_size"][1])
    parameter, breaks = BREAKERS[breaker]
    breaks(kwargs, data.draw)
    window = kwargs["window_size"] if isinstance(kwargs["window_size"], tuple) else (kwargs["window_size"],) * 2
    with pytest.raises((ValueError, TypeError), match=parameter):
        window_attention_fwd(kwargs["qkv"], kwargs["table"], kwargs["num_heads"], window, kwargs["shift_size"],
                             None, kwargs["pad_qkv"], False, kwargs["table_window"])
