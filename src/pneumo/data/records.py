"""The one record shape every training data source produces (RSNA Kaggle layout, NIH weak labels).

Boxes are float32 ``(N, 4)`` xyxy in *original* pixels of the image file (``pneumo.types`` convention),
read-only. Datasets, folds and caches accept any ``ImageRecord``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

VIEWS = ("PA", "AP")
SEXES = ("M", "F", "O")


def frozen_boxes(boxes: np.ndarray | list | tuple | None) -> np.ndarray:
    """Any (N, 4) box-like -> a read-only float32 (N, 4) array (an empty one for ``None``)."""
    array = np.zeros((0, 4), dtype=np.float32) if boxes is None else np.array(boxes, dtype=np.float32)
    array = array.reshape(-1, 4)
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One labelled image.

    image_id: unique key of the image within its data set (RSNA: patientId; NIH: file name without suffix).
    patient_id: the grouping key for patient-level splits (RSNA: patientId; NIH: first 8 characters).
    path: the image file. boxes: float32 (N, 4) xyxy in original pixels (empty for negatives).
    target: 1 = pneumonia / lung opacity, 0 = not. klass: the source's class label, if any.
    view: "PA", "AP" or None. age: years or None. sex: "M", "F", "O" or None.
    boxes_known: False when a positive image has no box annotation (weak label: "no boxes" means
    "not annotated", not "no opacity"); losses that use boxes should skip such images.
    Records compare by identity (``eq=False``) because they hold an array.
    """

    image_id: str
    patient_id: str
    path: Path
    boxes: np.ndarray = field(default_factory=lambda: frozen_boxes(None))
    target: int = 0
    klass: str | None = None
    view: str | None = None
    age: int | None = None
    sex: str | None = None
    boxes_known: bool = True

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])


def normalise_view(value: object) -> str | None:
    """'PA' / 'ap ' / b'AP' -> 'PA' / 'AP'; anything else (LL, empty, None) -> None."""
    text = _text(value).upper()
    return text if text in VIEWS else None


def normalise_sex(value: object) -> str | None:
    """'M' / 'F' / 'O' (any case) -> itself; anything else -> None."""
    text = _text(value).upper()
    return text if text in SEXES else None


def parse_age(value: object, max_years: int = 120) -> int | None:
    """An age in whole years, or None.

    Accepts the RSNA form (``'49'``, not a valid DICOM AS), DICOM AS (``'049Y'``, ``'006M'``, ``'010W'``,
    ``'003D'``: months, weeks and days become whole years, rounded down) and ints. Values above
    ``max_years`` (the challenge has a few ages of 148-155) and anything unreadable give None.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        years = int(value)
    else:
        text = _text(value).upper()
        if not text:
            return None
        unit = "Y"
        if text[-1] in "YMWD":
            text, unit = text[:-1], text[-1]
        if not text.isdigit():
            return None
        number = int(text)
        years = {"Y": number, "M": number // 12, "W": number // 52, "D": number // 365}[unit]
    return years if 0 <= years <= max_years else None


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    return str(value).strip().strip("\x00").strip()
