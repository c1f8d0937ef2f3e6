"""What every predictor (checkpoint, ensemble, baseline) shares: flip test-time augmentation, operating
thresholds and the final ``Prediction``.

Boxes are float32 ``(N, 5)`` xyxy + confidence; ``pneumo.types.ImageOutput`` holds them in *original* pixels,
one array per test-time view (the plain image, and its horizontal flip already flipped back).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pneumo.postprocess import as_boxes, clip_boxes, sort_by_confidence
from pneumo.types import Prediction, array_to_boxes

#: threshold keys a checkpoint stores (see ``pneumo.training.thresholds``) and their neutral values
NEUTRAL_THRESHOLDS: dict[str, float] = {"box_threshold": 0.0, "gate_threshold": 0.0, "probability_threshold": 0.5}


def flip_boxes_horizontally(boxes: np.ndarray, width: float) -> np.ndarray:
    """Mirror (N, 4+) xyxy boxes of an image ``width`` px wide about its vertical mid-line (x -> width - x)."""
    columns = 5 if np.ndim(boxes) == 2 and np.shape(boxes)[1] >= 5 else 4
    out = as_boxes(boxes, columns).copy()
    out[:, 0], out[:, 2] = width - out[:, 2], width - out[:, 0]
    return out


def apply_operating_thresholds(
    probability: float, boxes: np.ndarray, thresholds: Mapping[str, float], image_size: tuple[int, int]
) -> np.ndarray:
    """The checkpoint's operating point -> (K, 5) boxes to show.

    Every box is dropped when ``probability < gate_threshold``; otherwise boxes with confidence
    ``>= box_threshold`` are kept, clipped to the image (``image_size`` = (height, width)), empty ones removed,
    sorted by descending confidence.
    """
    gate = float(thresholds.get("gate_threshold", NEUTRAL_THRESHOLDS["gate_threshold"]))
    box_threshold = float(thresholds.get("box_threshold", NEUTRAL_THRESHOLDS["box_threshold"]))
    boxes = sort_by_confidence(boxes)
    if probability < gate:
        return boxes[:0]
    boxes = boxes[boxes[:, 4] >= box_threshold]
    return clip_boxes(boxes, image_size, drop_empty=True)


def make_prediction(
    *,
    probability: float,
    boxes: np.ndarray,
    heatmap: np.ndarray | None,
    model: str,
    model_version: str,
    image_size: tuple[int, int],
    timing_ms: Mapping[str, float],
    thresholds: Mapping[str, float],
    extra: Mapping | None = None,
) -> Prediction:
    """Build the public ``Prediction`` (boxes sorted by confidence; ``extra['threshold']`` = the operating
    probability threshold, used by JSON-lines writers; ``extra['thresholds']`` = all of them)."""
    info = {
        "threshold": float(thresholds.get("probability_threshold", NEUTRAL_THRESHOLDS["probability_threshold"])),
        "thresholds": {k: float(v) for k, v in thresholds.items()},
        **(extra or {}),
    }
    return Prediction(
        probability=float(np.clip(probability, 0.0, 1.0)),
        boxes=tuple(array_to_boxes(sort_by_confidence(boxes))),
        model=model,
        model_version=model_version,
        image_size=(int(image_size[0]), int(image_size[1])),
        heatmap=None if heatmap is None else np.asarray(heatmap, dtype=np.float32),
        timing_ms={k: round(float(v), 3) for k, v in timing_ms.items()},
        extra=info,
    )
