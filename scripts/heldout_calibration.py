"""Held-out figures and calibration of the shipped models from ``scripts/heldout_outputs.py``'s npz.

    python scripts/heldout_calibration.py --outputs runs/heldout/rsna-plus.npz --out runs/heldout/report \
        [--store models]

Per model (the three checkpoints without TTA, as they answer alone; the ensemble as shipped, flip TTA, from the
members' stored outputs): AUC, RSNA mAP at the model's operating thresholds, and Mask R-CNN / ensemble before
and after the size taper. Calibration: the patients are split into two random halves (seed 0); temperature
scaling and isotonic regression are fitted on one half and scored on the other, both ways; the cross-fitted
probabilities (every image calibrated by the half it is not in) give ECE and operating points with 95 %
patient-bootstrap intervals. Temperature, logistic (Platt) and isotonic are compared (``choose``: a
ranking-preserving one unless isotonic is clearly better and keeps the AUC); the chosen one is refitted on all images
and, with ``--store``, saved with the model (checkpoint sidecar / ``ensemble.json``). Writes ``report.json``
and reliability diagrams (PNG) to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from typing import Any

from pneumo.evaluation.calibration import (CHOICE_RULE, FITTERS, Calibrator, calibration_report, choose_method,
                                          crossfit, patient_bootstrap, reliability_diagram)
from pneumo.evaluation.figures import HELDOUT_FILE, heldout_markdown, heldout_summary_markdown, replace_section
from pneumo.evaluation.classification import roc_auc
from pneumo.evaluation.heldout import HeldoutOutputs
from pneumo.evaluation.rsna_map import mean_average_precision
from pneumo.inference.calibrated import save_sidecar
from pneumo.files import file_sha256
from pneumo.models.checkpoint import read_checkpoint_meta
from pneumo.ensemble import EnsembleSpec, fuse
from pneumo.types import Thresholds

TAPER = 0.02  # maskrcnn.MaskRCNNConfig.min_box_side
STABILITY = ("Stability: why the ensemble's probability jumped under invisible noise (Mask R-CNN's sub-pixel edge "
             "boxes in its flipped view), the size-taper fix and the remaining Mask R-CNN sensitivity are in "
             "[decisions/0011](decisions/0011-stability-and-calibration.md).")
CHECKPOINTS = ("chexnet", "unet", "maskrcnn")


def model_answers(h: HeldoutOutputs, idx: np.ndarray, model_dir: Path, taper: float) -> dict[str, dict]:
    """name -> {"p": raw probabilities (len(idx),), "boxes": shown boxes per image} on images ``idx``."""
    out: dict[str, dict] = {}
    for name in CHECKPOINTS:
        thresholds = Thresholds.from_dict(read_checkpoint_meta(model_dir / f"{name}.pt").get("thresholds"))
        t = taper if name == "maskrcnn" else 0.0
        outputs = [h.image_output(name, int(i), tta=False, taper=t) for i in idx]
        out[name] = {"p": np.array([o.probability for o in outputs]),
                     "boxes": [thresholds.apply(o.probability, o.boxes(), o.image_size)
                               for o in outputs]}
    spec = dataclasses.replace(EnsembleSpec.load(model_dir / "ensemble.json"), calibration=None)
    fused = [fuse(spec, {k: h.image_output(k, int(i), tta=spec.fusion.tta_flip, taper=taper if k == "maskrcnn" else 0.0)
                         for k in spec.model_keys}) for i in idx]
    out["ensemble"] = {"p": np.array([f.probability for f in fused]), "boxes": [f.boxes for f in fused]}
    return out


def detection_figures(answer: dict, h: HeldoutOutputs, idx: np.ndarray, n_boot: int) -> dict[str, Any]:
    """AUC and RSNA mAP (with a patient-bootstrap interval over the per-image scores) of one model's answers."""
    y = h.labels[idx]
    preds = {str(i): b for i, b in zip(idx, answer["boxes"])}
    gts = {str(i): h.gt[int(i)] for i in idx}
    result = mean_average_precision(preds, gts)
    scores = np.array([np.nan if result.per_image[str(i)] is None else result.per_image[str(i)] for i in idx])
    groups = [h.patient_ids[int(i)] for i in idx]

    def mean_scored(indices: np.ndarray) -> float:
        v = scores[indices]
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else float("nan")

    ci = patient_bootstrap(mean_scored, groups, n_boot)
    return {"auc": roc_auc(answer["p"], y), "map": {"estimate": result.map, "low": ci.low, "high": ci.high}}


def choose(entry: dict) -> str:
    """``choose_method`` (pneumo.evaluation.calibration) on one model's entry of ``report.json``."""
    return choose_method({m: entry[m]["crossfit"]["ece_width"]["estimate"] for m in FITTERS},
                         {m: entry[m]["crossfit"]["auc"]["estimate"] for m in FITTERS}, entry["raw"]["auc"]["estimate"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--store", action="store_true", help="save the chosen calibrators with the models")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--data-name", default="rsna-plus")
    args = parser.parse_args(argv)

    h = HeldoutOutputs.load(args.outputs)
    classifier_only = np.flatnonzero(np.isfinite(h.probs["chexnet"][:, 0]))
    done = np.flatnonzero(h.done)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"data": f"{args.data_name} (held out: the shipped models were trained on rsna-mini only)",
                    "n_patients_all": len(h.patient_ids), "n_done_all_members": int(done.size),
                    "n_classifier": int(classifier_only.size), "models": {}}
    before = model_answers(h, done, args.model_dir, 0.0)
    after = model_answers(h, done, args.model_dir, TAPER)
    chexnet_all = np.array([h.image_output("chexnet", int(i), tta=False).probability for i in classifier_only])
    summary: dict[str, Any] = {
        "data": f"{args.data_name} (held out; shipped rsna-mini-trained models)",
        "how": ("ONNX Runtime backend; the three checkpoints as they answer alone (no TTA), the ensemble as shipped "
                "(flip TTA, members fused from the same runs)"),
        "n_boot": args.n_boot, "choice": CHOICE_RULE, "models": {},
        "weights_sha256": {n: file_sha256(args.model_dir / f"{n}.pt") for n in CHECKPOINTS}}
    for name in ("chexnet", "unet", "maskrcnn", "ensemble"):
        idx = classifier_only if name == "chexnet" else done
        p = chexnet_all if name == "chexnet" else after[name]["p"]
        y = h.labels[idx]
        groups = [h.patient_ids[int(i)] for i in idx]
        halves = np.random.default_rng(0).permutation(np.arange(idx.size) % 2)  # patient-disjoint: 1 image each
        entry: dict = {"n": int(idx.size), "n_positive": int(y.sum()),
                       "raw": calibration_report(p, y, groups, args.n_boot)}
        detection = detection_figures(after[name], h, done, args.n_boot)
        entry["raw"]["map"] = detection["map"] if name != "chexnet" else detection_figures(
            model_answers_chexnet(h, idx, args.model_dir), h, idx, args.n_boot)["map"]
        curves = {"raw": (p, y)}
        crossfitted = {}
        for method in FITTERS:
            q, rows = crossfit(p, y, halves, method, fold_name="half")
            crossfitted[method] = q
            entry[method] = {"folds": rows, "crossfit": calibration_report(q, y, groups, args.n_boot)}
            curves[f"{method} (cross-fitted)"] = (q, y)
        best = choose(entry)
        final = FITTERS[best](p, y, {"data": args.data_name, "n_images": int(idx.size),
                                     "note": "fitted on all held-out images after cross-fitted evaluation"})
        entry["chosen"] = best
        entry["calibrator"] = final.to_dict()
        figure = args.out / f"reliability-{name}.png"
        reliability_diagram(figure, curves,
                            f"{name}: held-out {args.data_name} (n={idx.size}), shipped rsna-mini-trained model")
        report["models"][name] = entry
        calibrated = dict(entry[best]["crossfit"])
        calibrated["map"] = entry["raw"]["map"]  # boxes do not depend on the shown probability
        compact = {"n": entry["n"], "n_positive": entry["n_positive"], "raw": entry["raw"], "calibrated": calibrated,
                   "auc": entry["raw"]["auc"], "map": entry["raw"]["map"], "ece_raw": entry["raw"]["ece_width"],
                   "ece_calibrated": calibrated["ece_width"],
                   "folds": {m: entry[m]["folds"] for m in FITTERS}, "calibration": final.to_dict(),
                   "stored_in": "in `models/ensemble.json` (`calibration`)" if name == "ensemble"
                   else f"in `models/{name}.calibration.json` (bound to the sha256 of `{name}.pt`)"}
        if name in ("maskrcnn", "ensemble"):
            old = detection_figures(before[name], h, done, 1)
            compact["taper"] = {"auc_before": old["auc"], "auc_after": detection["auc"],
                                "map_before": old["map"]["estimate"], "map_after": detection["map"]["estimate"],
                                "n_changed": int((np.abs(before[name]["p"] - after[name]["p"]) > 0.01).sum())}
        summary["models"][name] = compact
        if args.store:
            store(name, final, args.model_dir)
            docs_figure = Path("docs/figures") / f"reliability-{name}.png"
            docs_figure.parent.mkdir(parents=True, exist_ok=True)
            docs_figure.write_bytes(figure.read_bytes())
        print(f"{name}: n={idx.size} auc={entry['raw']['auc']['estimate']:.3f} "
              f"ece raw={entry['raw']['ece_width']['estimate']:.3f} -> {best} "
              f"{entry[best]['crossfit']['ece_width']['estimate']:.3f}; map {entry['raw']['map']['estimate']:.4f}",
              flush=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=True) + "\n")
    (args.out / HELDOUT_FILE).write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    if args.store:
        from pneumo.files import atomic_write

        with atomic_write(args.model_dir / HELDOUT_FILE) as handle:
            handle.write(json.dumps(summary, indent=2, allow_nan=True) + "\n")
        docs = Path("docs/models.md")
        if docs.is_file() and args.model_dir.resolve() == Path("models").resolve():
            section = heldout_summary_markdown(summary, STABILITY)
            docs.write_text(replace_section(docs.read_text(encoding="utf-8"), section), encoding="utf-8")
        for name in summary["models"]:
            card = args.model_dir / f"{name}.md"
            if card.is_file():
                section = heldout_markdown(summary, name, f"../docs/figures/reliability-{name}.png")
                card.write_text(replace_section(card.read_text(encoding="utf-8"), section), encoding="utf-8")
    return 0


def model_answers_chexnet(h: HeldoutOutputs, idx: np.ndarray, model_dir: Path) -> dict:
    """The classifier alone (plain view) on images ``idx``: probabilities and its Grad-CAM boxes as shown."""
    thresholds = Thresholds.from_dict(read_checkpoint_meta(model_dir / "chexnet.pt").get("thresholds"))
    outputs = [h.image_output("chexnet", int(i), tta=False) for i in idx]
    return {"p": np.array([o.probability for o in outputs]),
            "boxes": [thresholds.apply(o.probability, o.boxes(), o.image_size) for o in outputs]}


def store(name: str, calibrator: Calibrator, model_dir: Path) -> None:
    if name == "ensemble":
        path = model_dir / "ensemble.json"
        spec = EnsembleSpec.load(path)
        dataclasses.replace(spec, calibration=calibrator.to_dict()).save(path)
    else:
        checkpoint = model_dir / f"{name}.pt"
        save_sidecar(checkpoint, calibrator, file_sha256(checkpoint))


if __name__ == "__main__":
    sys.exit(main())
