"""Launch plans (``kernels/launch.py: PlanCache``): a plain eager call of the op builds its launchers' plans (grid,
config, scalar arguments, checks) once per call signature and reuses them, so a repeated call only allocates and
launches. What must hold: a repeated call builds nothing and gives the same bits; anything a plan depends on
(shape, strides, dtype, shift, the pad vector, a replaced config function) makes a new plan, never a stale one;
traced calls (fake tensors, torch.compile) are never cached; the cache is bounded.
"""
import pytest
import torch

import swin_fused
from swin_fused.kernels import launch as launch_module
from swin_fused.kernels import window_attention_bwd as bwd_module
from swin_fused.kernels import window_attention_fwd as fwd_module

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HEADS, HEAD_DIM, WINDOW = 2, 8, 3
C3 = 3 * HEADS * HEAD_DIM


@pytest.fixture
def builds(monkeypatch):
    """Empty caches, and a count of the plans each launcher builds."""
    launch_module.clear_plans()
    counts = {"fwd": 0, "bwd": 0}
    for name, module, builder in (("fwd", fwd_module, "_forward_plan"), ("bwd", bwd_module, "_backward_plan")):
        real = getattr(module, builder)

        def counted(*args, _real=real, _name=name):
            counts[_name] += 1
            return _real(*args)

        monkeypatch.setattr(module, builder, counted)
    yield counts
    launch_module.clear_plans()


def _inputs(batch=1, h=5, w=4, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, h, w, C3, generator=g).to(DEVICE, dtype)
    table = torch.randn((2 * WINDOW - 1) ** 2, HEADS, generator=g).to(DEVICE)
    pad = torch.randn(C3, generator=g).to(DEVICE, dtype)
    return qkv, table, pad


def _run(qkv, table, pad=None, shift=1):
    """Output and gradients of the fused op, its leaves keeping the inputs' strides."""
    leaves = [t.detach().requires_grad_() if t is not None else None for t in (qkv, table, pad)]
    out = swin_fused.window_attention(leaves[0], leaves[1], HEADS, WINDOW, shift, pad_qkv=leaves[2],
                                      backend="triton")
    out.backward(torch.ones_like(out))
    return [out.detach()] + [t.grad for t in leaves if t is not None]


def test_a_repeated_call_reuses_its_plans_and_gives_the_same_bits(builds):
    qkv, table, pad = _inputs()
    first = _run(qkv, table, pad)
    assert builds == {"fwd": 1, "bwd": 1}
    again = _run(qkv.clone(), table.clone(), pad.clone())  # new tensors, same signature
    assert builds == {"fwd": 1, "bwd": 1}
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_what_a_plan_depends_on_makes_a_new_one(builds):
    """Each variant is a new signature (one new forward and backward plan each) and still equals the PyTorch
    path: a stale plan (wrong grid, strides or constexprs) would give other values."""
    qkv, table, pad = _inputs()
    wide = torch.randn(1, 5, 4, C3 + 5, device=DEVICE)
    variants = {
        "reference call": (qkv, table, pad, 1),
        "batch": (_inputs(batch=2)[0], table, pad, 1),
        "map size": (_inputs(h=6, w=7)[0], table, pad, 1),
        "channel slice (row stride)": (wide[..., 2:2 + C3], table, pad, 1),
        "transposed map (rows copied)": (qkv.transpose(1, 2).contiguous().transpose(1, 2), table, pad, 1),
        "dtype": (qkv.half(), table, pad.half(), 1),
        "shift": (qkv, table, pad, 0),
        "no pad vector": (qkv, table, None, 1),
        "table dtype": (qkv, table.half(), pad, 1),
    }
    for n, (name, (x, t, p, shift)) in enumerate(variants.items(), 1):
        got = _run(x, t, p, shift)
        assert builds == {"fwd": n, "bwd": n}, name
        with swin_fused.use_backend("torch"):  # the expected values, from the PyTorch path
            leaves = [v.detach().requires_grad_() if v is not None else None for v in (x, t, p)]
            out = swin_fused.window_attention(leaves[0], leaves[1], HEADS, WINDOW, shift, pad_qkv=leaves[2])
            out.backward(torch.ones_like(out))
        want = [out.detach()] + [v.grad for v in leaves if v is not None]
        tol = 2e-3 if torch.float16 in (x.dtype, t.dtype) else 1e-5
        for a, b in zip(got, want):
            torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=tol, msg=name)


def test_a_replaced_config_function_is_not_bypassed(builds, monkeypatch):
    """Tests force configs by replacing the launchers' config functions: a cached plan must not hide that."""
    monkeypatch.setattr(fwd_module, "_autotuning", lambda: False)  # the heuristic config, not the autotuner
    monkeypatch.setattr(bwd_module, "autotuning", lambda: False)
    qkv, table, pad = _inputs()
    _run(qkv, table, pad)
    seen = {"fwd": 0, "bwd": 0}
    real_fwd, real_bwd = fwd_module._heuristic_config, bwd_module.bwd_launch_config

    def fwd_config(*args):
        seen["fwd"] += 1
        return real_fwd(*args)

    def bwd_config(*args):
        seen["bwd"] += 1
        return real_bwd(*args)

    monkeypatch.setattr(fwd_module, "_heuristic_config", fwd_config)
    monkeypatch.setattr(bwd_module, "bwd_launch_config", bwd_config)
    _run(qkv, table, pad)
    assert seen == {"fwd": 1, "bwd": 1} and builds == {"fwd": 2, "bwd": 2}


def test_checked_and_traced_calls_are_not_cached(builds):
    """Direct callers of the launchers (checked=True) get their arguments checked on every call, and fake tensors
    (what torch.compile and export trace with) never leave a plan behind."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    qkv, table, pad = _inputs()
    for _ in range(2):
        fwd_module.window_attention_fwd(qkv, table, HEADS, (WINDOW, WINDOW), (1, 1), None, pad)
    assert builds["fwd"] == 2 and len(fwd_module._PLANS) == 0
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) for t in (qkv, table, pad)]
        out, _ = fwd_module.window_attention_fwd(*fake[:2], HEADS, (WINDOW, WINDOW), (1, 1), None, fake[2],
                                                 checked=False)
    assert tuple(out.shape) == (1, 5, 4, C3 // 3) and len(fwd_module._PLANS) == 0


def test_the_cache_is_bounded(monkeypatch):
    cache = launch_module.PlanCache()
    monkeypatch.setattr(launch_module.PlanCache, "MAX_ENTRIES", 4)
    for key in range(10):
        assert cache.get(key, lambda key=key: key * 10) == key * 10
        assert len(cache) <= 4
    assert cache.get(None, lambda: "built") == "built" and len(cache) <= 4  # no key: built, not kept
