"""The models shipped in ``models/`` (``make models``): they load by name, answer on the bundled samples,
are small, and their cards state the numbers stored in the files.

No test here claims the models get the bundled samples right: those three patients belong to rsna-mini, so
the shipped weights may have trained on them, and three images prove nothing either way. The quality claims
checked are the cross-validated ones recorded at training time (out-of-fold, see docs/models.md).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from pneumo.io import read_xray
from pneumo.samples import sample_files
from pneumo.service import InferenceService

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
CHECKPOINTS = ("unet", "maskrcnn", "chexnet")
ALL = CHECKPOINTS + ("ensemble", "baseline")
MAX_BYTES = 40 * 1024 * 1024
CV_KEYS = ("cv_map_mean", "cv_map_std", "cv_auc_mean", "cv_auc_std", "oof_auc", "cv_folds")


@pytest.fixture(scope="module")
def service() -> InferenceService:
    return InferenceService(MODELS, backend="torch", num_threads=1)


@pytest.fixture(scope="module")
def xrays() -> list:
    return [read_xray(path) for path in sample_files()]


def card_metrics(name: str) -> dict[str, float]:
    """The fenced ```json metrics block of ``models/<name>.md``."""
    text = (MODELS / f"{name}.md").read_text(encoding="utf-8")
    match = re.search(r"```json metrics\n(.*?)\n```", text, flags=re.S)
    assert match, f"models/{name}.md has no metrics block"
    return json.loads(match.group(1))


def test_every_shipped_model_is_installed(service: InferenceService) -> None:
    assert set(ALL) <= set(service.installed_names())


@pytest.mark.parametrize("name", ALL)
def test_shipped_model_predicts_on_the_samples(service: InferenceService, xrays: list, name: str) -> None:
    predictions = service.predict_batch(xrays, name, heatmap=True)
    assert len(predictions) == len(xrays) == 3
    for xray, prediction in zip(xrays, predictions):
        height, width = xray.pixels.shape
        assert tuple(prediction.image_size) == (height, width)
        assert 0.0 <= prediction.probability <= 1.0
        for box in prediction.boxes:
            assert 0.0 <= box.x1 < box.x2 <= width and 0.0 <= box.y1 < box.y2 <= height
            assert 0.0 <= box.confidence <= 1.0
        confidences = [b.confidence for b in prediction.boxes]
        assert confidences == sorted(confidences, reverse=True)
        if prediction.heatmap is not None:
            assert np.isfinite(prediction.heatmap).all()
            assert prediction.heatmap.min() >= 0.0 and prediction.heatmap.max() <= 1.0


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_checkpoint_is_small_fp16_and_its_card_matches(service: InferenceService, name: str) -> None:
    from pneumo.models.checkpoint import read_checkpoint_meta

    path = MODELS / f"{name}.pt"
    assert path.stat().st_size < MAX_BYTES
    meta = read_checkpoint_meta(path)
    assert meta["family"] == name and meta["dtype"] == "float16"
    info = service.load(name)
    assert info.card == MODELS / f"{name}.md"
    stored, card = info.metrics, card_metrics(name)
    for key in CV_KEYS:
        assert card[key] == pytest.approx(stored[key], abs=1e-12), key
    assert stored["cv_folds"] >= 2
    assert 0.0 <= stored["cv_map_mean"] <= 1.0 and 0.0 <= stored["cv_auc_mean"] <= 1.0
    text = (MODELS / f"{name}.md").read_text(encoding="utf-8")
    assert f"{stored['cv_map_mean']:.3f} ± {stored['cv_map_std']:.3f}" in text  # the prose quotes the same numbers
    assert "not a diagnosis" in text.lower()
    for key in ("box_threshold", "gate_threshold", "probability_threshold"):
        assert 0.0 <= info.thresholds.to_dict()[key] <= 1.0


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_history_csv_covers_the_shipped_training(name: str) -> None:
    from pneumo.models.checkpoint import read_checkpoint_meta

    with open(MODELS / f"{name}.history.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {"epoch", "train_loss", "val_map", "val_auc"} <= set(rows[0])
    epochs = [int(r["epoch"]) for r in rows]
    assert epochs == list(range(1, len(rows) + 1))
    shipped_epoch = int(read_checkpoint_meta(MODELS / f"{name}.pt")["extra"]["epoch"])
    assert shipped_epoch in epochs  # the weights are one of the epochs the curve shows


def test_ensemble_spec_card_and_cv_record_agree() -> None:
    from pneumo.ensemble import EnsembleSpec

    spec = EnsembleSpec.load(MODELS / "ensemble.json")
    summary = json.loads((MODELS / "cv_summary.json").read_text())
    assert {m.model for m in spec.members} | {spec.classifier.model} == set(summary["shipped_experiments"])
    assert set(summary["shipped_experiments"]) <= set(CHECKPOINTS)
    tuning = spec.tuning
    # tuned on every out-of-fold output no member trained on
    assert tuning["n_images"] == summary["ensemble_scored_on"]["images"]
    folds = tuning["crossfit_map_folds"]
    card = card_metrics("ensemble")
    assert card["cv_map_mean"] == pytest.approx(float(np.mean(folds)), abs=1e-9)
    assert len(folds) == card["cv_folds"] == tuning["folds"]


def test_recorded_cross_validation_beats_chance_and_the_trivial_baseline() -> None:
    """Robust claims about the recorded out-of-fold results (not about three sample images)."""
    summary = json.loads((MODELS / "cv_summary.json").read_text())
    ensemble = summary["ensemble"][summary["ensemble_variant"]]
    assert ensemble["oof_auc"] > 0.5
    assert card_metrics("ensemble")["oof_auc"] == pytest.approx(ensemble["oof_auc"], abs=1e-12)
    for name in CHECKPOINTS:
        assert card_metrics(name)["oof_auc"] > 0.5, name
    assert ensemble["map_mean_std"][0] > summary["baseline"]["map_mean_std"][0]
    same_images = summary["ensemble_scored_on"]["members_same_images"]
    assert set(same_images) == set(summary["shipped_experiments"])
    for family, alone in same_images.items():  # the fusion earns its cost in AUC, each model on the same images
        assert ensemble["auc_mean_std"][0] > alone["auc_mean_std"][0], family
    assert ensemble["map_mean_std"][0] > same_images["chexnet"]["map_mean_std"][0]  # boxes beyond Grad-CAM's
