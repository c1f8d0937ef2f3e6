"""The ensemble spec: which checkpoints, with which weights, fused how (``models/ensemble.json``).

The spec is a JSON file::

    {"type": "ensemble", "format_version": 1, "name": "ensemble",
     "members": [{"model": "unet", "weight": 1.0}, {"model": "maskrcnn", "weight": 1.0}],
     "classifier": {"model": "chexnet", "weight": 1.0},
     "fusion": {"wbf_iou_thr": 0.5, "skip_thr": 0.02, "shrink": 0.875, "gate_threshold": 0.5,
                "box_threshold": 0.3, "probability_threshold": 0.5, "classifier_weight": 0.75,
                "box_score": "multiply", "tta_flip": false},
     "tuning": {...how the fusion values were chosen (``pneumo.training.ensemble_tuning``)...}}

A member ``model`` is a shipped name (``unet``, ``maskrcnn``, ``chexnet``) or a checkpoint path (relative
paths are relative to the spec file's folder). The recipe itself is in ``pneumo.ensemble.fuse``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pneumo.errors import ConfigError
from pneumo.types import Thresholds

SPEC_TYPE = "ensemble"
FORMAT_VERSION = 1
BOX_SCORES = ("multiply", "detector")

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
    def thresholds(self) -> Thresholds:
        """The operating point (box threshold, gate, probability threshold)."""
        return Thresholds(box=self.box_threshold, gate=self.gate_threshold, probability=self.probability_threshold)


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
        from pneumo.files import atomic_write

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
