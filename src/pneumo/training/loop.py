"""``fit``: train one model family on given train / validation records and write a run directory.

RUN_DIR receives ``config.yaml`` (the resolved config), ``best.pt`` and ``last.pt`` (``save_checkpoint``
format: weights, family, config, preprocessing, tuned thresholds, validation metrics, data fingerprint, code
version), ``last.state.pt`` (optimiser/scheduler/scaler/RNG/position, for ``--resume``), ``history.csv`` and
``loss_curve.png`` (rewritten atomically after every epoch) and ``train_summary.json`` at the end.

Each epoch: training steps (AdamW, per-step warm-up + cosine LR, gradient clipping, AMP and channels_last on
CUDA only), then validation on the validation fold (loss, RSNA mAP in original pixels, AUC, thresholds tuned
on the grid of ``pneumo.training.thresholds``). Ctrl-C/SIGTERM stop after the current step with a
resumable state. Under ``torchrun`` the model is wrapped in DistributedDataParallel; only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from pneumo.data.records import ImageRecord
from pneumo.errors import CheckpointError, ConfigError, TrainingError
from pneumo.files import atomic_write_bytes, to_jsonable
from pneumo.models.base import PneumoModel
from pneumo.training import distributed
from pneumo.training.config import MONITORS, TrainConfig, config_to_dict, load_config_yaml, save_config_yaml
from pneumo.training.data_setup import SplitData, prepare
from pneumo.training.history import EpochRecord, write_history
from pneumo.training.interrupt import StopRequest, stop_on_signals
from pneumo.training.reproducibility import (
    capture_rng_state,
    derive_seed,
    deterministic_mode,
    generator,
    restore_rng_state,
)
from pneumo.training.run_setup import apply_balance, fit_family_priors, init_weights_from, param_groups, pick_device
from pneumo.training.sampling import EpochSampler
from pneumo.training.schedule import build_scheduler
from pneumo.training.state import STATE_FILE, Progress, load_state, save_state
from pneumo.training.thresholds import DEFAULT_THRESHOLDS, operating_thresholds
from pneumo.training.validation import ValidationResult, move_targets, validate
from pneumo.types import Thresholds

BEST_FILE = "best.pt"
LAST_FILE = "last.pt"
CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "train_summary.json"

Log = Callable[[str], None]


@dataclass
class FitResult:
    """What ``fit`` did. ``interrupted``: stopped by a signal with a resumable state in RUN_DIR."""

    run_dir: Path
    family: str
    history: list[EpochRecord]
    best_epoch: int
    best_metrics: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    stopped_early: bool = False
    epoch: int = 0  # epochs completed


def load_run_config(run_dir: str | Path, family: str) -> TrainConfig:
    """The saved config of the run in ``run_dir``; ``CheckpointError`` if there is none or it is another family."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file() or not (Path(run_dir) / STATE_FILE).is_file():
        raise CheckpointError(f"{run_dir} holds no resumable run ({CONFIG_FILE} and {STATE_FILE} needed); start without --resume")
    saved_family, config = load_config_yaml(path)
    if saved_family != family:
        raise CheckpointError(
            f"{run_dir} holds a {saved_family!r} run; it cannot be resumed as {family!r} "
            f"(use `pneumo train {saved_family} ... --resume` or another --out)"
        )
    return config


def fit(
    family: str,
    config: TrainConfig | None,
    train: Sequence[ImageRecord],
    val: Sequence[ImageRecord],
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Log | None = None,
) -> FitResult:
    """Train ``family`` on ``train``, validating on ``val``, into ``run_dir``; see the module docstring.

    train / val: patient-disjoint record lists (``data_setup.split`` computes the usual one from
    ``config.folds/val_fold/split_seed``), or ``val`` drawn from ``train`` for an in-sample validation (the
    all-data retrain); anything else raises ``DataLayoutError``.

    resume: continue the run in ``run_dir`` exactly where it stopped, with its saved config (``config`` must be
    None or equal to it). progress: tqdm bars (None: only when stderr is a terminal). log: receives the
    per-epoch lines (default: stderr on rank 0).
    """
    run_dir = Path(run_dir)
    if resume:
        saved = load_run_config(run_dir, family)
        if config is not None and config != saved:
            raise ConfigError("--resume continues with the run's saved config.yaml; do not change settings when resuming")
        config = saved
    elif config is None:
        raise ConfigError("fit needs a TrainConfig (or resume=True)")
    else:
        _refuse_existing_run(run_dir)
    config.validate()
    info = distributed.detect()
    device = pick_device(config.device, info)
    created = distributed.setup(info, device)
    saved_rng = torch.get_rng_state()
    try:
        with deterministic_mode(config.deterministic):
            trainer = _Trainer(family, config, train, val, run_dir, device, data_dir, resume, progress, log)
            result = trainer.run()
        distributed.barrier()
        return result
    finally:
        torch.set_rng_state(saved_rng)
        distributed.teardown(created)


class _LossForward(nn.Module):
    """Routes ``forward`` to ``compute_loss`` so DistributedDataParallel sees (and syncs) the training pass."""

    def __init__(self, model: PneumoModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, targets: list) -> dict[str, torch.Tensor]:
        return self.model.compute_loss(images, targets)


class _Trainer:
    def __init__(
        self,
        family: str,
        config: TrainConfig,
        train: Sequence[ImageRecord],
        val: Sequence[ImageRecord],
        run_dir: Path,
        device: torch.device,
        data_dir: str | Path | None,
        resume: bool,
        progress: bool | None,
        log: Log | None,
    ) -> None:
        self.family, self.config, self.run_dir = family, config, run_dir
        self.train_records, self.val_records = train, val
        self.device, self.data_dir, self.resume = device, data_dir, resume
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.main = self.rank == 0
        self.show = bool(self.main and (sys.stderr.isatty() if progress is None else progress))
        self._log = log
        self.cuda = device.type == "cuda"
        self.amp = bool(config.amp and self.cuda)
        self.channels_last = bool(config.channels_last and self.cuda)
        self.stop = StopRequest()

    # ---- output -------------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if not self.main:
            return
        if self._log is not None:
            self._log(message)
        else:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)

    # ---- setup --------------------------------------------------------------------------------------------
    def run(self) -> FitResult:
        from pneumo.data.datasets import ImageDataset, balanced_sampler_weights, collate

        config = self.config
        data = prepare(self.train_records, self.val_records, config, data_dir=self.data_dir, progress=self.show)
        state = self._load_resume_state(data) if self.resume else None
        if state is None:
            config = self.config = apply_balance(self.family, config, data.train)
        self.data = data
        self.collate = collate

        torch.manual_seed(derive_seed(config.seed, 1))  # model initialisation
        from pneumo.models import create_model

        model = create_model(self.family, config.model)
        if state is None:
            if config.init_from:
                loaded, total = init_weights_from(model, self.family, Path(config.init_from))
                self.log(f"initialised {loaded} of {total} weight tensors from {config.init_from}")
            fit_family_priors(model, data)
        else:
            model.load_state_dict(state["model"])
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model

        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.main and state is None:
            save_config_yaml(self.run_dir / CONFIG_FILE, config, self.family)

        self.train_ds = ImageDataset(data.train, data.cache, config.augment, seed=config.seed)
        self.val_ds = ImageDataset(data.val, data.cache, None, seed=config.seed)
        weights = balanced_sampler_weights(data.train) if config.balance == "sampler" else None
        self.sampler = EpochSampler(
            len(data.train), seed=config.seed, weights=weights, world_size=self.world, rank=self.rank
        )
        per_rank = self.sampler.per_rank
        self.drop_last = per_rank >= config.batch_size
        self.steps = per_rank // config.batch_size if self.drop_last else 1

        self.optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
        self.scheduler = build_scheduler(
            self.optimizer,
            steps_per_epoch=self.steps,
            epochs=config.epochs,
            warmup_epochs=config.warmup_epochs,
            base_lr=config.lr,
            min_lr=config.min_lr,
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        wrapper = _LossForward(model)
        if self.world > 1:
            wrapper = nn.parallel.DistributedDataParallel(
                wrapper,
                device_ids=[self.device.index] if self.cuda else None,
                find_unused_parameters=config.ddp_find_unused_parameters,
            )
        self.forward = wrapper

        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            rng = state["rng"]
            restore_rng_state(rng[self.rank] if self.rank < len(rng) else rng[0])
            self.progress: Progress = state["progress"]
            self.log(
                f"resuming {self.family} run at epoch {self.progress.epoch + 1}/{config.epochs}, "
                f"step {self.progress.batch}/{self.steps}"
            )
        else:
            self.progress = Progress()
        return self._train()

    def _load_resume_state(self, data: SplitData) -> dict[str, Any]:
        state = load_state(self.run_dir / STATE_FILE)
        if state["family"] != self.family:
            raise CheckpointError(f"{self.run_dir} holds a {state['family']!r} run, not {self.family!r}")
        if state["data_fingerprint"] != data.fingerprint:
            raise CheckpointError(
                f"the data differ from those the run in {self.run_dir} was trained on (other images, labels or "
                "split); resume with the same --data, or start a new run"
            )
        if state["world_size"] != self.world:
            raise CheckpointError(
                f"the run in {self.run_dir} used {state['world_size']} process(es); resume it with the same number "
                f"(now {self.world})"
            )
        return state

    # ---- the loop -----------------------------------------------------------------------------------------
    def _train(self) -> FitResult:
        config, p = self.config, self.progress
        from tqdm import tqdm

        epoch_bar = tqdm(
            total=config.epochs, initial=p.epoch, desc=f"{self.family} epochs", unit="epoch",
            disable=not self.show, position=0, dynamic_ncols=True,
        )
        try:
            with stop_on_signals(self.stop, announce=self.main):
                self.log(  # the stop handlers are in place from here on
                    f"training {self.family}: {len(self.data.train)} train / {len(self.data.val)} validation images "
                    f"at {config.image_size} px, {self.steps} steps per epoch x {config.epochs} epochs on {self.device}"
                    + (f" x {self.world} processes" if self.world > 1 else "")
                )
                while p.epoch < config.epochs and not p.finished:
                    if self._train_epoch(p):
                        return self._interrupted()
                    started = time.monotonic()
                    train_loss = distributed.mean_across_ranks(p.loss_sum, p.loss_count)
                    distributed.broadcast_buffers(self.model)
                    val = self._validate()
                    p.seconds += time.monotonic() - started
                    self._end_epoch(p, train_loss, val)
                    epoch_bar.update(1)
                    if p.epoch < config.epochs and not p.finished and distributed.any_flag(self.stop.requested):
                        return self._interrupted()
        finally:
            epoch_bar.close()
        return self._finish()

    def _train_epoch(self, p: Progress) -> bool:
        """Run the remaining steps of epoch ``p.epoch``; True if a stop was requested (state saved by caller)."""
        from tqdm import tqdm

        config = self.config
        self.sampler.set_epoch(p.epoch)
        self.sampler.set_start(p.batch * config.batch_size)
        self.train_ds.set_epoch(p.epoch)
        loader = DataLoader(
            self.train_ds,
            batch_size=config.batch_size,
            sampler=self.sampler,
            num_workers=config.num_workers,
            collate_fn=self.collate,
            drop_last=self.drop_last,
            pin_memory=self.cuda,
            generator=generator(config.seed, 31, p.epoch),
        )
        bar = tqdm(
            total=self.steps, initial=p.batch, desc=f"epoch {p.epoch + 1}/{config.epochs}", unit="step",
            leave=False, disable=not self.show, position=1, dynamic_ncols=True,
        )
        self.model.train()
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.amp else contextlib.nullcontext()
        iterator = iter(loader)
        step_started = time.monotonic()
        try:
            while p.batch < self.steps:
                if distributed.any_flag(self.stop.requested, self.device):
                    return True
                try:
                    images, targets = next(iterator)
                except StopIteration:
                    break
                except Exception:
                    if self.stop.requested:  # e.g. DataLoader workers killed by the same Ctrl-C
                        return True
                    raise
                images = images.to(self.device, non_blocking=True)
                if self.channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                targets = move_targets(targets, self.device)
                with autocast:
                    losses = self.forward(images, targets)
                loss = losses["loss"]
                if distributed.any_flag(not bool(torch.isfinite(loss.detach()).all()), self.device):
                    raise TrainingError(
                        f"the training loss became {float(loss):.4g} at epoch {p.epoch + 1}, step {p.batch + 1}; "
                        "lower lr, raise warmup_epochs or check the data"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                if config.grad_clip > 0:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                p.loss_sum += float(loss.detach()) * images.shape[0]
                p.loss_count += images.shape[0]
                p.batch += 1
                now = time.monotonic()
                p.seconds += now - step_started
                step_started = now
                bar.update(1)
                bar.set_postfix(loss=f"{p.loss_sum / max(p.loss_count, 1):.4f}", lr=f"{self._lr():.2e}")
        finally:
            bar.close()
            del iterator
        return False

    def _validate(self) -> ValidationResult:
        from tqdm import tqdm

        bar = tqdm(
            total=len(self.data.val), desc="validating", unit="img", leave=False, disable=not self.show,
            position=1, dynamic_ncols=True,
        )
        try:
            return validate(
                self.model,
                self.val_ds,
                self.data.val,
                self.data.cache,
                batch_size=self.config.batch_size,
                device=self.device,
                collate=self.collate,
                amp=self.amp,
                channels_last=self.channels_last,
                num_workers=self.config.num_workers,
                progress=lambda n: bar.update(n * self.world),
            )
        finally:
            bar.close()

    def _end_epoch(self, p: Progress, train_loss: float, val: ValidationResult) -> None:
        config = self.config
        epoch = p.epoch + 1
        record = EpochRecord(
            epoch=epoch,
            lr=self._lr(),
            train_loss=float(train_loss),
            val_loss=val.metrics["val_loss"],
            val_map=val.metrics["val_map"],
            val_auc=val.metrics["val_auc"],
            seconds=float(p.seconds),
        )
        p.history.append(record)
        monitor = config.early_stopping.monitor
        value = float(val.metrics[monitor])
        improved = _improved(value, p.best_value, MONITORS[monitor], config.early_stopping.min_delta)
        if improved:
            p.best_value, p.best_epoch, p.bad_epochs = value, epoch, 0
        else:
            p.bad_epochs += 1
        patience = config.early_stopping.patience
        if patience and p.bad_epochs >= patience and epoch < config.epochs:
            p.finished = p.stopped_early = True
        p.epoch, p.batch, p.loss_sum, p.loss_count, p.seconds = epoch, 0, 0.0, 0, 0.0
        if p.epoch >= config.epochs:
            p.finished = True

        metrics = {**val.metrics, "train_loss": float(train_loss), "epoch": epoch}
        if self.main:
            thresholds = operating_thresholds(val.tuned) if val.tuned else DEFAULT_THRESHOLDS
            self._save_checkpoint(LAST_FILE, metrics, thresholds, val.tuned, epoch)
            if improved:  # best.pt = this epoch's last.pt
                atomic_write_bytes(self.run_dir / BEST_FILE, (self.run_dir / LAST_FILE).read_bytes())
            write_history(self.run_dir, p.history)
        self._save_state()
        self.log(
            f"epoch {epoch}/{config.epochs}  lr {record.lr:.2e}  train_loss {record.train_loss:.4f}  "
            f"val_loss {record.val_loss:.4f}  val_map {record.val_map:.4f}  val_auc {record.val_auc:.4f}  "
            f"{record.seconds:.1f}s" + ("  [best]" if improved else "")
            + ("  (early stop)" if p.stopped_early else "")
        )

    # ---- saving -------------------------------------------------------------------------------------------
    def _save_checkpoint(self, name: str, metrics: dict, thresholds: Thresholds, tuned: dict, epoch: int) -> None:
        from pneumo.models.checkpoint import save_checkpoint

        save_checkpoint(
            self.run_dir / name,
            self.model,
            config=self.config.model,
            preprocess=self.data.cache.preprocessor.to_dict(),
            thresholds=thresholds,
            metrics=metrics,
            data_fingerprint=self.data.fingerprint,
            extra={
                "epoch": epoch,
                "train_config": config_to_dict(self.config),
                "split": {
                    "folds": self.config.folds,
                    "val_fold": self.config.val_fold,
                    "split_seed": self.config.split_seed,
                    "n_train": len(self.data.train),
                    "n_val": len(self.data.val),
                },
                "tuning": {k: float(v) for k, v in tuned.items()},
            },
        )

    def _save_state(self) -> None:
        rng = distributed.all_gather_objects(capture_rng_state())
        if self.main:
            save_state(
                self.run_dir / STATE_FILE,
                family=self.family,
                config=config_to_dict(self.config),
                progress=self.progress,
                model=self.model,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.scaler,
                rng=rng,
                world_size=self.world,
                data_fingerprint=self.data.fingerprint,
            )

    def _interrupted(self) -> FitResult:
        self._save_state()
        p = self.progress
        self.log(
            f"interrupted at epoch {p.epoch + 1}, step {p.batch}/{self.steps}: resumable state saved in "
            f"{self.run_dir / STATE_FILE}; continue with the same command plus --resume"
        )
        return self._result(interrupted=True)

    def _finish(self) -> FitResult:
        from pneumo.models.checkpoint import state_dict_sha256

        digests = distributed.all_gather_objects(state_dict_sha256(self.model.state_dict()))
        result = self._result(interrupted=False)
        if self.main:
            summary = {
                "family": self.family,
                "epochs_completed": self.progress.epoch,
                "stopped_early": self.progress.stopped_early,
                "best_epoch": result.best_epoch,
                "monitor": self.config.early_stopping.monitor,
                "best_metrics": result.best_metrics,
                "thresholds": result.thresholds,
                "data_fingerprint": self.data.fingerprint,
                "world_size": self.world,
                "rank_weight_sha256": digests,
                "ranks_identical": len(set(digests)) == 1,
                "device": str(self.device),
            }
            atomic_write_bytes(self.run_dir / SUMMARY_FILE, json.dumps(to_jsonable(summary), indent=2).encode())
            self.log(
                f"done: best epoch {result.best_epoch} ({self.config.early_stopping.monitor} "
                f"{result.best_metrics.get(self.config.early_stopping.monitor, float('nan')):.4f}); "
                f"thresholds {result.thresholds}; run dir {self.run_dir}"
            )
        if len(set(digests)) != 1:
            raise TrainingError(f"distributed ranks ended with different weights ({len(set(digests))} versions)")
        return result

    def _result(self, interrupted: bool) -> FitResult:
        best_metrics: dict[str, float] = {}
        thresholds: dict[str, float] = {}
        best_path = self.run_dir / BEST_FILE
        if self.main and best_path.is_file():
            from pneumo.models.checkpoint import read_checkpoint_meta

            meta = read_checkpoint_meta(best_path)
            best_metrics = {k: float(v) for k, v in meta.get("metrics", {}).items() if isinstance(v, (int, float))}
            thresholds = {k: float(v) for k, v in meta.get("thresholds", {}).items() if isinstance(v, (int, float))}
        p = self.progress
        return FitResult(
            run_dir=self.run_dir,
            family=self.family,
            history=list(p.history),
            best_epoch=p.best_epoch,
            best_metrics=best_metrics,
            thresholds=thresholds,
            interrupted=interrupted,
            stopped_early=p.stopped_early,
            epoch=p.epoch,
        )

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


# ---- helpers --------------------------------------------------------------------------------------------------
def _refuse_existing_run(run_dir: Path) -> None:
    existing = [n for n in (STATE_FILE, BEST_FILE, LAST_FILE) if (run_dir / n).exists()]
    if existing:
        raise ConfigError(
            f"{run_dir} already holds a training run ({', '.join(existing)}); add --resume to continue it or "
            "choose another --out"
        )


def _improved(value: float, best: float | None, mode: str, min_delta: float) -> bool:
    if best is None:
        return True
    if not math.isfinite(value):
        return False
    if not math.isfinite(best):
        return True
    return value > best + min_delta if mode == "max" else value < best - min_delta
