"""Where a model's probability calibrator is stored and how a loaded model applies it.

A checkpoint's calibrator lives in one place, a sidecar ``<checkpoint stem>.calibration.json`` beside it (read
the same way by the torch and the ONNX backend, without unpickling the checkpoint)::

    {"checkpoint_sha256": "<sha256 of the .pt file>", "calibrator": {<Calibrator.to_dict()>}}

The sidecar keeps the shipped fp16 ``.pt`` files (and so their ONNX exports) unchanged; the hash binds it to
those exact weights, and a sidecar for other weights (e.g. after retraining) is ignored with a warning. An
ensemble's calibrator is the ``calibration`` entry of its spec. Models without one behave as before.

What is calibrated: the probability a ``Prediction`` shows (and its positive-call threshold, mapped through
the same monotone function). ``outputs`` stay raw, so gates, box scores and ensemble fusion see exactly what
they were tuned on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pneumo.errors import ConfigError
from pneumo.evaluation.calibration import Calibrator
from pneumo.files import atomic_write
from pneumo.types import Thresholds

log = logging.getLogger(__name__)
SIDECAR_SUFFIX = ".calibration.json"


def sidecar_path(checkpoint: str | Path) -> Path:
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + SIDECAR_SUFFIX)


def save_sidecar(checkpoint: str | Path, calibrator: Calibrator, checkpoint_sha256: str) -> Path:
    """Write the sidecar for ``checkpoint`` atomically."""
    path = sidecar_path(checkpoint)
    data = {"checkpoint_sha256": checkpoint_sha256, "calibrator": calibrator.to_dict()}
    with atomic_write(path) as handle:
        handle.write(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path


def checkpoint_calibrator(checkpoint: str | Path, checkpoint_sha256: str) -> Calibrator | None:
    """The calibrator of a checkpoint: its sidecar when made for these weights (``checkpoint_sha256``), else None.

    Raises ``ConfigError`` for a malformed sidecar."""
    path = sidecar_path(checkpoint)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"cannot read calibration sidecar {path.name}: {error}") from None
    if not isinstance(data, Mapping) or "calibrator" not in data:
        raise ConfigError(f"calibration sidecar {path.name} has no 'calibrator'")
    if data.get("checkpoint_sha256") != checkpoint_sha256:
        log.warning("ignoring %s: it was fitted for other weights than %s", path.name, Path(checkpoint).name)
        return None
    return Calibrator.from_dict(data["calibrator"])


def shown(calibrator: Calibrator | None, probability: float) -> float:
    """The probability users see: calibrated when there is a calibrator."""
    return float(probability) if calibrator is None else float(calibrator(float(probability)))


def shown_thresholds(calibrator: Calibrator | None, thresholds: Thresholds) -> Thresholds:
    """``thresholds`` with the probability threshold on the shown (calibrated) scale; box and gate unchanged."""
    if calibrator is None:
        return thresholds
    return dataclasses.replace(thresholds, probability=float(calibrator(thresholds.probability)))


def prediction_extra(calibrator: Calibrator | None, raw_probability: float) -> dict[str, Any]:
    """What a Prediction records about calibration (nothing without a calibrator)."""
    if calibrator is None:
        return {}
    return {"calibration": calibrator.method, "uncalibrated_probability": round(float(raw_probability), 6)}
