"""``ship`` stage: the chosen models into ``MODELS/`` (fp16 checkpoints, histories, cards, ensemble, baseline).

Per shipped name: the ``final`` (all-data) model's last epoch with thresholds tuned on every OOF output, or,
where no final run exists, the best CV fold's last-epoch model with that fold's thresholds; re-saved in fp16
with the CV metrics and the experiment in ``extra["shipping"]``. Then ``ensemble.json`` (the spec tuned in
``report``, with its out-of-fold calibrator), ``baseline.json`` (fitted on every RSNA image), ``cv_summary.json``
and the model cards (``pneumo.pipeline.cards``). Each ``<name>.pt`` gets its out-of-fold calibrator as a sidecar
``<name>.calibration.json`` bound to its sha256 (``pneumo.pipeline.calibration``; none when ``report`` skipped it). Decision support, not diagnosis: the cards say so.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.pipeline.calibration import copy_figures, ship_sidecar, with_ensemble_calibration
from pneumo.pipeline.cv import Pipeline, read_summary
from pneumo.files import atomic_path, atomic_write_bytes, to_jsonable as json_safe
from pneumo.pipeline.oof import OOF_CHECKPOINT


def ship_one(pipeline: Pipeline, summary: dict, shipped: str, name: str) -> dict[str, Any]:
    """Write ``MODELS/<shipped>.pt`` (+ history) from experiment ``name``; returns its card facts."""
    from pneumo.models.checkpoint import load_checkpoint, save_checkpoint
    from pneumo.pipeline.report import oof_thresholds

    work, models = pipeline.settings.work, pipeline.settings.models
    entry = summary["experiments"][name]
    if entry.get("kind") == "fixed":
        return ship_fixed(pipeline, summary, shipped, name)
    monitor = "val_auc" if entry["family"] == "chexnet" else "val_map"
    plain = entry["plain"]
    final_dir = work / "final" / name
    if (final_dir / "train_summary.json").is_file():  # retrained on all data: last epoch, OOF-tuned thresholds
        fold, run_dir = -1, final_dir
        loaded = load_checkpoint(run_dir / "last.pt", expected_family=entry["family"])
        thresholds = oof_thresholds(pipeline, name)
        metrics = {"epoch": float(loaded.meta["extra"]["epoch"])}
        final_summary = json.loads((final_dir / "train_summary.json").read_text())
        train_seconds, epochs = final_summary.get("wall_seconds"), final_summary["epochs_completed"]
    else:  # the best CV fold's model with that fold's thresholds
        fold = int(np.nanargmax([e[monitor] if e[monitor] is not None else -1 for e in entry["engine_val"]]))
        run_dir = work / "cv" / name / f"fold{fold}"
        loaded = load_checkpoint(run_dir / OOF_CHECKPOINT, expected_family=entry["family"])
        thresholds = loaded.thresholds
        metrics = {k: float(v) for k, v in loaded.metrics.items() if isinstance(v, (int, float))}
        train_seconds, epochs = entry["train_seconds_folds"][fold], entry["epochs"][fold]
    metrics.update({
        "cv_map_mean": plain["map_mean_std"][0], "cv_map_std": plain["map_mean_std"][1],
        "cv_auc_mean": plain["auc_mean_std"][0], "cv_auc_std": plain["auc_mean_std"][1],
        "oof_auc": plain["oof_auc"], "cv_folds": float(summary["folds"]), "shipped_fold": float(fold),
    })
    extra = dict(loaded.meta.get("extra") or {})
    extra["shipping"] = {"experiment": name, "fold": fold,
                         "selected_by": "all-data retrain (fold -1)" if fold < 0 else f"best {monitor} over the CV folds",
                         "cv": {k: plain[k] for k in ("map_folds", "auc_folds")}}
    target = models / f"{shipped}.pt"
    models.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=models) as scratch:  # same file system: no partial file in models/
        fresh = Path(scratch) / target.name
        save_checkpoint(fresh, loaded.model, config=loaded.config, preprocess=loaded.preprocess, thresholds=thresholds,
                        metrics=metrics, data_fingerprint=loaded.meta.get("data_fingerprint"), extra=extra, half=True)
        if not same_checkpoint(fresh, target):  # shipping again what is there keeps its bytes (sha256, sidecars)
            with atomic_path(target) as tmp:
                shutil.copyfile(fresh, tmp)
    ship_sidecar(summary, shipped, target)  # the OOF-fitted calibrator, bound to these bytes (or a stale one removed)
    shutil.copyfile(run_dir / "history.csv", models / f"{shipped}.history.csv")
    pipeline.log(f"shipped {target} ({target.stat().st_size / 1e6:.1f} MB) from {name} fold {fold}")
    return {"experiment": name, "fold": fold, "metrics": metrics, "thresholds": thresholds,
            "params": sum(p.numel() for p in loaded.model.parameters()), "bytes": target.stat().st_size,
            "train_seconds": train_seconds, "config": extra.get("train_config"), "epochs": epochs, "best_epoch": epochs}


def same_checkpoint(new: Path, old: Path) -> bool:
    """Whether checkpoint ``old`` exists and holds what ``new`` holds (weights and every setting; only when and by
    which code version it was written may differ)."""
    from pneumo.models.checkpoint import read_checkpoint_meta

    if not old.is_file():
        return False
    a, b = (dict(read_checkpoint_meta(p)) for p in (new, old))
    for meta in (a, b):
        meta.pop("created_utc", None)
        meta.pop("code_version", None)
    return json.dumps(json_safe(a), sort_keys=True, default=str) == json.dumps(json_safe(b), sort_keys=True, default=str)


def ship_fixed(pipeline: Pipeline, summary: dict, shipped: str, name: str) -> dict[str, Any]:
    """A fixed experiment's checkpoint ships as it is (weights, thresholds and sha256 unchanged: its calibration
    and the ensemble were fitted to exactly this file), copied to ``MODELS/<shipped>.pt`` if it lives elsewhere."""
    from pneumo.models.checkpoint import load_checkpoint

    experiment = pipeline.experiments[name]
    source = experiment.checkpoint_path(pipeline.settings.root)
    target = pipeline.settings.models / f"{shipped}.pt"
    for src, dst in ((source, target), (source.with_name(f"{source.stem}.history.csv"),
                                        target.with_name(f"{shipped}.history.csv"))):
        if src.is_file() and src.resolve() != dst.resolve():
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
    ship_sidecar(summary, shipped, target)  # calibrated on its outputs of the patients it never saw
    loaded = load_checkpoint(target, expected_family=experiment.family)
    extra = loaded.meta.get("extra") or {}
    pipeline.log(f"shipped {target} ({target.stat().st_size / 1e6:.1f} MB): fixed checkpoint of {name}, unchanged")
    return {"experiment": name, "fold": -1, "fixed": True, "metrics": dict(loaded.metrics),
            "thresholds": loaded.thresholds, "params": sum(p.numel() for p in loaded.model.parameters()),
            "bytes": target.stat().st_size, "train_seconds": None, "config": extra.get("train_config"),
            "epochs": extra.get("epoch"), "best_epoch": extra.get("epoch"), "trained_on": list(experiment.trained_on),
            "own_split": extra.get("split"), "own_cv": (extra.get("shipping") or {}).get("cv"),
            "model_config": loaded.meta.get("config"), "serving_change": extra.get("serving_change")}


def stage_ship(pipeline: Pipeline) -> None:
    """fp16 checkpoints + histories + cards + ensemble.json + baseline.json + cv_summary.json into MODELS/."""
    from pneumo.inference.baseline import fit_baseline
    from pneumo.io.header import image_size
    from pneumo.ensemble import EnsembleSpec
    from pneumo.pipeline.cards import write_cards

    settings = pipeline.settings
    summary = read_summary(settings.work)
    settings.models.mkdir(parents=True, exist_ok=True)
    shipped_info = {shipped: ship_one(pipeline, summary, shipped, name)
                    for shipped, name in summary["shipped_experiments"].items() if name}
    variant = summary.get("ensemble_variant")
    if variant:
        spec = EnsembleSpec.from_dict(summary["ensemble"][variant]["spec"])
        with_ensemble_calibration(summary, spec).save(settings.models / "ensemble.json")
        pipeline.log(f"shipped {settings.models / 'ensemble.json'} ({variant})")
    records = pipeline.records
    fit_baseline([r.boxes for r in records], [image_size(Path(r.path)) for r in records]).save(
        settings.models / "baseline.json")
    atomic_write_bytes(settings.work / "shipped.json", json.dumps(json_safe(shipped_info), indent=2, default=str).encode())
    record = json.loads(json.dumps(summary))  # the CV record shipped beside the models (without the spec copies)
    for result in record.get("ensemble", {}).values():
        for key in ("spec", "crossfit_probability_folds", "crossfit_ids_folds"):
            result.pop(key, None)
    record["shipped"] = {n: {k: i[k] for k in ("experiment", "fold", "params", "bytes", "train_seconds", "epochs",
                                                "best_epoch")} for n, i in shipped_info.items()}
    atomic_write_bytes(settings.models / "cv_summary.json", (json.dumps(json_safe(record), indent=1) + "\n").encode())
    if settings.docs:  # the OOF reliability diagrams beside the docs, where the cards link them
        copy_figures(summary, settings.work / "figures", Path(settings.docs).parent / "figures")
    write_cards(summary, shipped_info, settings.models, settings.docs)
    pipeline.log(f"model cards written to {settings.models}" + (f" and {settings.docs}" if settings.docs else ""))
