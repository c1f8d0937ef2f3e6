"""A loaded model applies its stored calibrator (the checkpoint's sidecar, the ensemble spec); one without
behaves as before; a sidecar made for other weights is ignored. Tiny random checkpoints, torch backend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import torch
from test_service import CONFIGS, SIZE, save_tiny, xray

from pneumo.errors import ConfigError
from pneumo.evaluation.calibration import Calibrator
from pneumo.inference.calibrated import save_sidecar, sidecar_path
from pneumo.files import file_sha256
from pneumo.models import create_model
from pneumo.models.checkpoint import save_checkpoint
from pneumo.preprocess import Preprocessor
from pneumo.service import InferenceService

#: monotone, and moves every probability (random tiny models often answer exactly 0.5, which a temperature keeps)
CALIBRATOR = Calibrator("isotonic", {"x": [0.0, 1.0], "y": [0.1, 0.6]}, {"data": "unit test"})


def calibrated(p: float) -> float:
    return 0.1 + 0.5 * p
THRESHOLDS = {"box_threshold": 0.0, "gate_threshold": 0.0, "probability_threshold": 0.4}


def _raw(folder: Path, name: str) -> float:
    return InferenceService(folder, backend="torch", num_threads=1).predict(xray(), name).probability


def test_a_sidecar_calibrator_made_for_the_weights_is_applied(tmp_path: Path) -> None:
    plain = save_tiny(tmp_path / "plain" / "chexnet.pt", "chexnet", THRESHOLDS)
    raw = _raw(plain.parent, "chexnet")
    side = tmp_path / "side" / "chexnet.pt"
    side.parent.mkdir()
    shutil.copy(plain, side)
    save_sidecar(side, CALIBRATOR, file_sha256(side))

    expected = calibrated(raw)
    prediction = InferenceService(side.parent, backend="torch", num_threads=1).predict(xray(), "chexnet")
    assert prediction.probability == pytest.approx(expected, abs=1e-5)
    assert prediction.extra["calibration"] == "isotonic"
    assert prediction.extra["uncalibrated_probability"] == pytest.approx(raw, abs=1e-5)
    assert prediction.extra["threshold"] == pytest.approx(calibrated(0.4))
    assert abs(expected - raw) > 1e-3  # the check above can fail


def test_model_without_calibrator_or_with_a_stale_sidecar_shows_the_raw_probability(tmp_path: Path) -> None:
    path = save_tiny(tmp_path / "chexnet.pt", "chexnet", THRESHOLDS)
    raw = _raw(tmp_path, "chexnet")
    save_sidecar(path, CALIBRATOR, "0" * 64)  # fitted for other weights
    prediction = InferenceService(tmp_path, backend="torch", num_threads=1).predict(xray(), "chexnet")
    assert prediction.probability == pytest.approx(raw, abs=1e-6)
    assert "calibration" not in prediction.extra
    assert prediction.extra["threshold"] == pytest.approx(0.4)
    sidecar_path(path).write_text(json.dumps({"checkpoint_sha256": file_sha256(path), "calibrator": {"method": "x",
                                                                                                    "params": {}}}))
    with pytest.raises(ConfigError):
        InferenceService(tmp_path, backend="torch", num_threads=1).predict(xray(), "chexnet")


def test_ensemble_spec_calibrator_is_applied_to_the_fused_probability(tmp_path: Path) -> None:
    from pneumo.ensemble import EnsembleMember, EnsembleSpec

    save_tiny(tmp_path / "chexnet.pt", "chexnet", THRESHOLDS)
    save_tiny(tmp_path / "unet.pt", "unet", THRESHOLDS)
    spec = EnsembleSpec(members=(EnsembleMember("unet"),), classifier=EnsembleMember("chexnet"))
    spec.save(tmp_path / "ensemble.json")
    before = InferenceService(tmp_path, backend="torch", num_threads=1).predict(xray(), "ensemble")
    with_calibrator = EnsembleSpec(members=spec.members, classifier=spec.classifier, calibration=CALIBRATOR.to_dict())
    with_calibrator.save(tmp_path / "ensemble.json")
    assert EnsembleSpec.load(tmp_path / "ensemble.json").calibration == CALIBRATOR.to_dict()
    after = InferenceService(tmp_path, backend="torch", num_threads=1).predict(xray(), "ensemble")
    assert after.probability == pytest.approx(calibrated(before.probability), abs=1e-5)
    assert after.extra["member_probabilities"] == before.extra["member_probabilities"]
    assert [b.confidence for b in after.boxes] == [b.confidence for b in before.boxes]  # fusion unchanged
    assert after.model_version != before.model_version
    with pytest.raises(ConfigError):
        EnsembleSpec.from_dict({**spec.to_dict(), "calibration": {"method": "temperature", "params": {}}})
