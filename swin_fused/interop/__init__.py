"""Every Swin source, one module each: how to read its checkpoints and how to put its models on the fused op.

=================  =====================================================================================
module             library
=================  =====================================================================================
``official``       microsoft/Swin-Transformer's classification code (the package's own layout)
``detection``      the official detection / segmentation backbones, and mmdet's / mmseg's
``timm``           ``timm.models.swin_transformer``
``torchvision``    ``torchvision.models.swin_t/s/b``
``transformers``   HF transformers' ``transformers.models.swin``
=================  =====================================================================================

Each module holds its library's whole story, in the same order:

- ``FAMILY`` and ``SEMANTICS``: the name in reports, and the ``semantics=`` that reproduces the library's
  outputs at every size (the size rules themselves are in :mod:`swin_fused.semantics`, beside each other,
  because the package's own model applies them too);
- ``LAYOUTS``: how its state dicts are recognised and renamed onto the official keys
  (:class:`._layouts.Layout`);
- the patched methods, the checks that decide whether a block can be patched, and ``classify(module, name)``,
  which returns a :class:`._patching.Candidate` for a module of the library (or None), naming the block's
  LayerNorms for the fused norm kernel (``norms``) with the Linear, if any, that alone reads each one's output;
  ``merge_norm(module)`` does the same for the library's merging layer.

What they share is written once: :mod:`._patching` (the report, installing / undoing / replicating a patch,
the call-time fallback to the library's path, the common checks), :mod:`._checkpoints` (file I/O, unwrapping,
the all-or-nothing load, messages) and :mod:`.optimize` (the walk over a model).

Adding a library: copy the module whose library is closest (``torchvision.py`` patches one attention module;
``timm.py`` a block method; ``transformers.py`` a layer whose projections are separate Linears), give it a
``SizeRule`` in :mod:`swin_fused.semantics` if none fits, and add it to ``ADAPTERS`` in :mod:`.optimize` and to
``_REGISTRY`` in :mod:`._checkpoints`.
"""
from .. import backbone as _backbone
from .. import model as _model
from ._checkpoints import (LAYOUTS, CheckpointError, LoadResult, convert_foreign_keys_in_place, convert_state_dict,
                           detect_layout, load_checkpoint, save_checkpoint)
from ._patching import OptimizeReport
from .optimize import optimize

# The model modules never import this package: they call back through these hooks.
_model.STATE_DICT_CONVERTERS.append(convert_foreign_keys_in_place)
_backbone.CHECKPOINT_LOADERS.append(load_checkpoint)

__all__ = ["LAYOUTS", "CheckpointError", "LoadResult", "OptimizeReport", "convert_state_dict", "detect_layout",
           "load_checkpoint", "optimize", "save_checkpoint"]
