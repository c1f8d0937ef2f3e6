"""The shipped models carry the calibrators fitted on held-out rsna-plus, apply them, and their cards state the
held-out figures of ``models/heldout.json`` (made for exactly these weights)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumo.evaluation.figures import SECTION_BEGIN, heldout_figures
from pneumo.samples import sample_files
from pneumo.io import read_xray
from pneumo.service import InferenceService

MODELS = Path(__file__).resolve().parents[2] / "models"
NAMES = ("chexnet", "unet", "maskrcnn", "ensemble")


@pytest.fixture(scope="module")
def service() -> InferenceService:
    return InferenceService(MODELS, num_threads=1)


@pytest.mark.parametrize("name", NAMES)
def test_shipped_model_shows_its_calibrated_probability(service: InferenceService, name: str) -> None:
    predictor = service.predictor(name)
    assert predictor.calibrator is not None, f"{name} has no calibrator"
    assert predictor.calibrator.fitted_on["data"] == "rsna-plus"
    (prediction,) = service.predict_batch([read_xray(sample_files()[0])], name, heatmap=False)
    raw = prediction.extra["uncalibrated_probability"]
    assert prediction.probability == pytest.approx(predictor.calibrator(raw), abs=1e-5)
    assert prediction.extra["calibration"] == predictor.calibrator.method


def test_cards_state_the_heldout_figures_of_these_weights() -> None:
    heldout = heldout_figures(MODELS)
    assert heldout, "models/heldout.json is missing or was made for other weights"
    for name in NAMES:
        entry = heldout["models"][name]
        card = (MODELS / f"{name}.md").read_text(encoding="utf-8")
        assert SECTION_BEGIN in card
        section = card.split(SECTION_BEGIN, 1)[1]
        assert f"| AUC | {entry['raw']['auc']['estimate']:.3f} [" in section
        assert f"{entry['ece_calibrated']['estimate']:.3f} [" in section
        assert f"calibrated ({entry['calibration']['method']}, cross-fitted)" in section
