"""Analytic work of the window-attention op: the Swin stage shapes, FLOPs and the bytes a fused kernel moves.

One place for the numbers the ``roofline`` and ``bench`` commands and ``bench/`` divide timings by, so they
never disagree. Counts are of *useful* work at the minimum traffic a fused kernel can achieve:

- forward FLOPs: ``4 N^2 hd`` per (window, head): ``Q K^T`` and ``P V``, ``2 N^2 hd`` each (a multiply-add
  is 2 FLOPs here, unlike the paper's ``flops()`` convention); softmax and bias adds are not counted;
- backward FLOPs: 2.5x the forward (recompute ``Q K^T``, then ``dV``, ``dP``, ``dQ``, ``dK``: five
  ``N^2 hd`` matmuls against the forward's two);
- forward bytes: qkv read once, out written once, the bias table read once, the fp32 log-sum-exp written
  (when gradients are needed);
- backward bytes: qkv, dout and lse read, dqkv written, the fp32 table gradient written (the backward derives
  delta = rowsum(P * dP) from its own recomputed probabilities, so it does not read the output);
- Swin V2's scaled cosine attention (``cosine=True``) adds the per-token norms of q and k: forward
  ``6 hd`` per (token, head) (the squared norms, ``2 hd`` each, and the scaling, ``hd`` each); backward
  ``14 hd`` (their recompute, then the chain rule through each norm, ``dq = (dq' - q' (q'.dq')) / |q|``,
  ``4 hd`` each for q and k); bytes: the fp32 ``[heads]`` temperature read (and its gradient written). The
  ``N^2`` elementwise terms (the temperature's multiply, its gradient's reduction) are not counted, like
  softmax. Next to the ``4 N^2 hd`` of the matmuls this is ``1.5 / N`` of the forward.

Padding is virtual (padded tokens cost FLOPs, not bytes): windows are counted on the padded map, bytes on
the real one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Tuple

import torch

from ..geometry import effective_window_shift, padded_size

__all__ = [
    "OpShape", "OpCost", "stage_shapes", "benchmark_shapes", "shapes_by_name", "window_attention_cost",
    "model_attention_cost", "BACKWARD_FLOP_RATIO", "V2_BENCHMARK_MODELS",
    "v2_benchmark_shapes",
]

#: Backward matmul work relative to the forward's (see the module docstring).
BACKWARD_FLOP_RATIO = 2.5


@dataclass(frozen=True)
class OpShape:
    """One window-attention call of a Swin stage (batch excluded)."""

    name: str  # e.g. "T/S s1 56x56 C96 h3 w7 shift3"
    H: int
    W: int
    dim: int
    heads: int
    window: Tuple[int, int]
    shift: Tuple[int, int]

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def table_rows(self) -> int:
        return (2 * self.window[0] - 1) * (2 * self.window[1] - 1)

    def qkv_shape(self, batch: int) -> Tuple[int, int, int, int]:
        return (batch, self.H, self.W, 3 * self.dim)


@dataclass(frozen=True)
class OpCost:
    """FLOPs and minimum bytes of one call; ``intensity`` is FLOPs per byte."""

    flops: float
    bytes: float

    @property
    def intensity(self) -> float:
        return self.flops / self.bytes

    def __add__(self, other: "OpCost") -> "OpCost":
        return OpCost(self.flops + other.flops, self.bytes + other.bytes)


def _stage_layout(model_name: str, img_size: Optional[int] = None):
    """Yield ``(stage, side, dim, heads, {(window, shift): number of blocks})`` per stage of a named config
    (V1 or V2, or an alias of one: :func:`swin_fused.configs.model_config`)."""
    from ..configs import model_config

    cfg = model_config(model_name)
    img = cfg["img_size"] if img_size is None else img_size
    if isinstance(img, bool) or not isinstance(img, int) or img < 4:
        raise ValueError(f"img_size must be an int >= 4, got {img!r}")
    res = -(-img // 4)  # patch embedding pads to a multiple of 4
    for stage, (heads, depth) in enumerate(zip(cfg["num_heads"], cfg["depths"])):
        configured = cfg["window_size"]
        blocks = {}  # (window, shift) -> number of blocks
        for j in range(depth):
            window, shift = effective_window_shift((res, res), configured, 0 if j % 2 == 0 else configured // 2)
            blocks[(window, shift)] = blocks.get((window, shift), 0) + 1
        yield stage, res, cfg["embed_dim"] * 2**stage, heads, blocks
        res = -(-res // 2)  # patch merging pads odd sizes


def stage_shapes(model_name: str, tag: Optional[str] = None, img_size: Optional[int] = None) -> List[OpShape]:
    """The distinct (stage, window, shift) window-attention shapes of a named config (default: nominal size)."""
    tag = tag or model_name
    shapes = []
    for stage, res, dim, heads, blocks in _stage_layout(model_name, img_size):
        for window, shift in blocks:
            name = f"{tag} s{stage + 1} {res}x{res} C{dim} h{heads} w{window[0]} shift{shift[0]}"
            shapes.append(OpShape(name, res, res, dim, heads, window, shift))
    return shapes


def model_attention_cost(model_name: str, batch: int, dtype: torch.dtype, img_size: Optional[int] = None,
                         backward: bool = False) -> OpCost:
    """Analytic window-attention work of every block of a model (fused op, forward or backward; V2 models with
    the cosine term)."""
    total = OpCost(0.0, 0.0)
    from ..configs import is_v2

    cosine = is_v2(model_name)
    for stage, res, dim, heads, blocks in _stage_layout(model_name, img_size):
        for (window, shift), count in blocks.items():
            shape = OpShape("", res, res, dim, heads, window, shift)
            cost = window_attention_cost(shape, batch, dtype, backward=backward, saves_lse=backward, cosine=cosine)
            total = total + OpCost(cost.flops * count, cost.bytes * count)
    return total


#: The op shapes benchmarked by default: Swin-T/S (same stages), Swin-B at 224 and Swin-B at 384.
_BENCHMARK_MODELS = (
    ("swin_tiny_patch4_window7_224", "T/S"),
    ("swin_base_patch4_window7_224", "B"),
    ("swin_base_patch4_window12_384", "B384"),
)


def benchmark_shapes(models: Iterable[Tuple[str, str]] = _BENCHMARK_MODELS) -> List[OpShape]:
    """Stage shapes of Swin-T/S, Swin-B and Swin-B-384 (both shift values where a stage has them)."""
    return [shape for name, tag in models for shape in stage_shapes(name, tag)]


#: Swin V2 op shapes benchmarked by default: SwinV2-T/S and -B at 256 with windows 8 and 16, SwinV2-B at 384 with
#: window 24 (the 12to24_192to384 fine-tune), stages 1 and 3 (the ones with the most windows and the most heads).
V2_BENCHMARK_MODELS = (
    ("swinv2_tiny_patch4_window8_256", "V2-T/S"),
    ("swinv2_tiny_patch4_window16_256", "V2-T/S"),
    ("swinv2_base_patch4_window8_256", "V2-B"),
    ("swinv2_base_patch4_window16_256", "V2-B"),
    ("swinv2_base_patch4_window12to24_192to384", "V2-B384"),
)


def v2_benchmark_shapes(models: Iterable[Tuple[str, str]] = V2_BENCHMARK_MODELS, stages: Iterable[int] = (1, 3),
                        shifted_only: bool = True) -> List[OpShape]:
    """Distinct stage shapes of the Swin V2 configs, ``stages`` (1-based) only, e.g. ``V2-T/S s1 64x64 C96 h3 w8
    shift4``; ``shifted_only``: a stage's shifted block where it has one (the same call as the unshifted block
    plus the mask), else both. A shape two configs share is listed once."""
    keep = {f" s{stage} " for stage in stages}
    shapes = {}
    for name, tag in models:
        found = [s for s in stage_shapes(name, tag) if any(part in s.name for part in keep)]
        for shape in found:
            if shifted_only and not any(shape.shift) and any(
                    any(other.shift) and other.H == shape.H and other.window == shape.window for other in found):
                continue
            shapes.setdefault(shape.name, shape)
    return list(shapes.values())


def _elt(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def window_attention_cost(
    shape: OpShape,
    batch: int,
    dtype: torch.dtype,
    backward: bool = False,
    saves_lse: bool = True,
    table_dtype: torch.dtype = torch.float32,
    cosine: bool = False,
) -> OpCost:
    """Analytic FLOPs and minimum bytes of the fused forward (or backward) at ``batch``; ``cosine``: Swin V2's
    scaled cosine attention (per-token norms of q and k, the ``[heads]`` temperature)."""
    wh, ww = shape.window
    N = wh * ww
    n_windows = batch * (padded_size(shape.H, wh) // wh) * (padded_size(shape.W, ww) // ww)
    fwd_flops = 4.0 * N * N * shape.head_dim * n_windows * shape.heads
    tokens = batch * shape.H * shape.W
    e = _elt(dtype)
    qkv_bytes = tokens * 3 * shape.dim * e
    out_bytes = tokens * shape.dim * e
    table_bytes = shape.table_rows * shape.heads * _elt(table_dtype)
    lse_bytes = n_windows * shape.heads * N * 4  # fp32
    # cosine: per (token, head) of the padded map, see the module docstring; the fp32 temperature per head
    norm_flops = (14.0 if backward else 6.0) * shape.head_dim * n_windows * N * shape.heads if cosine else 0.0
    tau_bytes = (2 if backward else 1) * shape.heads * 4 if cosine else 0
    if not backward:
        return OpCost(fwd_flops + norm_flops,
                      qkv_bytes + out_bytes + table_bytes + (lse_bytes if saves_lse else 0) + tau_bytes)
    # read qkv, dout, lse, table; write dqkv and the fp32 table gradient
    moved = qkv_bytes + out_bytes + lse_bytes + table_bytes + qkv_bytes + shape.table_rows * shape.heads * 4
    return OpCost(BACKWARD_FLOP_RATIO * fwd_flops + norm_flops, moved + tau_bytes)


def shapes_by_name() -> Dict[str, OpShape]:
    """``{shape.name: shape}`` of :func:`benchmark_shapes` (for command-line lookups)."""
    return {s.name: s for s in benchmark_shapes()}
