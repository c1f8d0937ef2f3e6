"""Image-level classification metrics for a probability of pneumonia (curves, AUC, AP and Brier by scikit-learn).

Inputs everywhere: ``scores`` float ``(N,)`` (probabilities in [0, 1] where calibration is concerned, any
finite real otherwise) and ``labels`` ``(N,)`` of 0/1. An image is called positive at threshold ``t`` when
``score >= t``. Metrics that are undefined for the data (AUC with one class, PPV with no positive call...)
are ``NaN``, never an exception; malformed inputs raise ``MetricInputError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pneumo.errors import MetricInputError

__all__ = [
    "check_inputs",
    "roc_auc",
    "roc_curve",
    "precision_recall_curve",
    "average_precision",
    "confusion_at_threshold",
    "youden_threshold",
    "f1_optimal_threshold",
    "ReliabilityBins",
    "reliability_bins",
    "expected_calibration_error",
    "brier_score",
    "BootstrapCI",
    "bootstrap_ci",
    "bootstrap_auc_ci",
    "bootstrap_mean_ci",
]


def check_inputs(scores, labels, probabilities: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Validate -> (float64 scores (N,), int64 labels (N,)). ``probabilities`` also requires scores in [0, 1]."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y_raw = np.asarray(labels).reshape(-1)
    if s.shape != y_raw.shape:
        raise MetricInputError(f"{s.size} scores but {y_raw.size} labels")
    if not np.isfinite(s).all():
        raise MetricInputError("scores contain NaN or infinite values")
    try:
        y = y_raw.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise MetricInputError(f"labels must be 0/1: {error}") from None
    if not np.isin(y, (0.0, 1.0)).all():
        raise MetricInputError("labels must be 0 or 1")
    if probabilities and ((s < 0).any() or (s > 1).any()):
        raise MetricInputError("probabilities must lie in [0, 1]")
    return s, y.astype(np.int64)


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``; equals the Mann-Whitney U statistic with
    mid-ranks, a tie counting 1/2). NaN when ``labels`` hold only one class (the AUC is undefined)."""
    from sklearn.metrics import roc_auc_score

    s, y = check_inputs(scores, labels)
    if not 0 < int(y.sum()) < y.size:
        return float("nan")
    return float(roc_auc_score(y, s))


def roc_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points -> (fpr, tpr, thresholds), each ``(K + 1,)``; starts at (0, 0) with threshold +inf, then one
    point per distinct score (descending; ``sklearn.metrics.roc_curve`` keeping every point). Rates are NaN for
    an absent class."""
    from sklearn.metrics import roc_curve as _roc_curve

    s, y = check_inputs(scores, labels)
    n_pos = int(y.sum())
    if not 0 < n_pos < y.size:  # a class is absent: the thresholds exist, one of the rates does not
        thresholds = np.r_[np.inf, np.unique(s)[::-1]]
        counts = np.r_[0.0, [(s >= t).sum() for t in thresholds[1:]]]
        rate = counts / max(y.size, 1)
        nan = np.full(thresholds.size, np.nan)
        return (rate, nan, thresholds) if n_pos == 0 else (nan, rate, thresholds)
    fpr, tpr, thresholds = _roc_curve(y, s, drop_intermediate=False)
    return fpr.astype(np.float64), tpr.astype(np.float64), np.r_[np.inf, thresholds[1:]].astype(np.float64)


def precision_recall_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall points -> (precision, recall, thresholds), each ``(K,)``, one per distinct score in
    descending order (recall increasing; ``sklearn.metrics.precision_recall_curve`` without its final
    (precision 1, recall 0) point). Recall is NaN without positives."""
    from sklearn.metrics import precision_recall_curve as _pr_curve

    s, y = check_inputs(scores, labels)
    if y.size == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    if y.sum() == 0:  # no positives: precision 0 everywhere a call is made, recall undefined
        thresholds = np.unique(s)[::-1]
        return np.zeros(thresholds.size), np.full(thresholds.size, np.nan), thresholds
    precision, recall, thresholds = _pr_curve(y, s, drop_intermediate=False)
    return precision[:-1][::-1].astype(np.float64), recall[:-1][::-1].astype(np.float64), thresholds[::-1].astype(np.float64)


def average_precision(scores, labels) -> float:
    """Step-wise area under the precision-recall curve, sum over thresholds of (R_k - R_{k-1}) * P_k with
    R_0 = 0 (``sklearn.metrics.average_precision_score``). NaN without positive labels."""
    from sklearn.metrics import average_precision_score

    s, y = check_inputs(scores, labels)
    if y.sum() == 0:
        return float("nan")
    return float(average_precision_score(y, s))


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def confusion_at_threshold(scores, labels, threshold: float) -> dict[str, float]:
    """Counts and rates when ``score >= threshold`` is called positive.

    Returns tp, fp, tn, fn (ints) and sensitivity (TPR), specificity (TNR), ppv (precision), npv, accuracy,
    f1; a rate whose denominator is 0 is NaN.
    """
    s, y = check_inputs(scores, labels)
    called = s >= threshold
    tp = int(np.sum(called & (y == 1)))
    fp = int(np.sum(called & (y == 0)))
    tn = int(np.sum(~called & (y == 0)))
    fn = int(np.sum(~called & (y == 1)))
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "accuracy": _ratio(tp + tn, y.size),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def youden_threshold(scores, labels) -> float:
    """The score threshold maximising Youden's J = sensitivity + specificity - 1 (the highest such threshold
    on ties). NaN when a class is absent."""
    fpr, tpr, thresholds = roc_curve(scores, labels)
    if np.isnan(fpr).any() or np.isnan(tpr).any() or thresholds.size < 2:
        return float("nan")
    j = (tpr - fpr)[1:]
    return float(thresholds[1:][int(np.argmax(j))])


def f1_optimal_threshold(scores, labels) -> float:
    """The score threshold maximising F1 (the highest such threshold on ties). NaN without positives."""
    precision, recall, thresholds = precision_recall_curve(scores, labels)
    if recall.size == 0 or np.isnan(recall).any():
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(thresholds[int(np.argmax(f1))])


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width calibration bins on [0, 1]: ``edges`` (B + 1,), and per bin (B,): ``counts``,
    ``mean_confidence`` and ``fraction_positive`` (NaN for empty bins). Bin i holds edges[i] <= p < edges[i+1]
    (the last bin includes 1.0)."""

    edges: np.ndarray
    counts: np.ndarray
    mean_confidence: np.ndarray
    fraction_positive: np.ndarray


def reliability_bins(probabilities, labels, n_bins: int = 10) -> ReliabilityBins:
    """Bin probabilities into ``n_bins`` equal-width bins; see ``ReliabilityBins``."""
    if n_bins < 1:
        raise MetricInputError(f"n_bins must be >= 1, got {n_bins}")
    p, y = check_inputs(probabilities, labels, probabilities=True)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.floor(p * n_bins).astype(np.int64), 0, n_bins - 1)
    counts = np.bincount(index, minlength=n_bins).astype(np.int64)
    sum_p = np.bincount(index, weights=p, minlength=n_bins)
    sum_y = np.bincount(index, weights=y, minlength=n_bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_conf = np.where(counts > 0, sum_p / np.maximum(counts, 1), np.nan)
        frac_pos = np.where(counts > 0, sum_y / np.maximum(counts, 1), np.nan)
    return ReliabilityBins(edges, counts, mean_conf, frac_pos)


def expected_calibration_error(probabilities, labels, n_bins: int = 10) -> float:
    """ECE = sum over bins of (n_bin / N) * |fraction positive - mean probability|; NaN for no samples."""
    bins = reliability_bins(probabilities, labels, n_bins)
    total = bins.counts.sum()
    if total == 0:
        return float("nan")
    filled = bins.counts > 0
    gaps = np.abs(bins.fraction_positive[filled] - bins.mean_confidence[filled])
    return float(np.sum(bins.counts[filled] / total * gaps))


def brier_score(probabilities, labels) -> float:
    """Mean squared difference between probability and label (``sklearn.metrics.brier_score_loss``); NaN for
    no samples."""
    from sklearn.metrics import brier_score_loss

    p, y = check_inputs(probabilities, labels, probabilities=True)
    return float(brier_score_loss(y, p, labels=[0, 1])) if p.size else float("nan")


@dataclass(frozen=True)
class BootstrapCI:
    """A percentile bootstrap interval: the statistic on the full sample, the (low, high) percentiles over
    resamples, the number of resamples asked for and how many gave a finite value."""

    estimate: float
    low: float
    high: float
    n_boot: int
    n_valid: int

    def to_dict(self) -> dict[str, float | int]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "n_boot": self.n_boot,
                "n_valid": self.n_valid}


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n: int,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile bootstrap of ``statistic(indices)`` over ``n`` items resampled with replacement.

    ``statistic`` receives an int array of indices (the full sample is ``arange(n)``) and returns a float;
    NaN results (e.g. an AUC resample holding one class) are left out. Seeded with its own
    ``numpy.random.Generator``; global random state is untouched.
    """
    if n_boot < 1 or not 0 < confidence < 1:
        raise MetricInputError(f"need n_boot >= 1 and 0 < confidence < 1, got {n_boot}, {confidence}")
    estimate = float(statistic(np.arange(n))) if n else float("nan")
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(n_boot)] if n else [], dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return BootstrapCI(estimate, float("nan"), float("nan"), n_boot, 0)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return BootstrapCI(estimate, float(low), float(high), n_boot, int(values.size))


def _weighted_auc_factory(s: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], float]:
    """-> f(indices) = ``roc_auc(s[indices], y[indices])`` in O(n) per call: the scores are sorted and grouped
    into ties once; a resample only changes how often each image counts."""
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted = s[order], y[order].astype(np.float64)
    group = np.r_[0, np.cumsum(np.diff(s_sorted) != 0)] if s.size else np.zeros(0, np.int64)
    rank_of = np.empty_like(order)
    rank_of[order] = np.arange(order.size)
    n_groups = int(group[-1]) + 1 if s.size else 0

    def auc(indices: np.ndarray) -> float:
        w = np.bincount(rank_of[indices], minlength=s.size).astype(np.float64)
        pos = np.bincount(group, weights=w * y_sorted, minlength=n_groups)
        neg = np.bincount(group, weights=w * (1 - y_sorted), minlength=n_groups)
        n_pos, n_neg = pos.sum(), neg.sum()
        if n_pos == 0 or n_neg == 0:
            return float("nan")
        below = np.cumsum(neg) - neg  # negatives with a strictly lower score
        return float(np.sum(pos * (below + 0.5 * neg)) / (n_pos * n_neg))

    return auc


def bootstrap_auc_ci(scores, labels, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> BootstrapCI:
    """Bootstrap interval of ``roc_auc`` resampling images (resamples with one class are left out)."""
    s, y = check_inputs(scores, labels)
    return bootstrap_ci(_weighted_auc_factory(s, y), s.size, n_boot, confidence, seed)


def bootstrap_mean_ci(values, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> BootstrapCI:
    """Bootstrap interval of a mean, e.g. the RSNA mAP from its per-image scores (skipped images left out)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(v).all():
        raise MetricInputError("values contain NaN or infinite values")
    return bootstrap_ci(lambda idx: float(v[idx].mean()), v.size, n_boot, confidence, seed)
