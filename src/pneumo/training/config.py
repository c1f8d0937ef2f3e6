"""``TrainConfig``: every setting of a training run (YAML holds values only; ``--set key=value`` overrides).

Resolution order: dataclass defaults <- the family's config defaults <- YAML file <- ``--set`` pairs <-
explicit CLI flags (``--epochs``, ``--image-size``, ``--limit``). The resolved config is saved as
``RUN_DIR/config.yaml`` and inside every checkpoint. Family settings live under ``model`` (e.g.
``--set model.encoder=resnet34``); augmentation under ``augment``; early stopping under ``early_stopping``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pneumo.config import apply_file, apply_values, parse_overrides
from pneumo.data.augment import AugmentConfig
from pneumo.errors import ConfigError
from pneumo.files import to_jsonable

MONITORS: dict[str, str] = {"val_map": "max", "val_auc": "max", "val_loss": "min"}
BALANCE_MODES: tuple[str, ...] = ("sampler", "pos_weight", "none")


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    monitor: ``"val_map"`` (default: the RSNA mAP the task is scored on, at the best box/gate thresholds of the
    validation grid; higher is better), ``"val_auc"`` (higher is better) or ``"val_loss"`` (lower is better).
    The same monitor picks the epoch saved as ``best.pt``. ``patience`` 0 disables early stopping.
    """

    monitor: str = "val_map"
    patience: int = 5
    min_delta: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    epochs: passes over the training folds. batch_size: images per step (per process under DDP).
    lr / weight_decay: AdamW. warmup_epochs: linear warm-up length (fractions allowed) before a per-step cosine
    decay to ``min_lr``. grad_clip: max global gradient L2 norm (0 = off).
    image_size: square model-input side S in px (letterbox; also the family's ``image_size`` if it has one).
    folds / val_fold / split_seed: patient-level stratified K-fold split; train on folds != val_fold, validate on
    val_fold. ``split_seed`` is separate from ``seed`` so that runs with other seeds keep the same split.
    seed: model initialisation, sampling order, augmentation, dropout. deterministic: deterministic algorithms
    inside ``fit`` (warn-only). limit: use the first ``limit`` patients (sorted ids) - for smoke runs.
    balance: ``"sampler"`` (WeightedRandomSampler-style class balancing), ``"pos_weight"`` (the family's BCE
    pos_weight = n_neg / n_pos, for families that have one) or ``"none"``.
    amp / channels_last: mixed precision (autocast + GradScaler) and NHWC memory layout, on CUDA only.
    device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``. num_workers: DataLoader processes.
    ddp_find_unused_parameters: DistributedDataParallel's flag (True is safe for every family; False is faster
    for families whose loss always uses every parameter).
    cache_dir: where the decoded-image cache lives (None: ``pneumo.data.cache`` default).
    init_from: a checkpoint of the same family to start from instead of the family's initialisation (fine-tuning,
    e.g. after pretraining on weak labels): every weight whose name and shape match is loaded; the data-derived
    priors (the ``unet`` lung field) are then refitted on this run's training set.
    """

    epochs: int = 10
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr: float = 1e-6
    grad_clip: float = 5.0
    image_size: int = 256
    folds: int = 5
    val_fold: int = 0
    split_seed: int = 0
    seed: int = 42
    deterministic: bool = True
    limit: int | None = None
    balance: str = "sampler"
    amp: bool = True
    channels_last: bool = True
    device: str = "auto"
    num_workers: int = 0
    ddp_find_unused_parameters: bool = True
    cache_dir: str | None = None
    init_from: str | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    model: Any = None  # the family's config dataclass (``pneumo.models.config_class(family)``)

    def validate(self) -> "TrainConfig":
        """Raise ``ConfigError`` for values that cannot work; returns self."""
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
            (0 <= self.min_lr <= self.lr, "min_lr must be between 0 and lr"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0 = off)"),
            (self.image_size >= 32, "image_size must be >= 32 px"),
            (self.folds >= 2, "folds must be >= 2"),
            (0 <= self.val_fold < self.folds, f"val_fold must be in [0, {self.folds})"),
            (self.limit is None or self.limit >= 1, "limit must be >= 1"),
            (self.balance in BALANCE_MODES, f"balance must be one of {', '.join(BALANCE_MODES)}"),
            (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "device must be auto, cpu or cuda[:N]"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.early_stopping.monitor in MONITORS, f"early_stopping.monitor must be one of {', '.join(MONITORS)}"),
            (self.early_stopping.patience >= 0, "early_stopping.patience must be >= 0"),
            (self.early_stopping.min_delta >= 0, "early_stopping.min_delta must be >= 0"),
            *[(0 <= getattr(self.augment, name) <= 1, f"augment.{name} must be in [0, 1]")
              for name in ("hflip_p", "affine_p", "intensity_p", "noise_p")],
            (0 <= self.augment.noise_std <= 0.5, "augment.noise_std must be in [0, 0.5] (intensity units)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid training config: {message}")
        return self


def default_config(family: str) -> TrainConfig:
    """``TrainConfig`` defaults with the family's config defaults under ``model``."""
    from pneumo.models import config_class

    return TrainConfig(model=config_class(family)())


def resolve_train_config(
    family: str,
    file: str | Path | None = None,
    overrides: list[str] | None = None,
    flags: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults <- YAML ``file`` <- ``overrides`` (``key=value``, dotted for nested) <- ``flags`` (None values
    ignored). The family's ``image_size`` (if it has one) follows ``TrainConfig.image_size``."""
    config = apply_file(default_config(family), file)
    config = apply_values(config, parse_overrides(overrides))
    config = apply_values(config, {k: v for k, v in (flags or {}).items() if v is not None})
    return sync_family(config).validate()


def sync_family(config: TrainConfig) -> TrainConfig:
    """Make the family config agree with the run: its ``image_size`` (if any) = ``config.image_size``."""
    model = config.model
    if model is not None and any(f.name == "image_size" for f in dataclasses.fields(model)):
        if model.image_size != config.image_size:
            config = dataclasses.replace(config, model=dataclasses.replace(model, image_size=config.image_size))
    return config


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain, YAML/JSON-safe dict (tuples become lists)."""
    return to_jsonable(dataclasses.asdict(config))


def config_from_dict(family: str, values: dict[str, Any]) -> TrainConfig:
    """Inverse of ``config_to_dict`` (unknown keys raise ``ConfigError``)."""
    return sync_family(apply_values(default_config(family), dict(values))).validate()


def save_config_yaml(path: Path, config: TrainConfig, family: str) -> None:
    """Write ``{family: ..., **config}`` as YAML (atomically)."""
    from pneumo.files import atomic_write_bytes

    text = yaml.safe_dump({"family": family, **config_to_dict(config)}, sort_keys=False)
    atomic_write_bytes(Path(path), text.encode())


def load_config_yaml(path: Path) -> tuple[str, TrainConfig]:
    """Read a run's ``config.yaml`` -> (family, config)."""
    try:
        values = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read run config {path}: {error}") from error
    if not isinstance(values, dict) or "family" not in values:
        raise ConfigError(f"{path} is not a pneumo run config (no 'family' key)")
    family = str(values.pop("family"))
    return family, config_from_dict(family, values)
