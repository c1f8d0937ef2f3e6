"""The contract every model family implements.

Input: float32 tensor (B, 1, S, S) in [0, 1] from ``pneumo.preprocess.Preprocessor`` (checked with
``check_model_input``); each model normalises intensities itself. Targets and outputs use boxes in
*model-input* pixels, xyxy; mapping to original pixels is the caller's job (``GeometryRecord``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from pneumo.types import RawOutput, Target

__all__ = ["PneumoModel", "RawOutput", "Target"]


class PneumoModel(nn.Module):
    """Base class of the registered families (``unet``, ``maskrcnn``, ``chexnet``)."""

    family: ClassVar[str] = ""

    def compute_loss(self, images: torch.Tensor, targets: list[Target]) -> dict[str, torch.Tensor]:
        """Training losses for a batch; the dict holds ``"loss"`` (the total to minimise) and its parts."""
        raise NotImplementedError

    @torch.no_grad()
    def infer(self, images: torch.Tensor) -> list[RawOutput]:
        """Eval-mode prediction for a batch (B, 1, S, S) -> one RawOutput per image."""
        raise NotImplementedError
