#!/usr/bin/env python
"""Train, cross-validate and ship the default models (``models/``): ``make models`` runs this.

Stages (each resumable: finished runs are skipped when the script is run again with the same --work dir):

0. ``pretrain`` - each ``PRETRAIN`` run: a network trained on the NIH weak-label images alone (validated on an
   NIH patient-level fold); experiments with ``init`` start from its best checkpoint (``init_from``).
1. ``cv``   - for every experiment of ``EXPERIMENTS`` and every fold k of a patient-level K-fold split of the
   RSNA folder (``pneumo.data.folds.assign_folds``, the split ``pneumo train`` uses): ``pneumo.training.fit``
   trains on folds != k and validates on fold k; then the fold's last-epoch checkpoint (``OOF_CHECKPOINT``)
   predicts its validation fold through ``CheckpointPredictor`` (the serving code path) -> out-of-fold (OOF)
   outputs (with ``--tta`` also flip-TTA ones). Experiments with ``nih`` add the NIH weak-label images to every
   training fold (never to a validation fold: NIH patients cannot be linked to RSNA patients).
2. ``report`` - per experiment: per-fold mAP (thresholds tuned on the *other* folds' OOF outputs, so never on
   the scored fold) and AUC, mean +- std; the unet lung-prior ablation ("off" vs "filter" on the same
   weights); the trivial baseline; the shipped experiment per family (best CV AUC / mAP); the ensemble (fusion
   and member weights tuned on the other folds' OOF outputs, scored on fold k), then the spec tuned on all OOF
   outputs.
3. ``final`` - each shipped experiment retrained on all RSNA patients with its CV recipe (last epoch).
4. ``ship``  - each shipped family's checkpoint (the ``final`` model, else the best CV fold's) re-saved in fp16
   with the CV metrics, its ``history.csv``, a model card, ``docs/models.md``, the ensemble spec and the baseline
   spec (fitted on every RSNA image).

Everything is seeded (``seed``/``split_seed`` of the configs); torch uses ``--threads`` intra-op threads.
Decision support, not diagnosis: the cards say so.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pickle
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from pneumo.files import to_jsonable as json_safe

ROOT = Path(__file__).resolve().parents[1]

#: name -> (family, config file, overrides, use NIH in training)
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "unet": {"family": "unet", "config": "configs/unet.yaml", "nih": False, "set": [
        "image_size=128", "epochs=3", "batch_size=4", "lr=0.0005", "warmup_epochs=0.3", "early_stopping.patience=0",
        "model.lung_prior=filter", "num_workers=0"]},
    "chexnet-lite0": {"family": "chexnet", "config": "configs/chexnet.yaml", "nih": False, "set": [
        "image_size=128", "epochs=2", "batch_size=8", "lr=0.0005", "warmup_epochs=0.3", "early_stopping.patience=0",
        "model.backbone=efficientnet-lite0", "model.pretrained=true", "num_workers=0"]},
    "maskrcnn": {"family": "maskrcnn", "config": "configs/maskrcnn.yaml", "nih": False, "set": [
        "image_size=128", "epochs=2", "batch_size=4", "lr=0.0005", "warmup_epochs=0.3", "early_stopping.patience=0",
        "model.box_head_dim=256", "num_workers=0"]},
    "chexnet-densenet": {"family": "chexnet", "config": "configs/chexnet.yaml", "nih": False, "set": [
        "image_size=128", "epochs=2", "batch_size=8", "lr=0.0005", "warmup_epochs=0.3", "early_stopping.patience=0",
        "model.backbone=densenet121", "model.pretrained=false", "num_workers=0"]},
    # second round: longer schedules, higher resolution, ImageNet-initialised encoders
    "chexnet-lite0-224": {"family": "chexnet", "config": "configs/chexnet.yaml", "nih": False, "set": [
        "image_size=224", "epochs=8", "batch_size=16", "lr=0.0005", "warmup_epochs=0.5", "early_stopping.patience=0",
        "model.backbone=efficientnet-lite0", "model.pretrained=true", "num_workers=0"]},
    "unet-lite0": {"family": "unet", "config": "configs/unet.yaml", "nih": False, "set": [
        "image_size=256", "epochs=8", "batch_size=8", "lr=0.0005", "warmup_epochs=0.5", "early_stopping.patience=0",
        "model.encoder=efficientnet-lite0", "model.pretrained=true", "model.lung_prior=filter", "num_workers=0"]},
    "unet-lite0-e4": {"family": "unet", "config": "configs/unet.yaml", "nih": False, "set": [
        "image_size=256", "epochs=4", "batch_size=8", "lr=0.0005", "warmup_epochs=0.5", "early_stopping.patience=0",
        "model.encoder=efficientnet-lite0", "model.pretrained=true", "model.lung_prior=filter", "num_workers=0"]},
    "maskrcnn-lite0": {"family": "maskrcnn", "config": "configs/maskrcnn.yaml", "nih": False, "set": [
        "image_size=256", "epochs=6", "batch_size=4", "lr=0.0005", "warmup_epochs=0.5", "early_stopping.patience=0",
        "model.backbone=efficientnet-lite0", "model.pretrained=true", "model.box_head_dim=256", "num_workers=0"]},
    "chexnet-lite0-224-lowlr": {"family": "chexnet", "config": "configs/chexnet.yaml", "nih": False, "set": [
        "image_size=224", "epochs=5", "batch_size=16", "lr=0.0001", "warmup_epochs=0.5", "early_stopping.patience=0",
        "model.backbone=efficientnet-lite0", "model.pretrained=true", "num_workers=0"]},
    # the 224 px classifier fine-tuned from the NIH weak-label pretraining below (PRETRAIN["chexnet-nih"])
    "chexnet-lite0-224-nih": {"family": "chexnet", "config": "configs/chexnet.yaml", "nih": False, "init": "chexnet-nih",
                              "set": ["image_size=224", "epochs=5", "batch_size=16", "lr=0.0001", "warmup_epochs=0.5",
                                      "early_stopping.patience=0", "model.backbone=efficientnet-lite0",
                                      "model.pretrained=true", "num_workers=0"]},
}
#: the CV models' checkpoint that predicts their validation fold: the last epoch of the fixed schedule, so the
#: scored fold never chooses the weights it is scored with (``best.pt`` would be chosen on that very fold)
OOF_CHECKPOINT = "last.pt"
#: pretraining runs on the NIH weak-label images alone (validated on an NIH patient-level fold, never on RSNA)
PRETRAIN: dict[str, dict[str, Any]] = {
    "chexnet-nih": {"family": "chexnet", "config": "configs/chexnet.yaml", "set": [
        "image_size=224", "epochs=8", "batch_size=16", "lr=0.0005", "warmup_epochs=0.5", "early_stopping.patience=0",
        "early_stopping.monitor=val_auc", "model.backbone=efficientnet-lite0", "model.pretrained=true",
        "num_workers=0", "folds=5", "val_fold=0"]},
}
#: shipped name -> candidate experiments; ``report`` ships the one with the best CV AUC (chexnet) or mAP (box models)
SHIPPED = {"unet": ("unet", "unet-lite0", "unet-lite0-e4"), "maskrcnn": ("maskrcnn", "maskrcnn-lite0"),
           "chexnet": ("chexnet-lite0", "chexnet-densenet", "chexnet-lite0-224", "chexnet-lite0-224-lowlr",
                       "chexnet-lite0-224-nih")}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


# ---------------------------------------------------------------------------------------------- data


def rsna_records(data: Path) -> list:
    from pneumo.data.rsna import read_rsna

    return list(read_rsna(data))


def fold_map(records: list, k: int, seed: int) -> dict[str, int]:
    from pneumo.data.folds import assign_folds

    return assign_folds(records, k=k, seed=seed)


@contextmanager
def nih_always_trains(nih_ids: set[str], rsna_records_: list) -> Iterator[None]:
    """Inside ``fit``, split the RSNA records exactly as an RSNA-only run would and put every NIH record in
    the training set (NIH images cannot be linked to RSNA patients, so they must never validate)."""
    from pneumo.data.folds import split_records
    from pneumo.training import data_setup

    original = data_setup.split

    def split(records, config):  # same signature as data_setup.split
        folds = fold_map(rsna_records_, config.folds, config.split_seed)
        rsna = [r for r in records if r.image_id not in nih_ids]
        nih = [r for r in records if r.image_id in nih_ids]
        train, val = split_records(rsna, folds, config.val_fold)
        return train + nih, val

    data_setup.split = split
    try:
        yield
    finally:
        data_setup.split = original


# ---------------------------------------------------------------------------------------------- CV stage


def run_overrides(spec: dict, args: argparse.Namespace, val_fold: int) -> list[str]:
    """The experiment's ``--set`` pairs plus the split, seeds, cache, pretrained init and --epochs-scale."""
    overrides = list(spec["set"]) + [f"folds={args.folds}", f"val_fold={val_fold}", f"split_seed={args.split_seed}",
                                     f"seed={args.seed}", "device=cpu"]
    overrides += [f"cache_dir={args.cache_dir}"] if args.cache_dir else []
    overrides += [f"init_from={pretrained_checkpoint(args, spec['init'])}"] if spec.get("init") else []
    if args.epochs_scale != 1.0:
        epochs = next(int(s.split("=")[1]) for s in spec["set"] if s.startswith("epochs="))
        overrides.append(f"epochs={max(1, round(epochs * args.epochs_scale))}")
    return overrides


def finished_run(run_dir: Path, label: str) -> bool:
    """True (logged) if ``run_dir`` holds a finished run; otherwise removes an interrupted one's leftovers, so the
    run starts again from scratch (training is deterministic)."""
    if (run_dir / "train_summary.json").is_file():
        log(f"{label}: already trained ({run_dir})")
        return True
    if run_dir.exists():
        shutil.rmtree(run_dir)
    return False


def timed_fit(family: str, config: Any, records: list, run_dir: Path, data_dir: Path | None) -> tuple[Any, float]:
    """``fit`` without progress bars -> (its result, wall seconds); the seconds are added to train_summary.json."""
    from pneumo.training.loop import fit

    started = time.monotonic()
    result = fit(family, config, records, run_dir, data_dir=data_dir, progress=False, log=log)
    seconds = time.monotonic() - started
    path = run_dir / "train_summary.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "wall_seconds": seconds}, indent=2))
    return result, seconds


def train_fold(name: str, spec: dict, fold: int, args: argparse.Namespace, rsna: list, nih: list) -> Path:
    """Train experiment ``name`` with validation fold ``fold``; returns the run dir (skips a finished run)."""
    from pneumo.training.config import resolve_train_config

    run_dir = args.work / "cv" / name / f"fold{fold}"
    if finished_run(run_dir, f"{name} fold {fold}"):
        return run_dir
    config = resolve_train_config(spec["family"], ROOT / spec["config"], run_overrides(spec, args, fold))
    records = rsna + (nih if spec["nih"] else [])
    log(f"{name} fold {fold}: training {spec['family']} ({len(records)} records, NIH={spec['nih']})")
    if spec["nih"]:
        with nih_always_trains({r.image_id for r in nih}, rsna):
            result, seconds = timed_fit(spec["family"], config, records, run_dir, None)
    else:
        result, seconds = timed_fit(spec["family"], config, records, run_dir, args.rsna)
    log(f"{name} fold {fold}: done in {seconds:.0f} s, best epoch {result.best_epoch}, "
        f"val mAP {result.best_metrics.get('val_map', float('nan')):.4f} AUC {result.best_metrics.get('val_auc', float('nan')):.4f}")
    return run_dir


def pretrained_checkpoint(args: argparse.Namespace, name: str) -> Path:
    """The best checkpoint of pretraining run ``name`` (SystemExit if the ``pretrain`` stage has not run)."""
    path = args.work / "pretrain" / name / "best.pt"
    if not path.is_file():
        raise SystemExit(f"{path} missing: run the 'pretrain' stage first")
    return path


def stage_pretrain(args: argparse.Namespace) -> None:
    """Each ``PRETRAIN`` run on the NIH weak-label images alone (skipped when finished)."""
    import torch

    from pneumo.data.nih import read_nih
    from pneumo.training.config import resolve_train_config

    if args.nih is None:
        raise SystemExit("the pretrain stage needs --nih")
    torch.set_num_threads(args.threads)
    records = list(read_nih(args.nih))
    for name, spec in PRETRAIN.items():
        run_dir = args.work / "pretrain" / name
        if finished_run(run_dir, f"pretrain {name}"):
            continue
        overrides = list(spec["set"]) + [f"split_seed={args.split_seed}", f"seed={args.seed}", "device=cpu"]
        overrides += [f"cache_dir={args.cache_dir}"] if args.cache_dir else []
        config = resolve_train_config(spec["family"], ROOT / spec["config"], overrides)
        log(f"pretrain {name}: {spec['family']} on {len(records)} NIH images")
        result, seconds = timed_fit(spec["family"], config, records, run_dir, args.nih)
        log(f"pretrain {name}: done in {seconds:.0f} s, best epoch {result.best_epoch}, "
            f"NIH val AUC {result.best_metrics.get('val_auc', float('nan')):.4f}")


def oof_outputs(run_dir: Path, val_records: list, family: str, tta: bool) -> None:
    """``OOF_CHECKPOINT`` -> its validation fold's outputs through ``CheckpointPredictor`` -> ``oof.pkl`` (plain, and
    with ``tta`` also flip-TTA outputs).

    unet: outputs with the lung prior as trained ("filter") and switched off (same weights) for the ablation.
    """
    from pneumo.io import read_xray
    from pneumo.inference.predictors import CheckpointPredictor

    target = run_dir / "oof.pkl"
    if target.is_file():
        existing = pickle.loads(target.read_bytes())
        if existing.get("checkpoint") == OOF_CHECKPOINT:
            if tta and "tta" not in existing:
                add_tta(run_dir, val_records, existing)  # --tta after the fact: add only the flip-TTA outputs
            return
    predictor = CheckpointPredictor(run_dir / OOF_CHECKPOINT, run_dir.parent.name)
    xrays = [read_xray(r.path) for r in val_records]
    variants = {"plain": (False, None)}
    if tta:  # every family: a tta_flip ensemble flips its classifier too
        variants["tta"] = (True, None)
    if family == "unet":
        variants["prior_off"] = (False, "off")
    result: dict[str, Any] = {"ids": [r.image_id for r in val_records], "checkpoint": OOF_CHECKPOINT}
    for key, (use_tta, prior) in variants.items():
        saved = getattr(predictor.model.config, "lung_prior", None)
        if prior is not None:
            predictor.model.config.lung_prior = prior
        try:
            result[key] = batched_outputs(predictor, xrays, use_tta)
        finally:
            if prior is not None:
                predictor.model.config.lung_prior = saved
    if family == "unet":  # the prior (input pixels) and each image's geometry, for the outside-the-lungs measure
        result["prior"] = predictor.model.lung_prior[0, 0].detach().cpu().numpy()
        result["size"] = predictor.preprocessor.size
        result["geometry"] = [predictor.preprocessor(np.asarray(x.pixels, dtype=np.float32))[1] for x in xrays]
    write_oof(run_dir, result)


def batched_outputs(predictor: Any, xrays: list, tta: bool, batch_size: int = 8) -> list:
    """``predictor.outputs`` (no heatmaps) over ``xrays`` in batches -> one ImageOutput per image."""
    outputs = []
    for start in range(0, len(xrays), batch_size):
        outputs.extend(predictor.outputs(xrays[start:start + batch_size], tta=tta, heatmap=False)[0])
    return outputs


def write_oof(run_dir: Path, result: dict) -> None:
    """Write ``run_dir/oof.pkl`` atomically (an interrupted write leaves no truncated pickle behind)."""
    tmp = run_dir / "oof.pkl.tmp"
    tmp.write_bytes(pickle.dumps(result))
    tmp.replace(run_dir / "oof.pkl")


def add_tta(run_dir: Path, val_records: list, existing: dict) -> None:
    """Add flip-TTA outputs to an existing ``oof.pkl`` (same checkpoint, same images)."""
    from pneumo.io import read_xray
    from pneumo.inference.predictors import CheckpointPredictor

    if existing["ids"] != [r.image_id for r in val_records]:
        raise SystemExit(f"{run_dir}: OOF images differ from the fold's validation records")
    predictor = CheckpointPredictor(run_dir / OOF_CHECKPOINT, run_dir.parent.name)
    existing["tta"] = batched_outputs(predictor, [read_xray(r.path) for r in val_records], tta=True)
    write_oof(run_dir, existing)


def stage_cv(args: argparse.Namespace) -> None:
    import torch

    from pneumo.data.folds import split_records
    from pneumo.data.nih import read_nih

    torch.set_num_threads(args.threads)
    rsna = rsna_records(args.rsna)
    nih = list(read_nih(args.nih)) if args.nih else []
    folds = fold_map(rsna, args.folds, args.split_seed)
    names = args.only or list(EXPERIMENTS)
    for name in names:  # experiment-major: a complete CV of one experiment before the next starts
        for fold in range(args.folds):
            spec = EXPERIMENTS[name]
            if spec["nih"] and not nih:
                spec = {**spec, "nih": False}
            run_dir = train_fold(name, spec, fold, args, rsna, nih)
            _, val = split_records(rsna, folds, fold)
            started = time.monotonic()
            oof_outputs(run_dir, val, spec["family"], args.tta)
            log(f"{name} fold {fold}: OOF outputs in {time.monotonic() - started:.0f} s")


# ---------------------------------------------------------------------------------------------- report stage


def load_oof(args: argparse.Namespace, name: str) -> list[dict] | None:
    paths = [args.work / "cv" / name / f"fold{k}" / "oof.pkl" for k in range(args.folds)]
    if not all(p.is_file() for p in paths):
        return None
    out = []
    for path in paths:
        with open(path, "rb") as handle:
            out.append(pickle.load(handle))
    return out


def as_pairs(outputs: list) -> list[tuple[float, np.ndarray]]:
    return [(o.probability, o.boxes()) for o in outputs]


def crossfit_map(per_fold_outputs: list[list], per_fold_gts: list[list]) -> tuple[list[float], list[dict]]:
    """Fold k's mAP with box/gate thresholds tuned on the other folds' OOF outputs."""
    from pneumo.evaluation.rsna_map import mean_average_precision
    from pneumo.types import Thresholds
    from pneumo.training.thresholds import tune_thresholds

    maps, chosen = [], []
    for k in range(len(per_fold_outputs)):
        other_out = [p for j, f in enumerate(per_fold_outputs) if j != k for p in f]
        other_gt = [g for j, f in enumerate(per_fold_gts) if j != k for g in f]
        tuned = tune_thresholds(other_out, other_gt)
        preds = {}
        for i, (probability, boxes) in enumerate(per_fold_outputs[k]):
            preds[str(i)] = Thresholds.from_dict(tuned).apply(probability, boxes, (1 << 30, 1 << 30))
        gts = {str(i): np.asarray(g) for i, g in enumerate(per_fold_gts[k])}
        maps.append(float(mean_average_precision(preds, gts).map))
        chosen.append({key: tuned[key] for key in ("box_threshold", "gate_threshold")})
    return maps, chosen


def fold_aucs(per_fold_outputs: list[list], per_fold_labels: list[list]) -> list[float]:
    from pneumo.evaluation.classification import roc_auc

    return [float(roc_auc(np.array([p for p, _ in outs]), np.array(lab))) for outs, lab in
            zip(per_fold_outputs, per_fold_labels)]


def stage_report(args: argparse.Namespace) -> dict:
    """Compute every CV figure, choose the shipped chexnet, tune the ensemble; write ``summary.json``."""
    from pneumo.evaluation.classification import roc_auc
    from pneumo.evaluation.rsna_map import mean_average_precision
    from pneumo.inference.baseline import fit_baseline
    from pneumo.ensemble import EnsembleMember, EnsembleSpec, FusionParams, ensemble_probability
    from pneumo.training.ensemble_tuning import evaluate_spec, tune_ensemble
    from pneumo.models.unet import opacity_outside_prior_fraction

    rsna = rsna_records(args.rsna)
    by_id = {r.image_id: r for r in rsna}
    summary: dict[str, Any] = {"folds": args.folds, "split_seed": args.split_seed, "seed": args.seed,
                               "experiments": {}, "threads": args.threads}
    oof: dict[str, list[dict]] = {}
    ids_per_fold = None
    partial: dict[str, dict[int, dict]] = {}
    for name in EXPERIMENTS:
        folds = load_oof(args, name)
        if folds is None:
            done = {k: path for k in range(args.folds)
                    if (path := args.work / "cv" / name / f"fold{k}" / "oof.pkl").is_file()}
            if done:  # an unfinished CV (budget): reported per finished fold, never shipped
                partial[name] = {k: pickle.loads(path.read_bytes()) for k, path in done.items()}
            log(f"report: {name} has {len(done)} of {args.folds} folds; " + ("reported as partial" if done else "left out"))
            continue
        oof[name] = folds
        ids_per_fold = ids_per_fold or [f["ids"] for f in folds]
        if [f["ids"] for f in folds] != ids_per_fold:
            raise SystemExit(f"{name}: OOF image order differs from the other experiments")
    if not oof:
        raise SystemExit("no finished cross-validation to report on")
    gts = [[by_id[i].boxes for i in ids] for ids in ids_per_fold]
    labels = [[int(by_id[i].target) for i in ids] for ids in ids_per_fold]

    for name, folds in oof.items():
        runs = [args.work / "cv" / name / f"fold{k}" for k in range(args.folds)]
        train_summaries = [json.loads((r / "train_summary.json").read_text()) for r in runs]
        entry: dict[str, Any] = {"family": EXPERIMENTS[name]["family"], "overrides": EXPERIMENTS[name]["set"],
                                 "nih": EXPERIMENTS[name]["nih"], "init": EXPERIMENTS[name].get("init")}
        for variant in ("plain", "tta", "prior_off"):
            if variant not in folds[0]:
                continue
            outs = [as_pairs(f[variant]) for f in folds]
            maps, chosen = crossfit_map(outs, gts)
            aucs = fold_aucs(outs, labels)
            all_out = [o for f in outs for o in f]
            entry[variant] = {
                "map_folds": maps, "map_mean_std": mean_std(maps), "auc_folds": aucs, "auc_mean_std": mean_std(aucs),
                "oof_auc": float(roc_auc(np.array([p for p, _ in all_out]), np.array([l for f in labels for l in f]))),
                "crossfit_thresholds": chosen,
            }
            if "prior" in folds[0]:  # fraction of predicted box area outside the fold's lung-field prior
                fractions = []
                for f in folds:
                    boxes = [g.to_input(o.boxes()[:, :4]) for o, g in zip(f[variant], f["geometry"])]
                    fractions.append(opacity_outside_prior_fraction(boxes, f["prior"], f["size"]))
                entry[variant]["outside_prior_fraction_folds"] = fractions
                entry[variant]["outside_prior_fraction_mean_std"] = mean_std(fractions)
                entry[variant]["canvas_outside_field_fraction_folds"] = [float((f["prior"] < 0.05).mean()) for f in folds]
        entry["engine_val"] = [{k: s["best_metrics"].get(k) for k in ("val_map", "val_auc")} | {"best_epoch": s["best_epoch"]}
                               for s in train_summaries]
        entry["train_seconds_folds"] = [s.get("wall_seconds") for s in train_summaries]
        entry["epochs"] = [s["epochs_completed"] for s in train_summaries]
        summary["experiments"][name] = entry
        log(f"{name}: CV mAP {entry['plain']['map_mean_std'][0]:.4f} +- {entry['plain']['map_mean_std'][1]:.4f}, "
            f"AUC {entry['plain']['auc_mean_std'][0]:.4f} +- {entry['plain']['auc_mean_std'][1]:.4f}")

    # ---- unfinished CVs: AUC on the finished folds, beside the complete experiments' AUC on the same folds
    for name, done in partial.items():
        entry = {"family": EXPERIMENTS[name]["family"], "overrides": EXPERIMENTS[name]["set"], "partial": True,
                 "folds_done": sorted(done)}
        aucs, same_fold_refs = [], {}
        for k, f in sorted(done.items()):
            y = [int(by_id[i].target) for i in f["ids"]]
            aucs.append(float(roc_auc(np.array([o.probability for o in f["plain"]]), np.array(y))))
        entry["auc_folds"] = aucs
        entry["auc_mean_std"] = mean_std(aucs)
        for other, e in summary["experiments"].items():
            if e["family"] == entry["family"]:
                same_fold_refs[other] = [e["plain"]["auc_folds"][k] for k in sorted(done)]
        entry["reference_auc_same_folds"] = same_fold_refs
        runs = [args.work / "cv" / name / f"fold{k}" for k in sorted(done)]
        entry["engine_val"] = [{kk: s["best_metrics"].get(kk) for kk in ("val_map", "val_auc")}
                               for s in (json.loads((r / "train_summary.json").read_text()) for r in runs)]
        entry["train_seconds_folds"] = [json.loads((r / "train_summary.json").read_text()).get("wall_seconds") for r in runs]
        summary.setdefault("partial_experiments", {})[name] = entry
        log(f"{name} (partial, folds {sorted(done)}): AUC {aucs}; same folds: {same_fold_refs}")

    # ---- pretraining runs (NIH weak labels): their own NIH validation figures
    for name, spec in PRETRAIN.items():
        path = args.work / "pretrain" / name / "train_summary.json"
        if path.is_file():
            record = json.loads(path.read_text())
            summary.setdefault("pretrain", {})[name] = {
                "family": spec["family"], "overrides": spec["set"], "best_epoch": record["best_epoch"],
                "epochs": record["epochs_completed"], "wall_seconds": record.get("wall_seconds"),
                "nih_val": {k: record["best_metrics"].get(k) for k in ("val_auc", "val_loss", "val_images")}}

    # ---- baseline: median training box on each lung, fitted on the other folds
    base_maps = []
    for k in range(args.folds):
        train = [by_id[i] for j, ids in enumerate(ids_per_fold) if j != k for i in ids]
        spec = fit_baseline([r.boxes for r in train], [(1024, 1024) for _ in train])
        sizes = [image_hw(by_id[i].path) for i in ids_per_fold[k]]
        preds = {str(i): spec.boxes_for(s) for i, s in enumerate(sizes)}
        base_maps.append(float(mean_average_precision(preds, {str(i): np.asarray(g) for i, g in enumerate(gts[k])}).map))
    summary["baseline"] = {"map_folds": base_maps, "map_mean_std": mean_std(base_maps), "auc": 0.5,
                           "note": "constant probability (training positive rate): AUC 0.5 by construction"}
    log(f"baseline: CV mAP {summary['baseline']['map_mean_std'][0]:.4f} +- {summary['baseline']['map_mean_std'][1]:.4f}")

    # ---- which experiment ships per family: the best mean CV AUC (classifier) or cross-fitted mAP (box models)
    shipped = {family: choose_experiment(summary["experiments"], candidates, "auc" if family == "chexnet" else "map")
               for family, candidates in SHIPPED.items()}
    chexnet = shipped["chexnet"]
    summary["shipped_experiments"] = shipped

    # ---- ensemble on OOF outputs: cross-fitted score, then the spec tuned on every OOF output
    members = [EnsembleMember(m) for m in ("unet", "maskrcnn") if shipped[m]]
    classifier = EnsembleMember("chexnet") if chexnet else None
    models_used = [shipped[m.model] for m in members] + ([chexnet] if chexnet else [])
    variants = ["plain"] + (["tta"] if members and all("tta" in oof[n][0] for n in models_used) else [])
    best_variant = None
    for variant in variants:
        def member_outputs(fold_ids: list[int]) -> dict[str, list]:
            out = {}
            for m in members:
                out[m.model] = [o for j in fold_ids for o in oof[shipped[m.model]][j][variant]]
            if classifier is not None:
                out["chexnet"] = [o for j in fold_ids for o in oof[chexnet][j][variant]]
            return out

        base = EnsembleSpec(members=tuple(members), classifier=classifier,
                            fusion=FusionParams(tta_flip=variant == "tta"))
        maps, aucs = [], []
        for k in range(args.folds):
            others = [j for j in range(args.folds) if j != k]
            other_gts = [g for j in others for g in gts[j]]
            tuned = tune_ensemble(base, member_outputs(others), other_gts)
            mine = member_outputs([k])
            maps.append(float(evaluate_spec(tuned, mine, gts[k])))
            probs = [ensemble_probability(tuned, {key: mine[key][i] for key in tuned.model_keys})
                     for i in range(len(gts[k]))]
            aucs.append(float(roc_auc(np.array(probs), np.array(labels[k]))))
        everything = list(range(args.folds))
        all_gts = [g for j in everything for g in gts[j]]
        final = tune_ensemble(base, member_outputs(everything), all_gts, context={
            "data": "rsna-mini out-of-fold outputs", "folds": args.folds, "split_seed": args.split_seed,
            "crossfit_map_folds": maps, "crossfit_auc_folds": aucs, "members_from": shipped})
        all_mine = member_outputs(everything)
        probs = [ensemble_probability(final, {key: all_mine[key][i] for key in final.model_keys})
                 for i in range(len(all_gts))]
        result = {"map_folds": maps, "map_mean_std": mean_std(maps), "auc_folds": aucs, "auc_mean_std": mean_std(aucs),
                  "oof_auc": float(roc_auc(np.array(probs), np.array([l for f in labels for l in f]))),
                  "tuned_on_all_oof_map": final.tuning["map"], "fusion": dataclasses.asdict(final.fusion),
                  "member_weights": {m.model: m.weight for m in final.members}, "spec": final.to_dict()}
        summary.setdefault("ensemble", {})[variant] = result
        log(f"ensemble ({variant}): cross-fitted mAP {result['map_mean_std'][0]:.4f} +- {result['map_mean_std'][1]:.4f}, "
            f"AUC {result['auc_mean_std'][0]:.4f} +- {result['auc_mean_std'][1]:.4f}")
        if best_variant is None or result["map_mean_std"][0] > summary["ensemble"][best_variant]["map_mean_std"][0]:
            best_variant = variant
    summary["ensemble_variant"] = best_variant
    (args.work / "summary.json").write_text(json.dumps(json_safe(summary), indent=2))
    log(f"summary written to {args.work / 'summary.json'}")
    return summary


def choose_experiment(experiments: dict[str, dict], candidates: tuple[str, ...], metric: str) -> str | None:
    """The finished candidate with the highest mean CV ``metric`` ("auc" or "map"); None if none finished."""
    finished = [n for n in candidates if n in experiments]
    if not finished:
        return None
    return max(finished, key=lambda n: experiments[n]["plain"][f"{metric}_mean_std"][0])


def oof_thresholds(args: argparse.Namespace, name: str) -> dict[str, float]:
    """Operating thresholds tuned on every out-of-fold output of experiment ``name`` (210 images)."""
    from pneumo.training.thresholds import operating_thresholds, tune_thresholds

    rsna = {r.image_id: r for r in rsna_records(args.rsna)}
    folds = load_oof(args, name)
    outputs = [o for f in folds for o in as_pairs(f["plain"])]
    records = [rsna[i] for f in folds for i in f["ids"]]
    tuned = tune_thresholds(outputs, [r.boxes for r in records], labels=[int(r.target) for r in records])
    return operating_thresholds(tuned).to_dict()


def image_hw(path: Path) -> tuple[int, int]:
    from pneumo.io.header import image_size

    return image_size(Path(path))



# ---------------------------------------------------------------------------------------------- final stage


@contextmanager
def all_data_split() -> Iterator[None]:
    """Inside ``fit``: train on every record; the "validation" is the same records (in-sample, logged only)."""
    from pneumo.training import data_setup

    original = data_setup.split
    data_setup.split = lambda records, config: (list(records), list(records))
    try:
        yield
    finally:
        data_setup.split = original


def stage_final(args: argparse.Namespace) -> None:
    """Retrain each shipped experiment on all RSNA patients with its CV settings (same epochs; the last epoch is
    shipped, since an in-sample validation cannot choose one)."""
    import torch

    from pneumo.training.config import resolve_train_config

    torch.set_num_threads(args.threads)
    summary = json.loads((args.work / "summary.json").read_text())
    rsna = rsna_records(args.rsna)
    for shipped, name in summary["shipped_experiments"].items():
        if name is None:
            continue
        spec = EXPERIMENTS[name]
        run_dir = args.work / "final" / name
        if finished_run(run_dir, f"{name} (all data)"):
            continue
        config = resolve_train_config(spec["family"], ROOT / spec["config"], run_overrides(spec, args, 0))
        log(f"{name}: retraining on all {len(rsna)} RSNA patients")
        with all_data_split():
            _, seconds = timed_fit(spec["family"], config, rsna, run_dir, args.rsna)
        log(f"{name}: all-data model in {seconds:.0f} s")


# ---------------------------------------------------------------------------------------------- ship stage


def stage_ship(args: argparse.Namespace) -> None:
    """fp16 checkpoints + history + cards + ensemble.json + baseline.json into ``args.models``."""
    from pneumo.inference.baseline import fit_baseline
    from pneumo.models.checkpoint import load_checkpoint, save_checkpoint
    from pneumo.ensemble import EnsembleSpec

    summary = json.loads((args.work / "summary.json").read_text())
    args.models.mkdir(parents=True, exist_ok=True)
    shipped_info = {}
    for shipped, name in summary["shipped_experiments"].items():
        if name is None:
            continue
        entry = summary["experiments"][name]
        monitor = "val_auc" if entry["family"] == "chexnet" else "val_map"
        plain = entry["plain"]
        final_dir = args.work / "final" / name
        if (final_dir / "train_summary.json").is_file():  # retrained on all data: last epoch, OOF-tuned thresholds
            fold, run_dir = -1, final_dir
            loaded = load_checkpoint(run_dir / "last.pt", expected_family=entry["family"])
            thresholds = oof_thresholds(args, name)
            metrics = {"epoch": float(loaded.meta["extra"]["epoch"])}
            final_summary = json.loads((final_dir / "train_summary.json").read_text())
            train_seconds, epochs = final_summary.get("wall_seconds"), final_summary["epochs_completed"]
            best_epoch = epochs
        else:  # the best CV fold's model with that fold's thresholds
            fold = int(np.nanargmax([e[monitor] if e[monitor] is not None else -1 for e in entry["engine_val"]]))
            run_dir = args.work / "cv" / name / f"fold{fold}"
            loaded = load_checkpoint(run_dir / OOF_CHECKPOINT, expected_family=entry["family"])
            thresholds = loaded.thresholds
            metrics = {k: float(v) for k, v in loaded.metrics.items() if isinstance(v, (int, float))}
            train_seconds, epochs = entry["train_seconds_folds"][fold], entry["epochs"][fold]
            best_epoch = epochs  # the last epoch (OOF_CHECKPOINT)
        metrics.update({
            "cv_map_mean": plain["map_mean_std"][0], "cv_map_std": plain["map_mean_std"][1],
            "cv_auc_mean": plain["auc_mean_std"][0], "cv_auc_std": plain["auc_mean_std"][1],
            "oof_auc": plain["oof_auc"], "cv_folds": float(summary["folds"]), "shipped_fold": float(fold),
        })
        extra = dict(loaded.meta.get("extra") or {})
        extra["shipping"] = {"experiment": name, "fold": fold,
                             "selected_by": "all-data retrain (fold -1)" if fold < 0 else f"best {monitor} over the CV folds",
                             "cv": {k: plain[k] for k in ("map_folds", "auc_folds")}}
        target = args.models / f"{shipped}.pt"
        save_checkpoint(target, loaded.model, config=loaded.config, preprocess=loaded.preprocess,
                        thresholds=thresholds, metrics=metrics,
                        data_fingerprint=loaded.meta.get("data_fingerprint"), extra=extra, half=True)
        shutil.copyfile(run_dir / "history.csv", args.models / f"{shipped}.history.csv")
        n_params = sum(p.numel() for p in loaded.model.parameters())
        shipped_info[shipped] = {"experiment": name, "fold": fold, "metrics": metrics, "thresholds": thresholds,
                                 "params": n_params, "bytes": target.stat().st_size,
                                 "train_seconds": train_seconds, "config": extra.get("train_config"),
                                 "epochs": epochs, "best_epoch": best_epoch}
        log(f"shipped {target} ({target.stat().st_size / 1e6:.1f} MB) from {name} fold {fold}")

    variant = summary.get("ensemble_variant")
    if variant:
        spec = EnsembleSpec.from_dict(summary["ensemble"][variant]["spec"])
        spec.save(args.models / "ensemble.json")
        log(f"shipped {args.models / 'ensemble.json'} ({variant})")
    rsna = rsna_records(args.rsna)
    baseline = fit_baseline([r.boxes for r in rsna], [image_hw(r.path) for r in rsna])
    baseline.save(args.models / "baseline.json")
    (args.work / "shipped.json").write_text(json.dumps(json_safe(shipped_info), indent=2, default=str))
    record = json.loads(json.dumps(summary))  # the CV record shipped beside the models (without the spec copies)
    for result in record.get("ensemble", {}).values():
        result.pop("spec", None)
    record["shipped"] = {n: {k: i[k] for k in ("experiment", "fold", "params", "bytes", "train_seconds", "epochs",
                                                "best_epoch")} for n, i in shipped_info.items()}
    (args.models / "cv_summary.json").write_text(json.dumps(json_safe(record), indent=1) + "\n")
    from model_cards import write_cards  # scripts/model_cards.py

    write_cards(summary, shipped_info, args.models)


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stages", nargs="*", default=["pretrain", "cv", "report", "final", "ship"],
                        choices=["pretrain", "cv", "report", "final", "ship"])
    parser.add_argument("--rsna", type=Path, default=ROOT.parent / "shared" / "data" / "rsna-mini")
    parser.add_argument("--nih", type=Path, default=ROOT.parent / "shared" / "data" / "nih-weak",
                        help="NIH weak-label folder for the classifier ('' to train on RSNA only)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "models")
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default=None, help="decoded-image cache (default: $PNEUMO_CACHE_DIR or ~/.cache)")
    parser.add_argument("--only", nargs="+", choices=list(EXPERIMENTS), default=None)
    parser.add_argument("--tta", action="store_true", help="also compute flip-TTA OOF outputs (every model), so the ensemble can be tuned with tta_flip")
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="multiply every experiment's epochs (smoke runs)")
    args = parser.parse_args(argv)
    if args.nih is not None and str(args.nih) in ("", "."):
        args.nih = None
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    args.work.mkdir(parents=True, exist_ok=True)
    for stage in args.stages:
        {"pretrain": stage_pretrain, "cv": stage_cv, "report": stage_report, "final": stage_final, "ship": stage_ship}[stage](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
