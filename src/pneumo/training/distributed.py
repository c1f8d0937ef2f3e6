"""DistributedDataParallel plumbing: detect a ``torchrun`` launch, pick the backend, gather results.

A launch is distributed when the environment holds ``WORLD_SIZE`` > 1 (``torchrun`` also sets ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``). Backend: ``nccl`` on CUDA, ``gloo`` on CPU. Only
rank 0 writes files and shows progress; every collective below is a no-op in a single process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job. ``world_size`` 1 means a plain single-process run."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Read ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (torchrun's variables); absent -> single process."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        return DistInfo()
    if world <= 1:
        return DistInfo()
    return DistInfo(world_size=world, rank=rank, local_rank=local)


def setup(info: DistInfo, device: torch.device) -> bool:
    """Initialise the default process group for ``info`` (if distributed and not yet initialised).

    Returns True when this call created the group (so the caller should ``teardown`` it).
    """
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return True


def teardown(created: bool) -> None:
    if created and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (a one-element list in a single process)."""
    if not active():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def mean_across_ranks(total: float, count: int) -> float:
    """Mean of a quantity summed (``total``) over ``count`` items on each rank, over all ranks."""
    if active():
        tensor = torch.tensor([float(total), float(count)], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        total, count = float(tensor[0]), int(tensor[1])
    return total / count if count else float("nan")


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def any_flag(flag: bool, device: torch.device | None = None) -> bool:
    """True on every rank when ``flag`` is True on at least one rank."""
    if not active():
        return bool(flag)
    tensor = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        tensor = tensor.to(device or torch.device("cuda"))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (e.g. BatchNorm running statistics) to every rank."""
    if active():
        for buffer in module.buffers():
            if buffer.dtype != torch.bool:  # gloo cannot broadcast bool; such flags are set identically anyway
                dist.broadcast(buffer.data, src=src)
