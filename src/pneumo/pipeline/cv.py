"""The CV / out-of-fold / shipping pipeline (``pneumo models STAGE...``): data, folds, training stages.

Stages, each resumable (a finished run is skipped, an interrupted one removed and trained again; training is
deterministic for a seed):

0. ``pretrain`` - every ``kind: pretrain`` experiment on the NIH weak-label images alone (NIH patient-level
   validation fold 0 of ``folds``); experiments with ``init_from: <its name>`` start from its ``best.pt``.
1. ``cv`` - for every ``kind: cv`` experiment and fold k of a patient-level k-fold split of the merged RSNA
   records (``pneumo.data.folds.assign_folds``, the split ``pneumo train`` uses): ``fit`` on folds != k,
   validated on fold k, then that fold's OOF outputs (``pneumo.pipeline.oof``). A ``kind: fixed`` experiment
   (an already trained checkpoint) is not trained: its OOF outputs are fold k's patients from the data folders
   it never trained on (``trained_on``), so every figure of it is out-of-sample too.
2. ``report`` - every CV figure and the ensemble's cross-fitted tuning (``pneumo.pipeline.report``).
3. ``final`` - each chosen experiment retrained on every RSNA record (last epoch; in-sample validation).
4. ``ship`` - fp16 checkpoints, model cards, the ensemble and baseline specs (``pneumo.pipeline.shipping``).

Work folder: ``cv/<experiment>/fold<k>/``, ``pretrain/<name>/``, ``final/<name>/`` (``pneumo train`` run
layout, plus ``run.json``: the split digest and config a finished run was trained with), ``summary.json``,
``models.log`` (every progress line, also printed).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pneumo.data.records import ImageRecord
from pneumo.errors import ConfigError, DataLayoutError
from pneumo.training.config import TrainConfig, config_to_dict
from pneumo.training.experiments import Experiment
from pneumo.files import atomic_write_bytes

RUN_FILE = "run.json"


@dataclass(frozen=True)
class PipelineSettings:
    """Where and how a pipeline runs. root: repository root (``configs/``); work: the work folder; data: RSNA
    folders (merged, patient-level split); nih: the NIH weak-label folder (pretraining / NIH mixing); models:
    where ``ship`` writes; docs: ``docs/models.md`` to rewrite on ship (None: left alone)."""

    root: Path
    work: Path
    data: tuple[Path, ...]
    folds: int = 3
    nih: Path | None = None
    models: Path = Path("models")
    docs: Path | None = None
    split_seed: int = 0
    seed: int = 42
    threads: int = 2
    cache_dir: str | None = None
    epochs_scale: float = 1.0


def read_rsna_folders(folders: Sequence[Path]) -> list[ImageRecord]:
    """Every RSNA (Kaggle layout) folder's records merged, sorted by image id; ``DataLayoutError`` for another
    layout or an image id present in two folders."""
    from pneumo.data.sources import detect_layout, read_records

    if not folders:
        raise DataLayoutError("no RSNA data folder given (--data DIR ...)")
    merged: dict[str, ImageRecord] = {}
    for folder in folders:
        if detect_layout(folder) != "rsna":
            raise DataLayoutError(f"{folder} is not a Kaggle RSNA layout; CV runs on RSNA folders (NIH: --nih)")
        records = read_records(folder)
        repeated = sum(r.image_id in merged for r in records)
        if repeated:  # counted, never named: error messages carry no patient identifiers
            raise DataLayoutError(f"{repeated} image(s) of {folder} are in two data folders; give each patient once")
        merged.update((r.image_id, r) for r in records)
    return [merged[k] for k in sorted(merged)]


def split_digest(train: Sequence[ImageRecord], val: Sequence[ImageRecord]) -> str:
    """sha256 of which image ids train and which validate (order-free)."""
    digest = hashlib.sha256()
    for role, group in (("train", train), ("val", val)):
        digest.update(json.dumps([role, sorted(r.image_id for r in group)]).encode())
    return digest.hexdigest()


@dataclass
class Pipeline:
    """One ``pneumo models`` run: settings, experiments and the progress log."""

    settings: PipelineSettings
    experiments: dict[str, Experiment]
    echo: Callable[[str], None] = field(default=lambda line: print(line, flush=True))

    def log(self, message: str) -> None:
        """One progress line: printed and appended to ``work/models.log`` (no patient identifiers)."""
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        self.echo(line)
        self.settings.work.mkdir(parents=True, exist_ok=True)
        with open(self.settings.work / "models.log", "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    @cached_property
    def records(self) -> list[ImageRecord]:
        return read_rsna_folders(self.settings.data)

    @cached_property
    def nih_records(self) -> list[ImageRecord]:
        from pneumo.data.nih import read_nih

        return list(read_nih(self.settings.nih)) if self.settings.nih else []

    @cached_property
    def fold_of(self) -> dict[str, int]:
        """{patient_id: fold} of the merged RSNA records (``assign_folds``, as ``data_setup.split``)."""
        from pneumo.data.folds import assign_folds

        try:
            return assign_folds(self.records, self.settings.folds, self.settings.split_seed)
        except ValueError as error:
            raise DataLayoutError(f"cannot split the data into {self.settings.folds} folds: {error}") from error

    def fold_split(self, fold: int) -> tuple[list[ImageRecord], list[ImageRecord]]:
        """(train, validation) RSNA records of ``fold``: validation = the patients of fold ``fold``."""
        from pneumo.data.folds import split_records

        return split_records(self.records, self.fold_of, fold)

    def cv_experiments(self) -> dict[str, Experiment]:
        """The experiments with out-of-fold outputs: ``kind: cv`` and ``kind: fixed``."""
        return {n: e for n, e in self.experiments.items() if e.kind in ("cv", "fixed")}

    @cached_property
    def source_of(self) -> dict[str, str]:
        """{image_id: the name of the --data folder it comes from}."""
        out = {}
        for folder in self.settings.data:
            root = Path(folder).resolve()
            out.update((r.image_id, root.name) for r in self.records if Path(r.path).resolve().is_relative_to(root))
        return out

    def scored_records(self, experiment: Experiment, records: Sequence[ImageRecord]) -> list[ImageRecord]:
        """The ``records`` whose outputs of ``experiment`` are out-of-sample: all for cv; for fixed, those from
        folders it did not train on (``ConfigError`` when ``trained_on`` names a folder this run lacks or the
        checkpoint's own record of its training images disagrees: a claim that cannot be checked is refused)."""
        if experiment.kind != "fixed":
            return list(records)
        names = {Path(p).resolve().name for p in self.settings.data}
        unknown = sorted(set(experiment.trained_on) - names)
        if unknown:
            raise ConfigError(f"experiment {experiment.name}: trained_on names {', '.join(unknown)}, not a --data "
                              "folder of this run, so its patients could not be kept out of its figures")
        seen = sum(self.source_of[r.image_id] in experiment.trained_on for r in self.records)
        n_train = self.fixed_meta(experiment).get("extra", {}).get("split", {}).get("n_train")
        if n_train is not None and int(n_train) != seen:
            raise ConfigError(f"experiment {experiment.name}: its checkpoint trained on {n_train} images, but "
                              f"{', '.join(experiment.trained_on) or 'no folder'} hold(s) {seen} of this run's")
        return [r for r in records if self.source_of[r.image_id] not in experiment.trained_on]

    def fixed_unavailable(self, experiment: Experiment) -> str | None:
        """Why a fixed experiment cannot be used in this run (its checkpoint missing, or re-shipped since the
        experiment pinned it: its sha256 differs; a fold without both classes outside ``trained_on``), or None.
        Such an experiment is left out of the run, with this reason."""
        try:
            experiment.checkpoint_path(self.settings.root)
        except ConfigError as error:
            return str(error)
        for fold in range(self.settings.folds):
            labels = {int(r.target) for r in self.scored_records(experiment, self.fold_split(fold)[1])}
            if labels != {0, 1}:
                return (f"fold {fold} holds no {'positive' if 1 not in labels else 'negative'} image outside "
                        f"{', '.join(experiment.trained_on)} to score it on")
        return None

    def fixed_meta(self, experiment: Experiment) -> dict:
        """A fixed experiment's checkpoint metadata (its sha256 checked first)."""
        from pneumo.models.checkpoint import read_checkpoint_meta

        return read_checkpoint_meta(experiment.checkpoint_path(self.settings.root))

    def train_config(self, experiment: Experiment, val_fold: int, folds: int | None = None) -> TrainConfig:
        return experiment.train_config(
            self.settings.root, folds=folds or self.settings.folds, val_fold=val_fold,
            split_seed=self.settings.split_seed, seed=self.settings.seed, cache_dir=self.settings.cache_dir,
            init_from=self.init_checkpoint(experiment), epochs_scale=self.settings.epochs_scale)

    def init_checkpoint(self, experiment: Experiment) -> str | None:
        """The checkpoint ``experiment.init_from`` names (a pretrain run's best.pt, or a path)."""
        start = experiment.init_from
        if not start:
            return None
        if start in self.experiments:
            path = self.settings.work / "pretrain" / start / "best.pt"
            if not path.is_file():
                raise ConfigError(f"{path} missing: run the 'pretrain' stage first (experiment {experiment.name})")
            return str(path)
        if not Path(start).is_file():
            raise ConfigError(f"experiment {experiment.name}: init_from checkpoint {start} not found")
        return start

    # ---- one training run ------------------------------------------------------------------------------------
    def train(self, label: str, family: str, config: TrainConfig, train: list[ImageRecord], val: list[ImageRecord],
              run_dir: Path, data_dir: Path | None) -> Path:
        """``fit`` into ``run_dir`` unless it holds a finished run of the same split and config (skipped; another
        split or config raises ``ConfigError``); leftovers of an interrupted run are removed first."""
        from pneumo.training.loop import SUMMARY_FILE, fit

        digest = split_digest(train, val)
        settings = {k: v for k, v in config_to_dict(config).items() if k != "cache_dir"}  # where, not what
        record = {"split_sha256": digest, "config": settings, "family": family}
        if (run_dir / SUMMARY_FILE).is_file() and (run_dir / RUN_FILE).is_file():
            saved = json.loads((run_dir / RUN_FILE).read_text())
            if saved != record:
                raise ConfigError(f"{run_dir} holds a finished run of other data or settings than {label} now has; "
                                  "remove it or choose another --out")
            self.log(f"{label}: already trained ({run_dir})")
            return run_dir
        if run_dir.exists():
            self.log(f"{label}: removing an unfinished run ({run_dir})")
            shutil.rmtree(run_dir)
        self.log(f"{label}: training {family} on {len(train)} images, validating on {len(val)}")
        torch_threads(self.settings.threads)
        started = time.monotonic()
        result = fit(family, config, train, val, run_dir, data_dir=data_dir, progress=False, log=self.log)
        if result.interrupted:
            raise KeyboardInterrupt(f"{label} interrupted; run the same command again to redo it")
        seconds = time.monotonic() - started
        summary_path = run_dir / SUMMARY_FILE
        summary = {**json.loads(summary_path.read_text()), "wall_seconds": seconds}
        atomic_write_bytes(summary_path, json.dumps(summary, indent=2).encode())
        atomic_write_bytes(run_dir / RUN_FILE, json.dumps(record, indent=1).encode())  # last: marks it finished
        best = result.best_metrics
        self.log(f"{label}: done in {seconds:.0f} s, best epoch {result.best_epoch}, val mAP "
                 f"{best.get('val_map', float('nan')):.4f} AUC {best.get('val_auc', float('nan')):.4f}")
        return run_dir

    def data_dir(self) -> Path | None:
        """The cache-naming data folder: the only one, or None for several (their common parent decides)."""
        return self.settings.data[0] if len(self.settings.data) == 1 else None


def torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def stage_pretrain(pipeline: Pipeline) -> None:
    """Each ``kind: pretrain`` experiment on the NIH images alone (its own NIH patient-level split)."""
    from pneumo.training.data_setup import split

    runs = {n: e for n, e in pipeline.experiments.items() if e.kind == "pretrain"}
    if runs and not pipeline.settings.nih:
        raise ConfigError("the pretrain stage needs --nih (the NIH weak-label folder)")
    for i, (name, experiment) in enumerate(runs.items(), 1):
        config = pipeline.train_config(experiment, val_fold=0, folds=experiment.folds or 5)
        train, val = split(pipeline.nih_records, config)
        pipeline.train(f"pretrain {i}/{len(runs)} {name}", experiment.family, config, train, val,
                       pipeline.settings.work / "pretrain" / name, pipeline.settings.nih)


def stage_cv(pipeline: Pipeline) -> None:
    """Every cv experiment x fold: train (skipped when finished), then the fold's OOF outputs."""
    from pneumo.pipeline.oof import predict_oof

    experiments = pipeline.cv_experiments()
    k = pipeline.settings.folds
    total, done = len(experiments) * k, 0
    pipeline.log(f"cv: {len(experiments)} experiment(s) x {k} folds on {len(pipeline.records)} RSNA images "
                 f"({len(set(pipeline.fold_of))} patients)")
    for name, experiment in experiments.items():  # experiment-major: a complete CV of one before the next
        for fold in range(k):
            done += 1
            label = f"cv {done}/{total} {name} fold {fold}"
            train, val = pipeline.fold_split(fold)
            run_dir = pipeline.settings.work / "cv" / name / f"fold{fold}"
            if experiment.kind == "fixed":  # nothing to train: the fold's patients it never saw, predicted
                why = pipeline.fixed_unavailable(experiment)
                if why:
                    pipeline.log(f"{label}: left out: {why}")
                    continue
                scored = pipeline.scored_records(experiment, val)
                started = time.monotonic()
                predict_oof(run_dir, scored, experiment.family, experiment.tta,
                            checkpoint=experiment.checkpoint_path(pipeline.settings.root))
                pipeline.log(f"{label} (fixed checkpoint): OOF outputs ({len(scored)} of {len(val)} images, the "
                             f"others are from {', '.join(experiment.trained_on)}) in {time.monotonic() - started:.0f} s")
                continue
            data_dir = pipeline.data_dir()
            if experiment.nih_in_training:  # NIH images cannot be linked to RSNA patients: never validated on
                if not pipeline.nih_records:
                    raise ConfigError(f"experiment {name} adds NIH images to training: pass --nih")
                train, data_dir = train + pipeline.nih_records, None
            pipeline.train(label, experiment.family, pipeline.train_config(experiment, fold), train, val, run_dir,
                           data_dir)
            started = time.monotonic()
            predict_oof(run_dir, val, experiment.family, experiment.tta)
            pipeline.log(f"{label}: OOF outputs ({len(val)} images) in {time.monotonic() - started:.0f} s")


def stage_final(pipeline: Pipeline) -> None:
    """Retrain each chosen experiment (``summary.json``) on every RSNA record, same settings and epochs; the
    last epoch ships (an in-sample validation cannot choose one)."""
    summary = read_summary(pipeline.settings.work)
    chosen = [(s, n) for s, n in summary["shipped_experiments"].items() if n]
    for i, (shipped, name) in enumerate(chosen, 1):
        experiment = pipeline.experiments.get(name)
        if experiment is None:
            raise ConfigError(f"summary.json ships experiment {name!r}, which is not among the experiments loaded")
        if experiment.kind == "fixed":
            pipeline.log(f"final {i}/{len(chosen)} {name}: a fixed checkpoint, shipped as trained")
            continue
        train, data_dir = list(pipeline.records), pipeline.data_dir()
        if experiment.nih_in_training:
            train, data_dir = train + pipeline.nih_records, None
        pipeline.train(f"final {i}/{len(chosen)} {name} (all data, ships as {shipped})", experiment.family,
                       pipeline.train_config(experiment, 0), train, list(pipeline.records),
                       pipeline.settings.work / "final" / name, data_dir)


def read_summary(work: Path) -> dict:
    path = work / "summary.json"
    if not path.is_file():
        raise ConfigError(f"{path} missing: run the 'report' stage first")
    return json.loads(path.read_text())
