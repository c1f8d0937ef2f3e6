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

The spec is a JSON file (``models/ensemble.json``)::

    {"type": "ensemble", "format_version": 1, "name": "ensemble",
     "members": [{"model": "unet", "weight": 1.0}, {"model": "maskrcnn", "weight": 1.0}],
     "classifier": {"model": "chexnet", "weight": 1.0},
     "fusion": {"wbf_iou_thr": 0.5, "skip_thr": 0.02, "shrink": 0.875, "gate_threshold": 0.5,
                "box_threshold": 0.3, "probability_threshold": 0.5, "classifier_weight": 0.75,
                "box_score": "multiply", "tta_flip": false},
     "tuning": {...how the fusion values were chosen...}}

A member ``model`` is a shipped name (``unet``, ``maskrcnn``, ``chexnet``) or a checkpoint path (relative
paths are relative to the spec file's folder). ``tune_ensemble`` picks the fusion values that maximise the
RSNA mAP on validation outputs and records the choice under ``tuning``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.errors import ConfigError
from pneumo.inference.common import ImageOutput, mean_heatmap
from pneumo.postprocess import clip_boxes, shrink_boxes, sort_by_confidence, weighted_boxes_fusion

SPEC_TYPE = "ensemble"
FORMAT_VERSION = 1
BOX_SCORES = ("multiply", "detector")

#: the tuning grids (``tune_ensemble``); the first value of each wins ties
SHRINK_GRID: tuple[float, ...] = (1.0, 0.95, 0.9, 0.875, 0.85)
WBF_IOU_GRID: tuple[float, ...] = (0.5, 0.4, 0.6)
CLASSIFIER_WEIGHT_GRID: tuple[float, ...] = (0.75, 0.5, 1.0, 0.25)
#: factors on the weight of each box member after the first (the first keeps its weight: only ratios matter)
MEMBER_WEIGHT_GRID: tuple[float, ...] = (1.0, 0.5, 2.0)


@dataclass(frozen=True)
class EnsembleMember:
    """One model of the ensemble: a shipped name or checkpoint path, and its weight (> 0)."""

    model: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"an ensemble member needs a model name or path, got {self.model!r}")
        if not (isinstance(self.weight, (int, float)) and self.weight > 0):
            raise ConfigError(f"ensemble member {self.model!r}: weight must be a positive number, got {self.weight!r}")


@dataclass(frozen=True)
class FusionParams:
    """How member outputs become one answer (see the module docstring for the order of the steps)."""

    wbf_iou_thr: float = 0.5
    skip_thr: float = 0.02
    shrink: float = 0.875
    gate_threshold: float = 0.5
    box_threshold: float = 0.3
    probability_threshold: float = 0.5  # positive call, for reporting; does not change boxes
    classifier_weight: float = 0.75
    box_score: str = "multiply"
    tta_flip: bool = False

    def __post_init__(self) -> None:
        for name in ("wbf_iou_thr", "skip_thr", "gate_threshold", "box_threshold", "probability_threshold",
                     "classifier_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0):
                raise ConfigError(f"ensemble fusion {name} must be a number in [0, 1], got {value!r}")
        if not (isinstance(self.shrink, (int, float)) and 0.0 < float(self.shrink) <= 1.5):
            raise ConfigError(f"ensemble fusion shrink must be in (0, 1.5], got {self.shrink!r}")
        if self.box_score not in BOX_SCORES:
            raise ConfigError(f"ensemble fusion box_score must be one of {BOX_SCORES}, got {self.box_score!r}")
        if not isinstance(self.tta_flip, bool):
            raise ConfigError(f"ensemble fusion tta_flip must be true or false, got {self.tta_flip!r}")

    @property
    def thresholds(self) -> dict[str, float]:
        """The operating thresholds in the checkpoint vocabulary (``pneumo.training.thresholds``)."""
        return {
            "box_threshold": float(self.box_threshold),
            "gate_threshold": float(self.gate_threshold),
            "probability_threshold": float(self.probability_threshold),
        }


@dataclass(frozen=True)
class EnsembleSpec:
    """A parsed ``ensemble.json``. ``base_dir``: where relative member paths are resolved (not saved)."""

    members: tuple[EnsembleMember, ...]
    classifier: EnsembleMember | None = None
    fusion: FusionParams = field(default_factory=FusionParams)
    name: str = "ensemble"
    tuning: dict[str, Any] | None = None
    base_dir: Path | None = field(default=None, compare=False)
    #: ``Calibrator.to_dict()`` of the fused probability (``pneumo.evaluation.calibration``), or None
    calibration: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.members and self.classifier is None:
            raise ConfigError("an ensemble needs at least one member or a classifier")

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": SPEC_TYPE,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "members": [dataclasses.asdict(m) for m in self.members],
            "classifier": None if self.classifier is None else dataclasses.asdict(self.classifier),
            "fusion": dataclasses.asdict(self.fusion),
        }
        if self.tuning is not None:
            data["tuning"] = self.tuning
        if self.calibration is not None:
            data["calibration"] = self.calibration
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> "EnsembleSpec":
        if not isinstance(data, Mapping):
            raise ConfigError("an ensemble spec must be a JSON object")
        if data.get("type", SPEC_TYPE) != SPEC_TYPE:
            raise ConfigError(f"not an ensemble spec (type {data.get('type')!r})")
        if int(data.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
            raise ConfigError(f"ensemble spec format {data.get('format_version')} is newer than this pneumo reads")
        unknown = set(data) - {"type", "format_version", "name", "members", "classifier", "fusion", "tuning",
                               "calibration"}
        if unknown:
            raise ConfigError(f"unknown ensemble spec key(s): {', '.join(sorted(unknown))}")
        members = data.get("members") or []
        if not isinstance(members, list):
            raise ConfigError("ensemble 'members' must be a list of {model, weight}")
        fusion = data.get("fusion") or {}
        known = {f.name for f in dataclasses.fields(FusionParams)}
        if not isinstance(fusion, Mapping) or set(fusion) - known:
            raise ConfigError(f"ensemble 'fusion' keys must be among: {', '.join(sorted(known))}")
        try:
            return cls(
                members=tuple(_member(m) for m in members),
                classifier=None if data.get("classifier") is None else _member(data["classifier"]),
                fusion=FusionParams(**fusion),
                name=str(data.get("name") or "ensemble"),
                tuning=data.get("tuning"),
                base_dir=base_dir,
                calibration=_calibration(data.get("calibration")),
            )
        except TypeError as error:
            raise ConfigError(f"malformed ensemble spec: {error}") from None

    @classmethod
    def load(cls, path: str | Path) -> "EnsembleSpec":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"cannot read ensemble spec {path}: {error.strerror or error}") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"ensemble spec {path} is not valid JSON: {error.msg} (line {error.lineno})") from None
        return cls.from_dict(data, base_dir=path.resolve().parent)

    def save(self, path: str | Path) -> Path:
        """Write the spec as indented JSON, atomically."""
        from pneumo.outputs import atomic_write

        with atomic_write(path) as handle:
            handle.write(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        return Path(path)

    @property
    def sha256(self) -> str:
        """Hash of the canonical JSON (member list, fusion values, tuning): changes whenever the spec does."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # ------------------------------------------------------------------ structure

    @property
    def model_keys(self) -> list[str]:
        """Distinct member model strings (box members, then the classifier), in spec order."""
        keys = [m.model for m in self.members]
        if self.classifier is not None:
            keys.append(self.classifier.model)
        return list(dict.fromkeys(keys))

    @property
    def calibrator(self):
        """The fused probability's ``Calibrator``, or None."""
        if self.calibration is None:
            return None
        from pneumo.evaluation.calibration import Calibrator

        return Calibrator.from_dict(self.calibration)

    def with_fusion(self, **changes: Any) -> "EnsembleSpec":
        return dataclasses.replace(self, fusion=dataclasses.replace(self.fusion, **changes))


def _calibration(item: Any) -> dict[str, Any] | None:
    """A spec's ``calibration`` entry, validated (``ConfigError``), or None."""
    if item is None:
        return None
    from pneumo.evaluation.calibration import Calibrator

    return Calibrator.from_dict(item).to_dict()


def _member(item: Any) -> EnsembleMember:
    if isinstance(item, str):
        return EnsembleMember(item)
    if not isinstance(item, Mapping) or set(item) - {"model", "weight"}:
        raise ConfigError(f"an ensemble member must be a name or {{'model': ..., 'weight': ...}}, got {item!r}")
    return EnsembleMember(str(item.get("model", "")), float(item.get("weight", 1.0)))


# ---------------------------------------------------------------------------------------------- fusion


@dataclass(frozen=True)
class FusedOutput:
    """The ensemble's answer for one image: probability in [0, 1], final (K, 5) boxes in original pixels
    (after gate, box threshold and shrink), the fused heatmap or None."""

    probability: float
    boxes: np.ndarray
    heatmap: np.ndarray | None


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


# ---------------------------------------------------------------------------------------------- tuning


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
    from pneumo.evaluation.rsna_map import mean_average_precision

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
    from pneumo.evaluation.classification import youden_threshold
    from pneumo.training.thresholds import BOX_GRID, GATE_GRID, map_grid, score_table

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
