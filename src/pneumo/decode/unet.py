"""``unet`` without torch: its config and the decoding of (image probability, opacity map) into a ``RawOutput``.

Shared by the torch model (``pneumo.models.unet``) and the ONNX backend, so both post-process alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pneumo.decode.common import finish_boxes
from pneumo.types import RawOutput


@dataclass
class UNetConfig:
    """Settings of the ``unet`` family (sizes in model-input pixels unless stated)."""

    encoder: str = "resnet18"  # "resnet18" | "resnet34" | "efficientnet-lite0"
    encoder_depth: int = 5  # encoder stages used (3-5); 5 reaches stride 32
    pretrained: bool = False  # ImageNet init (efficientnet-lite0 only)
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16)  # coarse -> fine, one per skip merge
    input_mean: float | None = None  # intensity normalisation; None: 0.5/0.25, ImageNet grey for efficientnet
    input_std: float | None = None
    lung_prior: str = "filter"  # "off" | "filter" | "input"
    prior_floor: float = 0.05  # prior values below this are outside the lung field
    seg_weight: float = 1.0  # weight of (pixel BCE + soft Dice)
    dice_weight: float = 1.0  # weight of soft Dice inside the segmentation term
    cls_weight: float = 1.0  # weight of the image-level BCE
    cls_pos_weight: float | None = None  # BCE pos_weight of the image label (e.g. n_neg / n_pos)
    dropout: float = 0.2  # before the image-level head
    mask_threshold: float = 0.5  # probability threshold of the map for boxes
    min_box_area_fraction: float = 0.002  # components smaller than this fraction of S*S are dropped
    max_boxes: int = 10


def outputs_from_maps(prob_maps: np.ndarray, image_probs: list[float], config: UNetConfig) -> list[RawOutput]:
    """Post-processing shared by the torch model and the ONNX backend: (B, S, S) opacity probability maps
    (already filtered by the prior) and (B,) image probabilities -> one RawOutput each (boxes = connected
    components of the thresholded map, in input pixels; heatmap = the map)."""
    from pneumo.postprocess import mask_to_boxes

    min_area = config.min_box_area_fraction * prob_maps.shape[-1] * prob_maps.shape[-2]
    outputs = []
    for prob_map, p in zip(prob_maps, image_probs):
        boxes = mask_to_boxes(prob_map, threshold=config.mask_threshold, min_area=min_area)
        boxes = finish_boxes(boxes, config.max_boxes)
        heatmap = np.clip(prob_map, 0.0, 1.0).astype(np.float32)
        outputs.append(RawOutput(probability=float(p), boxes=boxes, heatmap=heatmap))
    return outputs
