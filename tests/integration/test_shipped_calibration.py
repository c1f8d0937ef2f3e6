"""The shipped models carry the calibrators ``pneumo models`` fitted on their out-of-fold outputs (recorded in
``models/cv_summary.json``), apply them, and their cards state those figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pneumo.evaluation.calibration import Calibrator
from pneumo.io import read_xray
from pneumo.pipeline.cards import ci_text
from pneumo.samples import sample_files
from pneumo.service import InferenceService

MODELS = Path(__file__).resolve().parents[2] / "models"
#: the models the last ``pneumo models`` run calibrated (unet was not part of it: its sidecar is older)
NAMES = ("chexnet", "maskrcnn", "ensemble")


@pytest.fixture(scope="module")
def service() -> InferenceService:
    return InferenceService(MODELS, num_threads=1)


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads((MODELS / "cv_summary.json").read_text(encoding="utf-8"))["calibration"]


@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_shows_its_calibrated_probability(service: InferenceService, recorded: dict, name: str) -> None:
    predictor = service.predictor(name)
    assert predictor.calibrator is not None, f"{name} has no calibrator"
    entry = recorded[name]
    assert entry["status"] == "fitted"
    expected = Calibrator.from_dict(entry["calibrator"])
    assert predictor.calibrator.method == expected.method == entry["chosen"]
    assert predictor.calibrator(0.3) == pytest.approx(expected(0.3)) and predictor.calibrator(0.7) == pytest.approx(expected(0.7))
    (prediction,) = service.predict_batch([read_xray(sample_files()[0])], name, heatmap=False)
    raw = prediction.extra["uncalibrated_probability"]
    assert prediction.probability == pytest.approx(predictor.calibrator(raw), abs=1e-5)
    assert prediction.extra["calibration"] == predictor.calibrator.method


@pytest.mark.parametrize("name", NAMES)
def test_cards_state_the_out_of_fold_calibration_of_these_weights(recorded: dict, name: str) -> None:
    entry = recorded[name]
    card = (MODELS / f"{name}.md").read_text(encoding="utf-8")
    section = card.split("## Calibration (out-of-fold)", 1)[1].split("\n## ", 1)[0]
    assert f"Method **{entry['chosen']}**" in section
    assert ci_text(entry["raw"]["ece_width"]) in section and ci_text(entry["calibrated"]["ece_width"]) in section
    assert ci_text(entry["calibrated"]["sensitivity_at_90_specificity"]) in section


def test_every_shipped_checkpoint_has_a_calibrator_bound_to_its_weights(service: InferenceService) -> None:
    for name in ("chexnet", "unet", "maskrcnn"):  # a sidecar for other weights would be ignored (None)
        assert service.predictor(name).calibrator is not None, name
