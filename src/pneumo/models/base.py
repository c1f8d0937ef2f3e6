"""The contract every model family implements.

Input: float32 tensor (B, 1, S, S) in [0, 1] from ``pneumo.preprocess.Preprocessor`` (checked with
``check_model_input``); each model normalises intensities itself. Targets and outputs use boxes in
*model-input* pixels, xyxy; mapping to original pixels is the caller's job (``GeometryRecord``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn


@dataclass
class Target:
    """Ground truth of one image: boxes (N, 4) float32 xyxy in input pixels; label 1 = pneumonia opacity."""

    boxes: torch.Tensor
    label: int


@dataclass
class RawOutput:
    """A model's answer for one image, in model-input pixels.

    probability: image-level pneumonia score in [0, 1] (before calibration by the checkpoint's thresholds).
    boxes: float32 (N, 5) xyxy + confidence in [0, 1], descending confidence.
    heatmap: float32 (S, S) in [0, 1] over the input canvas, or None.
    """

    probability: float
    boxes: np.ndarray
    heatmap: np.ndarray | None = None


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
