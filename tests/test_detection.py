"""Detection and segmentation backbones: ``swin_fused.SwinBackbone`` against the official detection backbone, and
``optimize()`` / ``load_checkpoint`` for the official, mmdet / mmseg and HF backbones.

The oracles are independent transcriptions in tests/ (no swin_fused imports): ``official_swin_detection.py``
(SwinTransformer/Swin-Transformer-Object-Detection's backbone) and ``mmdet_swin.py`` (mmdet's / mmseg's own, with
its ``swin_converter``). Weights are random and off their init; the four stage maps must agree to a max-abs error
of 2e-4 of their scale in fp32, on both backends, at 224x224 and 200x264 (stage maps 50x66 ... 7x9: padded and
shifted everywhere, stage 4 shifted although no larger than... 7x9).
"""
import copy
import sys
import types
import warnings

import mmdet_swin
import official_swin_detection as det
import pytest
import torch
from conftest import HAS_CUDA
from numerics import perturb_, relative_error

import swin_fused

DEVICE = "cuda" if HAS_CUDA else "cpu"
BACKENDS = ["torch", "triton"]
NARROW = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7)
SIZES = [(224, 224), (200, 264)]




def assert_maps_close(ours, theirs, what=""):
    assert len(ours) == len(theirs), what
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.shape == b.shape, f"{what} stage {i}: {tuple(a.shape)} vs {tuple(b.shape)}"
        err = ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()
        assert err <= 2e-4, f"{what} stage {i}: relative error {err:.2e}"


def run(model, x, backend=None):
    with torch.no_grad():
        if backend is None:
            return model(x)
        with swin_fused.use_backend(backend):
            return model(x)


def images(size, seed=0):
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


@pytest.fixture(scope="module")
def official_backbone():
    torch.manual_seed(2)
    return perturb_(det.SwinTransformer(drop_path_rate=0.0, **NARROW)).to(DEVICE)


def ours_from(source, **overrides):
    model = swin_fused.SwinBackbone(drop_path_rate=0.0, **NARROW, **overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a detection checkpoint into a detection-semantics backbone: silent
        result = swin_fused.load_checkpoint(model, source.state_dict() if isinstance(source, torch.nn.Module)
                                            else source)
    return model.eval().to(DEVICE), result


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_backbone_equals_the_official_detection_backbone(official_backbone, size, backend):
    ours, result = ours_from(official_backbone)
    assert result.source == "detection"
    x = images(size)
    assert_maps_close(run(ours, x, backend), run(official_backbone, x), f"{size} {backend}")


def test_backbone_has_the_official_keys_constructor_and_freezing(official_backbone):
    ours = swin_fused.SwinBackbone(**NARROW)
    assert set(ours.state_dict()) == set(official_backbone.state_dict())
    copy.deepcopy(official_backbone).load_state_dict(ours.state_dict())  # strict, both ways
    # out_indices, frozen_stages and ape as the official constructor has them.
    kw = dict(NARROW, out_indices=(1, 3), frozen_stages=2, ape=True, pretrain_img_size=224)
    ours, theirs = swin_fused.SwinBackbone(**kw), det.SwinTransformer(**kw)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    assert {n: p.requires_grad for n, p in ours.named_parameters()} == \
        {n: p.requires_grad for n, p in theirs.named_parameters()}
    ours.train()
    assert not ours.patch_embed.training and not ours.layers[0].training and ours.layers[1].training
    with pytest.raises(ValueError, match=r"out_indices must be stage indices in \[0, 4\), got \(4,\)"):
        swin_fused.SwinBackbone(**NARROW, out_indices=(4,))


def test_absolute_position_embedding_is_resized_as_the_official_backbone_does():
    torch.manual_seed(3)
    theirs = perturb_(det.SwinTransformer(drop_path_rate=0.0, ape=True, pretrain_img_size=224, out_indices=(0, 2),
                                          **NARROW)).to(DEVICE)
    ours, _ = ours_from(theirs, ape=True, pretrain_img_size=224, out_indices=(0, 2))
    x = images((200, 264))
    assert_maps_close(run(ours, x, "torch"), run(theirs, x), "ape")


@pytest.fixture(scope="module")
def mmdet_backbone(official_backbone):
    """mmdet's backbone (transcription) holding the official backbone's weights through mmdet's own converter."""
    model = mmdet_swin.SwinTransformer(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7,
                                       drop_path_rate=0.0)
    sd = mmdet_swin.swin_converter(official_backbone.state_dict())
    model.load_state_dict({k[len("backbone."):]: v for k, v in sd.items()})
    return model.eval().to(DEVICE)


def test_mmdet_checkpoints_load_with_their_merging_order(mmdet_backbone, official_backbone):
    ours, result = ours_from(mmdet_backbone)
    assert result.source == "mmdet"
    x = images((200, 264))
    assert_maps_close(run(ours, x, "torch"), run(mmdet_backbone, x), "mmdet")
    # A whole detector's checkpoint ({"state_dict": {backbone.*, neck.*, ...}}) loads its backbone.
    detector = {"meta": {"epoch": 12}, "state_dict": {
        **{f"backbone.{k}": v for k, v in mmdet_backbone.state_dict().items()},
        "neck.lateral_convs.0.conv.weight": torch.zeros(256, 16, 1, 1), "rpn_head.rpn_cls.bias": torch.zeros(3)}}
    again, result = ours_from(detector)
    assert result.source == "mmdet"
    assert_maps_close(run(again, x, "torch"), run(official_backbone, x), "detector checkpoint")
    assert swin_fused.detect_layout(detector) == "mmdet"


def test_hf_backbone_checkpoints_load_as_detection_semantics():
    """HF's SwinBackbone passes always_partition=True (no clamping): the detection rule."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(4)
    config = transformers.SwinConfig(image_size=224, embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                                     window_size=7, out_features=["stage1", "stage2", "stage3", "stage4"])
    theirs = perturb_(transformers.SwinBackbone(config)).to(DEVICE)
    ours, result = ours_from(theirs)
    assert result.source == "transformers-backbone"
    x = images((200, 264))
    with torch.no_grad():
        assert_maps_close(run(ours, x, "torch"), theirs(x).feature_maps, "HF backbone")


def test_classification_checkpoints_initialise_a_backbone(official_backbone, tmp_path):
    """The detector recipe: an ImageNet checkpoint into the backbone, strict=False; the per-stage norms stay at
    their initialisation (said in one warning), no warning about semantics."""
    from official_swin import SwinTransformer as OfficialSwin

    classifier = perturb_(OfficialSwin(img_size=224, num_classes=5, **NARROW))
    path = tmp_path / "imagenet.pth"
    torch.save({"model": classifier.state_dict()}, path)
    backbone = swin_fused.SwinBackbone(**NARROW)
    with pytest.warns(UserWarning) as caught:
        backbone.init_weights(str(path))  # what the detector's builder calls
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "left at their initialisation (8): norm0.weight" in messages[0], messages
    assert torch.equal(backbone.layers[2].blocks[1].attn.qkv.weight,
                       classifier.layers[2].blocks[1].attn.qkv.weight)


# ----------------------------------------------------------------------------------------------------------
# optimize() on the detection codebases
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_optimize_official_detection_backbone(official_backbone, backend):
    fast = copy.deepcopy(official_backbone)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = swin_fused.optimize(fast, backend=backend, verbose=False)
    assert report.family == "detection" and len(report.patched) == 8
    x = images((200, 264))
    assert_maps_close(run(fast, x), run(official_backbone, x), f"optimized detection backbone ({backend})")


@pytest.fixture
def mmdet_installed(monkeypatch):
    """The transcription standing in for mmdet's module (the adapter looks mmdet's class up in sys.modules); the
    real package's test below runs where mmdet is installed."""
    if "mmdet" in sys.modules or "mmdet.models.backbones.swin" in sys.modules:
        yield sys.modules["mmdet.models.backbones.swin"]
        return
    module = types.ModuleType("mmdet.models.backbones.swin")
    module.ShiftWindowMSA = mmdet_swin.ShiftWindowMSA
    monkeypatch.setitem(sys.modules, "mmdet.models.backbones.swin", module)
    yield module


@pytest.mark.parametrize("backend", BACKENDS)
def test_optimize_mmdet_shift_window_msa(mmdet_installed, mmdet_backbone, backend):
    fast = copy.deepcopy(mmdet_backbone)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = swin_fused.optimize(fast, backend=backend, verbose=False)
    assert report.family == "detection" and len(report.patched) == 8
    x = images((200, 264))
    assert_maps_close(run(fast, x), run(mmdet_backbone, x), f"optimized mmdet backbone ({backend})")


def test_optimize_real_mmdet():
    mm_swin = pytest.importorskip("mmdet.models.backbones.swin")
    torch.manual_seed(5)
    model = perturb_(mm_swin.SwinTransformer(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                                             window_size=7, drop_path_rate=0.0)).to(DEVICE)
    fast = copy.deepcopy(model)
    report = swin_fused.optimize(fast, verbose=False)
    assert report.family == "detection" and len(report.patched) == 8
    x = images((200, 264))
    assert_maps_close(run(fast, x), run(model, x), "mmdet")


def test_classification_ape_checkpoints_initialise_a_backbone(tmp_path):
    """A classification model's [1, H*W, C] absolute position embedding becomes the backbone's [1, C, H, W] (as
    the detection code's loader reshapes it); the constructor's pretrained path is what init_weights() loads."""
    from official_swin import SwinTransformer as OfficialSwin

    classifier = perturb_(OfficialSwin(img_size=224, num_classes=5, ape=True, **NARROW))
    path = tmp_path / "ape.pth"
    torch.save({"model": classifier.state_dict()}, path)
    backbone = swin_fused.SwinBackbone(**NARROW, ape=True, pretrained=str(path))
    assert not torch.equal(backbone.patch_embed.proj.weight, classifier.patch_embed.proj.weight)  # not yet
    with pytest.warns(UserWarning, match="left at their initialisation"):
        backbone.init_weights()  # how a detector calls it
    expected = classifier.absolute_pos_embed.view(1, 56, 56, 16).permute(0, 3, 1, 2)
    assert torch.equal(backbone.absolute_pos_embed, expected)
    assert torch.equal(backbone.patch_embed.proj.weight, classifier.patch_embed.proj.weight)
    with pytest.raises(TypeError, match="pretrained must be a str"):
        swin_fused.SwinBackbone(**NARROW, pretrained=3)
