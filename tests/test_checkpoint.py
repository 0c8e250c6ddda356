"""Checkpoints: layout detection and conversion (official, timm, torchvision), strict loading with and without the
derivable buffers, atomic saving, and clear errors that leave the model untouched.

Equivalence is shown on outputs, in float64: a source model (timm, torchvision, or tests/official_swin.py, the
independent transcription of Microsoft's code) with random non-default weights, and a swin_fused model loaded
from its converted state dict, must give the same logits to ~1e-15. No downloads.
"""
import argparse
import os
import pickle
import sys

import pytest
import torch
from official_swin import SwinTransformer as OfficialSwin

import swin_fused
from swin_fused import CheckpointError, convert_state_dict, detect_layout, load_checkpoint, save_checkpoint
from swin_fused.model import PatchMerging

F64 = dict(rtol=1e-10, atol=1e-10)  # float64: identical math up to summation order

# Small enough for the CPU, large enough to exercise every layout feature: two stages, one merging, shifted
# blocks with masks in both stages.
SMALL = dict(img_size=32, patch_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, num_classes=7)
# Swin-T's geometry at 224 (4 stages, 3 mergings, shifted stages 1-3, stage 4 clamped to its 7x7 map) at a
# quarter of the width and 2 blocks per stage, so that float64 CPU forwards stay well under a second.
NARROW_224 = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7, num_classes=10)


def perturb_(model: torch.nn.Module) -> torch.nn.Module:
    """Move every parameter away from its init (norm weights 1, biases 0) so no value is trivially 0 or 1."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            big = param.ndim == 1 or "relative_position_bias_table" in name
            param.add_(torch.randn_like(param) * (0.5 if big else 0.05))
    return model


def package_model(**overrides) -> swin_fused.SwinTransformer:
    return swin_fused.SwinTransformer(**{**SMALL, **overrides}).eval().double()


def official_model(**overrides) -> OfficialSwin:
    return perturb_(OfficialSwin(**{**SMALL, **overrides})).eval().double()


@pytest.fixture(scope="module")
def timm_narrow():
    """timm's Swin at 224, NARROW_224 config, random weights, eval, float64 (tests must not modify it)."""
    timm_swin = pytest.importorskip("timm.models.swin_transformer")
    torch.manual_seed(10)
    return perturb_(timm_swin.SwinTransformer(img_size=224, **NARROW_224)).eval().double()


@pytest.fixture(scope="module")
def torchvision_narrow():
    """torchvision's Swin, NARROW_224 config, random weights, eval, float64 (tests must not modify it)."""
    tv_swin = pytest.importorskip("torchvision.models.swin_transformer")
    torch.manual_seed(11)
    model = tv_swin.SwinTransformer(patch_size=[4, 4], embed_dim=NARROW_224["embed_dim"],
                                    depths=list(NARROW_224["depths"]), num_heads=list(NARROW_224["num_heads"]),
                                    window_size=[NARROW_224["window_size"]] * 2, num_classes=NARROW_224["num_classes"])
    return perturb_(model).eval().double()


@pytest.fixture(params=["timm", "torchvision"])
def foreign(request):
    """``(layout name, source model)`` for each foreign layout."""
    return request.param, request.getfixturevalue(f"{request.param}_narrow")


def without_head(sd):
    return {k: v for k, v in sd.items() if not k.startswith("head.")}


def snapshot(model):
    return {key: value.clone() for key, value in model.state_dict().items()}


def assert_state_equal(model, expected):
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


def images(batch=1, size=32):
    return torch.randn(batch, 3, size, size, dtype=torch.float64)


# ------------------------------------------------------------------------------------------ merging order


def test_timm_and_torchvision_merging_concatenate_in_the_official_order():
    """timm's reshape/permute merging and torchvision's slicing both give [x0, x1, x2, x3]: no permutation."""
    timm_swin = pytest.importorskip("timm.models.swin_transformer")
    tv_swin = pytest.importorskip("torchvision.models.swin_transformer")
    C = 5
    ours = perturb_(PatchMerging((6, 8), C)).double()
    x = torch.randn(2, 6, 8, C, dtype=torch.float64)
    # Independent expectation, from the paper's definition.
    cat = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
    expected = ours.reduction(ours.norm(cat))
    torch.testing.assert_close(ours(x), expected, **F64)
    for theirs in (timm_swin.PatchMerging(C), tv_swin.PatchMerging(C)):
        theirs = theirs.double()
        theirs.load_state_dict(ours.state_dict())
        torch.testing.assert_close(theirs(x), expected, **F64)
    # The comparison is sensitive to the order: swapping the x1/x2 blocks of the weights changes the output.
    swapped = timm_swin.PatchMerging(C).double()
    order = torch.arange(4 * C).view(4, C)[[0, 2, 1, 3]].flatten()
    swapped.load_state_dict({"norm.weight": ours.norm.weight[order], "norm.bias": ours.norm.bias[order],
                             "reduction.weight": ours.reduction.weight[:, order]})
    assert (swapped(x) - expected).abs().max() > 1e-3


# --------------------------------------------------------------------------------------------- detection


def test_detect_official_layout():
    official = official_model().state_dict()
    assert detect_layout(official) == "official"
    assert detect_layout({"model": official, "epoch": 3}) == "official"
    assert detect_layout(without_head(official)) == "official"  # a backbone (num_classes=0)
    assert detect_layout(package_model().state_dict()) == "official"


def test_detect_foreign_layouts(foreign):
    layout, source = foreign
    assert detect_layout(source.state_dict()) == layout
    assert detect_layout(without_head(source.state_dict())) == layout  # timm: told apart by merging placement


def test_unknown_layouts_are_clear_errors_and_v2_dicts_are_v2_layouts():
    with pytest.raises(ValueError, match=r"unknown Swin state-dict layout \(3 keys: encoder.0.weight, "
                                         r"encoder.0.bias, decoder.weight\)"):
        detect_layout({"encoder.0.weight": torch.ones(1), "encoder.0.bias": torch.ones(1),
                       "decoder.weight": torch.ones(1)})
    tv_swin = pytest.importorskip("torchvision.models.swin_transformer")
    v2 = tv_swin.SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=[4, 4],
                                 block=tv_swin.SwinTransformerBlockV2, downsample_layer=tv_swin.PatchMergingV2)
    assert detect_layout(v2.state_dict()) == "torchvision-v2"  # a V2 dict is never taken for a V1 layout
    converted = convert_state_dict(v2.state_dict())
    assert "layers.0.blocks.0.attn.q_bias" in converted and "layers.0.blocks.0.attn.qkv.bias" not in converted
    with pytest.raises(swin_fused.CheckpointError, match="Swin V2 checkpoint .*load it into a swin_fused.SwinTransformerV2"):
        swin_fused.load_checkpoint(swin_fused.SwinTransformer(img_size=32, embed_dim=8, depths=(1, 1), num_heads=(1, 2),
                                                              window_size=4), v2.state_dict())
    with pytest.raises(ValueError, match="layout must be 'auto' or one of official, official-v2, detection, mmdet, "
                                         "timm, timm-v2, torchvision, torchvision-v2, transformers-v2, transformers, "
                                         "transformers-backbone, got 'mmcls'"):
        convert_state_dict(v2.state_dict(), layout="mmcls")


# ------------------------------------------------------------------------------------ conversion = same model


def test_converted_weights_give_the_source_models_logits(foreign):
    layout, theirs = foreign
    ours = swin_fused.SwinTransformer(img_size=224, **NARROW_224, semantics=layout).eval().double()
    converted = convert_state_dict(theirs.state_dict())
    # Every official key, relative_position_index included; attn_mask is left to the model.
    assert converted.keys() == {k for k in ours.state_dict() if not k.endswith("attn_mask")}
    load_checkpoint(ours, theirs.state_dict())
    x = images(2, 224)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert expected.std() > 0.1  # non-trivial logits
    torch.testing.assert_close(got, expected, **F64)


def test_model_load_state_dict_accepts_foreign_dicts_directly(foreign):
    """SwinTransformer's load hook renames a timm/torchvision dict, so plain load_state_dict(strict=True) works."""
    layout, theirs = foreign
    via_function = swin_fused.SwinTransformer(img_size=224, **NARROW_224, semantics=layout).double()
    load_checkpoint(via_function, theirs.state_dict())
    direct = swin_fused.SwinTransformer(img_size=224, **NARROW_224, semantics=layout).double()
    direct.load_state_dict(theirs.state_dict(), strict=True)
    assert_state_equal(direct, via_function.state_dict())
    # Also as a submodule: the hook converts only the keys under its own prefix.
    detector = torch.nn.ModuleDict({"backbone": swin_fused.SwinTransformer(img_size=224, **NARROW_224,
                                                                           semantics=layout).double(),
                                    "neck": torch.nn.Linear(2, 2).double()})
    neck = {"neck.weight": torch.ones(2, 2, dtype=torch.float64), "neck.bias": torch.zeros(2, dtype=torch.float64)}
    detector.load_state_dict({**{f"backbone.{k}": v for k, v in theirs.state_dict().items()}, **neck}, strict=True)
    assert_state_equal(detector["backbone"], via_function.state_dict())
    assert torch.equal(detector["neck"].weight, neck["neck.weight"])


@pytest.mark.parametrize("source", ["timm", "torchvision"])
def test_swin_t_dicts_convert_to_the_swin_t_keys_and_shapes(source):
    """The real Swin-T layouts (not just the narrow test config) map key for key onto swin_fused's Swin-T."""
    if source == "timm":
        timm = pytest.importorskip("timm")
        theirs = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
    else:
        torchvision = pytest.importorskip("torchvision")
        theirs = torchvision.models.swin_t(weights=None)
    ours = swin_fused.swin_tiny_patch4_window7_224(semantics=source)
    sd = theirs.state_dict()
    load_checkpoint(ours, sd)  # strict: every key present, no extra, every shape right
    converted = convert_state_dict(sd)
    assert detect_layout(sd) == source
    assert torch.equal(ours.layers[0].downsample.reduction.weight, converted["layers.0.downsample.reduction.weight"])
    assert torch.equal(ours.head.weight, sd["head.fc.weight" if source == "timm" else "head.weight"])


def test_official_dict_with_buffers_loads_strictly_and_matches_official_code():
    official = official_model()
    sd = official.state_dict()
    assert any(k.endswith("attn_mask") for k in sd) and any(k.endswith("relative_position_index") for k in sd)
    ours = package_model()
    ours.load_state_dict(sd, strict=True)  # as is: same keys, buffers included
    x = images(2)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), official(x), **F64)
    again = package_model()
    load_checkpoint(again, {"model": sd})  # the official file layout
    assert_state_equal(again, ours.state_dict())


def test_dict_without_derivable_buffers_loads_strictly():
    official = official_model()
    sd = {k: v for k, v in official.state_dict().items() if not k.endswith(("attn_mask", "relative_position_index"))}
    ours = package_model()
    buffers = {k: v.clone() for k, v in ours.named_buffers()}
    result = ours.load_state_dict(sd, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for key, value in ours.named_buffers():
        assert torch.equal(value, buffers[key]), key
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), official(x), **F64)


def test_masks_saved_at_another_resolution_are_ignored():
    """An official 64px dict into a 32px model: masks of another shape, and one for a block not shifted here."""
    official = official_model(img_size=64)
    ours = package_model(img_size=32)
    assert ours.layers[1].blocks[1].attn_mask is None and official.layers[1].blocks[1].attn_mask is not None
    own_mask = ours.layers[0].blocks[1].attn_mask.clone()
    assert own_mask.shape != official.layers[0].blocks[1].attn_mask.shape
    ours.load_state_dict(official.state_dict(), strict=True)
    load_checkpoint(ours, official.state_dict())
    assert torch.equal(ours.layers[0].blocks[1].attn_mask, own_mask)
    assert torch.equal(ours.head.weight, official.head.weight)


def test_nonstandard_relative_position_index_is_refused():
    sd = official_model().state_dict()
    key = "layers.0.blocks.1.attn.relative_position_index"
    sd[key] = sd[key].t().contiguous()  # a valid-looking index with keys and queries swapped
    ours = package_model()
    before = snapshot(ours)
    with pytest.raises(CheckpointError, match=rf"relative_position_index differs from the standard index .*{key}"):
        load_checkpoint(ours, sd)
    assert_state_equal(ours, before)
    with pytest.raises(RuntimeError, match=rf"{key}: differs from the standard relative position index"):
        ours.load_state_dict(sd)


def test_a_table_of_a_non_square_window_needs_no_index_in_the_dict():
    """A clamped 1x5 window (a 4-pixel-high timm map) has 9 = 3^2 table rows: no square 2x2 index is guessed for it
    (timm's dicts carry none; the model derives its own)."""
    timm_swin = pytest.importorskip("timm.models.swin_transformer")
    cfg = dict(img_size=(4, 64), embed_dim=16, depths=(2,), num_heads=(1,), window_size=5, num_classes=3)
    theirs = perturb_(timm_swin.SwinTransformer(**cfg)).eval().double()
    ours = swin_fused.SwinTransformer(**cfg, semantics="timm").eval().double()
    assert ours.layers[0].blocks[0].attn.window_size == (1, 5)
    x = torch.randn(2, 3, 4, 64, dtype=torch.float64)
    converted = convert_state_dict(theirs.state_dict())  # for the official code: an index guessed from the rows
    def converted_checkpoint():
        with pytest.warns(UserWarning, match="official checkpoint, but the model was built with semantics='timm'"):
            load_checkpoint(ours, converted)  # official keys now: the model's semantics are questioned

    loads = (lambda: load_checkpoint(ours, theirs.state_dict()), converted_checkpoint,
             lambda: ours.load_state_dict(theirs.state_dict()), lambda: ours.load_state_dict(converted))
    for load in loads:
        perturb_(ours)  # so that each load is seen to load
        load()
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x), **F64)


def test_index_of_another_integer_dtype_is_accepted():
    official = official_model()
    sd = {k: v.int() if k.endswith("relative_position_index") else v for k, v in official.state_dict().items()}
    ours = package_model()
    load_checkpoint(ours, sd)
    ours.load_state_dict(sd)
    assert ours.layers[0].blocks[0].attn.relative_position_index.dtype == torch.int64


@pytest.mark.cuda
def test_cpu_checkpoint_loads_into_a_cuda_model(tmp_path):
    """The load hooks and checks compare a CPU checkpoint's buffers with a CUDA model's."""
    official = official_model()
    path = tmp_path / "official.pth"
    torch.save({"model": official.state_dict()}, path)
    ours = package_model().cuda()
    load_checkpoint(ours, path)
    ours.load_state_dict(torch.load(path, weights_only=True)["model"])
    x = images(2)
    with torch.no_grad(), swin_fused.use_backend("torch"):  # float64: the loading is under test, not a kernel
        torch.testing.assert_close(ours(x.cuda()).cpu(), official(x), **F64)


def test_strict_load_state_dict_still_reports_real_parameters():
    sd = official_model().state_dict()
    del sd["head.weight"]
    sd = {k: v for k, v in sd.items() if not k.endswith("relative_position_index")}
    sd["layers.0.blocks.0.extra"] = torch.zeros(1)
    sd["norm.weight"] = torch.zeros(5)
    with pytest.raises(RuntimeError) as info:
        package_model().load_state_dict(sd, strict=True)
    message = str(info.value)
    assert '"head.weight"' in message and '"layers.0.blocks.0.extra"' in message
    assert "size mismatch for norm.weight" in message
    assert "relative_position_index" not in message and "attn_mask" not in message


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.module.", "model.", "model._orig_mod."])
def test_wrappers_and_prefixes_are_unwrapped(prefix):
    """DDP, torch.compile and trainer wrappers (a Lightning module's ``self.model``), nested."""
    official = official_model()
    wrapped = {"state_dict": {prefix + k: v for k, v in official.state_dict().items()}, "epoch": 1}
    ours = package_model()
    load_checkpoint(ours, wrapped)
    assert_state_equal(ours, official.state_dict())


def test_tensor_entries_beside_the_wrapped_state_dict_do_not_hide_it(tmp_path):
    """A wrapper's other entries may be tensors (RNG state, a step counter): the 'model' entry is still found."""
    source = perturb_(package_model())
    path = tmp_path / "train.pth"
    save_checkpoint(source, path, extra={"epoch": 3, "rng_state": torch.get_rng_state()})
    ours = package_model()
    load_checkpoint(ours, path)
    assert_state_equal(ours, source.state_dict())
    wrapped = {"state_dict": {"module." + k: v for k, v in source.state_dict().items()}, "step": torch.tensor(1000)}
    assert detect_layout(wrapped) == "official"
    assert convert_state_dict(wrapped).keys() == source.state_dict().keys()
    # A dict of tensors and other values without a wrapper entry is no state dict: say so, naming the odd ones.
    with pytest.raises(ValueError, match=r"mixes tensors with other values \(epoch \(int\)\) and has no 'model'"):
        load_checkpoint(package_model(), {**source.state_dict(), "epoch": 3})


def test_models_other_than_swin_fused_are_refused_with_a_pointer():
    """load_checkpoint renames checkpoints onto swin_fused's keys; another model is told to use load_state_dict."""
    expected = r"model must be a swin_fused.SwinTransformer, SwinTransformerV2 or SwinBackbone .*got {}; .*model.load_state_dict"
    linear = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match=expected.format(r"torch.nn.modules.linear.Linear")):
        load_checkpoint(linear, linear.state_dict())
    timm_swin = pytest.importorskip("timm.models.swin_transformer")
    theirs = timm_swin.SwinTransformer(**SMALL)
    with pytest.raises(TypeError, match=expected.format(r"timm.models.swin_transformer.SwinTransformer")):
        load_checkpoint(theirs, theirs.state_dict())  # its own dict: the old error listed keys it has


def test_safetensors_files_load_without_torch_load(tmp_path, monkeypatch):
    """``*.safetensors`` goes through the safetensors package: torch.load reads them in some versions only."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    source = perturb_(package_model())
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(source.state_dict(), str(path))
    real_load = torch.load

    def load_without_safetensors(file, *args, **kwargs):  # as torch 2.11 does: unpickle, and fail
        if str(file).endswith(".safetensors"):
            raise pickle.UnpicklingError("invalid load key, '\\x10'.")
        return real_load(file, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load_without_safetensors)
    ours = package_model()
    load_checkpoint(ours, path)
    assert_state_equal(ours, source.state_dict())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"model.safetensors' could not be read as a safetensors file"):
        load_checkpoint(ours, path)


def test_safetensors_file_without_the_package_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")  # a valid, empty safetensors file
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import safetensors now raises ImportError
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match=r"model.safetensors' is a safetensors file; reading it needs the optional "
                                          r"'safetensors' package"):
        load_checkpoint(package_model(), path)


# ---------------------------------------------------------------------------------------------- save/load


def test_package_checkpoint_round_trip_is_bitwise(tmp_path):
    source = perturb_(package_model())
    path = tmp_path / "model.pth"
    save_checkpoint(source, path, extra={"epoch": 4})
    stored = torch.load(path, map_location="cpu", weights_only=True)
    assert set(stored) == {"model", "epoch"} and stored["model"].keys() == source.state_dict().keys()
    target = package_model()
    assert not torch.equal(target.head.weight, source.head.weight)
    load_checkpoint(target, str(path))
    assert_state_equal(target, source.state_dict())
    x = images(2)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))


def test_save_never_loses_the_existing_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    save_checkpoint(package_model(), path)
    good = path.read_bytes()

    def crash(obj, file, *args, **kwargs):
        file.write(b"partial bytes of a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(perturb_(package_model()), path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["model.pth"]  # no temporary left behind
    newer = perturb_(package_model())
    save_checkpoint(newer, path)  # and a successful save replaces it
    loaded = package_model()
    load_checkpoint(loaded, path)
    assert_state_equal(loaded, newer.state_dict())


def test_unwritable_targets_are_named_in_save_errors(tmp_path, monkeypatch):
    """Errors name the checkpoint path, not the hidden temporary file; the old checkpoint stays as it was."""
    path = tmp_path / "model.pth"
    save_checkpoint(package_model(), path)
    good = path.read_bytes()
    real_open = os.open

    def read_only_directory(name, flags, *args, **kwargs):  # chmod cannot stop root, so refuse creation here
        if flags & os.O_CREAT and os.path.dirname(name) == str(tmp_path):
            raise PermissionError(13, "Permission denied", name)
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_directory)
    with pytest.raises(PermissionError, match=rf"cannot write checkpoint '{path}': creating a file in "
                                              rf"'{tmp_path}' failed \(Permission denied\)") as info:
        save_checkpoint(perturb_(package_model()), path)
    assert ".tmp" not in str(info.value) and isinstance(info.value.__cause__, PermissionError)
    monkeypatch.undo()
    assert path.read_bytes() == good and os.listdir(tmp_path) == ["model.pth"]
    with pytest.raises(IsADirectoryError, match=rf"checkpoint path is a directory, expected a file name: "
                                                rf"'{tmp_path}'"):
        save_checkpoint(package_model(), tmp_path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="checkpoint file not found: .*nope.pth"):
        load_checkpoint(package_model(), path)


@pytest.mark.parametrize("damage", ["truncated", "junk", "empty"])
def test_unreadable_files_are_named_and_leave_the_model_alone(tmp_path, damage):
    path = tmp_path / "model.pth"
    save_checkpoint(perturb_(package_model()), path)
    data = path.read_bytes()
    junk = bytes(torch.randint(0, 256, (512,), dtype=torch.uint8).tolist())
    path.write_bytes({"truncated": data[: len(data) // 2], "junk": junk, "empty": b""}[damage])
    ours = package_model()
    before = snapshot(ours)
    with pytest.raises(CheckpointError, match=r"model.pth' could not be read as a PyTorch checkpoint"):
        load_checkpoint(ours, path)
    assert_state_equal(ours, before)


def test_file_with_python_objects_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "train.pth"
    torch.save({"model": package_model().state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(CheckpointError, match=r"argparse.Namespace.*weights_only=False"):
        load_checkpoint(package_model(), path)


def test_objects_that_are_not_state_dicts(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(TypeError, match="is a Tensor, not a state dict"):
        load_checkpoint(package_model(), path)
    with pytest.raises(ValueError, match=r"no 'model' or 'state_dict' entry; its top-level keys are: epoch, args"):
        load_checkpoint(package_model(), {"epoch": 3, "args": {"lr": 0.1}})


def test_mismatched_dicts_list_the_keys_and_leave_the_model_alone():
    ours = package_model()
    before = snapshot(ours)
    sd = perturb_(package_model()).state_dict()  # other values everywhere: any partial load would show
    block_keys = [k for k in sd if k.startswith("layers.0.blocks.0.")]
    assert len(block_keys) > 10
    for key in block_keys:
        del sd[key]
    sd["layers.0.blocks.0.attn.extra"] = torch.zeros(1)
    sd["head.weight"] = torch.zeros(3, 32)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ours, sd)
    message = str(info.value)
    assert "the model was not modified" in message
    kept = [k for k in block_keys if not k.endswith("relative_position_index")]  # derivable: not missing
    assert f"missing keys ({len(kept)}): {', '.join(kept[:10])}, ... ({len(kept) - 10} more)" in message
    assert "unexpected keys (1): layers.0.blocks.0.attn.extra" in message
    assert "mis-shaped keys (1):\n    head.weight: model (7, 32), checkpoint (3, 32)" in message
    assert_state_equal(ours, before)
    # Shapes are checked even when not strict, before anything is copied.
    with pytest.raises(CheckpointError, match="mis-shaped keys"):
        load_checkpoint(ours, sd, strict=False)
    assert_state_equal(ours, before)


def test_non_strict_load_reports_what_it_skipped():
    source = perturb_(package_model())
    sd = source.state_dict()
    del sd["head.weight"], sd["head.bias"]
    sd["aux.weight"] = torch.zeros(1)
    ours = package_model()
    head = ours.head.weight.clone()
    with pytest.warns(UserWarning, match=r"strict=False\): left at their initialisation \(2\): head.weight, "
                                         r"head.bias; ignored from the checkpoint \(1\): aux.weight"):
        result = load_checkpoint(ours, sd, strict=False)
    assert sorted(result.missing_keys) == ["head.bias", "head.weight"] and result.unexpected_keys == ["aux.weight"]
    assert torch.equal(ours.head.weight, head)
    assert torch.equal(ours.norm.weight, source.norm.weight)


def test_wrong_config_error_names_the_config_the_checkpoint_looks_like():
    """A Swin-S checkpoint into a Swin-T model: the error says which config the checkpoint is, from its shapes."""
    with torch.device("meta"):
        small = swin_fused.swin_small_patch4_window7_224()
        tiny = swin_fused.swin_tiny_patch4_window7_224()
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tiny, small.state_dict())
    message = str(info.value)
    assert ("the checkpoint is swin_small_patch4_window7_224 (embed_dim=96, depths=(2, 2, 18, 2), "
            "num_heads=(3, 6, 12, 24), window_size=7); the model is swin_tiny_patch4_window7_224 "
            "(embed_dim=96, depths=(2, 2, 6, 2)") in message, message
