"""HF transformers Swin V1 (``transformers.models.swin``: ``SwinModel``, ``SwinForImageClassification``,
``SwinBackbone``, ``SwinForMaskedImageModeling``): checkpoint layouts and the layer patch.

Size rule: ``semantics="transformers"`` (pad, then shift; a map no larger than the window on its shorter side is
one unshifted window, decided per forward from the configured window). HF writes that decision back to the layer
(``SwinLayer.set_shift_and_window_size``), so after one small input it keeps the clamped window and a zero shift
for every later input, and a clamped window smaller than the configured one makes its bias lookup fail; the
package applies the intended rule on every call instead (:mod:`swin_fused.semantics`). ``SwinBackbone`` passes
``always_partition=True``, which skips the clamp: that is ``semantics="detection"``.

Layouts (``swin.`` prefixed in the task models, bare in ``SwinModel``; ``encoder.`` / ``embeddings.`` bare in
backbones saved by earlier releases):

- ``embeddings.patch_embeddings.projection`` / ``embeddings.norm`` -> ``patch_embed.proj`` / ``patch_embed.norm``;
- ``encoder.layers.{i}.blocks.{j}``: ``layernorm_before`` / ``layernorm_after`` -> ``norm1`` / ``norm2``; the
  separate ``attention.{q,k,v}_proj`` (current releases) or ``attention.self.{query,key,value}`` (checkpoints
  saved by earlier ones) concatenated into ``attn.qkv``; ``attention.o_proj`` / ``attention.output.dense`` ->
  ``attn.proj``; the table at ``attention.relative_position_bias.relative_position_bias_table`` or
  ``attention.self.relative_position_bias_table``; ``mlp.fc1`` / ``mlp.fc2``, or ``intermediate.dense`` /
  ``output.dense``;
- ``encoder.layers.{i}.downsample`` ends stage ``i`` (official placement and concatenation order);
- ``layernorm`` -> ``norm``, ``classifier`` -> ``head``; a backbone's ``hidden_states_norms.stage{k}`` ->
  ``norm{k-1}`` (:class:`swin_fused.SwinBackbone`'s per-stage norms).

Patch: ``SwinLayer.forward`` (one GEMM for q, k and v through their concatenated weights, the fused op, then the
layer's own ``o_proj``), with HF's eager and SDPA attention alike. A call that asks for attention probabilities
(``output_attentions=True``), which the fused op never builds, or one with hooks on a module the patched layer
skips (``attention`` and its q/k/v projections) takes HF's own path.

The HF models that copy transformers < 5's SwinLayer (Donut's encoder, MaskFormer's backbone, CLAP's HTSAT audio
encoder: ``attention.self.{query,key,value}`` with the table beside them, ``attention.output``, ``intermediate`` /
``output``): their layer's ``forward`` on the fused op the same way. Donut and CLAP clamp as SwinLayer does
(``semantics="transformers"``, the configured window and shift kept); MaskFormer always partitions
(``"detection"``). ``output_attentions=True`` takes HF's path. Any other HF layer named like Swin's is left alone
with the reason.

Swin V2 (``transformers.models.swinv2``: ``Swinv2Model``, ``Swinv2ForImageClassification``, ``Swinv2Backbone``):
``Swinv2Layer.forward`` (post-norm) on the fused op with cosine attention, the continuous position bias from the
layer's ``continuous_position_bias_mlp``, q/v biases and a bias-free key (padding tokens' k is 0), and the shift
mask as HF applies it: added twice, -200. Window and shift are the layer's own, fixed by HF at construction.
"""
from __future__ import annotations

import re
import sys
from typing import Iterable, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..semantics import SEMANTICS as _RULES
from ._layouts import Layout, StateDict, rename
from ._patching import (Candidate, attend, block_norm, first, hook_reason, index_reason, instance_reason,
                        linear_reason, mlp_reader, needs_library_path, overridden, patch_of, shift_reason,
                        table_reason, v2_reason, v2_terms)

FAMILY = "transformers"
SEMANTICS = "transformers"

_BLOCK = re.compile(r"^encoder\.layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_STAGE = re.compile(r"^encoder\.layers\.(\d+)\.(downsample\..+)$")
_BACKBONE_NORM = re.compile(r"^hidden_states_norms\.stage(\d+)\.(.+)$")
_PROJECTIONS = {"q": ("attention.q_proj.", "attention.self.query."),
                "k": ("attention.k_proj.", "attention.self.key."),
                "v": ("attention.v_proj.", "attention.self.value.")}
_BLOCK_RENAMES = (
    ("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."),
    ("attention.o_proj.", "attn.proj."), ("attention.output.dense.", "attn.proj."),
    ("attention.relative_position_bias.relative_position_bias_table", "attn.relative_position_bias_table"),
    ("attention.self.relative_position_bias_table", "attn.relative_position_bias_table"),
    ("attention.self.relative_position_index", "attn.relative_position_index"),
    ("intermediate.dense.", "mlp.fc1."), ("output.dense.", "mlp.fc2."),
)
_TOP_RENAMES = (("embeddings.patch_embeddings.projection.", "patch_embed.proj."),
                ("embeddings.position_embeddings", "absolute_pos_embed"),
                ("embeddings.norm.", "patch_embed.norm."), ("layernorm.", "norm."), ("classifier.", "head."))


# ---------------------------------------------------------------------------------------------------- keys


def _bare(key: str) -> str:
    for prefix in ("swin.", "swinv2."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _is_hf(keys) -> bool:
    return any(_bare(key).startswith(("embeddings.patch_embeddings.", "encoder.layers.")) for key in keys)


def _recognise(keys: Iterable[str]) -> bool:
    keys = list(keys)
    return _is_hf(keys) and not any(_BACKBONE_NORM.match(key) for key in keys)


def _recognise_backbone(keys: Iterable[str]) -> bool:
    keys = list(keys)
    return _is_hf(keys) and any(_BACKBONE_NORM.match(key) for key in keys)


def _to_official(sd: Mapping[str, torch.Tensor]) -> StateDict:
    out: StateDict = {}
    qkv: dict = {}  # (stage, block, "weight" | "bias") -> {"q": ..., "k": ..., "v": ...}
    for key, value in sd.items():
        bare = _bare(key)
        block, stage, norm = _BLOCK.match(bare), _STAGE.match(bare), _BACKBONE_NORM.match(bare)
        if block:
            i, j, rest = block.groups()
            part = next(((p, rest[len(prefix):]) for p, prefixes in _PROJECTIONS.items() for prefix in prefixes
                         if rest.startswith(prefix)), None)
            if part is not None:
                qkv.setdefault((i, j, part[1]), {})[part[0]] = value
                continue
            key = f"layers.{i}.blocks.{j}.{rename(rest, _BLOCK_RENAMES)}"
            if key.endswith("attn.relative_position_index") and value.dim() == 1:
                side = round(value.numel() ** 0.5)
                value = value.view(side, side) if side * side == value.numel() else value
        elif stage:
            key = f"layers.{stage.group(1)}.{stage.group(2)}"
        elif norm:
            key = f"norm{int(norm.group(1)) - 1}.{norm.group(2)}"
        else:
            key = rename(bare, _TOP_RENAMES)
        out[key] = value
    for (i, j, name), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:  # an incomplete dict: keep what is there, the load reports it
            for p, v in parts.items():
                out[f"layers.{i}.blocks.{j}.attention.{p}_proj.{name}"] = v
            continue
        out[f"layers.{i}.blocks.{j}.attn.qkv.{name}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out


def _backbone_to_official(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """As :func:`_to_official`, less ``layernorm``: HF's SwinBackbone holds the final norm of its SwinModel but
    never applies it (its outputs go through ``hidden_states_norms``)."""
    return _to_official({key: value for key, value in sd.items() if not _bare(key).startswith("layernorm.")})


_V2_BLOCK_RENAMES = (
    ("layernorm_before.", "norm1."), ("layernorm_after.", "norm2."),
    ("attention.self.query.weight", "attn.q_weight"), ("attention.self.key.weight", "attn.k_weight"),
    ("attention.self.value.weight", "attn.v_weight"),
    ("attention.self.query.bias", "attn.q_bias"), ("attention.self.value.bias", "attn.v_bias"),
    ("attention.self.logit_scale", "attn.logit_scale"),
    ("attention.self.continuous_position_bias_mlp.", "attn.cpb_mlp."),
    ("attention.self.relative_coords_table", "attn.relative_coords_table"),
    ("attention.self.relative_position_index", "attn.relative_position_index"),
    ("attention.output.dense.", "attn.proj."), ("intermediate.dense.", "mlp.fc1."), ("output.dense.", "mlp.fc2."),
)


def _v2_to_official(sd: Mapping[str, torch.Tensor]) -> StateDict:
    """HF Swin V2 onto the official V2 keys: ``query`` / ``key`` / ``value`` weights concatenated into
    ``attn.qkv.weight``, their biases as ``q_bias`` / ``v_bias`` (HF's key has none: the official zero k bias)."""
    out: StateDict = {}
    for key, value in sd.items():
        bare = _bare(key)
        block, stage = _BLOCK.match(bare), _STAGE.match(bare)
        if block:
            i, j, rest = block.groups()
            key = f"layers.{i}.blocks.{j}.{rename(rest, _V2_BLOCK_RENAMES)}"
        elif stage:
            key = f"layers.{stage.group(1)}.{stage.group(2)}"
        else:
            key = rename(bare, _TOP_RENAMES)
        out[key] = value
    for key in [k for k in out if k.endswith(".attn.q_weight")]:
        base = key[: -len("q_weight")]
        parts = [base + f"{p}_weight" for p in "qkv"]
        if all(part in out for part in parts):  # an incomplete dict keeps its parts: the load reports them
            out[base + "qkv.weight"] = torch.cat([out.pop(part) for part in parts], 0)
    return out


LAYOUTS = (
    Layout("transformers-v2", "transformers-v2", _is_hf, _v2_to_official,
           "[swinv2.]embeddings.*, [swinv2.]encoder.layers.{i}.blocks.{j}.attention.self.{query,key,value,"
           "logit_scale,continuous_position_bias_mlp} (HF transformers Swin V2)", v2=True),
    Layout("transformers", SEMANTICS, _recognise, _to_official,
           "[swin.]embeddings.patch_embeddings.*, [swin.]encoder.layers.{i}.blocks.{j}.* (HF transformers)"),
    Layout("transformers-backbone", "detection", _recognise_backbone, _backbone_to_official,
           "as transformers, with hidden_states_norms.stage{k}.* (HF SwinBackbone)"),
)


# ------------------------------------------------------------------------------------------------- patching


def _bypassed(layer: nn.Module):
    attn = layer.attention
    return (("attention", attn), ("attention.q_proj", attn.q_proj), ("attention.k_proj", attn.k_proj),
            ("attention.v_proj", attn.v_proj), ("attention.relative_position_bias", attn.relative_position_bias))


def _plain_projections(attn: nn.Module) -> bool:
    """Whether q, k and v are still plain ``nn.Linear``s (their weights are concatenated into one GEMM)."""
    return type(attn.q_proj) is nn.Linear and type(attn.k_proj) is nn.Linear and type(attn.v_proj) is nn.Linear


def _attentions_requested() -> bool:
    """Whether this forward records attention probabilities (``output_attentions=True``): HF collects them with
    hooks that read the layers' outputs while a collector for them is active."""
    capturing = sys.modules.get("transformers.utils.output_capturing")
    collector = getattr(capturing, "_active_collector", None)
    outputs = collector.get() if collector is not None else None
    return bool(outputs) and "attentions" in outputs


def _attention(patch, layer: nn.Module, hidden_states: torch.Tensor, input_dimensions, always_partition: bool,
               projections, table: torch.Tensor, num_heads: int, dropout_p: float, scale: float) -> torch.Tensor:
    """The V1 layers' attention branch up to the output projection: ``layernorm_before``, one GEMM for q, k and
    v (``projections``: their Linears), the fused op at the configured window under HF's rule (or always
    partitioned): ``[B, H*W, C] -> [B, H*W, C]``."""
    H, W = input_dimensions
    B, L, C = hidden_states.shape
    configured = patch.state["configured"]
    window, shift = configured if always_partition else _RULES["transformers"].at(H, W, configured, None)
    x = block_norm(layer.layernorm_before, hidden_states).view(B, H, W, C)  # read by the F.linear below
    weight = torch.cat([p.weight for p in projections])
    bias = None if projections[0].bias is None else torch.cat([p.bias for p in projections])
    qkv = F.linear(x, weight, bias)  # one GEMM; padded tokens are zeros after the norm, so their q/k/v = bias
    out = attend(patch, qkv, table, num_heads, window, shift, pad_qkv=bias, shift_before_pad=False,
                 dropout_p=dropout_p, scale=scale, table_window=configured[0])
    return out.view(B, L, C)


def _layer_forward(layer: nn.Module, hidden_states: torch.Tensor, input_dimensions, always_partition: bool = False,
                   **kwargs):
    """HF ``SwinLayer.forward`` on the fused op: ``[B, H*W, C] -> ([B, H*W, C], None)``."""
    patch = patch_of(layer)
    attn = layer.attention
    # HF forwards other keywords (a Trainer's num_items_in_batch, output_attentions=False) only to its attention
    # function, which the fused path replaces: they change nothing here. Projections replaced after optimize()
    # (peft's LoRA wraps q_proj / v_proj) are read by weight below, so such a call takes HF's path.
    if (kwargs.get("output_attentions") or _attentions_requested() or not _plain_projections(attn)
            or needs_library_path(_bypassed(layer), attn, hidden_states)):
        return patch.call_original(layer, hidden_states, input_dimensions, always_partition, **kwargs)
    projections = (attn.q_proj, attn.k_proj, attn.v_proj)
    out = _attention(patch, layer, hidden_states, input_dimensions, always_partition, projections,
                     attn.relative_position_bias.relative_position_bias_table, attn.num_attention_heads,
                     attn.attention_dropout if attn.training else 0.0, attn.scaling)
    out = layer.dropout(attn.o_proj(out))
    hidden_states = hidden_states + layer.drop_path(out)
    hidden_states = layer.dropout(layer.mlp(layer.layernorm_after(hidden_states))) + hidden_states
    return hidden_states, None


def _check(layer: nn.Module, hf_swin, configured) -> Optional[str]:
    attn = getattr(layer, "attention", None)
    if not isinstance(attn, hf_swin.SwinAttention) or not hasattr(attn, "q_proj"):
        return ("transformers < 5 layer (attention.self.query): optimize() reproduces the current SwinLayer; "
                "its checkpoints convert (convert_state_dict)")
    bias = attn.relative_position_bias
    window = tuple(bias.window_size)
    return first(
        lambda: overridden(layer, hf_swin.SwinLayer, "forward"),
        lambda: overridden(attn, hf_swin.SwinAttention, "forward"),
        lambda: instance_reason((("", layer, ("forward", "_replicate_for_data_parallel")),
                                 ("attention.", attn, ("forward",)))),
        lambda: hook_reason(_bypassed(layer)),
        lambda: linear_reason(attn, "q_proj", "k_proj", "v_proj", "o_proj", prefix="attention."),
        *_v1_reasons(attn, ("q_proj", "k_proj", "v_proj"), window, configured, bias, attn.num_attention_heads),
    )


def _v1_reasons(owner: nn.Module, projections, window, configured, holder: nn.Module, num_heads: int):
    """The V1 layers' remaining checks, once their q/k/v (``projections`` of ``owner``) are known to be plain
    Linears: they agree on a bias, a square window, the configured shift, the standard table and index (on
    ``holder``)."""
    return (
        lambda: None if len({getattr(owner, p).bias is None for p in projections}) == 1
        else "q/k/v projections disagree on having a bias",
        lambda: None if window[0] == window[1] else f"window {window} is not square",
        lambda: shift_reason(*configured),
        lambda: table_reason(holder.relative_position_bias_table, window, num_heads),
        lambda: index_reason(holder.relative_position_index, window),
    )


def _configured_window_shift(layer: nn.Module, name: str):
    """The window and shift HF built the layer with. HF overwrites ``window_size`` / ``shift_size`` after a small
    input, so they come from the bias table's window (``attention.relative_position_bias``, or ``attention.self``
    in the copies) and, as HF's stages set them, from the layer's place in its stage (``...blocks.{j}``: odd layers
    shift by window // 2)."""
    holder = getattr(layer.attention, "relative_position_bias", None)
    table = getattr(holder if holder is not None else getattr(layer.attention, "self", None), "window_size", None)
    window = table[0] if table is not None else layer.window_size
    parent, _, index = name.rpartition(".")
    if parent.endswith("blocks") and index.isdigit():
        shift = 0 if int(index) % 2 == 0 else window // 2
    else:
        shift = layer.shift_size
    return (window, window), (shift, shift)


# ------------------------------------------------------------- the layer Donut, CLAP and MaskFormer copy

#: Models whose Swin layer is transformers < 5's SwinLayer, copied (``attention.self.{query,key,value}`` with the
#: table beside them, ``attention.output.dense``, ``intermediate`` / ``output``): module -> (layer, attention,
#: self-attention, intermediate) class names, whether the layer always partitions, and the merging class (a
#: ``SwinPatchMerging`` under another name). Donut and CLAP's HTSAT clamp the window as SwinLayer does
#: (``set_shift_and_window_size``, written back); MaskFormer never clamps.
_COPIES = {
    "transformers.models.donut.modeling_donut_swin":
        (("DonutSwinLayer", "DonutSwinAttention", "DonutSwinSelfAttention", "DonutSwinIntermediate"), False,
         "DonutSwinPatchMerging"),
    "transformers.models.clap.modeling_clap":
        (("ClapAudioLayer", "ClapAudioAttention", "ClapAudioSelfAttention", "ClapAudioIntermediate"), False,
         "ClapAudioPatchMerging"),
    "transformers.models.maskformer.modeling_maskformer_swin":
        (("MaskFormerSwinLayer", "MaskFormerSwinAttention", "MaskFormerSwinSelfAttention",
          "MaskFormerSwinIntermediate"), True, "MaskFormerSwinPatchMerging"),
}


def _copy_classes(module: nn.Module):
    """``(layer, attention, self-attention, intermediate classes, always partitions)`` where ``module`` is one
    of :data:`_COPIES`' layers (exactly, or a subclass: the checks name an overridden method); else None."""
    for name, (classes, always, _) in _COPIES.items():
        lib = sys.modules.get(name)
        found = tuple(getattr(lib, c, None) for c in classes) if lib is not None else ()
        if found and None not in found and isinstance(module, found[0]):
            return (*found, always)
    return None


def _copy_bypassed(layer: nn.Module):
    attn = layer.attention.self
    return (("attention", layer.attention), ("attention.self", attn), ("attention.self.query", attn.query),
            ("attention.self.key", attn.key), ("attention.self.value", attn.value),
            ("attention.self.dropout", attn.dropout))


def _plain_dropout(attn: nn.Module) -> bool:
    """Whether HF's attention dropout is still an ``nn.Dropout``, whose ``p`` the fused op applies."""
    return type(getattr(attn, "dropout", None)) is nn.Dropout


def _plain_self_attention(attn: nn.Module) -> bool:
    """Call-time: whether an ``attention.self`` (the copies', Swin V2's) still has plain ``nn.Linear`` query, key
    and value (read by weight) and an ``nn.Dropout`` (replaced after optimize(): HF's path)."""
    return all(type(p) is nn.Linear for p in (attn.query, attn.key, attn.value)) and _plain_dropout(attn)


def _dropout_reason(attn: nn.Module, prefix: str) -> Optional[str]:
    kind = type(getattr(attn, "dropout", None)).__name__
    return None if _plain_dropout(attn) else f"{prefix}dropout is {kind}, not nn.Dropout"


def _copy_layer_forward(layer: nn.Module, hidden_states: torch.Tensor, input_dimensions, *args, **kwargs):
    """The copied layer's ``forward(hidden_states, input_dimensions, output_attentions=False[,
    always_partition=False])`` on the fused op: ``[B, H*W, C] -> ([B, H*W, C],)``."""
    patch = patch_of(layer)
    attn = layer.attention.self
    output_attentions = args[0] if args else kwargs.get("output_attentions", False)
    if (output_attentions or not _plain_self_attention(attn)
            or needs_library_path(_copy_bypassed(layer), layer.attention, hidden_states)):
        return patch.call_original(layer, hidden_states, input_dimensions, *args, **kwargs)
    always = patch.state["always_partition"] or (args[1] if len(args) > 1 else kwargs.get("always_partition", False))
    out = _attention(patch, layer, hidden_states, input_dimensions, always, (attn.query, attn.key, attn.value),
                     attn.relative_position_bias_table, attn.num_attention_heads,
                     attn.dropout.p if attn.training else 0.0, attn.attention_head_size ** -0.5)
    hidden_states = hidden_states + layer.drop_path(layer.attention.output(out, hidden_states))
    return (hidden_states + layer.output(layer.intermediate(layer.layernorm_after(hidden_states))),)


def _copy_check(layer: nn.Module, classes, configured) -> Optional[str]:
    layer_cls, attention_cls, self_cls, _, _ = classes
    attention = getattr(layer, "attention", None)
    attn = getattr(attention, "self", None)
    if not isinstance(attn, self_cls):
        return f"attention.self is {type(attn).__name__}, not {self_cls.__name__}"
    window = tuple(attn.window_size)
    return first(
        lambda: overridden(layer, layer_cls, *(n for n in ("forward", "get_attn_mask", "maybe_pad",
                                                           "set_shift_and_window_size") if hasattr(layer_cls, n))),
        lambda: overridden(attention, attention_cls, "forward"),
        lambda: overridden(attn, self_cls, "forward"),
        lambda: instance_reason((("", layer, ("forward", "_replicate_for_data_parallel")),
                                 ("attention.", attention, ("forward",)), ("attention.self.", attn, ("forward",)))),
        lambda: hook_reason(_copy_bypassed(layer)),
        lambda: linear_reason(attn, "query", "key", "value", prefix="attention.self."),
        lambda: _dropout_reason(attn, "attention.self."),
        *_v1_reasons(attn, ("query", "key", "value"), window, configured, attn, attn.num_attention_heads),
    )


# ------------------------------------------------------------------------------------------------ Swin V2

#: HF's Swin V2 adds its -100 shift mask to the scores twice.
_V2_MASK_VALUE = -200.0


def _v2_bypassed(layer: nn.Module):
    attn = layer.attention.self
    return (("attention", layer.attention), ("attention.self", attn), ("attention.self.query", attn.query),
            ("attention.self.key", attn.key), ("attention.self.value", attn.value),
            ("attention.self.dropout", attn.dropout))


def _v2_layer_forward(layer: nn.Module, hidden_states: torch.Tensor, input_dimensions,
                      output_attentions: Optional[bool] = False, **kwargs):
    """HF ``Swinv2Layer.forward`` on the fused op: ``[B, H*W, C] -> ([B, H*W, C],)``."""
    patch = patch_of(layer)
    attn = layer.attention.self
    if (output_attentions or kwargs.get("output_attentions") or _attentions_requested()
            or not _plain_self_attention(attn)
            or needs_library_path(_v2_bypassed(layer), layer.attention, hidden_states)):
        return patch.call_original(layer, hidden_states, input_dimensions, output_attentions, **kwargs)
    H, W = input_dimensions
    B, L, C = hidden_states.shape
    window, shift = (layer.window_size, layer.window_size), (layer.shift_size, layer.shift_size)
    weight = torch.cat([attn.query.weight, attn.key.weight, attn.value.weight])
    bias = None if attn.query.bias is None else torch.cat(
        [attn.query.bias, torch.zeros_like(attn.query.bias), attn.value.bias])  # the key has no bias
    qkv = F.linear(hidden_states.view(B, H, W, C), weight, bias)  # padded tokens are zeros: their q/k/v = bias
    table, tau = v2_terms(attn.logit_scale, attn.continuous_position_bias_mlp, attn.relative_coords_table,
                          attn.num_attention_heads)
    out = attend(patch, qkv, table, attn.num_attention_heads, window, shift, pad_qkv=bias, shift_before_pad=False,
                 dropout_p=attn.dropout.p if attn.training else 0.0, scale=None, table_window=window,
                 cosine_scale=tau, mask_value=_V2_MASK_VALUE)
    out = layer.attention.output(out.view(B, L, C), hidden_states)
    hidden_states = hidden_states + layer.drop_path(layer.layernorm_before(out))
    out = layer.output(layer.intermediate(hidden_states))
    return (hidden_states + layer.drop_path(layer.layernorm_after(out)),)


def _v2_check(layer: nn.Module, hf_v2) -> Optional[str]:
    attention = getattr(layer, "attention", None)
    attn = getattr(attention, "self", None)
    if not isinstance(attn, hf_v2.Swinv2SelfAttention):
        return f"attention is {type(attn).__name__}, not transformers' Swinv2SelfAttention"
    window, shift = tuple(attn.window_size), (layer.shift_size, layer.shift_size)
    return first(
        lambda: overridden(layer, hf_v2.Swinv2Layer, "forward", "get_attn_mask", "maybe_pad"),
        lambda: overridden(attention, hf_v2.Swinv2Attention, "forward"),
        lambda: overridden(attn, hf_v2.Swinv2SelfAttention, "forward"),
        lambda: instance_reason((("", layer, ("forward", "get_attn_mask", "_replicate_for_data_parallel")),
                                 ("attention.", attention, ("forward",)), ("attention.self.", attn, ("forward",)))),
        lambda: hook_reason(_v2_bypassed(layer)),
        lambda: linear_reason(attn, "query", "key", "value", prefix="attention.self."),
        lambda: _dropout_reason(attn, "attention.self."),
        lambda: None if attn.key.bias is None and (attn.query.bias is None) == (attn.value.bias is None)
        else "query/key/value biases are not Swin V2's (q and v, or neither; never k)",
        lambda: None if window == (layer.window_size, layer.window_size) else
        f"layer window {layer.window_size} differs from its attention's window {window}",
        lambda: shift_reason(window, shift),
        lambda: v2_reason(attn.logit_scale, attn.continuous_position_bias_mlp, attn.relative_coords_table, window,
                          attn.num_attention_heads),
        lambda: index_reason(attn.relative_position_index, window),
    )


#: ``SwinPatchMerging`` and the copies' (normalise, then reduce): (module, class name).
_V1_MERGES = (("transformers.models.swin.modeling_swin", "SwinPatchMerging"),
              *((module, merge) for module, (_, _, merge) in _COPIES.items()))


def merge_norm(module: nn.Module):
    """``(norm, reader)`` of HF's merging layers: ``SwinPatchMerging`` (and the copies') normalises, then
    reduces; ``Swinv2PatchMerging`` reduces, then normalises."""
    kind = type(module)
    if (kind.__module__, kind.__name__) in _V1_MERGES and kind is getattr(sys.modules.get(kind.__module__),
                                                                             kind.__name__, None):
        return module.norm, (module, "reduction", None)
    hf_v2 = sys.modules.get("transformers.models.swinv2.modeling_swinv2")
    if hf_v2 is not None and type(module) is hf_v2.Swinv2PatchMerging:
        return module.norm, None
    return None


def classify(module: nn.Module, name: str = "") -> Optional[Candidate]:
    """HF's SwinLayer or Swinv2Layer, another HF library's layer named like them (left alone), or None."""
    hf_swin = sys.modules.get("transformers.models.swin.modeling_swin")
    if hf_swin is not None and isinstance(module, hf_swin.SwinLayer):
        configured = _configured_window_shift(module, name)
        return Candidate(FAMILY, "forward", _layer_forward, lambda: _check(module, hf_swin, configured),
                         state=lambda: {"configured": configured},
                         # layernorm_before -> the qkv (asked for in _layer_forward: HF's own forward builds its
                         # mask in that output's dtype); layernorm_after -> mlp
                         norms=lambda parent: ((module.layernorm_before, None),
                                               (module.layernorm_after, mlp_reader(getattr(module, "mlp", None),
                                                                                   getattr(hf_swin, "SwinMLP", None)))))
    hf_v2 = sys.modules.get("transformers.models.swinv2.modeling_swinv2")
    if hf_v2 is not None and isinstance(module, hf_v2.Swinv2Layer):
        return Candidate(FAMILY, "forward", _v2_layer_forward, lambda: _v2_check(module, hf_v2),
                         norms=lambda parent: ((module.layernorm_before, None), (module.layernorm_after, None)))
    classes = _copy_classes(module)
    if classes is not None:
        configured = _configured_window_shift(module, name)
        always, intermediate_cls = classes[-1], classes[3]
        return Candidate(FAMILY, "forward", _copy_layer_forward, lambda: _copy_check(module, classes, configured),
                         state=lambda: {"configured": configured, "always_partition": always},
                         norms=lambda parent: ((module.layernorm_before, None),
                                               (module.layernorm_after, mlp_reader(getattr(module, "intermediate",
                                                                                           None),
                                                                                   intermediate_cls, "dense"))))
    kind = type(module)
    if kind.__module__.startswith("transformers.") and kind.__name__.lower().endswith(("swinlayer", "swinv2layer")):
        reason = (f"{kind.__name__} ({kind.__module__}) is not transformers' SwinLayer, Swinv2Layer or a copy "
                  f"optimize() knows: not reproduced")
        return Candidate(FAMILY, "forward", None, lambda: reason)
    return None
