"""Operating thresholds tuned on a validation fold (reused by ``pneumo tune``).

Three numbers, all applied to a model's outputs in original pixels:

- ``box_threshold``: keep boxes with confidence >= it;
- ``gate_threshold``: drop every box of an image whose probability is < it (the image-level gate the RSNA
  winners used: a classifier decides whether there is opacity at all);
- ``probability_threshold``: call an image positive when its probability >= it; chosen by Youden's J
  (sensitivity + specificity - 1), for sensitivity/specificity reporting. Decision support, not diagnosis.

The first two maximise the RSNA mAP over a grid; ties go to the lowest box threshold, then the lowest gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pneumo.errors import MetricInputError
from pneumo.evaluation.classification import confusion_at_threshold, roc_auc, youden_threshold
from pneumo.evaluation.rsna_map import image_score
from pneumo.postprocess import as_boxes, sort_by_confidence
from pneumo.types import Thresholds

#: default grids: box confidence 0.05 .. 0.95 step 0.05; gate 0 (no gate) then 0.05 .. 0.95
BOX_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
GATE_GRID: tuple[float, ...] = (0.0,) + BOX_GRID
#: used when a threshold cannot be tuned (e.g. a validation fold with one class)
DEFAULT_THRESHOLDS = Thresholds(box=0.5, gate=0.0, probability=0.5)


def _unpack(output: Any) -> tuple[float, np.ndarray]:
    """(probability, (N, 5) boxes) from a ``(probability, boxes)`` pair or an object with those attributes
    (``RawOutput``/``Prediction``-like; a sequence of ``Box`` is accepted for ``boxes``)."""
    if isinstance(output, tuple) and len(output) == 2:
        probability, boxes = output
    else:
        probability, boxes = getattr(output, "probability"), getattr(output, "boxes")
    if isinstance(boxes, (list, tuple)) and boxes and hasattr(boxes[0], "confidence"):
        boxes = [(b.x1, b.y1, b.x2, b.y2, b.confidence) for b in boxes]
    return float(probability), sort_by_confidence(as_boxes(boxes, 5))


def score_table(
    outputs: Sequence[Any], gts: Sequence[np.ndarray], box_grid: Sequence[float] = BOX_GRID
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image and box threshold, the RSNA image score -> (scores float64 (N, T) with NaN = skipped image,
    probabilities (N,), has_gt bool (N,))."""
    if len(outputs) != len(gts):
        raise MetricInputError(f"{len(outputs)} outputs but {len(gts)} ground-truth entries")
    grid = np.asarray(box_grid, dtype=np.float64)
    scores = np.full((len(outputs), grid.size), np.nan)
    probabilities = np.empty(len(outputs))
    has_gt = np.empty(len(outputs), dtype=bool)
    for i, (output, gt) in enumerate(zip(outputs, gts)):
        probability, boxes = _unpack(output)
        gt = as_boxes(gt, 4)
        probabilities[i], has_gt[i] = probability, len(gt) > 0
        kept = (boxes[:, 4][None, :] >= grid[:, None]).sum(axis=1)  # boxes sorted: a prefix per threshold
        cache: dict[int, float | None] = {}
        for j, k in enumerate(kept):
            if int(k) not in cache:
                cache[int(k)] = image_score(boxes[: int(k)], gt)
            value = cache[int(k)]
            scores[i, j] = np.nan if value is None else value
    if not np.isfinite(probabilities).all():
        raise MetricInputError("image probabilities contain NaN or infinite values")
    return scores, probabilities, has_gt


def map_grid(
    scores: np.ndarray, probabilities: np.ndarray, has_gt: np.ndarray, gate_grid: Sequence[float] = GATE_GRID
) -> np.ndarray:
    """RSNA mAP for every (gate, box threshold) pair -> float64 (G, T); NaN where no image is scored.

    A gated image keeps no boxes: it scores 0 if it has ground truth and is skipped otherwise.
    """
    gates = np.asarray(gate_grid, dtype=np.float64)
    table = np.full((gates.size, scores.shape[1]), np.nan)
    gated_score = np.where(has_gt, 0.0, np.nan)[:, None]
    for g, gate in enumerate(gates):
        open_ = (probabilities >= gate)[:, None]
        values = np.where(open_, scores, gated_score)
        counts = np.isfinite(values).sum(axis=0)
        sums = np.nansum(values, axis=0)
        table[g] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return table


def best_map(outputs: Sequence[Any], gts: Sequence[np.ndarray], box_grid=BOX_GRID, gate_grid=GATE_GRID) -> float:
    """The highest RSNA mAP over the threshold grid (NaN when no image can be scored)."""
    table = map_grid(*score_table(outputs, gts, box_grid), gate_grid)
    return float(np.nanmax(table)) if np.isfinite(table).any() else float("nan")


def tune_thresholds(
    outputs: Sequence[Any],
    gts: Sequence[np.ndarray],
    *,
    labels: Sequence[int] | None = None,
    box_grid: Sequence[float] = BOX_GRID,
    gate_grid: Sequence[float] = GATE_GRID,
) -> dict[str, float]:
    """Grid-search the operating thresholds on a validation set.

    outputs: per image, ``(probability, boxes (N, 5) xyxy+confidence)`` or an object with ``probability`` and
    ``boxes`` (e.g. ``RawOutput`` whose boxes were mapped to original pixels). gts: per image, ``(M, 4)`` xyxy
    ground truth in the same pixels. labels: image labels 0/1 for Youden's J (default: 1 where gts has boxes).

    Returns ``box_threshold``, ``gate_threshold``, ``probability_threshold`` (see module doc), ``map`` (mAP at
    the chosen box/gate pair), ``map_all_boxes`` (mAP keeping every box, no gate), ``auc``, ``sensitivity``,
    ``specificity`` and ``youden_j`` at ``probability_threshold`` (NaN where undefined), ``n_images``.
    """
    scores, probabilities, has_gt = score_table(outputs, gts, box_grid)
    table = map_grid(scores, probabilities, has_gt, gate_grid)
    result: dict[str, float] = DEFAULT_THRESHOLDS.to_dict()
    if np.isfinite(table).any():
        flat = np.where(np.isfinite(table), table, -np.inf)
        best = np.flatnonzero(flat == flat.max())
        # ties: lowest box threshold, then lowest gate
        candidates = [divmod(int(i), table.shape[1]) for i in best]
        g, b = min(candidates, key=lambda gb: (float(box_grid[gb[1]]), float(gate_grid[gb[0]])))
        result.update(box_threshold=float(box_grid[b]), gate_threshold=float(gate_grid[g]), map=float(table[g, b]))
    else:
        result["map"] = float("nan")
    all_boxes = map_grid(*score_table(outputs, gts, (-np.inf,)), (-np.inf,))
    result["map_all_boxes"] = float(all_boxes[0, 0])

    y = np.asarray(has_gt if labels is None else labels, dtype=np.int64)
    if y.shape != probabilities.shape:
        raise MetricInputError(f"{y.size} labels for {probabilities.size} images")
    result["auc"] = roc_auc(probabilities, y) if y.size else float("nan")
    threshold = youden_threshold(probabilities, y) if y.size else float("nan")
    if np.isfinite(threshold):
        result["probability_threshold"] = float(threshold)
    if y.size:
        confusion = confusion_at_threshold(probabilities, y, result["probability_threshold"])
        sensitivity, specificity = confusion["sensitivity"], confusion["specificity"]
    else:
        sensitivity = specificity = float("nan")
    result.update(sensitivity=sensitivity, specificity=specificity, youden_j=sensitivity + specificity - 1.0)
    result["n_images"] = float(len(probabilities))
    return result


def operating_thresholds(tuned: Mapping[str, float]) -> Thresholds:
    """The three thresholds of a ``tune_thresholds`` result (what a checkpoint stores)."""
    return Thresholds(box=tuned["box_threshold"], gate=tuned["gate_threshold"], probability=tuned["probability_threshold"])
