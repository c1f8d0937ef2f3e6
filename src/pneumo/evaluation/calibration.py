"""Probability calibration: temperature scaling and isotonic regression, ECE, reliability diagrams and
operating points with patient-level bootstrap intervals.

* ``Calibrator`` maps a model's raw image probability in [0, 1] to a calibrated one. ``"temperature"``:
  ``sigmoid(logit(p) / T)`` (one parameter, fitted by minimising the log loss; keeps the ranking and so the
  AUC). ``"isotonic"``: scikit-learn's ``IsotonicRegression`` (monotone, non-decreasing, piecewise linear
  between its fitted knots, clipped outside them; its flat steps merge scores, so the AUC and operating
  points can drop). ``"logistic"`` (Platt scaling on logits): ``sigmoid(logit(p) / T + b)``, a temperature
  plus a shift of the log-odds, which also corrects a different prevalence (a temperature alone cannot);
  strictly increasing, so like temperature scaling it keeps the ranking.
  ``to_dict`` / ``from_dict`` give JSON-safe data, stored with the weights (checkpoint metadata or the
  ensemble spec) so a loaded model shows the calibrated probability.
* ECE: ``sum_b (n_b / N) |mean(y in b) - mean(p in b)|`` over ``n_bins`` bins, either equal-width on [0, 1]
  (``"width"``, ``classification.reliability_bins``) or equal-mass (``"mass"``: edges at the probabilities' quantiles k / n_bins, so each bin holds about N / n_bins
  images and sparse high-probability regions are not left to one or two; tied probabilities share a bin).
* Cross-fitting and the choice of method (``crossfit``, ``choose_method``): shared by the ``pneumo models``
  pipeline (``pneumo.pipeline.calibration``, out-of-fold outputs) and ``scripts/heldout_calibration.py``.
* Operating points: sensitivity at >= 90 % and >= 95 % specificity, specificity at >= 90 % sensitivity (the
  best value any threshold reaches under the constraint), each with a percentile bootstrap interval that
  resamples patients (all images of a drawn patient together).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.errors import ConfigError, MetricInputError
from pneumo.evaluation.classification import (
    BootstrapCI,
    bootstrap_ci,
    check_inputs,
    expected_calibration_error,
    reliability_bins,
    roc_auc,
)

METHODS = ("temperature", "logistic", "isotonic")
FORMAT_VERSION = 1
_EPS = 1e-6


def logit(p: np.ndarray | float) -> np.ndarray:
    """log(p / (1 - p)) with p clipped to [1e-6, 1 - 1e-6] (so 0 and 1 stay finite)."""
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(q) - np.log1p(-q)


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


# ------------------------------------------------------------------------------------------- calibrators


@dataclass(frozen=True)
class Calibrator:
    """Raw probability -> calibrated probability. ``params``: ``{"temperature": T}`` or
    ``{"temperature": T, "bias": b}`` (logistic) or ``{"x": [...], "y": [...]}`` (isotonic knots, x increasing); ``fitted_on``: where it was fitted (free-form)."""

    method: str
    params: Mapping[str, Any]
    fitted_on: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"calibration method must be one of {METHODS}, got {self.method!r}")
        if self.method in ("temperature", "logistic"):
            t = self.params.get("temperature")
            if not (isinstance(t, (int, float)) and np.isfinite(t) and t > 0):
                raise ConfigError(f"{self.method} calibration needs a positive temperature, got {t!r}")
            b = self.params.get("bias", 0.0)
            if not (isinstance(b, (int, float)) and np.isfinite(b)) or (self.method == "temperature" and b != 0.0):
                raise ConfigError(f"{self.method} calibration: bad bias {b!r}")
        else:
            x, y = np.asarray(self.params.get("x", []), float), np.asarray(self.params.get("y", []), float)
            if x.ndim != 1 or x.size < 1 or x.shape != y.shape or not np.isfinite(x).all() or not np.isfinite(y).all():
                raise ConfigError("isotonic calibration needs equal-length finite knot lists x and y")
            if (np.diff(x) < 0).any() or (np.diff(y) < 0).any() or y.min() < 0 or y.max() > 1:
                raise ConfigError("isotonic knots must be non-decreasing with y in [0, 1]")

    def __call__(self, probability: np.ndarray | float) -> np.ndarray | float:
        """Calibrate a probability or an array of them (same shape back; a float for a float)."""
        p = np.asarray(probability, dtype=np.float64)
        if self.method in ("temperature", "logistic"):
            out = sigmoid(logit(p) / float(self.params["temperature"]) + float(self.params.get("bias", 0.0)))
        else:
            out = np.interp(np.clip(p, 0.0, 1.0), self.params["x"], self.params["y"])
        out = np.clip(out, 0.0, 1.0)
        return float(out) if np.ndim(probability) == 0 else out

    def to_dict(self) -> dict[str, Any]:
        params = {k: (list(map(float, v)) if isinstance(v, (list, tuple, np.ndarray)) else float(v))
                  for k, v in self.params.items()}
        return {"format_version": FORMAT_VERSION, "method": self.method, "params": params,
                "fitted_on": dict(self.fitted_on)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Calibrator":
        if not isinstance(data, Mapping) or "method" not in data or not isinstance(data.get("params"), Mapping):
            raise ConfigError("a calibrator must be an object with 'method' and 'params'")
        if int(data.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
            raise ConfigError(f"calibrator format {data.get('format_version')} is newer than this pneumo reads")
        return cls(str(data["method"]), dict(data["params"]), dict(data.get("fitted_on") or {}))


def fit_temperature(probabilities, labels, fitted_on: Mapping[str, Any] | None = None) -> Calibrator:
    """Temperature T minimising the mean log loss of ``sigmoid(logit(p) / T)`` (T searched on log scale)."""
    from scipy.optimize import minimize_scalar

    p, y = check_inputs(probabilities, labels, probabilities=True)
    if p.size == 0 or y.min() == y.max():
        raise MetricInputError("temperature scaling needs both classes")
    z = logit(p)

    def loss(log_t: float) -> float:
        q = np.clip(sigmoid(z / np.exp(log_t)), 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))

    result = minimize_scalar(loss, bounds=(-4.0, 4.0), method="bounded", options={"xatol": 1e-6})
    return Calibrator("temperature", {"temperature": float(np.exp(result.x))},
                      {"n": int(p.size), "n_positive": int(y.sum()), **dict(fitted_on or {})})


def fit_logistic(probabilities, labels, fitted_on: Mapping[str, Any] | None = None) -> Calibrator:
    """Platt scaling on logits: T > 0 and b minimising the mean log loss of ``sigmoid(logit(p) / T + b)``."""
    from scipy.optimize import minimize

    p, y = check_inputs(probabilities, labels, probabilities=True)
    if p.size == 0 or y.min() == y.max():
        raise MetricInputError("logistic calibration needs both classes")
    z = logit(p)

    def loss(theta: np.ndarray) -> float:
        q = np.clip(sigmoid(z * np.exp(-theta[0]) + theta[1]), 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log1p(-q)))

    result = minimize(loss, np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-7, "fatol": 1e-10, "maxiter": 2000})
    log_t = float(np.clip(result.x[0], -4.0, 4.0))
    return Calibrator("logistic", {"temperature": float(np.exp(log_t)), "bias": float(result.x[1])},
                      {"n": int(p.size), "n_positive": int(y.sum()), **dict(fitted_on or {})})


def fit_isotonic(probabilities, labels, fitted_on: Mapping[str, Any] | None = None) -> Calibrator:
    """Isotonic regression of the labels on the probabilities (scikit-learn), kept as its knots."""
    from sklearn.isotonic import IsotonicRegression

    p, y = check_inputs(probabilities, labels, probabilities=True)
    if p.size == 0 or y.min() == y.max():
        raise MetricInputError("isotonic calibration needs both classes")
    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(p, y)
    return Calibrator("isotonic", {"x": model.X_thresholds_.tolist(), "y": model.y_thresholds_.tolist()},
                      {"n": int(p.size), "n_positive": int(y.sum()), **dict(fitted_on or {})})


FITTERS: dict[str, Callable[..., Calibrator]] = {"temperature": fit_temperature, "logistic": fit_logistic,
                                                 "isotonic": fit_isotonic}


# ------------------------------------------------------------------------------------------------- ECE


def ece(probabilities, labels, n_bins: int = 10, binning: str = "width") -> float:
    """Expected calibration error with equal-width (``"width"``) or equal-mass (``"mass"``) bins (module doc)."""
    if binning == "width":
        return expected_calibration_error(probabilities, labels, n_bins)
    if binning != "mass":
        raise MetricInputError(f"binning must be 'width' or 'mass', got {binning!r}")
    p, y = check_inputs(probabilities, labels, probabilities=True)
    if p.size == 0:
        return float("nan")
    inner = np.quantile(p, np.arange(1, n_bins) / n_bins)  # equal-mass edges; tied probabilities share a bin
    index = np.searchsorted(inner, p, side="right")
    counts = np.bincount(index, minlength=n_bins)
    gaps = np.abs(np.bincount(index, weights=y, minlength=n_bins) - np.bincount(index, weights=p, minlength=n_bins))
    return float(gaps[counts > 0].sum() / p.size)


# ---------------------------------------------------------------------------------------- operating points

#: name -> (constrained quantity, its minimum, reported quantity)
OPERATING_POINTS: dict[str, tuple[str, float, str]] = {
    "sensitivity_at_90_specificity": ("specificity", 0.90, "sensitivity"),
    "sensitivity_at_95_specificity": ("specificity", 0.95, "sensitivity"),
    "specificity_at_90_sensitivity": ("sensitivity", 0.90, "specificity"),
}


def _roc_points(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sensitivity, specificity) at every distinct threshold 'positive if p >= t', plus 'nothing positive'."""
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ps) != 0), ps.size - 1]  # last index of each tie group
    tp = np.cumsum(ys)[last]
    fp = np.cumsum(1 - ys)[last]
    n_pos, n_neg = ys.sum(), (1 - ys).sum()
    return np.r_[0.0, tp / n_pos], np.r_[1.0, 1.0 - fp / n_neg]


def operating_point(probabilities, labels, name: str) -> float:
    """One of ``OPERATING_POINTS`` (NaN when a class is missing)."""
    constrained, minimum, reported = OPERATING_POINTS[name]
    p, y = check_inputs(probabilities, labels)
    if p.size == 0 or y.min() == y.max():
        return float("nan")
    sens, spec = _roc_points(p, y)
    values = {"sensitivity": sens, "specificity": spec}
    ok = values[constrained] >= minimum - 1e-12
    return float(values[reported][ok].max())


def patient_bootstrap(statistic: Callable[[np.ndarray], float], groups: Sequence[str], n_boot: int = 1000,
                      confidence: float = 0.95, seed: int = 0) -> BootstrapCI:
    """Percentile bootstrap of ``statistic(image indices)`` resampling patients (``groups[i]`` = image i's
    patient) with replacement; every image of a drawn patient comes along (``classification.bootstrap_ci``)."""
    groups = np.asarray(list(groups))
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(int(inverse.max()) + 1)] if groups.size else []

    def on_patients(drawn: np.ndarray) -> float:
        return statistic(np.concatenate([members[g] for g in drawn]) if drawn.size else np.zeros(0, np.int64))

    return bootstrap_ci(on_patients, len(members), n_boot, confidence, seed)


def calibration_report(probabilities, labels, groups: Sequence[str], n_boot: int = 1000, seed: int = 0,
                       n_bins: int = 10) -> dict[str, Any]:
    """AUC, ECE (both binnings), Brier and the operating points of ``probabilities`` -> JSON-safe dict of
    ``{"estimate", "low", "high"}`` (95 % patient-bootstrap intervals) plus ``n`` and ``n_positive``."""
    p, y = check_inputs(probabilities, labels, probabilities=True)
    statistics: dict[str, Callable[[np.ndarray], float]] = {
        "auc": lambda i: roc_auc(p[i], y[i]) if 0 < y[i].sum() < i.size else float("nan"),
        "ece_width": lambda i: ece(p[i], y[i], n_bins, "width"),
        "ece_mass": lambda i: ece(p[i], y[i], n_bins, "mass"),
        "brier": lambda i: float(np.mean((p[i] - y[i]) ** 2)),
    }
    for name in OPERATING_POINTS:
        statistics[name] = lambda i, name=name: operating_point(p[i], y[i], name)
    out: dict[str, Any] = {"n": int(p.size), "n_positive": int(y.sum()), "n_boot": n_boot}
    for name, statistic in statistics.items():
        ci = patient_bootstrap(statistic, groups, n_boot, seed=seed)
        out[name] = {"estimate": ci.estimate, "low": ci.low, "high": ci.high}
    return out


# ------------------------------------------------------------------------------------- cross-fitting, choice

ECE_MARGIN = 0.01  # isotonic must beat the best ranking-preserving calibrator's cross-fitted ECE by this much
AUC_SLACK = 0.005  # a calibrator may cost at most this much cross-fitted AUC (isotonic steps merge scores and lowered Mask R-CNN's specificity at 90 % sensitivity from 0.50 to 0.32 at 0.009 AUC)
RANKING_PRESERVING = ("temperature", "logistic")
CHOICE_RULE = (f"the ranking-preserving calibrator (temperature or logistic) with the lower cross-fitted ECE, unless "
               f"isotonic beats its ECE by more than {ECE_MARGIN} while costing at most {AUC_SLACK} cross-fitted AUC")


def choose_method(ece_by_method: Mapping[str, float], auc_by_method: Mapping[str, float], raw_auc: float) -> str:
    """``CHOICE_RULE``: the ranking-preserving method (temperature, logistic) with the lower cross-fitted ECE
    (``ece_by_method[m]``, equal-width bins), unless isotonic beats it by more than ``ECE_MARGIN`` while its
    cross-fitted AUC (``auc_by_method["isotonic"]``) is at least ``raw_auc - AUC_SLACK``."""
    best = min(RANKING_PRESERVING, key=lambda m: ece_by_method[m])
    if ("isotonic" in ece_by_method and ece_by_method["isotonic"] < ece_by_method[best] - ECE_MARGIN
            and auc_by_method["isotonic"] >= raw_auc - AUC_SLACK):
        return "isotonic"
    return best


def crossfit(probabilities: np.ndarray, labels: np.ndarray, folds: np.ndarray, method: str,
             fold_name: str = "fold") -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Every image calibrated by a ``method`` calibrator fitted on the images of the other folds.

    ``probabilities`` (N,) raw in [0, 1], ``labels`` (N,) 0/1, ``folds`` (N,) any fold key per image (at least
    two distinct) -> (cross-fitted probabilities (N,), one row per scored fold: what it was fitted on, scored on,
    ``n_scored``, the parameters (isotonic: its knot count), ECE before / after with both binnings).
    ``MetricInputError`` when a fitting set lacks a class."""
    p, y = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    folds = np.asarray(folds)
    keys = list(np.unique(folds))
    if len(keys) < 2:
        raise MetricInputError("cross-fitting needs at least two folds")
    out = np.empty_like(p)
    rows = []
    for key in keys:
        score = folds == key
        others = [str(k) for k in keys if k != key]
        calibrator = FITTERS[method](p[~score], y[~score])
        out[score] = calibrator(p[score])
        rows.append({"fit_on": f"{fold_name}{'s' if len(others) > 1 else ''} {', '.join(others)}",
                     "scored_on": f"{fold_name} {key}", "n_scored": int(score.sum()),
                     "params": calibrator.to_dict()["params"] if method != "isotonic"
                     else {"knots": len(calibrator.params["x"])},
                     "ece_before": ece(p[score], y[score]), "ece_after": ece(out[score], y[score]),
                     "ece_mass_before": ece(p[score], y[score], binning="mass"),
                     "ece_mass_after": ece(out[score], y[score], binning="mass")})
    return out, rows


# ------------------------------------------------------------------------------------------------ plot


def reliability_diagram(path: str | Path, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str,
                        n_bins: int = 10) -> Path:
    """PNG reliability diagram: per named (probabilities, labels) pair, the observed fraction positive against
    the mean probability of each equal-width bin (marker size ~ bin count), the diagonal, ECE in the legend."""
    from pneumo.evaluation.report import _figure, _save

    figure = _figure(5.2, 4.6)
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    for (name, (p, y)), colour in zip(curves.items(), ("tab:red", "tab:blue", "tab:green", "tab:purple")):
        bins = reliability_bins(p, y, n_bins)
        filled = bins.counts > 0
        ax.plot(bins.mean_confidence[filled], bins.fraction_positive[filled], "-o", color=colour, lw=1.5,
                ms=3, label=f"{name} (ECE {ece(p, y, n_bins):.3f})")
        ax.scatter(bins.mean_confidence[filled], bins.fraction_positive[filled],
                   s=8 + 120 * bins.counts[filled] / max(1, bins.counts.sum()), color=colour, alpha=0.4)
    ax.set(xlabel="predicted probability", ylabel="fraction positive", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=7)
    _save(figure, Path(path))
    return Path(path)
