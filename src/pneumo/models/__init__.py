"""Model families behind one contract (``base.PneumoModel``) and one registry.

Importing this package registers the built-in families ``unet``, ``maskrcnn`` and ``chexnet``.
"""

from pneumo.models.base import PneumoModel, RawOutput, Target
from pneumo.models.registry import config_class, create_model, list_models, model_class, register_family

# registration side effects: each module decorates its model class with @register_family
from pneumo.models import chexnet as _chexnet  # noqa: E402,F401
from pneumo.models import maskrcnn as _maskrcnn  # noqa: E402,F401
from pneumo.models import unet as _unet  # noqa: E402,F401

__all__ = [
    "PneumoModel",
    "RawOutput",
    "Target",
    "config_class",
    "create_model",
    "list_models",
    "model_class",
    "register_family",
]
