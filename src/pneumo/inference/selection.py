"""Which labelled images a tuning or evaluation run uses: a Kaggle-layout folder, optionally one fold of the
same patient-level split training used (``pneumo.data.folds``; k, seed and limit from the checkpoint's
training config unless given)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumo.errors import ConfigError

#: defaults of ``pneumo.training.config.TrainConfig`` used when a checkpoint records no split
DEFAULT_FOLDS, DEFAULT_SPLIT_SEED = 5, 0


@dataclass(frozen=True)
class SplitSettings:
    """folds (k), split_seed, the validation fold training used (or None) and a patient limit (or None)."""

    folds: int = DEFAULT_FOLDS
    split_seed: int = DEFAULT_SPLIT_SEED
    val_fold: int | None = None
    limit: int | None = None
    source: str = "defaults"  # "checkpoint", "arguments" or "defaults"


def _find_train_config(value: Any, depth: int = 0) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        if "folds" in value and "split_seed" in value:
            return value
        if depth < 3:
            for child in value.values():
                found = _find_train_config(child, depth + 1)
                if found is not None:
                    return found
    return None


def split_from_meta(meta: Mapping[str, Any] | None) -> SplitSettings | None:
    """The split recorded in a checkpoint's metadata (the training config saved under ``extra``), or None."""
    found = _find_train_config(dict(meta or {}).get("extra") or {}) or _find_train_config(meta or {})
    if found is None:
        return None
    try:
        val = found.get("val_fold")
        limit = found.get("limit")
        return SplitSettings(int(found["folds"]), int(found["split_seed"]), None if val is None else int(val),
                             None if limit is None else int(limit), "checkpoint")
    except (TypeError, ValueError):
        return None


def resolve_split(recorded: SplitSettings | None, folds: int | None, split_seed: int | None) -> SplitSettings:
    """Command-line values override what the checkpoint recorded; defaults fill the rest."""
    base = recorded or SplitSettings()
    if folds is None and split_seed is None:
        return base
    return SplitSettings(
        folds=base.folds if folds is None else int(folds),
        split_seed=base.split_seed if split_seed is None else int(split_seed),
        val_fold=base.val_fold, limit=base.limit, source="arguments",
    )


@dataclass(frozen=True)
class Selection:
    """The chosen records (``selected``), the rest (``others``: the training folds), and how they were chosen."""

    selected: list
    others: list
    fold: int | None
    split: SplitSettings

    def describe(self) -> dict[str, Any]:
        return {
            "fold": self.fold, "folds": self.split.folds if self.fold is not None else None,
            "split_seed": self.split.split_seed if self.fold is not None else None,
            "split_source": self.split.source if self.fold is not None else None,
            "n_images": len(self.selected),
        }


def select_records(data_dir: str | Path, fold: int | None, split: SplitSettings) -> Selection:
    """Read ``data_dir`` (Kaggle layout) and keep fold ``fold`` of the split (all images when None)."""
    from pneumo.data.folds import assign_folds, split_records
    from pneumo.data.rsna import read_rsna

    records = read_rsna(data_dir, limit=split.limit)
    if fold is None:
        return Selection(list(records), [], None, split)
    if not 0 <= fold < split.folds:
        raise ConfigError(f"--fold must be in [0, {split.folds}), got {fold}")
    try:
        assignment = assign_folds(records, k=split.folds, seed=split.split_seed)
    except ValueError as error:
        raise ConfigError(f"cannot split {data_dir} into {split.folds} folds: {error}") from None
    train, val = split_records(records, assignment, fold)
    return Selection(val, train, fold, split)
