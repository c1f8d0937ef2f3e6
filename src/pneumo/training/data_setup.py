"""Training data for one run: the patient-level split, the decoded-image cache and a data fingerprint."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pneumo.data.cache import ImageCache, ensure_cache
from pneumo.data.folds import assign_folds, split_records
from pneumo.data.records import ImageRecord
from pneumo.errors import DataLayoutError
from pneumo.training import distributed
from pneumo.training.config import TrainConfig


@dataclass(frozen=True)
class SplitData:
    """Train records (folds != val_fold), validation records (fold == val_fold) and the cache holding both."""

    train: list[ImageRecord]
    val: list[ImageRecord]
    cache: ImageCache
    fingerprint: str


def split(records: Sequence[ImageRecord], config: TrainConfig) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Patient-level split: ``assign_folds(records, folds, split_seed)``; validate on ``val_fold``."""
    if not records:
        raise DataLayoutError("no training records")
    try:
        folds = assign_folds(list(records), config.folds, config.split_seed)
    except ValueError as error:
        raise DataLayoutError(f"cannot split the data into {config.folds} folds: {error}") from error
    train, val = split_records(list(records), folds, config.val_fold)
    if not train or not val:
        raise DataLayoutError(
            f"the split left {len(train)} training and {len(val)} validation images; use more patients or fewer folds"
        )
    return train, val


def check_split(train: Sequence[ImageRecord], val: Sequence[ImageRecord]) -> None:
    """``DataLayoutError`` unless both lists are non-empty and patient-disjoint, or every validation image is a
    training image (an in-sample "validation", e.g. the all-data retrain)."""
    if not train or not val:
        raise DataLayoutError(
            f"the split left {len(train)} training and {len(val)} validation images; use more patients or fewer folds"
        )
    if {r.image_id for r in val} <= {r.image_id for r in train}:
        return
    shared = {r.patient_id for r in train} & {r.patient_id for r in val}
    if shared:
        raise DataLayoutError(
            f"{len(shared)} patient(s) are in both the training and the validation records; split by patient "
            "(pneumo.data.folds.assign_folds) or validate on exactly the training records"
        )


def prepare(
    train: Sequence[ImageRecord],
    val: Sequence[ImageRecord],
    config: TrainConfig,
    *,
    data_dir: str | Path | None = None,
    progress: bool = True,
) -> SplitData:
    """Check the split, then open (building on rank 0 first, if needed) the cache of all these records at
    ``image_size`` (each image once, even when ``val`` repeats ``train``)."""
    train, val = list(train), list(val)
    check_split(train, val)
    everything = list({r.image_id: r for r in train + val}.values())
    if distributed.rank() == 0:
        cache = ensure_cache(everything, config.image_size, data_dir=data_dir, cache_dir=config.cache_dir, progress=progress)
        distributed.barrier()
    else:
        distributed.barrier()
        cache = ensure_cache(everything, config.image_size, data_dir=data_dir, cache_dir=config.cache_dir, progress=False)
    return SplitData(train, val, cache, data_fingerprint(cache, train, val, config))


def data_fingerprint(cache: ImageCache, train: Sequence[ImageRecord], val: Sequence[ImageRecord], config: TrainConfig) -> str:
    """sha256 of the cached images' fingerprint, the labels and the split (which ids train, which validate)."""
    digest = hashlib.sha256()
    digest.update(cache.fingerprint.encode())
    for role, group in (("train", train), ("val", val)):
        for record in sorted(group, key=lambda r: r.image_id):
            digest.update(
                json.dumps([role, record.image_id, int(record.target), record.boxes.round(2).tolist()]).encode()
            )
    digest.update(json.dumps([config.folds, config.val_fold, config.split_seed]).encode())
    return digest.hexdigest()
