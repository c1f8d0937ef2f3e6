"""Per family: which graph is exported and how its ONNX outputs become ``RawOutput``s.

The graphs are thin wrappers around the torch model's own methods, so nothing about the network is copied;
the ONNX outputs go through the *same* post-processing function as the torch ``infer``
(``pneumo.decode``: ``chexnet.outputs_from_cams``, ``unet.outputs_from_maps``, ``maskrcnn.output_from_detections``).

The decoding side (output names, decode functions, config classes) is torch-free in
``pneumo.export.decoders``; this module adds the torch graphs for the exporter.

* ``chexnet``: ``probability`` (B,) and ``heatmap`` (B, S, S). The heatmap is Grad-CAM computed without
  autograd: the logit is ``w . mean_hw(A) + b``, so d logit / d A_c = w_c / (h w) at every position and the
  Grad-CAM channel weights (the spatial mean of that gradient) are exactly ``w_c / (h w)``. The same
  ``chexnet.cam_heatmaps`` then upsamples and normalises the map.
* ``unet``: ``probability`` (B,) and ``prob_map`` (B, S, S) from ``UNetModel.probability_maps`` (prior filter
  included); boxes come from connected components in numpy.
* ``maskrcnn``: the torchvision detector (RPN, ROI heads, NMS) for ONE image: ``boxes`` (N, 4) xyxy input px,
  ``scores`` (N,), ``masks`` (N, M, M) on each box's RoI grid (M = 28); batches run image by image. The masks
  are pasted onto the image in numpy (``maskrcnn.paste_masks``): torchvision's pasting exports as an ONNX
  ``Loop`` over the boxes that cost ~12 % of the graph's time in ONNX Runtime (and that OpenVINO cannot read).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pneumo.export.decoders import INPUT_NAME, Runner, decoder
from pneumo.models.base import PneumoModel, RawOutput

__all__ = ["INPUT_NAME", "FamilyAdapter", "adapter", "CheXNetGraph", "UNetGraph", "MaskRCNNGraph"]


class CheXNetGraph(nn.Module):
    """(B, 1, S, S) in [0, 1] -> (probability (B,), Grad-CAM heatmap (B, S, S) in [0, 1])."""

    def __init__(self, model: PneumoModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from pneumo.models.chexnet import cam_heatmaps

        acts = self.model.activations(images)
        logits = self.model._logits(acts)
        linear = self.model.classifier[-1]
        weights = (linear.weight[0] / (acts.shape[2] * acts.shape[3]))[None, :, None, None]
        return torch.sigmoid(logits), cam_heatmaps(acts, weights, (images.shape[-2], images.shape[-1]))


class UNetGraph(nn.Module):
    """(B, 1, S, S) in [0, 1] -> (image probability (B,), opacity probability map (B, S, S))."""

    def __init__(self, model: PneumoModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prob_maps, image_probs = self.model.probability_maps(images)
        return image_probs, prob_maps


class MaskRCNNGraph(nn.Module):
    """(1, 1, S, S) in [0, 1] -> (boxes (N, 4) xyxy input px, scores (N,), mask probabilities (N, M, M) on
    each box's RoI grid, not pasted)."""

    def __init__(self, model: PneumoModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        detection = self.model.detector([image[0]])[0]
        return detection["boxes"], detection["scores"], detection["masks"][:, 0]


@dataclass(frozen=True)
class FamilyAdapter:
    """How one family is exported and decoded.

    graph: torch model -> the module to export; outputs: its output names; dynamic_batch: whether the batch axis
    is dynamic (else the graph takes one image); decode: (session runner, (B, 1, S, S) float32 images, family
    config) -> one RawOutput per image.
    """

    graph: Callable[[PneumoModel], nn.Module]
    outputs: tuple[str, ...]
    dynamic_batch: bool
    decode: Callable[[Runner, np.ndarray, Any], list[RawOutput]]
    heatmap: str = "onnx"
    layout: int = 1


_GRAPHS: dict[str, Callable[[PneumoModel], nn.Module]] = {
    "chexnet": CheXNetGraph, "unet": UNetGraph, "maskrcnn": MaskRCNNGraph,
}


def adapter(family: str) -> FamilyAdapter:
    """The adapter of ``family``: its graph plus its torch-free ``Decoder`` (``ConfigError`` if not exportable)."""
    found = decoder(family)
    return FamilyAdapter(_GRAPHS[family], found.outputs, found.dynamic_batch, found.decode, found.heatmap, found.layout)
