"""Pick the reader from a folder's layout: Kaggle RSNA or NIH weak labels."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pneumo.data import nih, rsna
from pneumo.data.records import ImageRecord
from pneumo.errors import DataLayoutError

Layout = Literal["rsna", "nih"]


def detect_layout(directory: str | Path) -> Layout:
    """``"rsna"`` if ``DIR/stage_2_train_labels.csv`` exists, ``"nih"`` if ``DIR/labels.csv`` does."""
    root = Path(directory)
    if not root.is_dir():
        raise DataLayoutError(f"data folder not found: {root}")
    if (root / rsna.LABELS_CSV).is_file() or (root / rsna.IMAGES_DIR).is_dir():
        return "rsna"
    if (root / nih.LABELS_CSV).is_file():
        return "nih"
    raise DataLayoutError(
        f"{root} is neither a Kaggle RSNA layout ({rsna.IMAGES_DIR}/ + {rsna.LABELS_CSV}) "
        f"nor an NIH weak-label layout ({nih.IMAGES_DIR}/ + {nih.LABELS_CSV})"
    )


def read_records(directory: str | Path, limit: int | None = None) -> list[ImageRecord]:
    """Records of either layout (RSNA: strict about label/image mismatches), sorted by image id."""
    if detect_layout(directory) == "rsna":
        return list(rsna.read_rsna(directory, limit=limit))
    return list(nih.read_nih(directory, limit=limit))
