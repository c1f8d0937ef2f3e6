"""What every predictor (checkpoint, ensemble, baseline) shares: flip test-time augmentation and the final
``Prediction`` (operating thresholds: ``pneumo.types.Thresholds``).

Boxes are float32 ``(N, 5)`` xyxy + confidence; ``pneumo.types.ImageOutput`` holds them in *original* pixels,
one array per test-time view (the plain image, and its horizontal flip already flipped back).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pneumo.postprocess import as_boxes, sort_by_confidence
from pneumo.types import Prediction, Thresholds, array_to_boxes

def flip_boxes_horizontally(boxes: np.ndarray, width: float) -> np.ndarray:
    """Mirror (N, 4+) xyxy boxes of an image ``width`` px wide about its vertical mid-line (x -> width - x)."""
    columns = 5 if np.ndim(boxes) == 2 and np.shape(boxes)[1] >= 5 else 4
    out = as_boxes(boxes, columns).copy()
    out[:, 0], out[:, 2] = width - out[:, 2], width - out[:, 0]
    return out


def make_prediction(
    *,
    probability: float,
    boxes: np.ndarray,
    heatmap: np.ndarray | None,
    model: str,
    model_version: str,
    image_size: tuple[int, int],
    timing_ms: Mapping[str, float],
    thresholds: Thresholds,
    extra: Mapping | None = None,
) -> Prediction:
    """Build the public ``Prediction`` (boxes sorted by confidence; ``extra['threshold']`` = the operating
    probability threshold, used by JSON-lines writers; ``extra['thresholds']`` = all of them)."""
    info = {
        "threshold": thresholds.probability,
        "thresholds": thresholds.to_dict(),
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
