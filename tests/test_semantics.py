"""Size semantics: the package's model with ``semantics=<library>`` reproduces that library's outputs at every size.

The oracle is the library's own model (torchvision, HF transformers, timm) with random, non-default weights,
loaded into the package's model through ``load_checkpoint``; fp32 logits must agree to a max-abs error of 2e-4
relative to the logits' scale, on both backends (the kernels through the interpreter on the CPU), at sizes where
stage maps are not window multiples, where the last stage is larger than the window (and shifts) and where it
is smaller. A control shows the comparison sees the wrong rule. The rules themselves are checked against values
written out by hand from each library's code.
"""
import copy
import re
import warnings

import pytest
import torch
from conftest import HAS_CUDA
from numerics import perturb_, relative_error

import swin_fused
from swin_fused.geometry import effective_window_shift

DEVICE = "cuda" if HAS_CUDA else "cpu"
BACKENDS = ["torch", "triton"]
#: Swin-T's geometry (four stages, patch 4, window 7) at a sixth of the width and two blocks a stage.
NARROW = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7, num_classes=10)
TOLERANCE = 2e-4






def ours_from(source: torch.nn.Module, semantics: str, **overrides) -> swin_fused.SwinTransformer:
    model = swin_fused.SwinTransformer(**{"img_size": 224, **NARROW, **overrides}, semantics=semantics)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the right semantics: no "semantics differ" warning
        result = swin_fused.load_checkpoint(model, source.state_dict())
    assert result.source in (semantics, f"{semantics}-backbone"), result.source
    return model.eval().to(DEVICE)


def logits(model, x, backend=None):
    with torch.no_grad():
        if backend is None:
            out = model(x)
            return out.logits if hasattr(out, "logits") else out
        with swin_fused.use_backend(backend):
            return model(x)


def images(size, seed=0):
    return torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


# ----------------------------------------------------------------------------------------------------------
# The rules, from each library's code (values written out, not computed by the package)
# ----------------------------------------------------------------------------------------------------------

# (semantics, built stage resolution, map (H, W), configured shift) -> (window, shift) the block uses.
RULES = [
    # official: decided at construction; a map no larger than the window is one unshifted window
    ("official", (7, 7), (7, 7), 3, ((7, 7), (0, 0))),
    ("official", (7, 7), (8, 10), 3, ((7, 7), (0, 0))),  # built at 224: stage 4 never shifts
    ("official", (14, 14), (14, 14), 3, ((7, 7), (3, 3))),
    ("official", (14, 14), (5, 9), 3, ((5, 5), (0, 0))),
    # detection: always the configured window and shift
    ("detection", (7, 7), (7, 7), 3, ((7, 7), (3, 3))),
    ("detection", (7, 7), (4, 20), 3, ((7, 7), (3, 3))),
    # torchvision: per axis, shift 0 where the window covers the padded map; never clamped
    ("torchvision", (7, 7), (7, 7), 3, ((7, 7), (0, 0))),
    ("torchvision", (7, 7), (8, 10), 3, ((7, 7), (3, 3))),
    ("torchvision", (7, 7), (5, 10), 3, ((7, 7), (0, 3))),
    ("torchvision", (7, 7), (3, 3), 3, ((7, 7), (0, 0))),
    # timm: per axis at the built resolution, whatever the map
    ("timm", (7, 7), (8, 10), 3, ((7, 7), (0, 0))),
    ("timm", (7, 10), (7, 10), 3, ((7, 7), (0, 3))),
    ("timm", (5, 10), (16, 16), 3, ((5, 7), (0, 3))),
    ("timm", (14, 14), (3, 3), 3, ((7, 7), (3, 3))),
    # transformers: min(H, W) <= window -> one square window of min(H, W), no shift, per forward
    ("transformers", (7, 7), (7, 7), 3, ((7, 7), (0, 0))),
    ("transformers", (7, 7), (8, 10), 3, ((7, 7), (3, 3))),
    ("transformers", (14, 14), (5, 20), 3, ((5, 5), (0, 0))),
]


@pytest.mark.parametrize("semantics, built, hw, shift, expected", RULES,
                         ids=[f"{r[0]}-built{r[1][0]}x{r[1][1]}-map{r[2][0]}x{r[2][1]}" for r in RULES])
def test_each_library_rule(semantics, built, hw, shift, expected):
    block = swin_fused.SwinTransformerBlock(dim=8, input_resolution=built, num_heads=1, window_size=7,
                                            shift_size=shift, semantics=semantics)
    assert block.window_and_shift(*hw) == expected


def test_official_rule_at_the_built_size_is_the_one_it_always_was():
    """semantics="official" (the default) decides as before at every size, keeps the mask buffers and the keys."""
    with torch.device("meta"):
        model = swin_fused.swin_tiny_patch4_window7_224()
        tv_like = swin_fused.swin_tiny_patch4_window7_224(semantics="torchvision")
    assert model.semantics == "official"
    for layer in model.layers:
        for j, block in enumerate(layer.blocks):
            res = layer.input_resolution
            (w, _), (s, _) = effective_window_shift(res, 7, 0 if j % 2 == 0 else 3)
            assert (block.window_size, block.shift_size) == (w, s)
            for hw in ((res[0], res[1]), (res[0] + 3, res[1] + 1), (3, 5)):
                assert block.window_and_shift(*hw) == effective_window_shift(hw, block.window_size, block.shift_size)
    assert any(k.endswith("attn_mask") for k in model.state_dict())
    # Other semantics carry no mask buffer (their libraries' checkpoints have none); the rest of the keys agree.
    keys = {k for k in model.state_dict() if not k.endswith("attn_mask")}
    assert set(tv_like.state_dict()) == keys


def test_semantics_values_and_errors():
    assert swin_fused.size_rule("mmdet") is swin_fused.size_rule("detection") is swin_fused.SEMANTICS["detection"]
    assert swin_fused.size_rule("MMSEG").name == "detection"
    with pytest.raises(ValueError, match=r"semantics must be one of 'official', 'detection', 'torchvision', 'timm', "
                                         r"'transformers'.*got 'torchvison' \(did you mean 'torchvision'\?\)"):
        swin_fused.SwinTransformer(semantics="torchvison")
    with pytest.raises(ValueError, match=r"got 3"):
        swin_fused.create_model("swin_t", semantics=3)


def test_unknown_constructor_keywords_name_the_closest_valid_one():
    with pytest.raises(TypeError, match=r"SwinTransformer\(\) got an unexpected keyword argument 'num_clases'; did "
                                        r"you mean 'num_classes'\?"):
        swin_fused.swin_tiny_patch4_window7_224(num_clases=10)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'bogus_arg'$"):
        swin_fused.swin_tiny_patch4_window7_224(semantics="torchvision", bogus_arg=3)
    with pytest.raises(TypeError, match=r"SwinBackbone\(\) got an unexpected keyword argument 'out_indice'; did you "
                                        r"mean 'out_indices'\?"):
        swin_fused.SwinBackbone(out_indice=(0,))
    with torch.device("meta"):  # every official keyword is accepted, those that do nothing here too
        swin_fused.SwinTransformer(fused_window_process=True, use_checkpoint=True, qk_scale=None, ape=False)


# ----------------------------------------------------------------------------------------------------------
# Against the libraries
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_model():
    tv_swin = pytest.importorskip("torchvision.models.swin_transformer")
    torch.manual_seed(3)
    model = tv_swin.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                                    window_size=[7, 7], num_classes=10)
    return perturb_(model).to(DEVICE)


# 256: stage 4 is 8x8 (shifted in torchvision, not by the official rule of a 224 model); 256x320: 8x10;
# 224x280: 7x9 (shift zeroed along H only); 96x96: every stage map smaller than... stage 4 is 3x3; 226x230: the
# patch embedding drops the remainder.
TV_SIZES = [(256, 256), (256, 320), (224, 280), (96, 96), (226, 230)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", TV_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_torchvision_semantics_equal_torchvision(torchvision_model, size, backend):
    ours = ours_from(torchvision_model, "torchvision")
    x = images(size)
    assert relative_error(logits(ours, x, backend), logits(torchvision_model, x)) <= TOLERANCE


def test_the_comparison_sees_the_wrong_rule(torchvision_model):
    """Control: torchvision's weights under the official rule miss torchvision's logits at 256 by far more than
    the tolerance (its stage 4 does not shift; torchvision's does)."""
    ours = swin_fused.SwinTransformer(img_size=224, **NARROW)
    with pytest.warns(UserWarning, match=r"torchvision checkpoint, but the model was built with "
                                         r"semantics='official'.*Build the model with semantics='torchvision'"):
        swin_fused.load_checkpoint(ours, torchvision_model.state_dict())
    x = images((256, 256))
    assert relative_error(logits(ours.eval().to(DEVICE), x, "torch"), logits(torchvision_model, x)) > 20 * TOLERANCE


@pytest.fixture(scope="module")
def transformers_model():
    hf_swin = pytest.importorskip("transformers.models.swin.modeling_swin")
    from transformers import SwinConfig

    torch.manual_seed(4)
    config = SwinConfig(image_size=224, patch_size=4, embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8],
                        window_size=7, num_labels=10, attn_implementation="eager")
    return perturb_(hf_swin.SwinForImageClassification(config)).to(DEVICE)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [(224, 224), (256, 320)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_transformers_semantics_equal_hf(transformers_model, size, backend):
    ours = ours_from(transformers_model, "transformers")
    x = images(size)
    # A fresh copy: HF writes the clamped window back to its layers (see swin_fused.semantics).
    theirs = logits(copy.deepcopy(transformers_model), x)
    assert relative_error(logits(ours, x, backend), theirs) <= TOLERANCE


def test_transformers_semantics_do_not_stick_after_a_small_input(transformers_model):
    """HF's layers keep the clamped window after one small input; the package applies the rule on every call,
    so a 256x320 image gives what a fresh HF model gives, whatever came before."""
    ours = ours_from(transformers_model, "transformers")
    hf = copy.deepcopy(transformers_model)
    logits(ours, images((224, 224)))
    logits(hf, images((224, 224)))  # stage 4 is 7x7: HF zeroes its shift and keeps it zero
    x = images((256, 320))
    fresh = logits(copy.deepcopy(transformers_model), x)
    assert relative_error(logits(ours, x, "torch"), fresh) <= TOLERANCE
    assert relative_error(logits(hf, x), fresh) > 20 * TOLERANCE  # HF's own layers now disagree with it


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("built, run", [((256, 320), (256, 320)), ((224, 224), (256, 320))],
                         ids=["built-256x320", "built-224-run-256x320"])
def test_timm_semantics_equal_timm(built, run, backend):
    timm_swin = pytest.importorskip("timm.models.swin_transformer")
    torch.manual_seed(5)
    theirs = perturb_(timm_swin.SwinTransformer(img_size=built, drop_path_rate=0.0, strict_img_size=built == run,
                                                **NARROW)).to(DEVICE)
    ours = ours_from(theirs, "timm", img_size=built)
    x = images(run)
    assert relative_error(logits(ours, x, backend), logits(theirs, x)) <= TOLERANCE


def test_load_checkpoint_names_the_source_it_detected(torchvision_model):
    ours = swin_fused.SwinTransformer(img_size=224, **NARROW, semantics="torchvision")
    result = swin_fused.load_checkpoint(ours, torchvision_model.state_dict())
    assert result.source == "torchvision" and result.missing_keys == [] and result.unexpected_keys == []
    missing, unexpected = result  # unpacks as load_state_dict's result
    with pytest.warns(UserWarning) as caught:
        swin_fused.load_checkpoint(swin_fused.SwinTransformer(img_size=224, **NARROW, semantics="timm"),
                                   torchvision_model.state_dict())
    assert len(caught) == 1 and re.search(r"semantics='torchvision'", str(caught[0].message))


def old_transformers_layout(sd):
    """A current HF Swin state dict renamed to the layout earlier releases saved (attention.self.query/key/value,
    attention.output.dense, intermediate/output.dense, the table under attention.self, and its persistent
    relative_position_index), written out here rather than taken from transformers' conversion mapping."""
    renames = [("attention.q_proj.", "attention.self.query."), ("attention.k_proj.", "attention.self.key."),
               ("attention.v_proj.", "attention.self.value."), ("attention.o_proj.", "attention.output.dense."),
               ("attention.relative_position_bias.relative_position_bias_table",
                "attention.self.relative_position_bias_table"),
               ("mlp.fc1.", "intermediate.dense."), ("mlp.fc2.", "output.dense.")]
    out = {}
    for key, value in sd.items():
        for new, old in renames:
            key = key.replace(new, old)
        out[key] = value
        if key.endswith("attention.self.relative_position_bias_table"):
            w = 7
            coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")).flatten(1)
            rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (w - 1)
            out[key.replace("relative_position_bias_table", "relative_position_index")] = \
                rel[..., 0] * (2 * w - 1) + rel[..., 1]
    return out


def test_checkpoints_saved_by_earlier_transformers_releases(transformers_model):
    sd = old_transformers_layout(transformers_model.state_dict())
    assert any(".attention.self.query.weight" in k for k in sd) and not any("q_proj" in k for k in sd)
    ours = swin_fused.SwinTransformer(img_size=224, **NARROW, semantics="transformers")
    assert swin_fused.load_checkpoint(ours, sd).source == "transformers"
    x = images((256, 320))
    theirs = logits(copy.deepcopy(transformers_model), x)
    assert relative_error(logits(ours.eval().to(DEVICE), x, "torch"), theirs) <= TOLERANCE
    # ...and through the model's own load_state_dict (its load hook converts foreign layouts).
    again = swin_fused.SwinTransformer(img_size=224, **NARROW, semantics="transformers")
    again.load_state_dict(sd)
    assert relative_error(logits(again.eval().to(DEVICE), x, "torch"), theirs) <= TOLERANCE


def test_semantics_is_fixed_at_construction_and_foreign_keywords_get_a_hint():
    with torch.device("meta"):
        model = swin_fused.swin_tiny_patch4_window7_224(semantics="tv")
    assert model.semantics == "torchvision" and model.layers[0].blocks[1].semantics == "torchvision"
    with pytest.raises(AttributeError, match="semantics is fixed at construction.*semantics='timm'"):
        model.semantics = "timm"
    with pytest.raises(TypeError, match="stochastic_depth_prob.*is drop_path_rate here"):
        swin_fused.SwinTransformer(stochastic_depth_prob=0.2)
    with pytest.raises(TypeError, match="'pretrained'; weights load with swin_fused.load_checkpoint"):
        swin_fused.create_model("swin_t", pretrained=True)


def test_other_architectures_are_not_taken_for_swin():
    vit_like = {"patch_embed.proj.weight": torch.zeros(8, 3, 16, 16), "blocks.0.attn.qkv.weight": torch.zeros(24, 8),
                "head.weight": torch.zeros(10, 8)}
    convnext_like = {"features.0.0.weight": torch.zeros(8, 3, 4, 4), "features.1.0.block.0.weight": torch.zeros(8),
                     "classifier.2.weight": torch.zeros(10, 8)}
    for sd in (vit_like, convnext_like):
        with pytest.raises(ValueError, match="unknown Swin state-dict layout"):
            swin_fused.detect_layout(sd)
