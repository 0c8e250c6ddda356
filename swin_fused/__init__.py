"""swin_fused: the Swin Transformer with its whole window-attention path fused into Triton kernels.

Quick start::

    from swin_fused import swin_tiny_patch4_window7_224
    model = swin_tiny_patch4_window7_224().cuda()   # Triton kernels on CUDA, PyTorch elsewhere

Importing the package never touches CUDA or compiles a kernel.
"""
from .backbone import SwinBackbone
from .backend import get_backend, set_backend, use_backend
from .configs import (
    MODEL_ALIASES,
    MODEL_CONFIGS,
    PAPER_TABLE,
    create_model,
    list_models,
    resolve_model_name,
    swin_base_patch4_window7_224,
    swin_base_patch4_window12_384,
    swin_large_patch4_window7_224,
    swin_large_patch4_window12_384,
    swin_small_patch4_window7_224,
    swin_tiny_patch4_window7_224,
)
from .functional import window_attention
from .model import (
    BasicLayer,
    PatchEmbed,
    PatchMerging,
    SwinBlock,
    SwinTransformer,
    SwinTransformerBlock,
    WindowAttention,
)
from .model_v2 import (V2_CONFIGS, BasicLayerV2, PatchMergingV2, SwinTransformerBlockV2, SwinTransformerV2,
                       WindowAttentionV2, swinv2_base_patch4_window8_256, swinv2_base_patch4_window12to16_192to256,
                       swinv2_base_patch4_window12to24_192to384, swinv2_base_patch4_window16_256,
                       swinv2_large_patch4_window12to16_192to256, swinv2_large_patch4_window12to24_192to384,
                       swinv2_small_patch4_window8_256, swinv2_small_patch4_window16_256,
                       swinv2_tiny_patch4_window8_256, swinv2_tiny_patch4_window16_256)
from .interop import (LAYOUTS, CheckpointError, LoadResult, OptimizeReport, convert_state_dict, detect_layout,
                      load_checkpoint, optimize, save_checkpoint)
from .semantics import SEMANTICS, SizeRule, size_rule

__version__ = "0.1.0"

__all__ = [
    "SwinTransformer",
    "SwinBackbone",
    "SEMANTICS",
    "SizeRule",
    "size_rule",
    "LAYOUTS",
    "LoadResult",
    "SwinTransformerBlock",
    "SwinBlock",
    "WindowAttention",
    "PatchEmbed",
    "PatchMerging",
    "BasicLayer",
    "window_attention",
    "load_checkpoint",
    "save_checkpoint",
    "convert_state_dict",
    "detect_layout",
    "CheckpointError",
    "optimize",
    "OptimizeReport",
    "set_backend",
    "get_backend",
    "use_backend",
    "create_model",
    "list_models",
    "resolve_model_name",
    "MODEL_CONFIGS",
    "MODEL_ALIASES",
    "PAPER_TABLE",
    "swin_tiny_patch4_window7_224",
    "swin_small_patch4_window7_224",
    "swin_base_patch4_window7_224",
    "swin_base_patch4_window12_384",
    "swin_large_patch4_window7_224",
    "swin_large_patch4_window12_384",
    "SwinTransformerV2", "SwinTransformerBlockV2", "WindowAttentionV2", "PatchMergingV2", "BasicLayerV2",
    "V2_CONFIGS", *V2_CONFIGS,
]
