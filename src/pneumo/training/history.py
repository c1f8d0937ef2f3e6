"""Per-epoch training history: ``history.csv`` and ``loss_curve.png`` in the run directory, written atomically."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pneumo.errors import CheckpointError
from pneumo.files import atomic_write_bytes


@dataclass(frozen=True)
class EpochRecord:
    """One row of history.csv. Losses are means over the epoch's batches; lr is the last step's rate;
    val_map is RSNA mAP in [0, 1] (boxes in original pixels), val_auc the ROC AUC of the image probability
    (NaN when the validation fold holds a single class); seconds is the wall time of the epoch."""

    epoch: int
    lr: float
    train_loss: float
    val_loss: float
    val_map: float
    val_auc: float
    seconds: float


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(EpochRecord))


def write_history_csv(path: Path, records: list[EpochRecord]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: _fmt(v) for k, v in asdict(record).items()})
    atomic_write_bytes(path, buffer.getvalue().encode())


def read_history_csv(path: Path) -> list[EpochRecord]:
    """Read a history.csv written by ``write_history_csv`` (used by ``--resume``)."""
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        return [
            EpochRecord(
                epoch=int(row["epoch"]),
                **{name: float(row[name]) for name in COLUMNS if name != "epoch"},
            )
            for row in rows
        ]
    except (OSError, KeyError, ValueError) as error:
        raise CheckpointError(f"cannot read training history {path}: {error}") from error


def draw_curves(loss_ax, metric_ax, records: list[EpochRecord], name: str = "", in_sample: bool = False) -> None:
    """Draw train vs validation loss on ``loss_ax`` and validation mAP/AUC on ``metric_ax`` (by epoch).

    ``in_sample``: the "validation" columns were computed on images the weights were fitted on (the shipped
    models, retrained on all patients), so they are labelled as training data."""
    prefix = f"{name}: " if name else ""
    held = "training data, in-sample" if in_sample else "validation"
    epochs = [r.epoch for r in records]
    loss_ax.plot(epochs, [r.train_loss for r in records], "o-", label="train loss")
    loss_ax.plot(epochs, [r.val_loss for r in records], "s-", label=f"{held} loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title(f"{prefix}loss" + (" (training data)" if in_sample else ""))
    metric_ax.plot(epochs, [r.val_map for r in records], "o-", label=f"{held} mAP (RSNA)")
    metric_ax.plot(epochs, [r.val_auc for r in records], "s-", label=f"{held} AUC")
    metric_ax.set_ylim(0.0, 1.0)
    metric_ax.set_xlabel("epoch")
    metric_ax.set_title(f"{prefix}" + ("training-data metrics (not validation)" if in_sample else "validation metrics"))
    for ax in (loss_ax, metric_ax):
        ax.legend()
        ax.grid(alpha=0.3)


def save_figure_png(path: Path, figure) -> None:
    """Render a matplotlib ``Figure`` to PNG and write it atomically."""
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())


def plot_loss_curve(path: Path, records: list[EpochRecord]) -> None:
    """Two panels: train vs validation loss by epoch; validation mAP and AUC by epoch. Written atomically."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state touched

    figure = Figure(figsize=(10, 4), dpi=100)
    draw_curves(*figure.subplots(1, 2), records)
    save_figure_png(path, figure)


def write_history(run_dir: Path, records: list[EpochRecord]) -> None:
    """Write RUN_DIR/history.csv and RUN_DIR/loss_curve.png."""
    write_history_csv(Path(run_dir) / "history.csv", records)
    plot_loss_curve(Path(run_dir) / "loss_curve.png", records)


def _fmt(value: object) -> object:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return value
