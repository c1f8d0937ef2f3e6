"""Box helpers shared by every family's decoding (numpy only)."""

from __future__ import annotations

import numpy as np


def finish_boxes(boxes: np.ndarray, max_boxes: int) -> np.ndarray:
    """(N, 5) xyxy+conf -> float32, confidence clipped to [0, 1], sorted by descending confidence, capped."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
    if boxes.shape[0] == 0:
        return np.zeros((0, 5), dtype=np.float32)
    boxes = boxes.copy()
    boxes[:, 4] = np.clip(boxes[:, 4], 0.0, 1.0)
    order = np.argsort(-boxes[:, 4], kind="stable")
    return np.ascontiguousarray(boxes[order][: max(int(max_boxes), 0)])
