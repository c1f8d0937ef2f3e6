"""Calibration of the shipped models on their out-of-fold (OOF) outputs (``pneumo models report`` / ``ship``).

Per shipped model (its ``plain`` OOF image probabilities) and for the ensemble (its cross-fitted probabilities:
fold k scored by the spec tuned on the other folds, ``ensemble_figures``):

* cross-fitted calibration: for each fold k, every method of ``METHODS`` fitted on the other folds' OOF
  probabilities and applied to fold k (``pneumo.evaluation.calibration.crossfit``), so every image gets a
  calibrated probability from a calibrator that never saw it;
* ECE (equal-width and equal-mass bins) and pooled ROC AUC, raw vs each method cross-fitted; the method chosen
  by ``choose_method``; that method refitted on ALL OOF outputs (what ships: a sidecar
  ``models/<name>.calibration.json`` bound to the ``.pt``'s sha256, or ``calibration`` in ``ensemble.json``);
* AUC, ECE, Brier and the operating points (sensitivity at 90 % / 95 % specificity, specificity at 90 %
  sensitivity) of the raw and of the chosen cross-fitted probabilities with 95 % patient-bootstrap intervals;
* a reliability diagram (PNG, raw + each method cross-fitted) and its binned curves.

Too little data (fewer than ``MIN_PER_CLASS`` images of a class in some fitting set, fewer than two folds, one
class only) is not an error: the result is ``{"status": "skipped", "reason": ...}`` and no calibrator ships.
Decision support, not diagnosis: a calibrated probability is an estimate on these CV data, not a risk for a patient.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.errors import MetricInputError
from pneumo.evaluation.calibration import (CHOICE_RULE, FITTERS, METHODS, Calibrator, calibration_report,
                                          choose_method, crossfit, ece, reliability_diagram)
from pneumo.evaluation.classification import reliability_bins, roc_auc
from pneumo.files import atomic_write_bytes, file_sha256
from pneumo.inference.calibrated import save_sidecar, sidecar_path
from pneumo.pipeline.oof import OOFOutputs

MIN_PER_CLASS = 10  # images of each class every fitting set (the other folds) must hold
N_BOOT = 1000
ENSEMBLE = "ensemble"


def figure_name(name: str) -> str:
    """File name of a model's OOF reliability diagram (``reliability-<name>.png`` is the held-out one)."""
    return f"reliability-oof-{name}.png"


def skipped(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason}


def fold_inputs(folds: Sequence[OOFOutputs], target: Mapping[str, int], patient: Mapping[str, str],
                variant: str = "plain") -> tuple[list[list[float]], list[list[int]], list[list[str]]]:
    """One experiment's OOF folds -> (probabilities, labels, patient ids) per fold, image by image in each
    fold's own ``ids`` order (``target``/``patient``: image id -> 0/1 label / patient id)."""
    return ([[float(o.probability) for o in f.variants[variant]] for f in folds],
            [[int(target[i]) for i in f.ids] for f in folds], [[patient[i] for i in f.ids] for f in folds])


def _too_little(labels: np.ndarray, folds: np.ndarray) -> str | None:
    """Why these data cannot be calibrated and evaluated (None when they can)."""
    keys = np.unique(folds)
    if keys.size < 2:
        return f"{keys.size} fold(s) with outputs: cross-fitting needs at least two"
    for key in keys:
        fit = labels[folds != key]
        n_pos, n_neg = int(fit.sum()), int(fit.size - fit.sum())
        if min(n_pos, n_neg) < MIN_PER_CLASS:
            return (f"too little data: the fitting set for fold {key} (the other folds) holds {n_pos} positive and "
                    f"{n_neg} negative images; at least {MIN_PER_CLASS} of each are needed")
    return None


def _curve(p: np.ndarray, y: np.ndarray) -> dict[str, list]:
    """Equal-width reliability bins (10) as JSON lists: mean probability, fraction positive, count per bin."""
    bins = reliability_bins(p, y, 10)
    return {"mean_probability": [None if np.isnan(v) else float(v) for v in bins.mean_confidence],
            "fraction_positive": [None if np.isnan(v) else float(v) for v in bins.fraction_positive],
            "count": [int(c) for c in bins.counts]}


def oof_calibration(probability_folds: Sequence[Sequence[float]], label_folds: Sequence[Sequence[int]],
                    patient_folds: Sequence[Sequence[str]], title: str, figure: Path | None = None,
                    n_boot: int = N_BOOT, seed: int = 0, fitted_on: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Cross-fitted calibration figures of one model from its OOF outputs (module docstring).

    ``probability_folds[k]``: raw image probabilities in [0, 1] of fold k; ``label_folds[k]``: their 0/1 labels;
    ``patient_folds[k]``: their patient ids (bootstrap unit). ``figure``: where to write the reliability diagram
    (PNG; None: none). Returns JSON-safe figures with ``status`` "fitted", or "skipped" with a ``reason``."""
    if not (len(probability_folds) == len(label_folds) == len(patient_folds)) or any(
            not (len(p) == len(y) == len(g)) for p, y, g in zip(probability_folds, label_folds, patient_folds)):
        raise ValueError("probabilities, labels and patient ids must have the same fold lengths")
    p = np.asarray([v for fold in probability_folds for v in fold], dtype=np.float64)
    y = np.asarray([v for fold in label_folds for v in fold], dtype=np.int64)
    groups = [g for fold in patient_folds for g in fold]
    folds = np.asarray([k for k, fold in enumerate(probability_folds) for _ in fold], dtype=np.int64)
    reason = _too_little(y, folds)
    if reason is not None:
        return skipped(reason)
    try:
        crossfitted, methods = {}, {}
        for method in METHODS:
            q, rows = crossfit(p, y, folds, method)
            crossfitted[method] = q
            methods[method] = {"ece_width": ece(q, y), "ece_mass": ece(q, y, binning="mass"),
                               "auc": float(roc_auc(q, y)), "folds": rows}
        raw_auc = float(roc_auc(p, y))
        chosen = choose_method({m: methods[m]["ece_width"] for m in METHODS},
                               {m: methods[m]["auc"] for m in METHODS}, raw_auc)
        final = FITTERS[chosen](p, y, {**dict(fitted_on or {}), "folds": len(probability_folds),
                                       "note": "refitted on every out-of-fold output after cross-fitted evaluation"})
        raw = calibration_report(p, y, groups, n_boot, seed)
        calibrated = calibration_report(crossfitted[chosen], y, groups, n_boot, seed)
    except MetricInputError as error:
        return skipped(f"cannot calibrate: {error}")
    curves = {"raw": (p, y), **{f"{m} (cross-fitted{', chosen' if m == chosen else ''})": (crossfitted[m], y)
                                for m in METHODS}}
    if figure is not None:
        reliability_diagram(figure, curves, f"{title}: out-of-fold (n={p.size}, {len(probability_folds)} folds)")
    return {"status": "fitted", "n_images": int(p.size), "n_positive": int(y.sum()),
            "n_patients": len(set(groups)), "folds": len(probability_folds), "n_boot": n_boot,
            "raw_point": {"ece_width": ece(p, y), "ece_mass": ece(p, y, binning="mass"), "auc": raw_auc},
            "methods": methods, "chosen": chosen, "choice_rule": CHOICE_RULE, "calibrator": final.to_dict(),
            "raw": raw, "calibrated": calibrated, "figure": None if figure is None else figure.name,
            "reliability": {name: _curve(q, labels) for name, (q, labels) in curves.items()}}


def report_calibration(summary: Mapping[str, Any], oof: Mapping[str, Sequence[OOFOutputs]],
                       target: Mapping[str, int], patient: Mapping[str, str], figures: Path,
                       log: Callable[[str], None] = lambda _: None, n_boot: int = N_BOOT) -> dict[str, Any]:
    """``summary["calibration"]``: {shipped name or "ensemble": ``oof_calibration`` figures} for every shipped
    experiment (its ``plain`` OOF outputs) and the chosen ensemble variant (``crossfit_probability_folds`` /
    ``crossfit_ids_folds`` of ``summary["ensemble"][variant]``); diagrams into ``figures``."""
    figures.mkdir(parents=True, exist_ok=True)
    data = " + ".join((summary.get("data") or {}).get("dirs") or [])
    out: dict[str, Any] = {}
    inputs: dict[str, tuple] = {}
    for shipped, name in (summary.get("shipped_experiments") or {}).items():
        if name and name in oof:
            entry = (summary.get("experiments") or {}).get(name) or {}
            source = (f"outputs of the fixed checkpoint {name} on the {entry.get('scored_images')} {data} images "
                      f"outside {', '.join(entry.get('trained_on') or [])}, plain" if entry.get("kind") == "fixed"
                      else f"{data} out-of-fold outputs of {name}, plain")
            inputs[shipped] = (*fold_inputs(oof[name], target, patient), f"{shipped} ({name})", {"data": source})
    variant = summary.get("ensemble_variant")
    ensemble = (summary.get("ensemble") or {}).get(variant) if variant else None
    if ensemble and "crossfit_probability_folds" in ensemble:
        ids = ensemble["crossfit_ids_folds"]
        inputs[ENSEMBLE] = (ensemble["crossfit_probability_folds"], [[int(target[i]) for i in f] for f in ids],
                            [[patient[i] for i in f] for f in ids], f"ensemble ({variant}, cross-fitted)",
                            {"data": f"{data} cross-fitted ensemble ({variant}) probabilities of "
                                     f"{sum(len(f) for f in ids)} images"})
    for key, (probabilities, labels, patients, title, fitted_on) in inputs.items():
        result = oof_calibration(probabilities, labels, patients, title, figures / figure_name(key), n_boot,
                                 fitted_on=fitted_on)
        out[key] = result
        if result["status"] == "fitted":
            log(f"calibration {key}: ECE {result['raw']['ece_width']['estimate']:.4f} -> {result['chosen']} "
                f"{result['calibrated']['ece_width']['estimate']:.4f} (cross-fitted), AUC "
                f"{result['raw']['auc']['estimate']:.4f} -> {result['calibrated']['auc']['estimate']:.4f}")
        else:
            log(f"calibration {key}: skipped ({result['reason']})")
    return out


def calibrator_of(summary: Mapping[str, Any], name: str) -> Calibrator | None:
    """The calibrator ``report`` fitted for ``name`` (shipped name or "ensemble"); None when skipped/absent."""
    entry = (summary.get("calibration") or {}).get(name) or {}
    return Calibrator.from_dict(entry["calibrator"]) if entry.get("status") == "fitted" else None


def ship_sidecar(summary: Mapping[str, Any], name: str, checkpoint: Path) -> Path | None:
    """Write ``checkpoint``'s calibration sidecar (bound to its sha256) from the report; without a calibrator
    remove a stale sidecar instead. Returns the sidecar written, or None."""
    calibrator = calibrator_of(summary, name)
    if calibrator is None:
        sidecar_path(checkpoint).unlink(missing_ok=True)
        return None
    return save_sidecar(checkpoint, calibrator, file_sha256(checkpoint))


def with_ensemble_calibration(summary: Mapping[str, Any], spec: Any) -> Any:
    """``spec`` (an ``EnsembleSpec``) with the report's ensemble calibrator (or none) as its ``calibration``."""
    calibrator = calibrator_of(summary, ENSEMBLE)
    return dataclasses.replace(spec, calibration=None if calibrator is None else calibrator.to_dict())


def copy_figures(summary: Mapping[str, Any], work_figures: Path, docs_figures: Path) -> list[Path]:
    """Copy the report's reliability diagrams from ``work_figures`` to ``docs_figures`` (atomic writes)."""
    copied = []
    for entry in (summary.get("calibration") or {}).values():
        source = work_figures / str(entry.get("figure") or "")
        if entry.get("figure") and source.is_file():
            atomic_write_bytes(docs_figures / source.name, source.read_bytes())
            copied.append(docs_figures / source.name)
    return copied


def relative_link(target: Path, start: Path) -> str:
    """``target`` as a markdown link path relative to the folder ``start`` (forward slashes)."""
    return Path(os.path.relpath(target, start)).as_posix()
