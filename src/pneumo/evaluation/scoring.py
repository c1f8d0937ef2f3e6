"""Score a set of predictions against labels: the one function behind ``pneumo evaluate`` (both modes).

Boxes: predictions ``(N, 5)`` xyxy + confidence, labels ``(M, 4)`` xyxy, original pixels. An image is
labelled positive when it has at least one ground-truth box (the RSNA ``Target``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.errors import PneumoError

__all__ = ["evaluate_predictions"]

log = logging.getLogger(__name__)


def evaluate_predictions(
    preds: Mapping[str, np.ndarray],
    labels_by_id: Mapping[str, np.ndarray],
    probs: Mapping[str, float] | None = None,
    threshold: float = 0.5,
    report_dir: str | Path | None = None,
    *,
    threshold_source: str = "argument",
    image_loader: Callable[[str], np.ndarray] | None = None,
    model_name: str | None = None,
    n_worst: int = 8,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Score predictions; optionally write the HTML report. Returns a JSON-ready dict (NaN -> None).

    preds: image id -> (N, 5) boxes. labels_by_id: image id -> (M, 4) ground truth; these ids define the
    evaluated images. Predictions for ids without labels are counted (``n_unlabelled``) and excluded; labelled
    ids without predictions count as images with no predicted boxes (``n_missing_predictions``).
    probs: image id -> probability (from a JSONL file); a labelled image without one is left out of the
    classification metrics (``n_missing_probability``).

    Keys: ``map``, ``map_per_threshold`` ("0.40" -> value), ``map_ci95``, ``n_images``, ``n_scored``,
    ``n_positive``, ``n_negative``; ``score_source`` ("probability", else "max_box_confidence", the top box
    confidence or 0), ``threshold`` (+ ``threshold_source``) and at it ``sensitivity``, ``specificity``,
    ``ppv``, ``npv``, ``confusion``; with probabilities also ``auc`` (+ ``auc_ci95``), ``average_precision``,
    ``ece``, ``brier``, ``youden_threshold``, ``f1_threshold`` (None without). Intervals are seeded
    percentile bootstraps over images (``n_boot`` resamples; 0 disables them).
    image_loader: id -> (H, W) pixels in [0, 1], used with ``report_dir`` to draw the ``n_worst`` misses.
    """
    from pneumo import DISCLAIMER
    from pneumo.evaluation import classification as cls
    from pneumo.evaluation.report import sort_worst_first, thumbnail_overlay, write_report
    from pneumo.files import to_jsonable
    from pneumo.evaluation.rsna_map import mean_average_precision
    from pneumo.postprocess import as_boxes

    ids = sorted(labels_by_id)
    gts = {i: as_boxes(labels_by_id[i], 4) for i in ids}
    empty = np.zeros((0, 5), dtype=np.float32)
    boxes = {i: as_boxes(preds[i], 5) if i in preds else empty for i in ids}
    n_unlabelled = sum(1 for i in preds if i not in labels_by_id)
    if n_unlabelled:
        log.warning("%d predicted image(s) have no labels and are excluded", n_unlabelled)
    result = mean_average_precision(boxes, gts)

    labels = np.array([1 if len(gts[i]) else 0 for i in ids], dtype=np.int64)
    if probs is not None:
        score_source = "probability"
        keep = [k for k, i in enumerate(ids) if i in probs]
        scores = np.array([float(probs[ids[k]]) for k in keep], dtype=np.float64)
        y = labels[keep]
    else:
        score_source = "max_box_confidence"
        scores = np.array([float(boxes[i][:, 4].max()) if len(boxes[i]) else 0.0 for i in ids], dtype=np.float64)
        y = labels
    confusion = cls.confusion_at_threshold(scores, y, threshold)

    scored = [s for s in result.per_image.values() if s is not None]
    summary: dict[str, Any] = {
        "map": result.map,
        "map_per_threshold": {f"{t:.2f}": v for t, v in result.per_threshold.items()},
        "map_ci95": None,
        "n_images": len(ids),
        "n_scored": result.n_scored,
        "n_unlabelled": n_unlabelled,
        "n_missing_predictions": sum(1 for i in ids if i not in preds),
        "n_positive": int(labels.sum()),
        "n_negative": int(labels.size - labels.sum()),
        "score_source": score_source,
        "threshold": float(threshold),
        "threshold_source": threshold_source,
        "sensitivity": confusion["sensitivity"],
        "specificity": confusion["specificity"],
        "ppv": confusion["ppv"],
        "npv": confusion["npv"],
        "confusion": {k: confusion[k] for k in ("tp", "fp", "tn", "fn")},
        "auc": None,
        "auc_ci95": None,
        "average_precision": None,
        "ece": None,
        "brier": None,
        "youden_threshold": None,
        "f1_threshold": None,
    }
    if n_boot > 0 and scored:
        ci = cls.bootstrap_mean_ci(scored, n_boot=n_boot, seed=seed)
        summary["map_ci95"] = [ci.low, ci.high]
    if probs is not None:
        summary["n_missing_probability"] = len(ids) - len(keep)
        summary.update(
            auc=cls.roc_auc(scores, y),
            average_precision=cls.average_precision(scores, y),
            ece=cls.expected_calibration_error(scores, y),
            brier=cls.brier_score(scores, y),
            youden_threshold=cls.youden_threshold(scores, y),
            f1_threshold=cls.f1_optimal_threshold(scores, y),
        )
        if n_boot > 0 and 0 < y.sum() < y.size:
            ci = cls.bootstrap_auc_ci(scores, y, n_boot=n_boot, seed=seed)
            summary["auc_ci95"] = [ci.low, ci.high]
    summary["note"] = DISCLAIMER

    if report_dir is not None:
        prob_of = probs or {}
        rows = [
            {
                "patientId": i,
                "score": result.per_image[i],
                "n_gt": int(len(gts[i])),
                "n_pred": int(len(boxes[i])),
                "top_confidence": float(boxes[i][:, 4].max()) if len(boxes[i]) else None,
                "probability": prob_of.get(i),
                "label": int(labels[k]),
            }
            for k, i in enumerate(ids)
        ]
        thumbnails: dict[str, np.ndarray] = {}
        if image_loader is not None and n_worst > 0:
            # worst first, missed ground truth before false positives (see report.sort_worst_first)
            worst = [r for r in sort_worst_first(rows) if r["score"] is not None and r["score"] < 1.0][:n_worst]
            for i, score in ((r["patientId"], r["score"]) for r in worst):
                try:
                    pixels = image_loader(i)
                except PneumoError as error:  # a missing or unreadable image only costs its thumbnail
                    log.warning("no overlay for one image: %s", type(error).__name__)
                    continue
                thumbnails[i] = thumbnail_overlay(pixels, boxes[i], gts[i], title=f"score {score:.3f}",
                                                  model_name=model_name)
        index = write_report(
            report_dir,
            result,
            probabilities=scores if probs is not None else None,
            labels=y if probs is not None else None,
            thresholds={"operating": float(threshold)},
            per_image=rows,
            thumbnails=thumbnails,
            summary=to_jsonable(summary),
            title=f"pneumo evaluation{f' — {model_name}' if model_name else ''}",
        )
        summary["report"] = str(index)
    return to_jsonable(summary)
