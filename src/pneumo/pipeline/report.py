"""``report`` stage: every CV figure from the out-of-fold outputs -> ``WORK/summary.json``.

Per experiment and OOF variant: per-fold RSNA mAP with box/gate thresholds tuned on the *other* folds' OOF
outputs (so never on the scored fold), per-fold AUC, mean +- sample std, pooled OOF AUC; the unet lung-prior
ablation; unfinished CVs (reported per finished fold, never shipped); the NIH pretraining runs; the trivial
baseline (median box per lung, fitted on the other folds); the shipped experiment per ``ships_as`` name (best
mean CV AUC for chexnet, mAP for box models); the ensemble, cross-fitted (fusion and member weights tuned on
the other folds, scored on fold k), then its spec tuned on every OOF output; the probability calibration of
each shipped model and the ensemble, cross-fitted on the OOF outputs (``pneumo.pipeline.calibration``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.data.records import ImageRecord
from pneumo.errors import ConfigError
from pneumo.files import atomic_write_bytes
from pneumo.pipeline.calibration import report_calibration
from pneumo.pipeline.cv import Pipeline
from pneumo.pipeline.oof import OOFOutputs, load_oof
from pneumo.types import Thresholds

Pairs = list[tuple[float, np.ndarray]]


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """(mean, sample std) of the finite values; (nan, nan) if none; std 0 for one value."""
    array = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def as_pairs(outputs: list) -> Pairs:
    """ImageOutputs -> (probability, (N, 5) fused boxes xyxy+conf in original px) pairs."""
    return [(o.probability, o.boxes()) for o in outputs]


def crossfit_map(per_fold_outputs: list[Pairs], per_fold_gts: list[list]) -> tuple[list[float], list[dict]]:
    """Fold k's mAP with box/gate thresholds tuned on the other folds' OOF outputs -> (maps, chosen thresholds)."""
    from pneumo.evaluation.rsna_map import mean_average_precision
    from pneumo.training.thresholds import tune_thresholds

    maps, chosen = [], []
    for k in range(len(per_fold_outputs)):
        other_out = [p for j, f in enumerate(per_fold_outputs) if j != k for p in f]
        other_gt = [g for j, f in enumerate(per_fold_gts) if j != k for g in f]
        tuned = tune_thresholds(other_out, other_gt)
        preds = {str(i): Thresholds.from_dict(tuned).apply(probability, boxes, (1 << 30, 1 << 30))
                 for i, (probability, boxes) in enumerate(per_fold_outputs[k])}
        gts = {str(i): np.asarray(g) for i, g in enumerate(per_fold_gts[k])}
        maps.append(float(mean_average_precision(preds, gts).map))
        chosen.append({key: tuned[key] for key in ("box_threshold", "gate_threshold")})
    return maps, chosen


def fold_aucs(per_fold_outputs: list[Pairs], per_fold_labels: list[list[int]]) -> list[float]:
    from pneumo.evaluation.classification import roc_auc

    return [float(roc_auc(np.array([p for p, _ in outs]), np.array(lab)))
            for outs, lab in zip(per_fold_outputs, per_fold_labels)]


def choose_experiment(experiments: dict[str, dict], candidates: Sequence[str], metric: str) -> str | None:
    """The finished candidate with the highest mean CV ``metric`` ("auc" or "map"); None if none finished. A
    recipe cross-validated in this run (``kind: cv``) is preferred to a fixed checkpoint, whose figures come
    from fewer patients: a fixed one ships only where no cv candidate finished."""
    finished = [n for n in candidates if n in experiments]
    retrained = [n for n in finished if experiments[n].get("kind", "cv") == "cv"]
    if not finished:
        return None
    return max(retrained or finished, key=lambda n: experiments[n]["plain"][f"{metric}_mean_std"][0])


def retired_oof(pipeline: Pipeline, name: str) -> list[OOFOutputs] | None:
    """Every fold's OOF outputs of fixed experiment ``name`` when all were made from the file it pins (their
    recorded sha256 is its ``checkpoint_sha256``), else None: evidence that outlives a re-shipped file."""
    done = load_cv_oof(pipeline, name)
    tag = f"sha256:{pipeline.experiments[name].checkpoint_sha256}"
    if len(done) < pipeline.settings.folds or any(f.checkpoint != tag for f in done.values()):
        return None
    return [done[k] for k in range(pipeline.settings.folds)]


def load_cv_oof(pipeline: Pipeline, name: str) -> dict[int, OOFOutputs]:
    """{fold: OOF outputs} of experiment ``name``'s finished folds."""
    out = {}
    for k in range(pipeline.settings.folds):
        oof = load_oof(pipeline.settings.work / "cv" / name / f"fold{k}")
        if oof is not None:
            out[k] = oof
    return out


def data_summary(pipeline: Pipeline) -> dict[str, Any]:
    """What the CV ran on: folder names, images, patients, positive patients, fold sizes (patients)."""
    records = pipeline.records
    positive = {r.patient_id for r in records if int(r.target)}
    sizes = [0] * pipeline.settings.folds
    for fold in pipeline.fold_of.values():
        sizes[fold] += 1
    return {"dirs": [p.name for p in pipeline.settings.data], "images": len(records),
            "patients": len(pipeline.fold_of), "positive_patients": len(positive), "fold_patients": sizes}


def stage_report(pipeline: Pipeline) -> dict:
    """Compute every CV figure, choose the shipped experiments, tune the ensemble; write ``summary.json``."""
    from pneumo.evaluation.classification import roc_auc
    from pneumo.models.unet import opacity_outside_prior_fraction

    settings = pipeline.settings
    by_id = {r.image_id: r for r in pipeline.records}
    summary: dict[str, Any] = {"folds": settings.folds, "split_seed": settings.split_seed, "seed": settings.seed,
                               "threads": settings.threads, "data": data_summary(pipeline), "experiments": {}}
    oof: dict[str, list[OOFOutputs]] = {}
    partial: dict[str, dict[int, OOFOutputs]] = {}
    retired: dict[str, str] = {}  # fixed experiments whose file is gone, reported from the outputs it left
    for name, experiment in pipeline.cv_experiments().items():
        why = pipeline.fixed_unavailable(experiment) if experiment.kind == "fixed" else None
        if why:
            kept = retired_oof(pipeline, name)
            if kept is None:
                pipeline.log(f"report: {name} left out: {why}")
                continue
            pipeline.log(f"report: {name}: {why}; its out-of-fold outputs from the pinned file are reported, "
                         "it is neither shipped nor an ensemble member")
            oof[name], retired[name] = kept, why
            continue
        done = load_cv_oof(pipeline, name)
        if len(done) < settings.folds:
            if done:
                partial[name] = done
            pipeline.log(f"report: {name} has {len(done)} of {settings.folds} folds; "
                         + ("reported as partial" if done else "left out"))
            continue
        oof[name] = [done[k] for k in range(settings.folds)]
    if not oof:
        raise ConfigError("no finished cross-validation to report on: run the 'cv' stage first")
    validation = [pipeline.fold_split(k)[1] for k in range(settings.folds)]
    for name, folds in oof.items():
        if name in retired:  # its images were checked when its outputs were made (the file is needed to redo it)
            continue
        scored = [[r.image_id for r in pipeline.scored_records(pipeline.experiments[name], v)] for v in validation]
        if [f.ids for f in folds] != scored:
            raise ConfigError(f"{name}: its OOF images are not this run's folds (other --data, --folds or seed?)")
    ids_per_fold = [[r.image_id for r in v] for v in validation]
    gts, _ = fold_truth(by_id, ids_per_fold)

    for name, folds in oof.items():
        experiment = pipeline.experiments[name]
        gts_e, labels = fold_truth(by_id, [f.ids for f in folds])  # fixed: only the patients it never saw
        all_labels = np.array([label for fold in labels for label in fold])
        runs = [settings.work / "cv" / name / f"fold{k}" for k in range(settings.folds)]
        train_summaries = ([json.loads((r / "train_summary.json").read_text()) for r in runs]
                           if experiment.kind == "cv" else None)
        entry: dict[str, Any] = {"family": experiment.family, "kind": experiment.kind,
                                 "overrides": experiment.settings(), "nih": experiment.nih_in_training,
                                 "init": experiment.init_from, "scored_images": sum(len(f.ids) for f in folds)}
        if experiment.kind == "fixed":
            entry["trained_on"] = list(experiment.trained_on)
        if name in retired:
            entry["retired"] = f"sha256 {experiment.checkpoint_sha256[:12]}..., no longer at {experiment.checkpoint}"
        for variant in ("plain", "tta", "prior_off"):
            if variant not in folds[0].variants:
                continue
            outs = [as_pairs(f.variants[variant]) for f in folds]
            maps, chosen = crossfit_map(outs, gts_e)
            aucs = fold_aucs(outs, labels)
            pooled = np.array([p for f in outs for p, _ in f])
            entry[variant] = {"map_folds": maps, "map_mean_std": mean_std(maps), "auc_folds": aucs,
                              "auc_mean_std": mean_std(aucs), "oof_auc": float(roc_auc(pooled, all_labels)),
                              "crossfit_thresholds": chosen}
            if folds[0].prior is not None:  # fraction of predicted box area outside the fold's lung-field prior
                fractions = []
                for f in folds:
                    boxes = [g.to_input(o.boxes()[:, :4]) for o, g in zip(f.variants[variant], f.geometry)]
                    fractions.append(opacity_outside_prior_fraction(boxes, f.prior, f.size))
                entry[variant]["outside_prior_fraction_folds"] = fractions
                entry[variant]["outside_prior_fraction_mean_std"] = mean_std(fractions)
                entry[variant]["canvas_outside_field_fraction_folds"] = [float((f.prior < 0.05).mean()) for f in folds]
        if train_summaries is not None:
            entry["engine_val"] = [{k: s["best_metrics"].get(k) for k in ("val_map", "val_auc")}
                                   | {"best_epoch": s["best_epoch"]} for s in train_summaries]
            entry["train_seconds_folds"] = [s.get("wall_seconds") for s in train_summaries]
            entry["epochs"] = [s["epochs_completed"] for s in train_summaries]
        summary["experiments"][name] = entry
        pipeline.log(f"{name}: CV mAP {entry['plain']['map_mean_std'][0]:.4f} +- {entry['plain']['map_mean_std'][1]:.4f}, "
                     f"AUC {entry['plain']['auc_mean_std'][0]:.4f} +- {entry['plain']['auc_mean_std'][1]:.4f}")

    for name, done in partial.items():  # unfinished CVs: AUC on the finished folds beside the others' same folds
        experiment = pipeline.experiments[name]
        aucs = [float(roc_auc(np.array([o.probability for o in f.variants["plain"]]),
                              np.array([int(by_id[i].target) for i in f.ids]))) for _, f in sorted(done.items())]
        refs = {other: [e["plain"]["auc_folds"][k] for k in sorted(done)]
                for other, e in summary["experiments"].items()
                if e["family"] == experiment.family and e["kind"] == "cv"}
        summary.setdefault("partial_experiments", {})[name] = {
            "family": experiment.family, "overrides": experiment.settings(), "partial": True,
            "folds_done": sorted(done), "auc_folds": aucs, "auc_mean_std": mean_std(aucs),
            "reference_auc_same_folds": refs}
        pipeline.log(f"{name} (partial, folds {sorted(done)}): AUC {aucs}; same folds: {refs}")

    for name, experiment in pipeline.experiments.items():  # pretraining runs: their own NIH validation figures
        path = settings.work / "pretrain" / name / "train_summary.json"
        if experiment.kind == "pretrain" and path.is_file():
            record = json.loads(path.read_text())
            summary.setdefault("pretrain", {})[name] = {
                "family": experiment.family, "overrides": experiment.settings(), "best_epoch": record["best_epoch"],
                "epochs": record["epochs_completed"], "wall_seconds": record.get("wall_seconds"),
                "nih_val": {k: record["best_metrics"].get(k) for k in ("val_auc", "val_loss", "val_images")}}

    summary["baseline"] = baseline_figures(pipeline, ids_per_fold, gts)
    pipeline.log(f"baseline: CV mAP {summary['baseline']['map_mean_std'][0]:.4f} "
                 f"+- {summary['baseline']['map_mean_std'][1]:.4f}")
    candidates: dict[str, list[str]] = {}
    for name, experiment in pipeline.cv_experiments().items():
        if experiment.ships_as and name not in retired:
            candidates.setdefault(experiment.ships_as, []).append(name)
    summary["shipped_experiments"] = {
        shipped: choose_experiment(summary["experiments"], names,
                                   "auc" if pipeline.experiments[names[0]].family == "chexnet" else "map")
        for shipped, names in candidates.items()}
    for name, entry in summary["experiments"].items():  # a fixed one beside the shipped recipe, same images
        rival = summary["shipped_experiments"].get(entry["family"])
        if entry["kind"] == "fixed" and rival in oof and summary["experiments"][rival]["kind"] == "cv":
            entry["shipped_same_images"] = {"experiment": rival,
                                            **figures_on(oof[rival], [f.ids for f in oof[name]], by_id)}
    summary.update(ensemble_figures(pipeline, summary, oof, by_id))
    summary["calibration"] = report_calibration(  # pneumo.pipeline.calibration: cross-fitted on the OOF outputs
        summary, oof, {i: int(r.target) for i, r in by_id.items()}, {i: r.patient_id for i, r in by_id.items()},
        settings.work / "figures", pipeline.log)
    write_summary(settings.work, summary)
    pipeline.log(f"summary written to {settings.work / 'summary.json'}")
    return summary


def fold_truth(by_id: dict, ids_per_fold: list[list[str]]) -> tuple[list[list[np.ndarray]], list[list[int]]]:
    """Per fold: the images' ground-truth boxes ((N, 4) xyxy, original px) and image labels (0/1)."""
    return ([[by_id[i].boxes for i in ids] for ids in ids_per_fold],
            [[int(by_id[i].target) for i in ids] for ids in ids_per_fold])


def restrict(folds: list[OOFOutputs], ids_per_fold: list[list[str]], variant: str) -> list[list]:
    """``variant``'s ImageOutputs of ``ids_per_fold`` (a subset of each fold's ids, in that order), per fold."""
    out = []
    for fold, ids in zip(folds, ids_per_fold):
        index = {image_id: i for i, image_id in enumerate(fold.ids)}
        out.append([fold.variants[variant][index[i]] for i in ids])
    return out


def figures_on(folds: list[OOFOutputs], ids_per_fold: list[list[str]], by_id: dict) -> dict[str, Any]:
    """One experiment's plain OOF figures on ``ids_per_fold`` only: per-fold mAP (thresholds tuned on the other
    folds) and AUC, each with (mean, std)."""
    gts, labels = fold_truth(by_id, ids_per_fold)
    outs = [as_pairs(f) for f in restrict(folds, ids_per_fold, "plain")]
    maps, _ = crossfit_map(outs, gts)
    aucs = fold_aucs(outs, labels)
    return {"map_folds": maps, "map_mean_std": mean_std(maps), "auc_folds": aucs, "auc_mean_std": mean_std(aucs)}


def common_ids(oof: dict[str, list[OOFOutputs]], names: Sequence[str]) -> list[list[str]]:
    """Per fold: the image ids every experiment in ``names`` has OOF outputs for (in the first one's order)."""
    first, *others = names
    shared = []
    for k, fold in enumerate(oof[first]):
        keep = set(fold.ids).intersection(*(oof[n][k].ids for n in others))
        shared.append([i for i in fold.ids if i in keep])
    return shared


def baseline_figures(pipeline: Pipeline, ids_per_fold: list[list[str]], gts: list[list]) -> dict[str, Any]:
    """The prior-box baseline (median training box per lung, fitted on the other folds), per fold."""
    from pneumo.evaluation.rsna_map import mean_average_precision
    from pneumo.inference.baseline import fit_baseline
    from pneumo.io.header import image_size

    by_id = {r.image_id: r for r in pipeline.records}
    maps = []
    for k, ids in enumerate(ids_per_fold):
        train = [by_id[i] for j, other in enumerate(ids_per_fold) if j != k for i in other]
        spec = fit_baseline([r.boxes for r in train], [(1024, 1024) for _ in train])
        preds = {str(i): spec.boxes_for(image_size(Path(by_id[image_id].path))) for i, image_id in enumerate(ids)}
        maps.append(float(mean_average_precision(preds, {str(i): np.asarray(g) for i, g in enumerate(gts[k])}).map))
    return {"map_folds": maps, "map_mean_std": mean_std(maps), "auc": 0.5,
            "note": "constant probability (training positive rate): AUC 0.5 by construction"}


def ensemble_figures(pipeline: Pipeline, summary: dict, oof: dict[str, list[OOFOutputs]],
                     by_id: dict[str, ImageRecord]) -> dict[str, Any]:
    """{"ensemble": {variant: figures + spec}, "ensemble_variant": best} (empty without shipped members);
    ``by_id``: every record of the run (its ``boxes`` and ``target`` are the truth).

    Scored on the images every member's outputs are out-of-sample for (all, unless a member is a fixed
    checkpoint); ``members_same_images`` holds each member's own figures on exactly those images."""
    from pneumo.evaluation.classification import roc_auc
    from pneumo.ensemble import EnsembleMember, EnsembleSpec, FusionParams, ensemble_probability
    from pneumo.training.ensemble_tuning import COMPACT_GRIDS, evaluate_spec, tune_ensemble

    shipped = summary["shipped_experiments"]
    members = [EnsembleMember(m) for m in ("unet", "maskrcnn") if shipped.get(m)]
    chexnet = shipped.get("chexnet")
    if not members:
        return {}
    classifier = EnsembleMember("chexnet") if chexnet else None
    keys = [m.model for m in members] + (["chexnet"] if chexnet else [])
    used = [shipped[key] for key in keys]
    ids_per_fold = common_ids(oof, used)
    gts, labels = fold_truth(by_id, ids_per_fold)
    images = sum(len(ids) for ids in ids_per_fold)
    scope = "" if images == len(by_id) else f", the {images} images no member trained on"
    variants = ["plain"] + (["tta"] if all("tta" in oof[n][0].variants for n in used) else [])
    k_folds = len(gts)
    results, best = {}, None
    same_images = {}
    for key, name in zip(keys, used):  # each member alone on the ensemble's images
        same_images[key] = {"experiment": name, **figures_on(oof[name], ids_per_fold, by_id)}
    for variant in variants:
        restricted = {key: restrict(oof[name], ids_per_fold, variant) for key, name in zip(keys, used)}

        def member_outputs(folds: list[int]) -> dict[str, list]:
            return {key: [o for j in folds for o in restricted[key][j]] for key in keys}

        base = EnsembleSpec(members=tuple(members), classifier=classifier, fusion=FusionParams(tta_flip=variant == "tta"))
        maps, aucs, crossfit_probs, crossfit_ids = [], [], [], []
        for k in range(k_folds):
            others = [j for j in range(k_folds) if j != k]
            tuned = tune_ensemble(base, member_outputs(others), [g for j in others for g in gts[j]], **COMPACT_GRIDS)
            mine = member_outputs([k])
            maps.append(float(evaluate_spec(tuned, mine, gts[k])))
            probs = [ensemble_probability(tuned, {key: mine[key][i] for key in tuned.model_keys}) for i in range(len(gts[k]))]
            aucs.append(float(roc_auc(np.array(probs), np.array(labels[k]))))
            crossfit_probs.append([float(v) for v in probs])  # fold k's images, scored by the spec tuned without them
            crossfit_ids.append(list(ids_per_fold[k]))
        everything = list(range(k_folds))
        all_gts = [g for j in everything for g in gts[j]]
        final = tune_ensemble(base, member_outputs(everything), all_gts, **COMPACT_GRIDS, context={
            "data": f"{' + '.join(summary['data']['dirs'])} out-of-fold outputs{scope}", "folds": k_folds,
            "split_seed": summary["split_seed"], "crossfit_map_folds": maps, "crossfit_auc_folds": aucs,
            "members_from": shipped})
        all_mine = member_outputs(everything)
        probs = [ensemble_probability(final, {key: all_mine[key][i] for key in final.model_keys}) for i in range(len(all_gts))]
        results[variant] = {
            "map_folds": maps, "map_mean_std": mean_std(maps), "auc_folds": aucs, "auc_mean_std": mean_std(aucs),
            "oof_auc": float(roc_auc(np.array(probs), np.array([label for f in labels for label in f]))),
            "tuned_on_all_oof_map": final.tuning["map"], "fusion": dataclasses.asdict(final.fusion),
            "member_weights": {m.model: m.weight for m in final.members}, "spec": final.to_dict(),
            "crossfit_probability_folds": crossfit_probs, "crossfit_ids_folds": crossfit_ids}
        pipeline.log(f"ensemble ({variant}): cross-fitted mAP {results[variant]['map_mean_std'][0]:.4f} +- "
                     f"{results[variant]['map_mean_std'][1]:.4f}, AUC {results[variant]['auc_mean_std'][0]:.4f}")
        if best is None or results[variant]["map_mean_std"][0] > results[best]["map_mean_std"][0]:
            best = variant
    return {"ensemble": results, "ensemble_variant": best,
            "ensemble_scored_on": {"images": images, "of": len(by_id), "members_same_images": same_images}}


def oof_thresholds(pipeline: Pipeline, name: str) -> Thresholds:
    """Operating thresholds tuned on every out-of-fold output of experiment ``name``."""
    from pneumo.training.thresholds import operating_thresholds, tune_thresholds

    by_id = {r.image_id: r for r in pipeline.records}
    folds = list(load_cv_oof(pipeline, name).values())
    outputs = [o for f in folds for o in as_pairs(f.variants["plain"])]
    records = [by_id[i] for f in folds for i in f.ids]
    tuned = tune_thresholds(outputs, [r.boxes for r in records], labels=[int(r.target) for r in records])
    return operating_thresholds(tuned)


def write_summary(work: Path, summary: dict) -> None:
    from pneumo.files import to_jsonable as json_safe

    atomic_write_bytes(work / "summary.json", json.dumps(json_safe(summary), indent=2).encode())
