"""Reviewed cases as RSNA training labels (``patientId,x,y,width,height,Target``, one row per box, one empty
row per negative), ready for ``pneumo train``.

Which boxes a review means: its own boxes when it gives them (a correction always does); otherwise ``agree``
keeps the model's boxes and ``disagree`` with a model that drew boxes means "no opacity". A ``disagree``
without boxes on an image the model found empty cannot be labelled (no box to train on) and is skipped.
When one patient was analysed and reviewed several times, the newest reviewed analysis wins.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

from sqlalchemy import select

from pneumo.files import atomic_write
from pneumo.store import audit
from pneumo.store.db import Database
from pneumo.store.schema import Analysis, Review

LABEL_HEADER = ("patientId", "x", "y", "width", "height", "Target")


@dataclass(frozen=True)
class ExportSummary:
    patients: int
    boxes: int
    skipped: int  # reviewed but not labellable (see the module docstring)


def label_boxes(analysis: Analysis, review: Review) -> list[list[float]] | None:
    """The xyxy boxes a review asserts, or None when it asserts none that can be written."""
    if review.boxes is not None:
        return [list(map(float, b)) for b in review.boxes]
    predicted = [list(map(float, b[:4])) for b in analysis.boxes]
    if review.decision == "agree":
        return predicted
    return [] if predicted else None


def export_reviews(db: Database, output: str | os.PathLike, actor: str) -> ExportSummary:
    """Write the labels CSV atomically and record an ``export`` audit event."""
    with db.transaction() as session:
        rows = session.execute(
            select(Analysis, Review).join(Review, Review.analysis_seq == Analysis.seq)
            .order_by(Analysis.seq.desc(), Review.seq.desc())
        ).all()
    chosen: dict[str, list[list[float]] | None] = {}
    seen_analyses: set[int] = set()
    skipped = 0
    for analysis, review in rows:
        if analysis.seq in seen_analyses:
            continue  # an older review of an analysis already taken
        seen_analyses.add(analysis.seq)
        if analysis.submission_id in chosen:
            continue  # an older analysis of the same patient
        boxes = label_boxes(analysis, review)
        if boxes is None:
            skipped += 1
            continue
        chosen[analysis.submission_id] = boxes
    n_boxes = 0
    with atomic_write(output) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(LABEL_HEADER)
        for patient in sorted(chosen):
            boxes = chosen[patient]
            if not boxes:
                writer.writerow((patient, "", "", "", "", 0))
            for x1, y1, x2, y2 in boxes:
                writer.writerow((patient, _num(x1), _num(y1), _num(x2 - x1), _num(y2 - y1), 1))
                n_boxes += 1
    summary = ExportSummary(len(chosen), n_boxes, skipped)
    audit.append(db, actor, "export", None, {"patients": summary.patients, "boxes": summary.boxes})
    return summary


def _num(value: float) -> str:
    return f"{round(float(value), 1):g}" if abs(value) < 1e6 else f"{value:.1f}"
