"""Image-level metrics against hand-computed values (no sklearn)."""

import math

import numpy as np
import pytest

from pneumo.errors import MetricInputError
from pneumo.evaluation import classification as cls

# the classic small example: positives score 0.35 and 0.8, negatives 0.1 and 0.4
SCORES = [0.1, 0.4, 0.35, 0.8]
LABELS = [0, 0, 1, 1]


def test_auc_of_a_known_small_set():
    # pairs (pos, neg): (0.35, 0.1) win, (0.35, 0.4) loss, (0.8, 0.1) win, (0.8, 0.4) win -> 3/4
    assert cls.roc_auc(SCORES, LABELS) == pytest.approx(0.75)


@pytest.mark.parametrize(
    "scores, labels, expected",
    [
        ([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0),  # perfect
        ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], 0.0),  # reversed
        ([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5),  # all tied
        ([0.5, 0.5, 0.2], [1, 0, 0], 0.75),  # one tie (1/2) and one win, over 2 pairs
    ],
)
def test_auc_extremes_and_ties(scores, labels, expected):
    assert cls.roc_auc(scores, labels) == pytest.approx(expected)


def test_auc_with_one_class_is_nan_not_an_error():
    assert math.isnan(cls.roc_auc([0.2, 0.9], [1, 1]))
    assert math.isnan(cls.roc_auc([0.2, 0.9], [0, 0]))


def test_roc_curve_points_and_area():
    fpr, tpr, thresholds = cls.roc_curve(SCORES, LABELS)
    np.testing.assert_allclose(thresholds, [np.inf, 0.8, 0.4, 0.35, 0.1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    # with ties the ROC has diagonal steps; its trapezoid area is still the Mann-Whitney AUC
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, size=40) / 4
    y = rng.integers(0, 2, size=40)
    fpr, tpr, _ = cls.roc_curve(s, y)
    assert np.trapezoid(tpr, fpr) == pytest.approx(cls.roc_auc(s, y))


def test_precision_recall_curve_and_average_precision():
    precision, recall, thresholds = cls.precision_recall_curve(SCORES, LABELS)
    np.testing.assert_allclose(thresholds, [0.8, 0.4, 0.35, 0.1])
    np.testing.assert_allclose(precision, [1, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1, 1])
    # AP = 0.5 * 1 + 0 * 0.5 + 0.5 * 2/3 + 0 * 0.5
    assert cls.average_precision(SCORES, LABELS) == pytest.approx(0.5 + 1 / 3)
    assert cls.average_precision([0.9, 0.8, 0.1], [1, 1, 0]) == pytest.approx(1.0)
    assert math.isnan(cls.average_precision([0.3, 0.2], [0, 0]))


def test_confusion_at_threshold_is_inclusive():
    c = cls.confusion_at_threshold(SCORES, LABELS, 0.35)  # calls 0.4, 0.35, 0.8 positive
    assert (c["tp"], c["fp"], c["tn"], c["fn"]) == (2, 1, 1, 0)
    assert c["sensitivity"] == 1.0 and c["specificity"] == 0.5
    assert c["ppv"] == pytest.approx(2 / 3) and c["npv"] == 1.0
    assert c["f1"] == pytest.approx(0.8) and c["accuracy"] == 0.75
    high = cls.confusion_at_threshold(SCORES, LABELS, 0.95)  # nothing called positive
    assert math.isnan(high["ppv"]) and high["npv"] == 0.5 and high["sensitivity"] == 0.0


def test_optimal_thresholds():
    # Youden J: 0.8 -> 0.5, 0.4 -> 0, 0.35 -> 0.5, 0.1 -> 0; tie resolved to the higher threshold
    assert cls.youden_threshold(SCORES, LABELS) == 0.8
    # F1: 0.8 -> 2/3, 0.4 -> 1/2, 0.35 -> 0.8, 0.1 -> 2/3
    assert cls.f1_optimal_threshold(SCORES, LABELS) == 0.35
    assert math.isnan(cls.youden_threshold([0.1, 0.2], [1, 1]))


def test_calibration_error_and_brier_by_hand():
    probs, labels = [0.1, 0.1, 0.9, 0.9], [0, 1, 1, 1]
    # bin [0.1, 0.2): confidence 0.1, fraction 0.5 -> 0.4 x 2/4; bin [0.9, 1]: 0.9 vs 1.0 -> 0.1 x 2/4
    assert cls.expected_calibration_error(probs, labels) == pytest.approx(0.25)
    assert cls.brier_score(probs, labels) == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    bins = cls.reliability_bins(probs, labels, n_bins=10)
    assert bins.counts.tolist() == [0, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins.fraction_positive[1] == 0.5 and bins.mean_confidence[9] == pytest.approx(0.9)
    assert np.isnan(bins.fraction_positive[0])
    # perfectly calibrated within its bin; 1.0 falls into the last bin
    assert cls.expected_calibration_error([0.25] * 4, [1, 0, 0, 0]) == pytest.approx(0.0)
    assert cls.reliability_bins([1.0, 0.0], [1, 0], n_bins=4).counts.tolist() == [1, 0, 0, 1]


def test_bootstrap_is_seeded_and_leaves_global_state_alone():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=60)
    s = np.clip(y * 0.3 + rng.uniform(0, 0.7, size=60), 0, 1)
    state = np.random.get_state()[1].copy()
    a = cls.bootstrap_auc_ci(s, y, n_boot=200, seed=7)
    b = cls.bootstrap_auc_ci(s, y, n_boot=200, seed=7)
    c = cls.bootstrap_auc_ci(s, y, n_boot=200, seed=8)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    assert a == b and (a.low, a.high) != (c.low, c.high)
    assert a.estimate == pytest.approx(cls.roc_auc(s, y))
    assert a.low <= a.estimate <= a.high and a.high - a.low > 0.01
    assert a.n_valid == 200


def test_fast_bootstrap_auc_equals_mann_whitney_on_resamples():
    rng = np.random.default_rng(5)
    s = rng.integers(0, 6, size=50) / 5  # many ties
    y = rng.integers(0, 2, size=50)
    auc = cls._weighted_auc_factory(*cls.check_inputs(s, y))
    assert auc(np.arange(50)) == pytest.approx(cls.roc_auc(s, y))
    for _ in range(20):
        idx = rng.integers(0, 50, size=50)
        assert auc(idx) == pytest.approx(cls.roc_auc(s[idx], y[idx]), nan_ok=True)


def test_bootstrap_degenerate_cases():
    perfect = cls.bootstrap_auc_ci([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], n_boot=100, seed=0)
    assert perfect.low == perfect.high == 1.0
    assert perfect.n_valid < 100  # resamples holding one class are left out (AUC undefined)
    constant = cls.bootstrap_mean_ci([0.25] * 10, n_boot=50)
    assert constant.low == constant.high == constant.estimate == 0.25


@pytest.mark.parametrize(
    "scores, labels",
    [([0.1, 0.2], [0, 1, 1]), ([0.1, np.nan], [0, 1]), ([0.1, 0.2], [0, 2]), ([0.1, 0.2], ["a", "b"])],
)
def test_malformed_inputs_raise_typed_error(scores, labels):
    with pytest.raises(MetricInputError):
        cls.roc_auc(scores, labels)


def test_probabilities_must_be_in_unit_interval():
    with pytest.raises(MetricInputError):
        cls.expected_calibration_error([1.2, 0.1], [1, 0])
