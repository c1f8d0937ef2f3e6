"""Write Kaggle-layout folders from existing DICOMs (for tests and the scale benchmark).

The DICOMs are copied (or, with ``link=True``, hard-linked: fast and free of disk, but then touching or
editing a replica file changes the original too) under new file names; their headers are not
changed, so the DICOM PatientID inside no longer matches the file name (pneumo takes the patientId from
the file name and the CSV, as the challenge does).
"""

from __future__ import annotations

import csv
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumo.data.rsna import CLASS_CSV, IMAGES_DIR, LABELS_CSV, RsnaRecord


@dataclass(frozen=True)
class ReplicaEntry:
    """One patient to write: its DICOM, new patientId, boxes (N, 4) xyxy, class (None: no class row)."""

    source: Path
    patient_id: str
    boxes: np.ndarray
    klass: str | None = None


def write_kaggle_layout(directory: str | Path, entries: Sequence[ReplicaEntry], link: bool = False) -> Path:
    """Create ``directory`` in the Kaggle layout (images + labels CSV + class CSV) holding ``entries``.

    Label rows are written in RSNA's ``x,y,width,height`` form; one class row per label row (the way the
    challenge's class file repeats positives).
    """
    root = Path(directory)
    images = root / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    with (root / LABELS_CSV).open("w", newline="") as labels, (root / CLASS_CSV).open("w", newline="") as classes:
        label_writer, class_writer = csv.writer(labels), csv.writer(classes)
        label_writer.writerow(["patientId", "x", "y", "width", "height", "Target"])
        class_writer.writerow(["patientId", "class"])
        for entry in entries:
            _place(Path(entry.source), images / f"{entry.patient_id}.dcm", link)
            boxes = np.asarray(entry.boxes, dtype=np.float64).reshape(-1, 4)
            rows = [[entry.patient_id, "", "", "", "", 0]] if not len(boxes) else [
                [entry.patient_id, _num(x1), _num(y1), _num(x2 - x1), _num(y2 - y1), 1] for x1, y1, x2, y2 in boxes
            ]
            label_writer.writerows(rows)
            if entry.klass is not None:
                class_writer.writerows([[entry.patient_id, entry.klass]] * len(rows))
    return root


def replicate(records: Sequence[RsnaRecord], directory: str | Path, n: int, seed: int = 0, link: bool = False) -> Path:
    """A Kaggle-layout folder of ``n`` patients cycling over ``records`` with new random patientIds."""
    if not records:
        raise ValueError("no records to replicate")
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(n):
        record = records[i % len(records)]
        new_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))
        entries.append(ReplicaEntry(record.path, new_id, record.boxes, record.klass))
    return write_kaggle_layout(directory, entries, link)


def _place(source: Path, target: Path, link: bool) -> None:
    if target.exists():
        target.unlink()
    if link:
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copy2(source, target)


def _num(value: float) -> str:
    return f"{value:.1f}"
