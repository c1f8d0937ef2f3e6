"""The training sampler: a per-epoch index order that is a pure function of (seed, epoch).

Because the order depends on nothing but the seed, the epoch and the sampling weights, an interrupted run
can re-create it and skip the batches it already did (``start``), and every DDP rank derives the same global
order and takes its own strided share (padded, like ``DistributedSampler``, so all ranks run equal steps).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

import torch
from torch.utils.data import Sampler

from pneumo.training.reproducibility import generator


class EpochSampler(Sampler[int]):
    """Indices of one epoch for this rank.

    weights: per-item sampling weights (``balanced_sampler_weights``) -> draws ``num_samples`` items with
    replacement (class balancing); None -> a random permutation of all items.
    ``set_epoch(e)`` selects the order; ``set_start(k)`` skips this rank's first ``k`` indices (resume).
    """

    def __init__(
        self,
        size: int,
        *,
        seed: int,
        weights: Sequence[float] | np.ndarray | torch.Tensor | None = None,
        num_samples: int | None = None,
        world_size: int = 1,
        rank: int = 0,
    ) -> None:
        if size <= 0:
            raise ValueError("EpochSampler needs at least one item")
        self.size = int(size)
        self.seed = int(seed)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double).reshape(-1)
        if self.weights is not None and self.weights.numel() != self.size:
            raise ValueError(f"{self.weights.numel()} weights for {self.size} items")
        self.total = int(num_samples or size)
        self.world_size = max(1, int(world_size))
        self.rank = int(rank)
        self.per_rank = math.ceil(self.total / self.world_size)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, start: int) -> None:
        self.start = max(0, int(start))

    def global_order(self) -> list[int]:
        """All ranks' indices of this epoch, padded to ``per_rank * world_size`` by wrapping around."""
        gen = generator(self.seed, 7919, self.epoch)
        if self.weights is None:
            order = torch.randperm(self.size, generator=gen).tolist()
            while len(order) < self.total:
                order += torch.randperm(self.size, generator=gen).tolist()
            order = order[: self.total]
        else:
            order = torch.multinomial(self.weights, self.total, replacement=True, generator=gen).tolist()
        padded = self.per_rank * self.world_size
        return (order * math.ceil(padded / len(order)))[:padded]

    def __iter__(self) -> Iterator[int]:
        mine = self.global_order()[self.rank :: self.world_size]
        return iter(mine[self.start :])

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)
