"""Out-of-fold calibration in ``pneumo models`` (pneumo.pipeline.calibration) on synthetic folds whose
miscalibration is known: the model reports p, the labels are drawn with probability p ** 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pneumo.evaluation.calibration import FITTERS, ece
from pneumo.evaluation.classification import roc_auc
from pneumo.files import file_sha256
from pneumo.inference.calibrated import checkpoint_calibrator, sidecar_path
from pneumo.pipeline import calibration as oofcal
from pneumo.pipeline.calibration import oof_calibration, ship_sidecar

OPERATING = ("sensitivity_at_90_specificity", "sensitivity_at_95_specificity", "specificity_at_90_sensitivity")


def _folds(n_folds: int = 4, per_fold: int = 400, seed: int = 0, power: float = 2.0):
    """Per fold: reported probabilities p ~ U(0.02, 0.98), labels ~ Bernoulli(p ** power), 2 images per patient."""
    rng = np.random.default_rng(seed)
    probabilities, labels, patients = [], [], []
    for k in range(n_folds):
        p = rng.uniform(0.02, 0.98, per_fold)
        probabilities.append(p.tolist())
        labels.append((rng.random(per_fold) < p ** power).astype(int).tolist())
        patients.append([f"f{k}-p{i // 2}" for i in range(per_fold)])
    return probabilities, labels, patients


def test_cross_fitted_calibration_lowers_ece_keeps_the_auc_and_brackets_the_operating_points(tmp_path):
    probabilities, labels, patients = _folds()
    figure = tmp_path / "figures" / "reliability-oof-x.png"
    figure.parent.mkdir()
    result = oof_calibration(probabilities, labels, patients, "x", figure, n_boot=200)
    json.dumps(result, allow_nan=False)  # summary.json-safe
    assert result["status"] == "fitted" and result["n_images"] == 1600 and result["n_patients"] == 800
    p, y = np.concatenate(probabilities), np.concatenate(labels)
    raw_ece = ece(p, y)
    assert result["raw"]["ece_width"]["estimate"] == pytest.approx(raw_ece) and raw_ece > 0.1  # says p, means p**2
    assert result["calibrated"]["ece_width"]["estimate"] < 0.5 * raw_ece
    for method in ("temperature", "logistic"):  # ranking-preserving: pooled cross-fitted AUC stays (per-fold maps differ)
        assert result["methods"][method]["auc"] == pytest.approx(roc_auc(p, y), abs=0.005)
    logistic = result["methods"]["logistic"]  # a shift of the log-odds fixes most of p**2 (a temperature alone cannot)
    assert logistic["ece_width"] < 0.5 * raw_ece and logistic["ece_mass"] < 0.5 * result["raw"]["ece_mass"]["estimate"]
    chosen = result["chosen"]
    assert result["calibrated"]["ece_width"]["estimate"] == pytest.approx(result["methods"][chosen]["ece_width"])
    if chosen != "isotonic":
        assert result["calibrated"]["auc"]["estimate"] == pytest.approx(result["raw"]["auc"]["estimate"], abs=0.005)
    # what ships: the chosen method refitted on every OOF output
    refit = FITTERS[chosen](p, y)
    assert result["calibrator"]["method"] == chosen and result["calibrator"]["params"] == pytest.approx(refit.to_dict()["params"])
    for name in OPERATING + ("auc",):  # (ECE is biased upwards by resampling: a small one can sit below its interval)
        ci = result["calibrated"][name]
        assert ci["low"] <= ci["estimate"] <= ci["high"] and ci["low"] < ci["high"], name
    assert result["calibrated"]["sensitivity_at_95_specificity"]["estimate"] <= \
        result["calibrated"]["sensitivity_at_90_specificity"]["estimate"]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result["figure"] == figure.name
    assert sum(result["reliability"]["raw"]["count"]) == 1600 and len(result["methods"]["isotonic"]["folds"]) == 4


def test_a_calibrated_model_is_left_about_as_it_is(tmp_path):
    probabilities, labels, patients = _folds(power=1.0, seed=1)
    result = oof_calibration(probabilities, labels, patients, "x", n_boot=50)
    assert result["chosen"] in ("temperature", "logistic")
    assert result["calibrated"]["ece_width"]["estimate"] < result["raw"]["ece_width"]["estimate"] + 0.02
    assert result["figure"] is None


@pytest.mark.parametrize("case", ["tiny", "one_class", "one_fold"])
def test_too_little_data_is_a_recorded_skip_not_a_crash(case, tmp_path):
    if case == "tiny":  # the 4-patient pipeline test: 2 folds of 1 positive + 1 negative
        probabilities, labels, patients = [[0.2, 0.7], [0.4, 0.6]], [[0, 1], [0, 1]], [["a", "b"], ["c", "d"]]
    else:
        probabilities, labels, patients = _folds(n_folds=1 if case == "one_fold" else 3, per_fold=100)
        if case == "one_class":
            labels = [[0] * len(fold) for fold in labels]
    figure = tmp_path / "reliability-oof-x.png"
    result = oof_calibration(probabilities, labels, patients, "x", figure, n_boot=20)
    assert result["status"] == "skipped" and result["reason"] and "calibrator" not in result
    assert not figure.exists()
    if case != "one_fold":
        assert "too little data" in result["reason"] and f"{oofcal.MIN_PER_CLASS}" in result["reason"]


def test_shipping_writes_a_bound_sidecar_and_removes_a_stale_one(tmp_path):
    probabilities, labels, patients = _folds(n_folds=2, per_fold=200)
    summary = {"calibration": {"chexnet": oof_calibration(probabilities, labels, patients, "x", n_boot=20),
                               "unet": {"status": "skipped", "reason": "too little data"}}}
    checkpoint = tmp_path / "chexnet.pt"
    checkpoint.write_bytes(b"weights")
    written = ship_sidecar(summary, "chexnet", checkpoint)
    assert written == sidecar_path(checkpoint)
    assert json.loads(written.read_text())["checkpoint_sha256"] == file_sha256(checkpoint)
    loaded = checkpoint_calibrator(checkpoint, file_sha256(checkpoint))
    assert loaded is not None and loaded.method == summary["calibration"]["chexnet"]["chosen"]
    unet = tmp_path / "unet.pt"
    unet.write_bytes(b"other weights")
    sidecar_path(unet).write_text("{}")  # from an earlier ship
    assert ship_sidecar(summary, "unet", unet) is None and not sidecar_path(unet).exists()
