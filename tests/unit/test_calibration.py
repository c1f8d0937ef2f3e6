"""Calibration machinery (pneumo.evaluation.calibration) on synthetic data with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pneumo.errors import ConfigError, MetricInputError
from pneumo.evaluation.calibration import (
    Calibrator,
    ECE_MARGIN,
    calibration_report,
    choose_method,
    crossfit,
    ece,
    fit_isotonic,
    fit_logistic,
    fit_temperature,
    logit,
    operating_point,
    patient_bootstrap,
    reliability_diagram,
    sigmoid,
)


def _calibrated_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities p and labels y ~ Bernoulli(p): calibrated by construction."""
    rng = np.random.default_rng(seed)
    p = sigmoid(rng.normal(-1.0, 1.5, n))
    return p, (rng.random(n) < p).astype(int)


def test_temperature_scaling_recovers_a_known_temperature() -> None:
    p_true, y = _calibrated_sample(40_000, 0)
    for temperature in (0.5, 2.0):
        overconfident = sigmoid(logit(p_true) * temperature)  # what a model with temperature T would say
        fitted = fit_temperature(overconfident, y)
        assert fitted.params["temperature"] == pytest.approx(temperature, rel=0.05)
        np.testing.assert_allclose(fitted(overconfident), p_true, atol=0.02)
        assert ece(fitted(overconfident), y) < ece(overconfident, y)


def test_logistic_recovers_a_temperature_and_a_prevalence_shift_and_keeps_the_ranking() -> None:
    p_true, y = _calibrated_sample(40_000, 6)
    shifted = sigmoid(logit(p_true) * 1.5 + 0.8)  # overconfident and too high (a different prevalence)
    fitted = fit_logistic(shifted, y)
    assert fitted.params["temperature"] == pytest.approx(1.5, rel=0.05)
    assert fitted.params["bias"] == pytest.approx(-0.8 / 1.5, abs=0.05)
    assert ece(fitted(shifted), y) < 0.01 < ece(fit_temperature(shifted, y)(shifted), y)
    order = np.argsort(shifted)
    assert (np.diff(fitted(shifted)[order]) >= 0).all()


def test_isotonic_is_monotone_and_reduces_ece() -> None:
    p_true, y = _calibrated_sample(5_000, 1)
    skewed = p_true ** 0.4  # a monotone distortion: far too high
    fitted = fit_isotonic(skewed, y)
    grid = np.linspace(0, 1, 1001)
    assert (np.diff(fitted(grid)) >= -1e-12).all()
    assert fitted(grid).min() >= 0 and fitted(grid).max() <= 1
    assert ece(fitted(skewed), y) < 0.5 * ece(skewed, y)


@pytest.mark.parametrize("binning", ["width", "mass"])
def test_ece_of_a_calibrated_sample_is_near_zero_and_of_a_biased_one_is_its_bias(binning: str) -> None:
    p, y = _calibrated_sample(100_000, 2)
    assert ece(p, y, binning=binning) < 0.01
    constant = np.full(10_000, 0.3)
    labels = np.r_[np.ones(1_000), np.zeros(9_000)].astype(int)  # 10 % positive, says 30 %
    assert ece(constant, labels, binning=binning) == pytest.approx(0.2, abs=1e-9)
    with pytest.raises(MetricInputError):
        ece(p, y, binning="quantiles")


def test_operating_points_on_a_known_ranking() -> None:
    # 10 negatives at 0..0.9, 10 positives at 0.45..1.35 scaled into [0, 1]
    neg = np.linspace(0.0, 0.45, 10)
    pos = np.linspace(0.3, 0.75, 10)
    p = np.r_[neg, pos]
    y = np.r_[np.zeros(10), np.ones(10)].astype(int)
    # spec >= 90 %: at most 1 negative above the threshold -> threshold just above neg[8] = 0.4
    assert operating_point(p, y, "sensitivity_at_90_specificity") == pytest.approx(np.mean(pos >= 0.45))
    assert operating_point(p, y, "sensitivity_at_95_specificity") == pytest.approx(np.mean(pos > 0.45))
    assert operating_point(p, y, "specificity_at_90_sensitivity") == pytest.approx(np.mean(neg < pos[1]))
    assert np.isnan(operating_point(p, np.zeros(20, int), "sensitivity_at_90_specificity"))


def test_patient_bootstrap_resamples_patients_and_contains_the_estimate() -> None:
    p, y = _calibrated_sample(600, 3)
    groups = [f"patient{i // 2}" for i in range(600)]  # two images per patient
    sizes = []

    def mean_label(indices: np.ndarray) -> float:
        sizes.append(indices.size)
        return float(y[indices].mean())

    ci = patient_bootstrap(mean_label, groups, n_boot=200, seed=0)
    assert ci.low <= ci.estimate <= ci.high and ci.low < ci.high
    assert set(sizes) == {600}  # 300 patients drawn, two images each
    report = calibration_report(p, y, groups, n_boot=200)
    for key in ("auc", "ece_width", "ece_mass", "sensitivity_at_90_specificity", "specificity_at_90_sensitivity"):
        assert report[key]["low"] <= report[key]["estimate"] <= report[key]["high"], key
    json.dumps(report, allow_nan=False)


def test_calibrator_round_trips_through_json_and_rejects_bad_data() -> None:
    p, y = _calibrated_sample(2_000, 4)
    for calibrator in (fit_temperature(p, y, {"data": "synthetic"}), fit_logistic(p, y), fit_isotonic(p, y)):
        again = Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict(), allow_nan=False)))
        np.testing.assert_allclose(again(p), calibrator(p))
        assert isinstance(again(0.3), float)
    assert fit_temperature(p, y, {"data": "synthetic"}).fitted_on["data"] == "synthetic"
    with pytest.raises(ConfigError):
        Calibrator("platt", {})
    with pytest.raises(ConfigError):
        Calibrator("temperature", {"temperature": -1.0})
    with pytest.raises(ConfigError):
        Calibrator("isotonic", {"x": [0.0, 1.0], "y": [0.8, 0.2]})
    with pytest.raises(MetricInputError):
        fit_temperature(p, np.zeros_like(y))


def test_reliability_diagram_writes_a_png(tmp_path) -> None:
    p, y = _calibrated_sample(500, 5)
    out = reliability_diagram(tmp_path / "rel.png", {"raw": (p ** 0.5, y), "calibrated": (p, y)}, "synthetic")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_choose_method_prefers_a_ranking_preserving_calibrator_unless_isotonic_is_clearly_better() -> None:
    auc = {"temperature": 0.80, "logistic": 0.80, "isotonic": 0.80}
    assert choose_method({"temperature": 0.05, "logistic": 0.03, "isotonic": 0.025}, auc, 0.80) == "logistic"
    clearly = {"temperature": 0.05, "logistic": 0.04, "isotonic": 0.04 - ECE_MARGIN - 0.001}
    assert choose_method(clearly, auc, 0.80) == "isotonic"
    assert choose_method(clearly, {**auc, "isotonic": 0.79}, 0.80) == "logistic"  # costs too much AUC


def test_crossfit_calibrates_each_fold_with_a_calibrator_fitted_on_the_others() -> None:
    p_true, y = _calibrated_sample(3_000, 7)
    reported = sigmoid(logit(p_true) * 2.0)  # overconfident
    folds = np.arange(3_000) % 3
    q, rows = crossfit(reported, y, folds, "temperature")
    for k, row in enumerate(rows):
        mine = folds == k
        expected = fit_temperature(reported[~mine], y[~mine])(reported[mine])
        np.testing.assert_allclose(q[mine], expected)
        assert row["scored_on"] == f"fold {k}" and row["n_scored"] == 1_000 and row["ece_after"] < row["ece_before"]
    assert rows[0]["fit_on"] == "folds 1, 2"
    with pytest.raises(MetricInputError):
        crossfit(reported, y, np.zeros(3_000, int), "temperature")  # one fold: nothing to fit on
