"""The ensemble: several checkpoints fused the way the RSNA top teams did it.

Recipe (``fuse``), for one image, given each member's unthresholded ``ImageOutput`` in original pixels:

1. image probability ``p`` = ``classifier_weight`` x the classifier's probability + (1 - ``classifier_weight``)
   x the weight-averaged probability of the box members (just the latter without a classifier);
2. the box members' boxes (every test-time view of every member) are merged by weighted box fusion
   (``wbf_iou_thr``, ``skip_thr``; a member's weight is shared by its views);
3. each fused confidence becomes ``confidence x p`` (``box_score="multiply"``, the 2nd place's "score x class
   probability") or stays the detectors' own (``"detector"``);
4. every box is dropped when ``p < gate_threshold``; boxes with confidence ``< box_threshold`` are dropped;
5. the rest are shrunk about their centres to ``shrink`` x width and height (the 1st place's 87.5 %).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pneumo.ensemble.spec import EnsembleSpec, FusionParams
from pneumo.errors import ConfigError
from pneumo.postprocess import clip_boxes, mean_heatmap, shrink_boxes, sort_by_confidence, weighted_boxes_fusion
from pneumo.types import FusedOutput, ImageOutput

def _require(outputs: Mapping[str, ImageOutput], key: str) -> ImageOutput:
    try:
        return outputs[key]
    except KeyError:
        raise ConfigError(f"no output for ensemble member {key!r}") from None


def ensemble_probability(spec: EnsembleSpec, outputs: Mapping[str, ImageOutput],
                         classifier_weight: float | None = None) -> float:
    """Image-level probability (step 1 of the recipe)."""
    cw = spec.fusion.classifier_weight if classifier_weight is None else classifier_weight
    detector = None
    if spec.members:
        weights = np.array([m.weight for m in spec.members], dtype=np.float64)
        probs = np.array([_require(outputs, m.model).probability for m in spec.members], dtype=np.float64)
        detector = float((weights * probs).sum() / weights.sum())
    if spec.classifier is None:
        return float(detector)
    classifier = float(_require(outputs, spec.classifier.model).probability)
    if detector is None:
        return classifier
    return float(cw * classifier + (1.0 - cw) * detector)


def fused_member_boxes(spec: EnsembleSpec, outputs: Mapping[str, ImageOutput],
                       iou_thr: float | None = None) -> np.ndarray:
    """WBF of every view of every box member -> (N, 5) with the detectors' fused confidence (step 2)."""
    boxes_list: list[np.ndarray] = []
    weights: list[float] = []
    for member in spec.members:
        views = _require(outputs, member.model).views or (np.zeros((0, 5), dtype=np.float32),)
        for view in views:  # a member without boxes still counts in WBF's confidence normalisation
            boxes_list.append(view)
            weights.append(member.weight / len(views))
    if not boxes_list:
        return np.zeros((0, 5), dtype=np.float32)
    return weighted_boxes_fusion(
        boxes_list, weights=weights, iou_thr=spec.fusion.wbf_iou_thr if iou_thr is None else iou_thr,
        skip_thr=spec.fusion.skip_thr, conf_type="avg",
    )


def score_boxes(boxes: np.ndarray, probability: float, box_score: str) -> np.ndarray:
    """Step 3: confidence x probability (``"multiply"``) or unchanged (``"detector"``)."""
    out = sort_by_confidence(boxes)
    if box_score == "multiply":
        out[:, 4] *= np.float32(probability)
    return out


def finalize_boxes(probability: float, boxes: np.ndarray, fusion: FusionParams,
                   image_size: tuple[int, int]) -> np.ndarray:
    """Steps 4-5: gate, box threshold, shrink; clipped to the image (``image_size`` = (height, width))."""
    boxes = sort_by_confidence(boxes)
    if probability < fusion.gate_threshold:
        return boxes[:0]
    boxes = boxes[boxes[:, 4] >= fusion.box_threshold]
    return clip_boxes(shrink_boxes(boxes, fusion.shrink), image_size, drop_empty=True)


def fuse(spec: EnsembleSpec, outputs: Mapping[str, ImageOutput]) -> FusedOutput:
    """The whole recipe for one image; ``outputs`` maps each member's ``model`` string to its output."""
    keys = spec.model_keys
    sizes = {tuple(_require(outputs, k).image_size) for k in keys}
    if len(sizes) != 1:
        raise ConfigError(f"ensemble members answered for different image sizes: {sorted(sizes)}")
    image_size = sizes.pop()
    probability = ensemble_probability(spec, outputs)
    boxes = score_boxes(fused_member_boxes(spec, outputs), probability, spec.fusion.box_score)
    final = finalize_boxes(probability, boxes, spec.fusion, image_size)
    heat_weights = _heatmap_weights(spec)
    heatmap = mean_heatmap([outputs[k].heatmap for k in heat_weights], list(heat_weights.values()))
    return FusedOutput(probability, final, heatmap)


def _heatmap_weights(spec: EnsembleSpec) -> dict[str, float]:
    """Each member's share of the fused heatmap: the same shares as in the probability."""
    weights: dict[str, float] = {}
    total = sum(m.weight for m in spec.members)
    share = 1.0 if spec.classifier is None else 1.0 - spec.fusion.classifier_weight
    for member in spec.members:
        weights[member.model] = weights.get(member.model, 0.0) + share * member.weight / total
    if spec.classifier is not None:
        cw = spec.fusion.classifier_weight if spec.members else 1.0
        weights[spec.classifier.model] = weights.get(spec.classifier.model, 0.0) + cw
    return weights
