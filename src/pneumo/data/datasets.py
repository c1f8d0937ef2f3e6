"""Torch datasets over cached images: (image, Target) pairs in model-input pixels.

Randomness is a function of (seed, epoch, index) only, so results do not depend on the number of
DataLoader workers, their scheduling or the DDP rank. Call ``set_epoch(e)`` before each epoch; with
``persistent_workers=True`` the workers keep their own copy of the dataset, so recreate the DataLoader
(or keep ``persistent_workers=False``, the default) for the new epoch to reach them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pneumo.data.augment import AugmentConfig, augment
from pneumo.data.cache import ImageCache
from pneumo.data.records import ImageRecord
from pneumo.preprocess import GeometryRecord
from pneumo.types import Target


class ImageDataset(Dataset):
    """``records`` served from ``cache`` (which must contain every record's ``image_id``).

    item i -> (image: float32 tensor (1, S, S) in [0, 1], Target(boxes float32 (N, 4) xyxy in input
    pixels, label 0/1)). Record boxes (original pixels) are mapped with the cached ``GeometryRecord``;
    with ``augment`` set, a paired random augmentation follows (a positive may lose boxes pushed out of
    the canvas; its label stays 1). ``records[i].boxes_known`` tells whether an empty box list is real.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        cache: ImageCache,
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ):
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.records = list(records)
        self.cache = cache
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._cache_index = [cache.index_of(r.image_id) for r in self.records]

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of this epoch (same epoch -> same augmented items)."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def geometry(self, i: int) -> GeometryRecord:
        """Original image <-> input canvas mapping of item i (to map predictions back)."""
        return self.cache.geometry(self._cache_index[i])

    def generator(self, i: int) -> np.random.Generator:
        """The generator item i uses this epoch: a function of (seed, epoch, i) only."""
        return np.random.default_rng([self.seed, self.epoch, i])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, Target]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"dataset index {i} out of range for {len(self)} items")
        i = i % len(self)
        record = self.records[i]
        j = self._cache_index[i]
        image = self.cache.get_image(j)
        boxes = self.cache.geometry(j).to_input(record.boxes) if record.num_boxes else np.zeros((0, 4), np.float32)
        if self.augment is not None:
            image, boxes = augment(image, boxes, self.generator(i), self.augment)
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).unsqueeze(0)
        return tensor, Target(boxes=torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)), label=int(record.target))


def collate(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[torch.Tensor, list[Target]]:
    """[(image (1, S, S), Target)] -> (images (B, 1, S, S), [Target]) for ``DataLoader(collate_fn=...)``."""
    images, targets = zip(*batch)
    return torch.stack(images, 0), list(targets)


def balanced_sampler_weights(records: Sequence[ImageRecord]) -> torch.Tensor:
    """float64 (N,) weights summing to 1 under which positives and negatives are drawn equally often.

    For ``torch.utils.data.WeightedRandomSampler(weights, num_samples=len(records))``. With only one class
    present the weights are uniform.
    """
    targets = np.array([int(r.target) for r in records], dtype=np.int64)
    if not len(targets):
        raise ValueError("no records")
    positives = int(targets.sum())
    negatives = len(targets) - positives
    if positives == 0 or negatives == 0:
        weights = np.full(len(targets), 1.0 / len(targets))
    else:
        weights = np.where(targets == 1, 0.5 / positives, 0.5 / negatives)
    return torch.from_numpy(weights.astype(np.float64))
