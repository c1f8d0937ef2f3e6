"""The resumable training state, ``RUN_DIR/last.state.pt`` (beside the published ``last.pt``).

It holds what ``--resume`` needs to continue exactly where the run stopped (also mid-epoch): model,
optimiser, LR scheduler and GradScaler states, the position (epoch, next batch, the epoch's partial loss
sums), every rank's RNG state, the history so far and the early-stopping counters. Written atomically.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from pneumo.errors import CheckpointError
from pneumo.files import atomic_write_bytes
from pneumo.training.history import EpochRecord

STATE_FORMAT = "pneumo-train-state"
STATE_VERSION = 1
STATE_FILE = "last.state.pt"


@dataclass
class Progress:
    """Where the run is: ``epoch`` (0-based) being run, ``batch`` = next step within it (0 = not started),
    partial sums of the epoch's training loss, early-stopping bookkeeping, history rows."""

    epoch: int = 0
    batch: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    seconds: float = 0.0  # training time already spent in this epoch
    best_value: float | None = None
    best_epoch: int = 0  # 1-based epoch of best.pt (0 = none yet)
    bad_epochs: int = 0
    finished: bool = False  # all epochs done or stopped early
    stopped_early: bool = False
    history: list[EpochRecord] = field(default_factory=list)


def save_state(
    path: Path,
    *,
    family: str,
    config: dict[str, Any],
    progress: Progress,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    rng: list[dict[str, Any]],
    world_size: int,
    data_fingerprint: str,
) -> None:
    payload = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "family": family,
        "config": config,
        "progress": {**asdict(progress), "history": [asdict(r) for r in progress.history]},
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng,
        "world_size": int(world_size),
        "data_fingerprint": data_fingerprint,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    """Read a state written by ``save_state``; ``progress`` comes back as a ``Progress``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no resumable state at {path}: nothing to resume (start without --resume)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt zip / pickle
        raise CheckpointError(f"resumable state {path} is corrupt ({type(error).__name__}); start a new run") from error
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT or payload.get("version") != STATE_VERSION:
        raise CheckpointError(f"{path} is not a pneumo training state of version {STATE_VERSION}")
    raw = dict(payload["progress"])
    raw["history"] = [EpochRecord(**row) for row in raw.get("history", [])]
    payload["progress"] = Progress(**raw)
    return payload
