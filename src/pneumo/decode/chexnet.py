"""``chexnet`` without torch: its config and the decoding of (probability, Grad-CAM heatmap) into a ``RawOutput``.

Shared by the torch model (``pneumo.models.chexnet``) and the ONNX backend, so both post-process alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pneumo.decode.common import finish_boxes
from pneumo.types import RawOutput


@dataclass
class CheXNetConfig:
    """Settings of the ``chexnet`` family."""

    backbone: str = "densenet121"  # "densenet121" | "efficientnet-lite0"
    pretrained: bool = False  # ImageNet init (efficientnet-lite0 only)
    input_mean: float | None = None  # None: 0.5/0.25, ImageNet grey stats for efficientnet-lite0
    input_std: float | None = None
    pos_weight: float | None = None  # BCE pos_weight (e.g. n_neg / n_pos)
    dropout: float = 0.0  # before the classifier
    memory_efficient: bool = False  # DenseNet gradient checkpointing: less memory, slower
    cam_threshold: float = 0.5  # heatmap threshold for boxes
    box_reduce: str = "mean"  # component heat = "mean" or "max" of the heatmap over the component
    min_box_area_fraction: float = 0.002  # components smaller than this fraction of S*S are dropped
    max_boxes: int = 5


def outputs_from_cams(probs: list[float], cams: np.ndarray, config: CheXNetConfig) -> list[RawOutput]:
    """Post-processing shared by the torch model and the ONNX backend: (B,) probabilities and (B, S, S)
    heatmaps in [0, 1] -> one RawOutput each (boxes from the thresholded heatmap, confidence x probability)."""
    from pneumo.postprocess import heatmap_to_boxes

    height, width = cams.shape[-2:]
    min_area = config.min_box_area_fraction * height * width
    outputs = []
    for p, cam in zip(probs, cams):
        heatmap = np.asarray(cam, dtype=np.float32)
        boxes = heatmap_to_boxes(
            heatmap, (height, width), threshold=config.cam_threshold, min_area=min_area, reduce=config.box_reduce
        )
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 5).copy()
        boxes[:, 4] *= p
        outputs.append(RawOutput(probability=float(p), boxes=finish_boxes(boxes, config.max_boxes), heatmap=heatmap))
    return outputs
