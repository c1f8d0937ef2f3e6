"""The RSNA Pneumonia Detection Challenge (Kaggle) layout -> ``RsnaRecord``s.

Layout read (``DIR`` is the unzipped Kaggle download or ``shared/data/rsna-mini``)::

    DIR/stage_2_train_images/<patientId>.dcm
    DIR/stage_2_train_labels.csv           patientId,x,y,width,height,Target  (one row per box;
                                           a negative has one row with empty x,y,width,height)
    DIR/stage_2_detailed_class_info.csv    patientId,class  (optional; rows may repeat per patient)

RSNA's ``x y width height`` is converted here, once, to float32 xyxy in original pixels.
Error messages never name a patient: they give counts and CSV line numbers (``check_layout`` returns the
identifiers to code that needs them).
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pneumo.data.records import ImageRecord, frozen_boxes, normalise_sex, normalise_view, parse_age
from pneumo.errors import DataLayoutError

IMAGES_DIR = "stage_2_train_images"
LABELS_CSV = "stage_2_train_labels.csv"
CLASS_CSV = "stage_2_detailed_class_info.csv"
LABEL_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
CLASS_COLUMNS = ("patientId", "class")
POSITIVE_CLASS = "Lung Opacity"

OnMismatch = Literal["error", "skip"]


@dataclass(frozen=True, eq=False)
class RsnaRecord(ImageRecord):
    """An RSNA training image; ``image_id == patient_id == patientId`` (one image per patient)."""


@dataclass(frozen=True)
class LayoutReport:
    """How the label CSV and the image folder disagree (both empty for a consistent layout)."""

    missing_images: tuple[str, ...]  # patientIds with label rows but no DICOM
    unlabelled_images: tuple[Path, ...]  # DICOMs without any label row

    @property
    def consistent(self) -> bool:
        return not self.missing_images and not self.unlabelled_images


@dataclass(frozen=True)
class _Labels:
    boxes: dict[str, np.ndarray]  # patientId -> float32 (N, 4) xyxy, insertion order of the CSV
    first_line: dict[str, int]  # patientId -> first CSV line number (1 = header)


def read_rsna_labels(csv_path: str | Path) -> dict[str, np.ndarray]:
    """``stage_2_train_labels.csv`` -> {patientId: float32 (N, 4) xyxy boxes in original pixels}.

    A negative patient maps to an empty (0, 4) array; the target is ``len(boxes) > 0``. Raises
    ``DataLayoutError`` for a missing file, missing columns or a malformed / contradictory row.
    """
    return _parse_labels(Path(csv_path)).boxes


def read_rsna_classes(csv_path: str | Path) -> dict[str, str]:
    """``stage_2_detailed_class_info.csv`` -> {patientId: class}. Repeated rows must agree."""
    classes: dict[str, str] = {}
    for line, row in _read_csv(Path(csv_path), CLASS_COLUMNS):
        patient, klass = row["patientId"].strip(), row["class"].strip()
        if not patient or not klass:
            raise DataLayoutError(f"{Path(csv_path).name} line {line}: empty patientId or class")
        if classes.setdefault(patient, klass) != klass:
            raise DataLayoutError(
                f"{Path(csv_path).name} line {line}: a patient is listed with two different classes"
            )
    return classes


def check_layout(directory: str | Path) -> LayoutReport:
    """Compare the label CSV with the image folder (no DICOM is opened)."""
    root = _require_layout(Path(directory))
    labels = _parse_labels(root / LABELS_CSV)
    images = _list_images(root / IMAGES_DIR)
    missing = tuple(p for p in labels.boxes if p not in images)
    unlabelled = tuple(images[p] for p in sorted(images) if p not in labels.boxes)
    return LayoutReport(missing, unlabelled)


def read_rsna(
    directory: str | Path,
    limit: int | None = None,
    on_mismatch: OnMismatch = "error",
    read_headers: bool = True,
    progress: bool = False,
) -> list[RsnaRecord]:
    """Read a Kaggle-layout folder into records sorted by patientId.

    limit: keep the first ``limit`` patients in sorted order (deterministic), after mismatch handling.
    on_mismatch: what to do when a label row has no DICOM or a DICOM has no label row: ``"error"``
      (default: raise ``DataLayoutError``, because a silently smaller data set trains a different model)
      or ``"skip"`` (drop them with one ``UserWarning`` giving the counts).
    read_headers: read view / age / sex from the DICOM headers (about 0.3 ms per file, pixels not read);
      False leaves them None.
    """
    if on_mismatch not in ("error", "skip"):
        raise ValueError(f"on_mismatch must be 'error' or 'skip', got {on_mismatch!r}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    root = _require_layout(Path(directory))
    labels = _parse_labels(root / LABELS_CSV)
    classes = read_rsna_classes(root / CLASS_CSV) if (root / CLASS_CSV).is_file() else {}
    images = _list_images(root / IMAGES_DIR)

    missing = [p for p in labels.boxes if p not in images]
    unlabelled = [p for p in images if p not in labels.boxes]
    if missing or unlabelled:
        message = (
            f"{root}: {len(missing)} labelled patient(s) without a DICOM in {IMAGES_DIR}/"
            + (f" (first at {LABELS_CSV} line {labels.first_line[missing[0]]})" if missing else "")
            + f" and {len(unlabelled)} DICOM(s) without a row in {LABELS_CSV}"
        )
        if on_mismatch == "error":
            raise DataLayoutError(message + "; pass on_mismatch='skip' to drop them, or see check_layout()")
        warnings.warn(message + "; skipped", UserWarning, stacklevel=2)

    patients = sorted(p for p in labels.boxes if p in images)
    if limit is not None:
        patients = patients[:limit]
    records = []
    iterator = patients
    if progress:
        from tqdm import tqdm

        iterator = tqdm(patients, desc="reading DICOM headers", unit="file")
    for patient in iterator:
        boxes = labels.boxes[patient]
        target = int(len(boxes) > 0)
        klass = classes.get(patient)
        if klass is not None and (klass == POSITIVE_CLASS) != bool(target):
            raise DataLayoutError(
                f"{CLASS_CSV}: class {klass!r} contradicts Target={target} at {LABELS_CSV} "
                f"line {labels.first_line[patient]}"
            )
        header = _read_header(images[patient], labels.first_line[patient]) if read_headers else {}
        records.append(
            RsnaRecord(
                image_id=patient,
                patient_id=patient,
                path=images[patient],
                boxes=boxes,
                target=target,
                klass=klass,
                view=header.get("view"),
                age=header.get("age"),
                sex=header.get("sex"),
            )
        )
    return records


# --- internals ------------------------------------------------------------------------------------------


def _require_layout(root: Path) -> Path:
    if not root.is_dir():
        raise DataLayoutError(f"RSNA data folder not found: {root}")
    if not (root / IMAGES_DIR).is_dir():
        raise DataLayoutError(f"{root} is not a Kaggle RSNA layout: no {IMAGES_DIR}/ folder")
    if not (root / LABELS_CSV).is_file():
        raise DataLayoutError(f"{root} is not a Kaggle RSNA layout: no {LABELS_CSV}")
    return root


def _list_images(folder: Path) -> dict[str, Path]:
    """patientId -> path of every ``*.dcm`` directly in ``folder``."""
    try:
        with os.scandir(folder) as entries:
            return {
                entry.name[:-4]: Path(entry.path)
                for entry in entries
                if entry.name.lower().endswith(".dcm") and entry.is_file()
            }
    except OSError as error:
        raise DataLayoutError(f"cannot list {folder}: {error}") from error


def _read_csv(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) from a CSV with the ``required`` columns (any order, extras allowed)."""
    if not path.is_file():
        raise DataLayoutError(f"label file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            absent = [c for c in required if c not in columns]
            if absent:
                raise DataLayoutError(
                    f"{path.name}: missing column(s) {', '.join(absent)}; expected {','.join(required)}"
                )
            for row in reader:
                if None in row or any(row.get(c) is None for c in required):
                    raise DataLayoutError(f"{path.name} line {reader.line_num}: wrong number of fields")
                yield reader.line_num, row
    except UnicodeDecodeError as error:
        raise DataLayoutError(f"{path.name} is not UTF-8 text: {error}") from error
    except csv.Error as error:
        raise DataLayoutError(f"{path.name}: malformed CSV: {error}") from error


def _parse_labels(path: Path) -> _Labels:
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    targets: dict[str, int] = {}
    negatives: set[str] = set()
    first_line: dict[str, int] = {}
    name = path.name
    for line, row in _read_csv(path, LABEL_COLUMNS):
        patient = row["patientId"].strip()
        if not patient:
            raise DataLayoutError(f"{name} line {line}: empty patientId")
        target = _parse_target(row["Target"], name, line)
        fields = [row[c].strip() for c in ("x", "y", "width", "height")]
        first_line.setdefault(patient, line)
        if targets.setdefault(patient, target) != target:
            raise DataLayoutError(f"{name} line {line}: Target differs from an earlier row of the same patient")
        boxes = rows.setdefault(patient, [])
        if not any(fields):
            if target != 0:
                raise DataLayoutError(f"{name} line {line}: Target=1 but no box")
            if patient in negatives:
                raise DataLayoutError(f"{name} line {line}: repeated negative row")
            negatives.add(patient)
            continue
        if not all(fields):
            raise DataLayoutError(f"{name} line {line}: x, y, width, height must be all set or all empty")
        if target != 1:
            raise DataLayoutError(f"{name} line {line}: Target=0 but a box is given")
        try:
            x, y, w, h = (float(v) for v in fields)
        except ValueError as error:
            raise DataLayoutError(f"{name} line {line}: box values are not numbers") from error
        if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0 or x < 0 or y < 0:
            raise DataLayoutError(f"{name} line {line}: box must have x, y >= 0 and width, height > 0")
        boxes.append((x, y, x + w, y + h))
    return _Labels({p: frozen_boxes(b) for p, b in rows.items()}, first_line)


def _parse_target(value: str, name: str, line: int) -> int:
    text = value.strip()
    if text in ("0", "1", "0.0", "1.0"):
        return int(float(text))
    raise DataLayoutError(f"{name} line {line}: Target must be 0 or 1")


_HEADER_TAGS = {"view": 0x00185101, "age": 0x00101010, "sex": 0x00100040}


def _read_header(path: Path, line: int) -> dict[str, object]:
    """view / age / sex from a DICOM header, without reading pixels or validating value formats."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=list(_HEADER_TAGS.values())
        )
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, TypeError) as error:
        raise DataLayoutError(
            f"the DICOM of the patient at {LABELS_CSV} line {line} cannot be read: {type(error).__name__}"
        ) from error

    def raw(tag: int) -> object:
        element = dataset.get_item(tag)  # raw bytes: skips pydicom's value validation ('49' is not AS)
        return None if element is None else element.value

    return {
        "view": normalise_view(raw(_HEADER_TAGS["view"])),
        "age": parse_age(raw(_HEADER_TAGS["age"])),
        "sex": normalise_sex(raw(_HEADER_TAGS["sex"])),
    }
