"""The figures a front end may show about the shipped models, and where they come from.

* Cross-validated (``cv``): the fenced ```json metrics block of each model card ``<model_dir>/<name>.md``
  (out-of-fold figures recorded when the models were chosen; keys ``cv_auc_mean``, ``cv_auc_std``,
  ``cv_map_mean``, ``cv_map_std``, ``cv_folds``).
* Out-of-fold, per shipped model (``shipped_figures``): ``<model_dir>/cv_summary.json`` from ``pneumo models``:
  each model's mean ± std over folds, the images it was scored on (a fixed checkpoint: only those from folders
  it never trained on) and its calibration's cross-fitted ECE before / after with 95 % patient-bootstrap
  intervals.
* Held out (``heldout``): ``<model_dir>/heldout.json`` from ``scripts/heldout_calibration.py``: the shipped
  weights run on patients they never saw (rsna-plus), with 95 % patient-bootstrap intervals.
* Anything in ``<name>.history.csv`` of a shipped model is in-sample: the shipped weights were fitted on all
  the images their "validation" columns were computed on, so those columns are training-data figures.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

HELDOUT_FILE = "heldout.json"
_METRICS_BLOCK = re.compile(r"```json metrics\n(.*?)\n```", flags=re.S)


def card_metrics(model_dir: Path, name: str) -> dict[str, Any]:
    """The metrics block of ``<model_dir>/<name>.md`` ({} when the card or block is missing or unreadable)."""
    try:
        match = _METRICS_BLOCK.search((Path(model_dir) / f"{name}.md").read_text(encoding="utf-8"))
        return dict(json.loads(match.group(1))) if match else {}
    except (OSError, ValueError):
        return {}


SUMMARY_FILE = "cv_summary.json"


def shipped_figures(model_dir: Path) -> dict[str, dict[str, Any]]:
    """{shipped name or "ensemble": {"auc", "map": (mean, std), "folds", "images", "scope", "ece_raw",
    "ece_calibrated": {"estimate", "low", "high"} | None, "calibration": method | None}} from
    ``<model_dir>/cv_summary.json`` ({} when missing or unreadable)."""
    try:
        summary = json.loads((Path(model_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))
        experiments, k = summary["experiments"], int(summary["folds"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    calibration = summary.get("calibration") or {}
    total = (summary.get("data") or {}).get("images")
    out: dict[str, dict[str, Any]] = {}
    rows = [(n, experiments.get(e)) for n, e in (summary.get("shipped_experiments") or {}).items() if e]
    variant = summary.get("ensemble_variant")
    if variant:
        scope = summary.get("ensemble_scored_on") or {}
        rows.append(("ensemble", {**summary["ensemble"][variant], "scored_images": scope.get("images", total),
                                  "plain": summary["ensemble"][variant], "kind": "ensemble"}))
    for name, entry in rows:
        if not entry:
            continue
        images = entry.get("scored_images", total)
        if entry.get("kind") == "fixed":
            where = f"{images} images outside {', '.join(entry.get('trained_on') or [])} (not retrained)"
        else:
            where = f"{images} images" + ("" if images == total else f" of {total} (no member trained on them)")
        cal = calibration.get(name) or {}
        fitted = cal.get("status") == "fitted"
        out[name] = {"auc": tuple(entry["plain"]["auc_mean_std"]), "map": tuple(entry["plain"]["map_mean_std"]),
                     "folds": k, "images": images, "scope": f"{k}-fold, {where}",
                     "ece_raw": cal["raw"]["ece_width"] if fitted else None,
                     "ece_calibrated": cal["calibrated"]["ece_width"] if fitted else None,
                     "calibration": cal.get("chosen") if fitted else None}
    return out


def heldout_figures(model_dir: Path) -> dict[str, Any]:
    """``<model_dir>/heldout.json`` ({} when missing, unreadable or made for other weights than the checkpoints
    now in ``model_dir``, compared by ``weights_sha256``): {"data": ..., "models": {name: {...}}, ...}."""
    from pneumo.files import file_sha256

    try:
        data = json.loads((Path(model_dir) / HELDOUT_FILE).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            return {}
        for name, sha in (data.get("weights_sha256") or {}).items():
            if file_sha256(Path(model_dir) / f"{name}.pt") != sha:
                return {}
        return data
    except (OSError, ValueError):
        return {}


SECTION_BEGIN = "<!-- heldout:begin (scripts/heldout_calibration.py) -->"
SECTION_END = "<!-- heldout:end -->"
_ROWS = (("auc", "AUC"), ("map", "RSNA mAP at the operating thresholds"),
         ("ece_width", "ECE, 10 equal-width bins"), ("ece_mass", "ECE, 10 equal-mass bins"), ("brier", "Brier score"),
         ("sensitivity_at_90_specificity", "sensitivity at 90 % specificity"),
         ("sensitivity_at_95_specificity", "sensitivity at 95 % specificity"),
         ("specificity_at_90_sensitivity", "specificity at 90 % sensitivity"))


def _ci(entry: Any) -> str:
    if not isinstance(entry, dict) or entry.get("estimate") is None:
        return "-"
    low, high = entry.get("low"), entry.get("high")
    if low is None or high is None or low != low or high != high:
        return f"{entry['estimate']:.3f}"
    return f"{entry['estimate']:.3f} [{low:.3f}, {high:.3f}]"


def heldout_markdown(heldout: dict[str, Any], name: str, figure_link: str | None = None) -> str:
    """The held-out section of model ``name``'s card (markdown between ``SECTION_BEGIN`` / ``SECTION_END``)."""
    entry = heldout.get("models", {}).get(name)
    if not entry:
        return ""
    method = entry["calibration"]["method"]
    lines = [
        SECTION_BEGIN,
        f"## Held-out evaluation and calibration: {heldout['data']}",
        "",
        f"The **shipped weights** (trained on the 210 rsna-mini patients only) run on {entry['n']} rsna-plus patients "
        f"({entry['n_positive']} positive) they never saw, {heldout['how']}. 95 % intervals: percentile bootstrap "
        f"over patients ({heldout['n_boot']} resamples). Calibrated column: **cross-fitted** - the patients were "
        "split into two random halves, the calibrator fitted on one half scores the other, both ways, so no image "
        "is scored by a calibrator that saw it.",
        "",
        f"| metric | raw probability | calibrated ({method}, cross-fitted) |",
        "|---|---|---|",
    ]
    for key, label in _ROWS:
        lines.append(f"| {label} | {_ci(entry['raw'].get(key))} | {_ci(entry['calibrated'].get(key))} |")
    lines += ["", "ECE is biased upwards in bootstrap resamples (drawn-twice patients make bins lumpier), so its "
              "interval can lie above a small estimate.", "",
              "ECE (equal-width) on each half, calibrator fitted on the other:", "",
              "| method | fitted on -> scored on | ECE before | ECE after |", "|---|---|---|---|"]
    for m, rows in entry["folds"].items():
        for row in rows:
            lines.append(f"| {m} | {row['fit_on']} -> {row['scored_on']} (n={row['n_scored']}) | "
                         f"{row['ece_before']:.3f} | {row['ece_after']:.3f} |")
    lines += ["", f"Shipped calibrator: **{method}** (rule: {heldout.get('choice', 'lowest cross-fitted ECE')}), "
              f"refitted on all {entry['n']} images "
              f"and stored {entry['stored_in']}; the probability a Prediction shows is the calibrated one "
              "(the raw one is in `extra.uncalibrated_probability`; gates, box scores and fusion still use the raw "
              "value they were tuned on). One temperature or logistic calibrator keeps the ranking, so the shipped "
              "model's AUC and operating points are those of the raw column (the cross-fitted column mixes two "
              "calibrators, one per half, which reorders a few images); isotonic steps merge scores and can "
              "lower them."]
    if entry.get("taper"):
        t = entry["taper"]
        lines += ["", f"Mask R-CNN size taper (stability fix): on these images AUC {t['auc_before']:.3f} -> "
                  f"{t['auc_after']:.3f}, mAP {t['map_before']:.4f} -> {t['map_after']:.4f}; probability changed "
                  f"by > 0.01 on {t['n_changed']} of {entry['n']} images."]
    if figure_link:
        lines += ["", f"![reliability diagram, {name}, held-out rsna-plus]({figure_link})"]
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


def replace_section(text: str, section: str) -> str:
    """``text`` with its held-out section replaced by ``section`` (appended when it has none)."""
    start, end = text.find(SECTION_BEGIN), text.find(SECTION_END)
    if start >= 0 and end > start:
        return text[:start] + section + text[end + len(SECTION_END):].lstrip("\n")
    return text.rstrip("\n") + "\n\n" + section


def heldout_summary_markdown(heldout: dict[str, Any], stability: str = "") -> str:
    """docs/models.md's held-out section: one row per model (raw and calibrated ECE, AUC, mAP, operating
    points), then ``stability`` (free text) if given."""
    models = heldout.get("models", {})
    if not models:
        return ""
    lines = [
        SECTION_BEGIN,
        f"## Held-out figures: {heldout['data']}",
        "",
        "rsna-plus (1,037 patients, patient-disjoint from rsna-mini) was never seen by the shipped weights, so these "
        f"are held-out figures of the **shipped** models, not of the recipe (that is the CV table above). "
        f"{heldout['how'][0].upper() + heldout['how'][1:]}. "
        f"95 % intervals: bootstrap over patients ({heldout['n_boot']} resamples). Calibrated: cross-fitted on two "
        "random patient halves (each image scored by the calibrator fitted on the other half).",
        "",
        "| model | n (pos) | AUC | mAP | ECE raw | ECE calibrated | calibrator | sens @ 90 % spec | sens @ 95 % spec "
        "| spec @ 90 % sens |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in models.items():
        lines.append(
            f"| {name} | {e['n']} ({e['n_positive']}) | {_ci(e['raw']['auc'])} | {_ci(e['raw']['map'])} | "
            f"{_ci(e['raw']['ece_width'])} | {_ci(e['calibrated']['ece_width'])} | {e['calibration']['method']} | "
            f"{_ci(e['calibrated']['sensitivity_at_90_specificity'])} | "
            f"{_ci(e['calibrated']['sensitivity_at_95_specificity'])} | "
            f"{_ci(e['calibrated']['specificity_at_90_sensitivity'])} |")
    lines += ["", "ECE: 10 equal-width bins (the cards also give equal-mass bins). Operating points on the "
              "cross-fitted calibrated probability. Reliability diagrams: `docs/figures/reliability-<model>.png`. "
              "Raw outputs: `runs/heldout/rsna-plus.npz` (`scripts/heldout_outputs.py`; not committed), figures "
              "`scripts/heldout_calibration.py`."]
    if stability:
        lines += ["", stability]
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"
