"""Models built without storage: ``with torch.device("meta"):`` then ``to_empty`` + ``load_state_dict``, or
``load_state_dict(..., assign=True)``, or ``to_empty`` + ``reset_parameters()`` (training from scratch).

The buffers the models derive from their geometry (relative position index, V2's coordinate table, the shift
masks) are garbage after ``to_empty`` and still meta after an ``assign=True`` load of a dict that lacks them
(timm's do). The oracles are the official transcriptions in tests/, which build those buffers themselves: every
materialised model must give their outputs (float64) and save their buffers.
"""
import contextlib
import math

import official_swin
import official_swin_detection as det
import official_swin_v2
import pytest
import torch

import swin_fused
from swin_fused import CheckpointError, load_checkpoint

F64 = dict(rtol=1e-10, atol=1e-10)
DERIVED = ("relative_position_index", "attn_mask", "relative_coords_table")

# Two stages with shifted blocks (masks) in both; V2 with pretrained windows that rescale the coordinate table;
# the detection backbone on a map the window does not divide.
CASES = {
    "v1": (official_swin.SwinTransformer, swin_fused.SwinTransformer, (32, 32),
           dict(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, num_classes=7)),
    "v2": (official_swin_v2.SwinTransformerV2, swin_fused.SwinTransformerV2, (32, 32),
           dict(img_size=32, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, num_classes=7,
                pretrained_window_sizes=(3, 2))),
    "backbone": (det.SwinTransformer, swin_fused.SwinBackbone, (45, 67),
                 dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=7, out_indices=(0, 1))),
}


def perturb_(model):
    """Every parameter away from its init, so that no loaded value is trivially a constructor's."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (0.5 if p.ndim == 1 else 0.05))
    return model


def official(kind):
    cls, _, _, cfg = CASES[kind]
    torch.manual_seed(3)
    return perturb_(cls(**cfg, drop_path_rate=0.0)).eval().double()


def meta_model(kind):
    _, cls, _, cfg = CASES[kind]
    with torch.device("meta"):
        model = cls(**cfg, drop_path_rate=0.0)
    assert all(t.is_meta for t in model.state_dict().values())
    return model


def poison_(model):
    """Deterministic garbage in place of to_empty's uninitialised memory: NaN floats, -7 integers."""
    with torch.no_grad():
        for t in model.state_dict().values():
            t.fill_(float("nan") if t.is_floating_point() else -7)
    return model


@contextlib.contextmanager
def garbage_memory():
    """``to_empty`` allocates with ``torch.empty_like``: made deterministic garbage (NaN, -7) here."""
    real = torch.empty_like

    def garbage(t, *args, **kwargs):
        return real(t, *args, **kwargs).fill_(float("nan") if t.is_floating_point() else -7)

    torch.empty_like = garbage
    try:
        yield
    finally:
        torch.empty_like = real


def materialised(kind, poison=True):
    """The meta-built model after ``to_empty`` on the CPU, in float64; ``poison``: every tensor garbage after, the
    derived buffers included (which ``to_empty`` itself writes), so that the load must rebuild them."""
    with garbage_memory():
        model = meta_model(kind).to_empty(device="cpu").double()
    return poison_(model) if poison else model


def outputs(model, kind):
    x = torch.randn(2, 3, *CASES[kind][2], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), swin_fused.use_backend("torch"):  # float64: the loading is under test, not a kernel
        out = model(x)
    return out if isinstance(out, (tuple, list)) else (out,)


def derived(model):
    return {k: v for k, v in model.state_dict().items() if k.endswith(DERIVED)}


def assert_buffers_equal(ours, theirs):
    ours, theirs = derived(ours), derived(theirs)
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert torch.equal(ours[key].to(value.dtype), value), key


def without_derived(sd):
    return {k: v for k, v in sd.items() if not k.endswith(DERIVED)}


@pytest.mark.parametrize("buffers", ["with_buffers", "without_buffers"])
@pytest.mark.parametrize("how", ["to_empty", "assign"])
@pytest.mark.parametrize("kind", CASES)
def test_a_meta_built_model_loaded_from_a_dict_is_the_source_model(kind, how, buffers):
    source = official(kind)
    sd = source.state_dict() if buffers == "with_buffers" else without_derived(source.state_dict())
    if how == "to_empty":
        ours = materialised(kind)
        result = ours.load_state_dict(sd, strict=True)
    else:
        ours = meta_model(kind)
        result = ours.load_state_dict(sd, strict=True, assign=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert not any(t.is_meta for t in ours.state_dict().values())
    assert_buffers_equal(ours, source)  # what it saves is what the official code builds
    for got, want in zip(outputs(ours.eval(), kind), outputs(source, kind), strict=True):
        torch.testing.assert_close(got, want, **F64)


@pytest.mark.parametrize("kind", CASES)
def test_load_checkpoint_into_a_materialised_model_checks_the_index_against_the_formula(kind):
    source = official(kind)
    ours = materialised(kind)  # its own index is -7 everywhere: a check against it would refuse every dict
    load_checkpoint(ours, source.state_dict(), strict=True)
    assert_buffers_equal(ours, source)
    for got, want in zip(outputs(ours.eval(), kind), outputs(source, kind), strict=True):
        torch.testing.assert_close(got, want, **F64)

    sd = source.state_dict()
    key = next(k for k in sd if k.endswith("relative_position_index"))
    sd[key] = sd[key].t().contiguous()  # keys and queries swapped: still refused
    with pytest.raises(CheckpointError, match="relative_position_index differs from the standard index"):
        load_checkpoint(materialised(kind), sd)
    with pytest.raises(RuntimeError, match=rf"{key}: differs from the standard relative position index"):
        materialised(kind).load_state_dict(sd)


@pytest.mark.parametrize("kind", CASES)
def test_reset_parameters_initialises_a_materialised_model_as_the_constructor_does(kind):
    ours = materialised(kind).float()
    ours.reset_parameters()
    official_cls, cls, _, cfg = CASES[kind]
    assert_buffers_equal(ours, official_cls(**cfg))
    torch.manual_seed(0)
    theirs = dict(cls(**cfg).named_parameters())  # the constructor's init: the same distributions, other draws
    for name, p in ours.named_parameters():
        q = theirs[name]
        assert p.shape == q.shape and torch.isfinite(p).all(), name
        if (q == q.flatten()[0]).all():  # constant: zeros, ones, log 10, V2's zeroed post-norms
            assert torch.equal(p, q), name
        else:  # truncated normal (std 0.02) or PyTorch's default (the patch conv)
            assert math.isclose(p.std().item(), q.std().item(), rel_tol=0.3), name
    for got in outputs(ours.double().eval(), kind):
        assert torch.isfinite(got).all()


def test_timm_dict_into_a_meta_built_model_with_assign():
    """timm's dicts carry no derived buffers (non-persistent there): the assign load must build them."""
    timm_swin = pytest.importorskip("timm.models.swin_transformer")
    cfg = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, num_classes=7)
    torch.manual_seed(4)
    theirs = perturb_(timm_swin.SwinTransformer(img_size=32, **cfg)).eval().double()
    assert not any(k.endswith(DERIVED) for k in theirs.state_dict())
    with torch.device("meta"):
        ours = swin_fused.SwinTransformer(img_size=32, **cfg)
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    assert not any(t.is_meta for t in ours.state_dict().values())
    assert_buffers_equal(ours, official_swin.SwinTransformer(img_size=32, **cfg))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad(), swin_fused.use_backend("torch"):
        torch.testing.assert_close(ours.eval()(x), theirs(x), **F64)


@pytest.mark.parametrize("kind", CASES)
def test_to_empty_writes_the_derived_buffers_for_loaders_that_fill_missing_keys(kind):
    """``torch.distributed.checkpoint``'s ``set_model_state_dict`` (FSDP2's loader) fills each key a dict lacks with
    the model's own tensor: after ``to_empty`` those must be the standard buffers, not uninitialised memory."""
    dcp = pytest.importorskip("torch.distributed.checkpoint.state_dict")
    source = official(kind)
    ours = materialised(kind, poison=False)
    assert_buffers_equal(ours, source)
    for omit in (DERIVED, ("relative_coords_table",)):
        ours = materialised(kind, poison=False)
        sd = {k: v for k, v in source.state_dict().items() if not k.endswith(omit)}
        dcp.set_model_state_dict(ours, sd, options=dcp.StateDictOptions(full_state_dict=True, strict=True))
        assert_buffers_equal(ours, source)
        for got, want in zip(outputs(ours.eval(), kind), outputs(source, kind), strict=True):
            torch.testing.assert_close(got, want, **F64)
    block = meta_model(kind).layers[0].blocks[1]  # each submodule on its own (FSDP1's recurse=False)
    with garbage_memory():
        for module in block.modules():
            module.to_empty(device="cpu", recurse=False)
    theirs = source.layers[0].blocks[1]
    assert_buffers_equal(block.attn, theirs.attn)
    assert_buffers_equal(block, theirs)


@pytest.mark.parametrize("kind", CASES)
def test_to_empty_on_anything_holding_the_model_writes_its_derived_buffers(kind):
    """``to_empty`` reaches children through ``_apply``, not their ``to_empty``: a detector or wrapper holding the
    model (what FSDP2 set-ups materialise), a compiled model, a ModuleList of stages."""
    dcp = pytest.importorskip("torch.distributed.checkpoint.state_dict")
    source = official(kind)
    wrapper = torch.nn.Sequential(meta_model(kind))
    with garbage_memory():
        wrapper.to_empty(device="cpu")
    assert_buffers_equal(wrapper[0], source)
    with garbage_memory():
        compiled = torch.compile(meta_model(kind)).to_empty(device="cpu")
    assert_buffers_equal(compiled._orig_mod, source)
    layers = meta_model(kind).layers
    with garbage_memory():
        layers.to_empty(device="cpu")
    for ours, theirs in zip(layers, source.layers, strict=True):
        assert_buffers_equal(ours, theirs)
    # The V2 coordinate table is an input of the bias MLP: a garbage one filled in by the loader would give NaN.
    wrapper = torch.nn.Sequential(meta_model(kind))
    with garbage_memory():
        wrapper.to_empty(device="cpu")
    sd = {"0." + k: v for k, v in source.state_dict().items() if not k.endswith("relative_coords_table")}
    dcp.set_model_state_dict(wrapper.double(), sd, options=dcp.StateDictOptions(full_state_dict=True, strict=True))
    for got, want in zip(outputs(wrapper[0].eval(), kind), outputs(source, kind), strict=True):
        torch.testing.assert_close(got, want, **F64)


@pytest.mark.parametrize("kind", CASES)
def test_load_checkpoint_into_a_meta_model_takes_assign_or_says_so(kind):
    source = official(kind)
    with pytest.raises(ValueError, match=r"meta device .*assign=True.*to_empty"):  # a no-op copy otherwise
        load_checkpoint(meta_model(kind), source.state_dict())
    ours = meta_model(kind)
    load_checkpoint(ours, without_derived(source.state_dict()), assign=True)
    assert not any(t.is_meta for t in ours.state_dict().values())
    assert_buffers_equal(ours, source)
    for got, want in zip(outputs(ours.eval(), kind), outputs(source, kind), strict=True):
        torch.testing.assert_close(got, want, **F64)
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("norm")}
    with pytest.raises(CheckpointError, match="would hold no storage"):
        load_checkpoint(meta_model(kind), partial, strict=False, assign=True)
