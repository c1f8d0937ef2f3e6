"""The RSNA Pneumonia Detection Challenge metric: mean over images of the IoU-threshold-averaged TP/(TP+FP+FN).

Per image and for each IoU threshold t in 0.40, 0.45, ..., 0.75: predictions are taken by descending
confidence (stable for ties); each one matches the still-unmatched ground-truth box with which it has the
highest IoU, if that IoU >= t (a tolerance of 1e-9 absorbs float rounding, so a geometric IoU of exactly
0.55 counts at t = 0.55). Matched predictions are TP, unmatched predictions FP, unmatched ground truth FN;
the image's score at t is TP / (TP + FP + FN) and its score is the mean over the thresholds.

- An image with neither ground truth nor predictions is skipped (score ``None``, not in the mean).
- An image without ground truth but with predictions scores 0; one with ground truth but no predictions too.

Boxes: predictions ``(N, 5)`` xyxy + confidence, ground truth ``(M, 4)`` xyxy (extra columns ignored), in the
same pixel frame (normally original pixels).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from pneumo.postprocess import as_boxes, iou_matrix, sort_by_confidence

#: the challenge's IoU thresholds, written out so that 0.5 is exactly 0.5
IOU_THRESHOLDS: tuple[float, ...] = (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75)
_TOLERANCE = 1e-9

__all__ = ["IOU_THRESHOLDS", "MapResult", "image_score", "per_threshold_scores", "mean_average_precision"]


def per_threshold_scores(
    pred: np.ndarray, gt: np.ndarray, thresholds: tuple[float, ...] = IOU_THRESHOLDS
) -> np.ndarray | None:
    """One image's TP/(TP+FP+FN) at each threshold -> float64 ``(len(thresholds),)``, or ``None`` if skipped."""
    pred = sort_by_confidence(pred)
    gt = as_boxes(gt, 4)
    if len(pred) == 0 and len(gt) == 0:
        return None
    if len(pred) == 0 or len(gt) == 0:
        return np.zeros(len(thresholds), dtype=np.float64)
    iou = iou_matrix(pred, gt)  # (N, M)
    scores = np.empty(len(thresholds), dtype=np.float64)
    for k, t in enumerate(thresholds):
        free = np.ones(len(gt), dtype=bool)
        tp = 0
        for i in range(len(pred)):
            candidates = np.where(free, iou[i], -1.0)
            j = int(np.argmax(candidates))
            if candidates[j] >= t - _TOLERANCE:
                free[j] = False
                tp += 1
        fp = len(pred) - tp
        fn = len(gt) - tp
        scores[k] = tp / (tp + fp + fn)
    return scores


def image_score(pred: np.ndarray, gt: np.ndarray, thresholds: tuple[float, ...] = IOU_THRESHOLDS) -> float | None:
    """One image's RSNA score in [0, 1], or ``None`` when it has neither ground truth nor predictions."""
    scores = per_threshold_scores(pred, gt, thresholds)
    return None if scores is None else float(scores.mean())


@dataclass(frozen=True)
class MapResult:
    """Result of ``mean_average_precision``.

    map: mean image score over scored images (NaN when no image was scored).
    per_threshold: IoU threshold -> mean over scored images of the score at that threshold (their mean is ``map``).
    per_image: image id -> score, or None for skipped images. n_scored: images in the mean.
    """

    map: float
    per_threshold: dict[float, float]
    per_image: dict[str, float | None] = field(repr=False)
    n_scored: int

    @property
    def n_images(self) -> int:
        return len(self.per_image)


def mean_average_precision(
    preds: Mapping[str, np.ndarray],
    gts: Mapping[str, np.ndarray],
    thresholds: tuple[float, ...] = IOU_THRESHOLDS,
) -> MapResult:
    """The RSNA metric over images: ``preds`` id -> ``(N, 5)``, ``gts`` id -> ``(M, 4)``.

    Images are the union of both key sets; a missing entry means no boxes (an id only in ``preds`` is an
    image without ground truth). Callers that must exclude unlabelled images filter ``preds`` first.
    """
    per_image: dict[str, float | None] = {}
    rows = []
    empty5 = np.zeros((0, 5), dtype=np.float32)
    empty4 = np.zeros((0, 4), dtype=np.float32)
    for image_id in sorted(set(preds) | set(gts)):
        scores = per_threshold_scores(preds.get(image_id, empty5), gts.get(image_id, empty4), thresholds)
        per_image[image_id] = None if scores is None else float(scores.mean())
        if scores is not None:
            rows.append(scores)
    if rows:
        table = np.stack(rows)
        per_t = table.mean(axis=0)
        overall = float(table.mean())
    else:
        per_t = np.full(len(thresholds), np.nan)
        overall = float("nan")
    return MapResult(
        map=overall,
        per_threshold={float(t): float(v) for t, v in zip(thresholds, per_t)},
        per_image=per_image,
        n_scored=len(rows),
    )
