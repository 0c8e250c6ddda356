"""``swin_fused.optimize(model)`` on timm, torchvision and official-code Swin V1 models.

The oracle is each library's own model: a deep copy of it runs the library's code, the optimized model must
give the same outputs and gradients (fp32, max abs diff <= 1e-5 x output scale), at window-divisible sizes
and at sizes where stage maps are not multiples of the window or smaller than it. Weights are randomized
(tables and biases init near zero, which would hide padding and position mistakes), and a spy on
``swin_fused.window_attention`` proves the op ran for every block with padding and shifting in play;
a control test shows the comparison catches the two classic mistakes (pad order, padded-token qkv).
timm's set_input_size() after optimize() gives non-square windows and shifts ((6, 8) / (3, 4), (4, 3) / (2, 1)).

Also: state_dict untouched (same keys, same storage), same Parameters, idempotence, undo (twice), the report
and its warning, blocks the op cannot reproduce (altered relative index, quantized projections)
left alone, dropout routed, backend pinning, and no graph break added for torch.compile. What optimize()
must leave to the library: hooks on modules the fused path skips (at optimize() and at call time, global
hooks too), instance-level method overrides, FX symbolic tracing; nn.DataParallel replicas (built on the CPU
the way torch.nn.parallel.replicate builds them) compute with their own Parameters; meta-device models.
"""
import copy
import functools
import importlib
import io
import warnings

import pytest
import torch

import swin_fused
import swin_fused.functional as functional
from numerics import perturb_
from official_swin import SwinTransformer as OfficialSwin
from swin_fused.reference import window_attention_reference

timm_swin = pytest.importorskip("timm.models.swin_transformer")
tv_swin = pytest.importorskip("torchvision.models.swin_transformer")

SMALL = dict(embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=7, num_classes=10)
SIZES = [(112, 112), (100, 132), (76, 60)]  # stage maps 28/14/7; 25x33/13x17/7x9; 19x15/10x8/5x4
NUM_BLOCKS = sum(SMALL["depths"])


def timm_model(img_size=(112, 112), **overrides):
    return timm_swin.SwinTransformer(img_size=img_size, **{**SMALL, "drop_path_rate": 0.0, **overrides})


def tv_model(**overrides):
    kw = dict(patch_size=[4, 4], embed_dim=32, depths=[2, 2, 2], num_heads=[2, 4, 8], window_size=[7, 7],
              num_classes=10, stochastic_depth_prob=0.0)
    return tv_swin.SwinTransformer(**{**kw, **overrides})


def official_model(img_size=112, **overrides):
    return OfficialSwin(img_size=img_size, **{**SMALL, "drop_path_rate": 0.0, **overrides})


def randomized(model, seed=1):
    """Tables and biases far from their near-zero init, so position and padding mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "relative_position_bias_table" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "norm" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def tolerance(ref):
    return 1e-5 * max(1.0, ref.abs().max().item())


def assert_close(out, ref, what=""):
    err = (out - ref).abs().max().item()
    assert err <= tolerance(ref), f"{what}: max abs diff {err:.3e} > 1e-5 x output scale"


def optimized(model, **kwargs):
    """A deep copy of ``model``, optimized (the original keeps running the library's code)."""
    twin = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every block of these models must be supported
        report = swin_fused.optimize(twin, verbose=False, **kwargs)
    return twin, report


class OpSpy:
    """Records every call of ``swin_fused.window_attention``: map size, window, shift, kwargs, backend."""

    def __init__(self, monkeypatch, replacement=None):
        self.calls = []
        real = functional.window_attention

        def spy(qkv, table, num_heads, window, shift, backend=None, **kwargs):
            self.calls.append(dict(hw=tuple(qkv.shape[1:3]), window=tuple(window), shift=tuple(shift),
                                   backend=backend or swin_fused.get_backend(), **kwargs))
            if replacement is not None:
                return replacement(qkv, table, num_heads, window, shift, **kwargs)
            return real(qkv, table, num_heads, window, shift, backend=backend, **kwargs)

        monkeypatch.setattr(functional, "window_attention", spy)

    def assert_pads_and_shifts(self):
        """Some call both pads (map not a window multiple) and shifts: the hard case is exercised."""
        hard = [c for c in self.calls
                if any(c["shift"]) and (c["hw"][0] % c["window"][0] or c["hw"][1] % c["window"][1])]
        assert hard, f"no call pads and shifts: {[(c['hw'], c['window'], c['shift']) for c in self.calls]}"


TIMM_CASES = [(variant, size) for variant in ("static", "dynamic", "always_partition") for size in SIZES] + [
    ("head_dim_no_bias", (100, 132)), ("set_input_size", (100, 132)), ("set_input_size", (76, 60))]


@pytest.mark.filterwarnings("ignore::UserWarning:timm.layers.interpolate")  # set_input_size's table resize
@pytest.mark.parametrize("variant, size", TIMM_CASES, ids=[f"{v}-{s[0]}x{s[1]}" for v, s in TIMM_CASES])
def test_timm_outputs_unchanged(monkeypatch, variant, size):
    if variant == "static":  # static masks: the model is built for the size it runs at
        model = timm_model(size)
    elif variant == "dynamic":  # masks rebuilt per input from the shifted padded map
        model = timm_model((112, 112), dynamic_img_size=True)
    elif variant == "always_partition":  # no clamping: windows and shifts bigger than late stage maps
        model = timm_model(size, always_partition=True)
    else:  # head_dim != dim / heads with zeros for padded tokens; or resized after optimize()
        model = timm_model(size if variant == "head_dim_no_bias" else (112, 112),
                           **(dict(head_dim=12, qkv_bias=False) if variant == "head_dim_no_bias" else {}))
    model = randomized(model)
    x = torch.randn(2, 3, *size)
    fast, report = optimized(model)
    if variant == "set_input_size":  # new masks, windows and (interpolated, new Parameter) tables
        model.set_input_size(img_size=size)
        fast.set_input_size(img_size=size)
    ref = model(x)
    assert report.family == "timm" and len(report.patched) == NUM_BLOCKS and not report.left_alone
    spy = OpSpy(monkeypatch)
    assert_close(fast(x), ref, f"timm {variant} {size}")
    assert len(spy.calls) == NUM_BLOCKS, "a block fell back to timm's code"
    assert all(c["shift_before_pad"] for c in spy.calls)
    if size != (112, 112):
        spy.assert_pads_and_shifts()
    if variant == "always_partition" and size == (76, 60):  # 5x4 map rolled by 3, padded into one 7x7 window
        assert any(c["hw"] == (5, 4) and c["shift"] == (3, 3) for c in spy.calls)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_torchvision_outputs_unchanged(monkeypatch, size):
    model = randomized(tv_model())
    x = torch.randn(2, 3, *size)
    ref = model(x)
    fast, report = optimized(model)
    assert report.family == "torchvision" and len(report.patched) == NUM_BLOCKS
    spy = OpSpy(monkeypatch)
    assert_close(fast(x), ref, f"torchvision {size}")
    assert len(spy.calls) == NUM_BLOCKS
    assert not any(c["shift_before_pad"] for c in spy.calls)
    if size != (112, 112):
        spy.assert_pads_and_shifts()
        # No window clamping; the shift is dropped along a dimension whose padded size is one window.
        last = spy.calls[-1]
        assert last["window"] == (7, 7) and min(last["hw"]) <= 7 and last["shift"][0] == 0


def test_official_outputs_unchanged(monkeypatch):
    model = randomized(official_model())
    x = torch.randn(2, 3, 112, 112)
    ref = model(x)
    fast, report = optimized(model)
    assert report.family == "official" and len(report.patched) == NUM_BLOCKS
    spy = OpSpy(monkeypatch)
    assert_close(fast(x), ref, "official")
    assert len(spy.calls) == NUM_BLOCKS and any(any(c["shift"]) for c in spy.calls)


def test_comparison_catches_wrong_padding(monkeypatch):
    """Control: the wrong pad order or zero-padded qkv would fail the tests above by a wide margin (> 10x
    their tolerance, on logits where global pooling already averages the padded border away)."""
    size = (100, 132)
    x = torch.randn(2, 3, *size)
    for model in (randomized(timm_model(size)), randomized(tv_model())):
        ref = model(x)
        fast, _ = optimized(model)
        for mistake in ("pad_qkv", "shift_before_pad"):
            def wrong(*args, **kwargs):
                kwargs["pad_qkv" if mistake == "pad_qkv" else "shift_before_pad"] = (
                    None if mistake == "pad_qkv" else not kwargs["shift_before_pad"])
                return window_attention_reference(*args, **kwargs)

            with monkeypatch.context() as m:
                OpSpy(m, replacement=wrong)
                err = (fast(x) - ref).abs().max().item()
                assert err > 10 * tolerance(ref), f"{mistake} not visible in {type(model).__module__}: {err:.2e}"


def test_timm_static_mask_at_another_size_keeps_timm_behaviour(monkeypatch):
    """A static-mask block fed a map whose padded size differs from its input_resolution runs timm's code."""
    block = randomized(timm_model()).layers[0].blocks[1]  # shifted, input_resolution 28x28
    fast = copy.deepcopy(block)
    swin_fused.optimize(fast, verbose=False)
    spy = OpSpy(monkeypatch)
    x = torch.randn(2, 27, 26, 32)  # pads to 28x28: timm's mask fits, the op runs
    assert_close(fast(x), block(x), "27x26 map")
    assert len(spy.calls) == 1 and spy.calls[0]["shift"] == (3, 3)
    x = torch.randn(1, 21, 21, 32)  # 9 windows against a 16-window mask: timm fails, so must we
    with pytest.raises(RuntimeError):
        block(x)
    with pytest.raises(RuntimeError):
        fast(x)
    assert len(spy.calls) == 1


@pytest.mark.parametrize("family", ["timm", "torchvision", "official"])
def test_state_dict_params_and_gradients_unchanged(family):
    size = (112, 112) if family == "official" else (100, 132)
    build = {"timm": lambda: timm_model(size), "torchvision": tv_model, "official": official_model}[family]
    model = randomized(build()).train()  # all dropout rates are 0: training is deterministic
    fast = copy.deepcopy(model)
    state = fast.state_dict()
    params = list(fast.parameters())
    swin_fused.optimize(fast, verbose=False)

    after = fast.state_dict()
    assert list(after) == list(state)
    for key, value in after.items():
        assert value.data_ptr() == state[key].data_ptr() and torch.equal(value, state[key]), key
    assert all(a is b for a, b in zip(fast.parameters(), params)) and len(list(fast.parameters())) == len(params)

    x = torch.randn(2, 3, *size)
    weight = torch.randn(2, 10)
    (model(x) * weight).sum().backward()
    (fast(x) * weight).sum().backward()
    grads = dict(model.named_parameters())
    for name, p in fast.named_parameters():
        ref = grads[name].grad
        assert p.grad is not None, name
        err = (p.grad - ref).abs().max().item()
        assert err <= 1e-4 * max(1.0, ref.abs().max().item()), f"{name}: grad diff {err:.3e}"


def test_idempotent_and_undo(monkeypatch):
    model = randomized(tv_model())
    x = torch.randn(1, 3, 76, 60)
    ref = model(x)
    fast, first = optimized(model)
    second = swin_fused.optimize(fast, verbose=False)
    assert second.patched == [] and second.already_optimized == first.patched and not second.left_alone
    attn = fast.features[1][1].attn
    assert attn.forward.func is importlib.import_module("swin_fused.interop.torchvision")._forward
    assert attn.forward.args == (attn,), "second call wrapped the first patch"
    spy = OpSpy(monkeypatch)
    assert_close(fast(x), ref, "optimized twice")
    assert len(spy.calls) == NUM_BLOCKS

    undone = swin_fused.optimize(fast, undo=True, verbose=False)
    assert undone.restored == first.patched and undone.patched == []
    assert "forward" not in attn.__dict__ and not hasattr(attn, "_swin_fused_patch")
    assert_close(fast(x), ref, "undone")
    assert len(spy.calls) == NUM_BLOCKS, "undone model still calls the op"
    assert list(fast.state_dict()) == list(model.state_dict())


def test_deepcopy_and_pickle_keep_the_patch(monkeypatch):
    model = randomized(timm_model((100, 132)))
    x = torch.randn(1, 3, 100, 132)
    fast, _ = optimized(model)
    buffer = io.BytesIO()
    torch.save(fast, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    for twin in (copy.deepcopy(fast), loaded):
        block = twin.layers[0].blocks[1]
        assert block._attn.args == (block,), "patch still bound to the original model"
        spy = OpSpy(monkeypatch)
        assert_close(twin(x), model(x), "copied optimized model")
        assert len(spy.calls) == NUM_BLOCKS
        assert swin_fused.optimize(twin, verbose=False).already_optimized == [
            f"layers.{i}.blocks.{j}" for i in range(3) for j in range(2)]


def test_report_and_verbose(capsys):
    fast = randomized(timm_model())
    report = swin_fused.optimize(fast)
    printed = capsys.readouterr().out
    assert printed.strip() == str(report)
    assert "timm model, 6 Swin blocks" in printed and "window_attention" in printed and ": 6" in printed
    assert report.patched[0] == "layers.0.blocks.0" and report.num_blocks == NUM_BLOCKS


@pytest.mark.parametrize("family", ["timm", "torchvision", "official"])
def test_non_standard_index_left_alone_with_one_warning(monkeypatch, family):
    build = {"timm": timm_model, "torchvision": tv_model, "official": official_model}[family]
    model = randomized(build())
    attn_modules = [m for m in model.modules() if hasattr(m, "relative_position_index")]
    for attn in attn_modules[1:3]:  # two blocks with a transposed (query/key swapped) index
        n = int(attn.relative_position_index.numel() ** 0.5)
        index = attn.relative_position_index
        index.copy_(index.view(n, n).t().clone().reshape(index.shape))
    x = torch.randn(1, 3, 112, 112)
    ref = model(x)
    fast = copy.deepcopy(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = swin_fused.optimize(fast, verbose=False)
    assert len(caught) == 1 and issubclass(caught[0].category, UserWarning)
    assert "left 2 of 6" in str(caught[0].message) and "relative_position_index" in str(caught[0].message)
    assert len(report.patched) == 4 and len(report.left_alone) == 2
    assert all("relative_position_index" in r for r in report.left_alone.values())
    spy = OpSpy(monkeypatch)
    assert_close(fast(x), ref, f"{family} with two blocks left alone")
    assert len(spy.calls) == 4


def test_swin_v2_blocks_are_routed():
    """Swin V2 blocks of both libraries go through the fused op (cosine attention; tests/test_optimize_v2.py has
    the released architectures)."""
    v2 = pytest.importorskip("timm.models.swin_transformer_v2")
    x = torch.randn(1, 3, 64, 64)
    models = {
        "torchvision": tv_model(block=tv_swin.SwinTransformerBlockV2, downsample_layer=tv_swin.PatchMergingV2,
                                depths=[2, 2], num_heads=[2, 4], window_size=[8, 8]),
        "timm": v2.SwinTransformerV2(img_size=64, embed_dim=32, depths=(2, 2), num_heads=(2, 4), window_size=8,
                                     num_classes=10),
    }
    for family, model in models.items():
        model = perturb_(model)
        ref = model(x)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            report = swin_fused.optimize(model, backend="triton", verbose=False)
        assert report.family == family and len(report.patched) == 4 and not report.left_alone
        assert_close(model(x), ref, family)


def test_swin_fused_model_has_nothing_to_do():
    model = swin_fused.SwinTransformer(img_size=64, **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = swin_fused.optimize(model, verbose=False)
    assert report.family == "swin_fused" and len(report.already_fused) == NUM_BLOCKS and report.patched == []
    assert "nothing to do" in str(report)


@pytest.mark.parametrize("family", ["timm", "torchvision", "official"])
def test_attention_dropout_reaches_the_op(monkeypatch, family):
    model = {"timm": lambda: timm_model(attn_drop_rate=0.25), "torchvision": lambda: tv_model(attention_dropout=0.25),
             "official": lambda: official_model(attn_drop_rate=0.25)}[family]()
    swin_fused.optimize(model, verbose=False)
    spy = OpSpy(monkeypatch)
    x = torch.randn(1, 3, 112, 112)
    model.train()(x)
    model.eval()(x)
    assert [c["dropout_p"] for c in spy.calls] == [0.25] * NUM_BLOCKS + [0.0] * NUM_BLOCKS


def test_backend_pinning_and_errors(monkeypatch):
    model = timm_model()
    swin_fused.optimize(model, backend="torch", verbose=False)
    spy = OpSpy(monkeypatch)
    with swin_fused.use_backend("auto"):
        model(torch.randn(1, 3, 112, 112))
    assert {c["backend"] for c in spy.calls} == {"torch"}
    with pytest.raises(ValueError, match="'cuda'"):
        swin_fused.optimize(model, backend="cuda")
    with pytest.raises(TypeError, match="Module"):
        swin_fused.optimize("swin_t")
    with pytest.warns(UserWarning, match="no Swin blocks"):
        report = swin_fused.optimize(torch.nn.Linear(2, 2), verbose=False)
    assert report.family == "none" and report.num_blocks == 0


@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
def test_patched_methods_add_no_graph_break(monkeypatch):
    """torch.compile traces the patched methods whole (the op itself is swapped for the reference here, so
    only optimize()'s own code is judged); a pinned backend compiles too, inside the graph."""
    def reference_op(*args, backend=None, **kwargs):
        return window_attention_reference(*args, **kwargs)

    monkeypatch.setattr(functional, "window_attention", reference_op)
    blocks = [randomized(timm_model((100, 132))).layers[0].blocks[1], randomized(tv_model()).features[1][1]]
    x = torch.randn(1, 25, 33, 32)
    for block in blocks:
        ref = block(x)
        swin_fused.optimize(block, verbose=False)
        torch._dynamo.reset()
        explained = torch._dynamo.explain(block)(x)
        assert explained.graph_break_count == 0, [str(b.reason).splitlines()[0] for b in explained.break_reasons]
        assert_close(torch.compile(block, backend="eager")(x), ref, type(block).__module__)
    swin_fused.optimize(blocks[0], backend="torch", verbose=False)
    torch._dynamo.reset()
    assert torch._dynamo.explain(blocks[0])(x).graph_break_count == 0
    assert_close(torch.compile(blocks[0], backend="eager")(x), blocks[0](x), "pinned backend under compile")


# --------------------------------------------------------------------------------------------------------
# What optimize() must leave to the library: hooks and instance overrides it would skip, replicas,
# projections it cannot read, meta models, FX tracing, a second undo.

BLOCKS = {  # family -> (tiny model, its image size, the shifted block of its first stage, that block's input)
    "timm": (lambda: timm_model((100, 132)), (100, 132), lambda m: m.layers[0].blocks[1], (2, 25, 33, 32)),
    "torchvision": (tv_model, (100, 132), lambda m: m.features[1][1], (2, 25, 33, 32)),
    "official": (official_model, (112, 112), lambda m: m.layers[0].blocks[1], (2, 28 * 28, 32)),
}


def halved(module, attr, *args, **kwargs):
    """An instance-level override (as accelerate's add_hook_to_module or a user's wrapper installs one):
    the class method's result, halved. Module-level, so deepcopy binds the copy's override to the copy."""
    return 0.5 * getattr(type(module), attr)(module, *args, **kwargs)


def scale_output(module, inputs, output):
    return 0.5 * output


@pytest.mark.parametrize("family", ["timm", "official"])
def test_hooks_on_skipped_modules_keep_the_library_path(monkeypatch, family):
    """timm and official blocks compute attention without calling attn, attn.softmax or attn.attn_drop: a
    block with hooks there is left alone at optimize(), and a hook added later sends calls down the
    library's path; hooks fire and change the output exactly as on the library's model."""
    build, size, shifted_block, _ = BLOCKS[family]
    model = randomized(build())
    names = [n for n, m in model.named_modules() if hasattr(m, "attn") and hasattr(m, "shift_size")]
    for name in names:
        model.get_submodule(name).attn.fused_attn = False  # timm: the path calling softmax (official: always)
    fired = []
    model.get_submodule(names[1]).attn.register_forward_hook(scale_output)
    model.get_submodule(names[2]).attn.softmax.register_forward_pre_hook(lambda module, args: fired.append(1))
    model.get_submodule(names[3]).attn.attn_drop.register_forward_hook(scale_output)
    x = torch.randn(1, 3, *size)
    ref = model(x)
    assert len(fired) == 1
    fast = copy.deepcopy(model)
    with pytest.warns(UserWarning, match="left 3 of 6"):
        report = swin_fused.optimize(fast, verbose=False)
    assert report.left_alone == {names[1]: "hooks on attn, which the fused path does not call",
                                 names[2]: "hooks on attn.softmax, which the fused path does not call",
                                 names[3]: "hooks on attn.attn_drop, which the fused path does not call"}
    spy = OpSpy(monkeypatch)
    assert_close(fast(x), ref, f"{family} with hooked blocks left alone")
    assert len(spy.calls) == 3 and len(fired) == 2

    # Registered after optimize(): that block (with a global hook, every block) runs the library's path.
    plain = randomized(build())
    fast, _ = optimized(plain)
    handle = shifted_block(plain).attn.register_forward_hook(scale_output)
    ref = plain(x)
    spy.calls.clear()
    hooked = shifted_block(fast).attn.register_forward_hook(scale_output)
    assert_close(fast(x), ref, f"{family} hook added after optimize")
    assert len(spy.calls) == NUM_BLOCKS - 1
    hooked.remove()
    handle.remove()
    spy.calls.clear()
    assert_close(fast(x), plain(x), f"{family} hook removed")
    assert len(spy.calls) == NUM_BLOCKS
    seen = []
    with torch.nn.modules.module.register_module_forward_pre_hook(lambda m, i: seen.append(m)):
        spy.calls.clear()
        fast(x)
    assert spy.calls == [] and sum(isinstance(m, torch.nn.Softmax) for m in seen) == NUM_BLOCKS

    backward = randomized(build())  # backward hooks run from attn(...) too
    shifted_block(backward).attn.register_full_backward_pre_hook(lambda module, grad_output: None)
    with pytest.warns(UserWarning, match="hooks on attn,"):
        assert len(swin_fused.optimize(backward, verbose=False).left_alone) == 1

    if family == "timm":  # timm's SDPA path calls neither softmax nor attn_drop: hooks there change nothing
        model = randomized(build())
        for name in names:
            model.get_submodule(name).attn.fused_attn = True
        model.get_submodule(names[2]).attn.softmax.register_forward_hook(scale_output)
        fast, report = optimized(model)
        spy.calls.clear()
        assert_close(fast(x), model(x), "timm fused_attn with a softmax hook")
        assert len(report.patched) == NUM_BLOCKS and len(spy.calls) == NUM_BLOCKS


def test_hooks_on_torchvision_attention_still_fire_on_the_fused_path(monkeypatch):
    """torchvision's patched attn.forward runs inside attn(...), so attn's hooks run with the op."""
    model = randomized(tv_model())
    BLOCKS["torchvision"][2](model).attn.register_forward_hook(scale_output)
    x = torch.randn(1, 3, 76, 60)
    fast, report = optimized(model)
    assert len(report.patched) == NUM_BLOCKS
    spy = OpSpy(monkeypatch)
    assert_close(fast(x), model(x), "torchvision with a hook on attn")
    assert len(spy.calls) == NUM_BLOCKS


INSTANCE_OVERRIDES = [("timm", "", "_attn"), ("timm", "attn", "forward"), ("torchvision", "attn", "forward"),
                      ("official", "", "forward"), ("official", "attn", "forward")]


@pytest.mark.parametrize("family, owner, attr", INSTANCE_OVERRIDES, ids=[f"{f}-{o or 'block'}.{a}"
                                                                         for f, o, a in INSTANCE_OVERRIDES])
def test_instance_level_overrides_are_kept(monkeypatch, family, owner, attr):
    build, _, shifted_block, shape = BLOCKS[family]
    block = shifted_block(randomized(build()))
    x = torch.randn(*shape)
    fast, plain = copy.deepcopy(block), copy.deepcopy(block)
    for b in (block, fast):
        target = b.get_submodule(owner)
        setattr(target, attr, functools.partial(halved, target, attr))
    ref = block(x)
    with pytest.warns(UserWarning, match="instance-level"):
        report = swin_fused.optimize(fast, verbose=False)
    name = f"{owner}.{attr}" if owner and family != "torchvision" else attr
    assert report.patched == [] and list(report.left_alone.values()) == [f"instance-level {name} override"]
    assert_close(fast(x), ref, f"{family} {owner}.{attr} override")

    if owner == "attn" and family != "torchvision":  # set after optimize(): the library's path runs
        fast, _ = optimized(plain)
        fast.attn.forward = functools.partial(halved, fast.attn, "forward")
        spy = OpSpy(monkeypatch)
        assert_close(fast(x), ref, f"{family} attn.forward override set after optimize")
        assert spy.calls == []


def replicate(module, scale):
    """What torch.nn.parallel.replicate does for one device, on the CPU: the module's own
    _replicate_for_data_parallel(), children replicated the same way, and the Parameters' broadcast copies
    (here: other values, scale * p) set as plain attributes of the replica."""
    replica = module._replicate_for_data_parallel()
    for key, child in module._modules.items():
        replica._modules[key] = None if child is None else replicate(child, scale)
    for key, param in module._parameters.items():
        setattr(replica, key, None if param is None else scale * param)
    return replica


@pytest.mark.parametrize("family", ["timm", "torchvision", "official"])
def test_data_parallel_replicas_compute_with_their_own_parameters(monkeypatch, family):
    build, _, shifted_block, shape = BLOCKS[family]
    block = shifted_block(randomized(build()))
    x = torch.randn(*shape)
    fast = copy.deepcopy(block)
    swin_fused.optimize(fast, verbose=False)
    replica = replicate(fast, 1.5)
    with torch.no_grad():
        for p in block.parameters():
            p.mul_(1.5)  # the library's block with the replica's Parameters
    spy = OpSpy(monkeypatch)
    assert_close(replica(x), block(x), f"{family} replica")
    assert len(spy.calls) == 1
    patched = replica if family != "torchvision" else replica.attn
    assert {p.args[0] for p in (getattr(patched, "_attn" if family == "timm" else "forward"),
                                patched._replicate_for_data_parallel)} == {patched}
    with torch.no_grad():
        for p in block.parameters():
            p.div_(1.5)
    assert_close(fast(x), block(x), f"{family} original after replication")
    swin_fused.optimize(fast, undo=True, verbose=False)
    assert not [m for m in fast.modules() if "_replicate_for_data_parallel" in m.__dict__]


@pytest.mark.skipif(not set(torch.backends.quantized.supported_engines) - {"none"}, reason="no quantized engine")
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:torch.quantize_per_tensor")
@pytest.mark.parametrize("family", ["timm", "torchvision", "official"])
def test_quantized_projections_left_alone(family):
    """qkv / proj that are not nn.Linear (dynamic int8 quantization) have no weight / bias tensors to read:
    the library's own path runs (torchvision's reads qkv.weight as a tensor too, and fails as it does)."""
    build, size, _, _ = BLOCKS[family]
    quantized = torch.ao.quantization.quantize_dynamic(randomized(build()), {torch.nn.Linear}, dtype=torch.qint8)
    x = torch.randn(1, 3, *size)
    ref = quantized(x) if family != "torchvision" else None
    with pytest.warns(UserWarning, match="left 6 of 6"):
        report = swin_fused.optimize(quantized, verbose=False)
    assert report.patched == [] and all(r.startswith("attn.qkv is torch.ao.nn.quantized")
                                        and "not an nn.Linear" in r for r in report.left_alone.values())
    if family == "torchvision":
        with pytest.raises(TypeError, match="must be Tensor, not method"):
            quantized(x)
    else:
        assert torch.equal(quantized(x), ref)


@pytest.mark.parametrize("family", ["timm", "torchvision"])  # the official code cannot build on meta (.item())
def test_meta_device_model_optimized_then_loaded(monkeypatch, family):
    """Built on the meta device (no values to check), optimized, materialized and loaded: same outputs.
    timm's non-persistent index and mask stay uninitialized (to_empty): the patched path never reads them."""
    build, size, _, _ = BLOCKS[family]
    ref = randomized(build())
    with torch.device("meta"):
        model = build()
    fast, report = optimized(model)
    assert len(report.patched) == NUM_BLOCKS
    fast.to_empty(device="cpu")
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, *size)
    spy = OpSpy(monkeypatch)
    assert_close(fast.eval()(x), ref(x), f"{family} built on meta")
    assert len(spy.calls) == NUM_BLOCKS


def test_fx_tracing_runs_the_library_code(monkeypatch):
    """FX symbolic tracing (torchvision's feature extractor, timm's too) traces the library's code; eager
    calls of the same model still run the op."""
    from torchvision.models.feature_extraction import create_feature_extractor

    x = torch.randn(1, 3, 76, 60)
    model = randomized(tv_model())
    fast, _ = optimized(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's note on train / eval node names
        features = create_feature_extractor(fast, return_nodes=["features.3"])
        expected = create_feature_extractor(model, return_nodes=["features.3"])(x)["features.3"]
    spy = OpSpy(monkeypatch)
    assert torch.equal(features(x)["features.3"], expected) and spy.calls == []
    fast(x)
    assert len(spy.calls) == NUM_BLOCKS

    _, _, shifted_block, shape = BLOCKS["timm"]
    block = shifted_block(randomized(timm_model((100, 132))))
    x = torch.randn(*shape)
    fast, _ = optimized(block)
    traced = torch.fx.symbolic_trace(fast)
    spy.calls.clear()
    assert torch.equal(traced(x), block(x)) and spy.calls == []


def test_undo_twice_reports_blocks_already_original():
    fast, first = optimized(randomized(timm_model()))
    assert swin_fused.optimize(fast, undo=True, verbose=False).restored == first.patched
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = swin_fused.optimize(fast, undo=True, verbose=False)
    assert again.restored == [] and again.already_original == first.patched and again.num_blocks == NUM_BLOCKS
    assert "timm model, 6 Swin blocks" in str(again) and "already on their original path" in str(again)
    assert "no Swin blocks" not in str(again)
