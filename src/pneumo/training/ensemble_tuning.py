"""Ensemble tuning: choose the fusion values of an ``EnsembleSpec`` that maximise the RSNA mAP on validation
outputs, and record the choice under the spec's ``tuning``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pneumo.ensemble.fuse import ensemble_probability, fuse, fused_member_boxes, score_boxes
from pneumo.ensemble.spec import EnsembleSpec
from pneumo.errors import ConfigError
from pneumo.evaluation.classification import youden_threshold
from pneumo.evaluation.rsna_map import mean_average_precision
from pneumo.postprocess import clip_boxes, shrink_boxes
from pneumo.training.thresholds import BOX_GRID, GATE_GRID, map_grid, score_table
from pneumo.types import ImageOutput

#: the tuning grids (``tune_ensemble``); the first value of each wins ties
SHRINK_GRID: tuple[float, ...] = (1.0, 0.95, 0.9, 0.875, 0.85)
WBF_IOU_GRID: tuple[float, ...] = (0.5, 0.4, 0.6)
CLASSIFIER_WEIGHT_GRID: tuple[float, ...] = (0.75, 0.5, 1.0, 0.25)
#: factors on the weight of each box member after the first (the first keeps its weight: only ratios matter)
MEMBER_WEIGHT_GRID: tuple[float, ...] = (1.0, 0.5, 2.0)
#: the grids ``pneumo models report`` cross-fits with: no box shrink, one WBF IoU, the classifier's weight fixed
#: at 0.25. mAP alone cannot see what the classifier adds to the shown probability's AUC: with the weight tuned
#: over (0.75, 0.5, 1.0, 0.25, 0.0) the 1,247-patient run (classifier chexnet-lite0-256-e3 + detector
#: maskrcnn-lite0-256-e2, flip TTA, 5 folds, cross-fitted) chose 0 (the detector alone): mAP 0.116 +- 0.021,
#: AUC 0.830; fixed 0.25: mAP 0.112 +- 0.020, AUC 0.842; fixed 0.5: 0.107 +- 0.023, AUC 0.839 (3 settings
#: compared on the same folds, so this choice is mildly optimistic). Measured on the 1,037 rsna-plus images (5 folds, Mask R-CNN with 300 RPN
#: proposals + classifier, flip TTA): the full grids reach a higher in-sample mAP (0.101) but 0.075 +- 0.008 out of
#: fold, these 0.093 +- 0.024: with ~200 images per fold the extra choices fit noise (4 grid sets were compared on
#: the same folds, so this choice itself is mildly optimistic).
COMPACT_GRIDS: dict[str, tuple[float, ...]] = {
    "shrink_grid": (1.0,), "wbf_iou_grid": (0.5,), "classifier_weight_grid": (0.25,)}


def _validate_outputs(spec: EnsembleSpec, member_outputs: Mapping[str, Sequence[ImageOutput]],
                      gts: Sequence[np.ndarray]) -> int:
    n = len(gts)
    for key in spec.model_keys:
        if key not in member_outputs:
            raise ConfigError(f"no validation outputs for ensemble member {key!r}")
        if len(member_outputs[key]) != n:
            raise ConfigError(f"member {key!r} has {len(member_outputs[key])} outputs for {n} images")
    return n


def evaluate_spec(spec: EnsembleSpec, member_outputs: Mapping[str, Sequence[ImageOutput]],
                  gts: Sequence[np.ndarray]) -> float:
    """RSNA mAP of ``spec`` on outputs ``member_outputs[key][i]`` for image i with ground truth ``gts[i]``
    ((M, 4) xyxy, original pixels). NaN when no image can be scored."""
    n = _validate_outputs(spec, member_outputs, gts)
    preds = {str(i): fuse(spec, {k: member_outputs[k][i] for k in spec.model_keys}).boxes for i in range(n)}
    return mean_average_precision(preds, {str(i): np.asarray(gts[i]) for i in range(n)}).map


def tune_ensemble(
    spec: EnsembleSpec,
    member_outputs: Mapping[str, Sequence[ImageOutput]],
    gts: Sequence[np.ndarray],
    *,
    labels: Sequence[int] | None = None,
    shrink_grid: Sequence[float] = SHRINK_GRID,
    wbf_iou_grid: Sequence[float] = WBF_IOU_GRID,
    classifier_weight_grid: Sequence[float] = CLASSIFIER_WEIGHT_GRID,
    member_weight_grid: Sequence[float] = MEMBER_WEIGHT_GRID,
    box_grid: Sequence[float] | None = None,
    gate_grid: Sequence[float] | None = None,
    context: Mapping[str, Any] | None = None,
) -> EnsembleSpec:
    """Choose the fusion values that maximise validation mAP -> a new spec with them and a ``tuning`` record.

    member_outputs: member ``model`` string -> one ``ImageOutput`` per validation image (computed with the
    spec's ``tta_flip`` setting). gts: per image (M, 4) xyxy ground truth, original pixels. labels: 0/1 per
    image for the probability threshold (Youden's J; default: 1 where gts has boxes).

    Full grid over the box members' weights (each member after the first: its weight x each value of
    ``member_weight_grid``) x WBF IoU x classifier weight (only with both a classifier and box members) x
    shrink x gate x box threshold (gate/box grids default to ``pneumo.training.thresholds``'s). Ties keep the first value of each
    grid (so no shrink beats a shrink that changes nothing), then the lowest box threshold and gate.
    ``context`` (e.g. fold, data folder) is stored in the record.
    """
    box_grid = tuple(BOX_GRID if box_grid is None else box_grid)
    gate_grid = tuple(GATE_GRID if gate_grid is None else gate_grid)
    n = _validate_outputs(spec, member_outputs, gts)
    if n == 0:
        raise ConfigError("cannot tune an ensemble on zero validation images")
    gts = [np.asarray(g, dtype=np.float32).reshape(-1, 4) for g in gts]
    per_image = [{k: member_outputs[k][i] for k in spec.model_keys} for i in range(n)]
    sizes = [next(iter(o.values())).image_size for o in per_image]
    cw_grid = tuple(classifier_weight_grid) if (spec.classifier is not None and spec.members) else (
        spec.fusion.classifier_weight,)

    best: tuple[float, EnsembleSpec, dict[str, float]] | None = None
    for weighted in _member_weightings(spec, member_weight_grid):
        probs_by_cw = {cw: np.array([ensemble_probability(weighted, o, classifier_weight=cw) for o in per_image])
                       for cw in cw_grid}  # independent of the WBF IoU
        for iou in wbf_iou_grid:
            fused = [fused_member_boxes(weighted, o, iou_thr=iou) for o in per_image]
            for cw, probs in probs_by_cw.items():
                scored = [score_boxes(b, p, spec.fusion.box_score) for b, p in zip(fused, probs)]
                for shrink in shrink_grid:
                    outputs = [
                        (float(p), clip_boxes(shrink_boxes(b, shrink), size, drop_empty=True))
                        for p, b, size in zip(probs, scored, sizes)
                    ]
                    table = map_grid(*score_table(outputs, gts, box_grid), gate_grid)
                    if not np.isfinite(table).any():
                        continue
                    flat = np.where(np.isfinite(table), table, -np.inf)
                    value = float(flat.max())
                    if best is not None and value <= best[0]:
                        continue
                    candidates = [divmod(int(i), table.shape[1]) for i in np.flatnonzero(flat == value)]
                    g, b = min(candidates, key=lambda gb: (float(box_grid[gb[1]]), float(gate_grid[gb[0]])))
                    best = (value, weighted, {
                        "wbf_iou_thr": float(iou), "classifier_weight": float(cw), "shrink": float(shrink),
                        "gate_threshold": float(gate_grid[g]), "box_threshold": float(box_grid[b])})
    if best is None:
        raise ConfigError("no validation image could be scored (no ground truth and no predictions anywhere)")

    value, weighted, chosen = best
    probs = np.array([ensemble_probability(weighted, o, classifier_weight=chosen["classifier_weight"])
                      for o in per_image])
    y = np.array([int(len(g) > 0) for g in gts] if labels is None else list(labels), dtype=np.int64)
    threshold = youden_threshold(probs, y) if 0 < y.sum() < len(y) else float("nan")
    if np.isfinite(threshold):
        chosen["probability_threshold"] = float(threshold)
    before = evaluate_spec(spec, member_outputs, gts)
    record = {
        "map": value,
        "map_before": None if not np.isfinite(before) else float(before),
        "n_images": n,
        "n_positive": int(y.sum()),
        "tta_flip": spec.fusion.tta_flip,
        "chosen": chosen,
        "member_weights": {m.model: float(m.weight) for m in weighted.members},
        "grids": {
            "member_weight": list(map(float, member_weight_grid)), "wbf_iou_thr": list(map(float, wbf_iou_grid)),
            "classifier_weight": list(map(float, cw_grid)),
            "shrink": list(map(float, shrink_grid)), "gate_threshold": list(map(float, gate_grid)),
            "box_threshold": list(map(float, box_grid)),
        },
        **dict(context or {}),
    }
    return dataclasses.replace(weighted.with_fusion(**chosen), tuning=record, calibration=None)  # refit after tuning


def _member_weightings(spec: EnsembleSpec, grid: Sequence[float]) -> list[EnsembleSpec]:
    """``spec`` with the weight of each box member after the first multiplied by every combination of ``grid``
    values (in grid order); just ``spec`` with fewer than 2 box members."""
    if len(spec.members) < 2 or not grid:
        return [spec]
    first = spec.members[0]
    out = []
    for ratios in itertools.product(grid, repeat=len(spec.members) - 1):
        members = (first,) + tuple(dataclasses.replace(m, weight=float(m.weight * r))
                                   for m, r in zip(spec.members[1:], ratios))
        out.append(dataclasses.replace(spec, members=members))
    return out
