"""NIH ChestX-ray14 weak-label folder (``shared/data/nih-weak``) -> ``NihRecord``s.

Layout read::

    DIR/images/<NIH name>.png      e.g. 00000150_002.png (8-bit grayscale, 512x512)
    DIR/labels.csv                 image,label[,nih_patient,finding_labels,view_position,patient_age,
                                   patient_sex,pneumonia_boxes_xywh_512]

``label`` is ``Pneumonia`` (target 1) or ``No Finding`` (target 0): text-mined, noisy. Boxes
(``pneumonia_boxes_xywh_512``, a JSON list of ``[x, y, width, height]`` in 512-px coordinates, i.e. the
pixels of the stored PNG) become float32 xyxy. Most positives have no box: their ``boxes_known`` is False.
The NIH patient id is the first 8 characters of the file name; several images can share a patient.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from pneumo.data.records import ImageRecord, frozen_boxes, normalise_sex, normalise_view, parse_age
from pneumo.errors import DataLayoutError

IMAGES_DIR = "images"
LABELS_CSV = "labels.csv"
REQUIRED_COLUMNS = ("image", "label")
LABEL_TARGETS = {"Pneumonia": 1, "No Finding": 0}
BOX_COLUMN = "pneumonia_boxes_xywh_512"


@dataclass(frozen=True, eq=False)
class NihRecord(ImageRecord):
    """An NIH image; ``image_id`` is the file name without suffix, ``patient_id`` the NIH patient.

    finding_labels: every NIH text-mined label of the image (e.g. ("Infiltration", "Pneumonia")).
    """

    finding_labels: tuple[str, ...] = ()


def nih_patient_id(image_name: str) -> str:
    """``'00000150_002.png'`` -> ``'00000150'`` (the first 8 characters of an NIH file name)."""
    stem = Path(image_name).stem
    if len(stem) < 8:
        raise DataLayoutError(f"not an NIH image name (needs 8 leading patient digits): {image_name!r}")
    return stem[:8]


def read_nih(directory: str | Path, limit: int | None = None) -> list[NihRecord]:
    """Read an NIH weak-label folder into records sorted by image name.

    Every row's image must exist (``DataLayoutError`` otherwise, with the CSV line number); PNGs without a
    row are ignored (the folder may hold other images). ``limit`` keeps the first N images, sorted.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    root = Path(directory)
    if not root.is_dir():
        raise DataLayoutError(f"NIH data folder not found: {root}")
    images_dir, labels_csv = root / IMAGES_DIR, root / LABELS_CSV
    if not images_dir.is_dir():
        raise DataLayoutError(f"{root} is not an NIH weak-label layout: no {IMAGES_DIR}/ folder")
    if not labels_csv.is_file():
        raise DataLayoutError(f"{root} is not an NIH weak-label layout: no {LABELS_CSV}")
    with os.scandir(images_dir) as entries:
        present = {e.name for e in entries if e.is_file()}

    records: dict[str, NihRecord] = {}
    try:
        with labels_csv.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            absent = [c for c in REQUIRED_COLUMNS if c not in columns]
            if absent:
                raise DataLayoutError(f"{LABELS_CSV}: missing column(s) {', '.join(absent)}")
            for row in reader:
                line = reader.line_num
                if None in row or any(row.get(c) is None for c in columns):
                    raise DataLayoutError(f"{LABELS_CSV} line {line}: wrong number of fields")
                record = _record(row, images_dir, present, line)
                if record.image_id in records:
                    raise DataLayoutError(f"{LABELS_CSV} line {line}: image listed twice")
                records[record.image_id] = record
    except UnicodeDecodeError as error:
        raise DataLayoutError(f"{LABELS_CSV} is not UTF-8 text: {error}") from error
    except csv.Error as error:
        raise DataLayoutError(f"{LABELS_CSV}: malformed CSV: {error}") from error
    ordered = [records[k] for k in sorted(records)]
    return ordered[:limit] if limit is not None else ordered


def _record(row: dict[str, str], images_dir: Path, present: set[str], line: int) -> NihRecord:
    name = row["image"].strip()
    if not name or name not in present:
        raise DataLayoutError(f"{LABELS_CSV} line {line}: image file missing from {IMAGES_DIR}/")
    label = row["label"].strip()
    if label not in LABEL_TARGETS:
        raise DataLayoutError(
            f"{LABELS_CSV} line {line}: label must be one of {', '.join(LABEL_TARGETS)}, got {label!r}"
        )
    target = LABEL_TARGETS[label]
    patient = (row.get("nih_patient") or "").strip() or nih_patient_id(name)
    boxes = _parse_boxes(row.get(BOX_COLUMN) or "", line)
    if len(boxes) and not target:
        raise DataLayoutError(f"{LABELS_CSV} line {line}: a 'No Finding' image has pneumonia boxes")
    findings = tuple(f for f in (row.get("finding_labels") or "").split("|") if f)
    return NihRecord(
        image_id=Path(name).stem,
        patient_id=patient,
        path=images_dir / name,
        boxes=frozen_boxes(boxes),
        target=target,
        klass=label,
        view=normalise_view(row.get("view_position")),
        age=parse_age(row.get("patient_age")),
        sex=normalise_sex(row.get("patient_sex")),
        boxes_known=bool(len(boxes)) or target == 0,
        finding_labels=findings,
    )


def _parse_boxes(text: str, line: int) -> list[tuple[float, float, float, float]]:
    text = text.strip()
    if not text:
        return []
    try:
        values = json.loads(text)
        boxes = []
        for item in values:
            x, y, w, h = (float(v) for v in item)
            if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
                raise ValueError("non-positive or non-finite box")
            boxes.append((x, y, x + w, y + h))
    except (ValueError, TypeError) as error:
        raise DataLayoutError(
            f"{LABELS_CSV} line {line}: {BOX_COLUMN} must be a JSON list of [x, y, width, height]"
        ) from error
    return boxes
