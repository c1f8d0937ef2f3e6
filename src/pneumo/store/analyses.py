"""Stored analyses and their reviews: save (all or nothing), load, the worklist query, recording a review.

Durability: the decoded image and the heatmap are written (fsynced, atomic, content-addressed) *before* the
row's transaction commits, and the row and its audit event commit together; so after a crash at any moment
a result is either wholly there (row + files) or absent (at most an orphan file, which is harmless).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select

from pneumo.errors import InvalidReviewError, RecordNotFoundError
from pneumo.store import audit
from pneumo.store.db import Database
from pneumo.store.schema import REVIEW_STATUSES, Analysis, Review

DECISIONS = ("agree", "disagree", "corrected")
MAX_COMMENT = 4000
MAX_REVIEW_BOXES = 32


def save_analysis(db: Database, fields: dict[str, Any], image_png: bytes, heatmap: np.ndarray | None,
                  actor: str) -> Analysis:
    """Store one analysis. ``fields`` are ``Analysis`` columns (without seq, blob hashes and review status);
    ``image_png`` is the decoded 8-bit radiograph; ``heatmap`` float32 (h, w) in [0, 1] or None."""
    image_sha = db.blobs.put(image_png, ".png")
    heatmap_sha = None if heatmap is None else db.blobs.put_array(heatmap)
    row = Analysis(**fields, image_sha256=image_sha, heatmap_sha256=heatmap_sha, review_status="unreviewed")
    with db.transaction() as session:
        session.add(row)
        audit.record(session, actor, "analyse", row.id, {"model": row.model, "model_version": row.model_version})
    return row


def get_analysis(db: Database, result_id: str) -> Analysis:
    """The stored analysis with this public id, or ``RecordNotFoundError``."""
    with db.transaction() as session:
        row = session.scalars(select(Analysis).where(Analysis.id == result_id)).one_or_none()
    if row is None:
        raise RecordNotFoundError(f"no stored result with id {result_id!r}")
    return row


def list_analyses(db: Database, status: str | None = None, flagged: bool | None = None, limit: int = 50,
                  cursor: int | None = None) -> tuple[list[Analysis], int | None]:
    """The worklist, newest first: ``(rows, next_cursor)``. ``status`` is a review status or ``"reviewed"``
    (any decision); ``cursor`` is the ``next_cursor`` of the previous page (None: first page)."""
    query = select(Analysis).order_by(Analysis.seq.desc()).limit(limit + 1)
    if status == "reviewed":
        query = query.where(Analysis.review_status != "unreviewed")
    elif status is not None:
        if status not in REVIEW_STATUSES:
            raise InvalidReviewError(f"unknown status {status!r}; use reviewed or one of {', '.join(REVIEW_STATUSES)}")
        query = query.where(Analysis.review_status == status)
    if flagged is not None:
        query = query.where(Analysis.flagged.is_(flagged))
    if cursor is not None:
        query = query.where(Analysis.seq < cursor)
    with db.transaction() as session:
        rows = list(session.scalars(query).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].seq if more and rows else None)


@dataclass(frozen=True)
class ReviewInput:
    """A reader's verdict. ``boxes``: xyxy original px (None = not given; ``[]`` = no opacity)."""

    decision: str
    boxes: Sequence[Sequence[float]] | None = None
    comment: str | None = None


def check_review(review: ReviewInput, width: int, height: int) -> list[list[float]] | None:
    """Validate ``review`` against an image of ``width`` x ``height`` px; returns the boxes as float lists."""
    if review.decision not in DECISIONS:
        raise InvalidReviewError(f"decision must be one of {', '.join(DECISIONS)}, got {review.decision!r}")
    if review.decision == "corrected" and review.boxes is None:
        raise InvalidReviewError("a correction needs its boxes (an empty list means: no opacity)")
    if review.comment is not None and len(review.comment) > MAX_COMMENT:
        raise InvalidReviewError(f"comment longer than {MAX_COMMENT} characters")
    if review.boxes is None:
        return None
    if len(review.boxes) > MAX_REVIEW_BOXES:
        raise InvalidReviewError(f"at most {MAX_REVIEW_BOXES} boxes per review")
    out = []
    for i, box in enumerate(review.boxes):
        values = [float(v) for v in box]
        if len(values) != 4 or not all(math.isfinite(v) for v in values):
            raise InvalidReviewError(f"box {i}: needs 4 finite numbers")
        x1, y1, x2, y2 = values
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise InvalidReviewError(f"box {i}: must have positive size and lie inside the {width}x{height} image")
        out.append(values)
    return out


def add_review(db: Database, result_id: str, review: ReviewInput, reviewer: str) -> Review:
    """Record ``review`` of a stored result (with its audit event, one transaction); it becomes the result's
    current review status."""
    with db.transaction() as session:
        row = session.scalars(select(Analysis).where(Analysis.id == result_id).with_for_update()).one_or_none()
        if row is None:
            raise RecordNotFoundError(f"no stored result with id {result_id!r}")
        boxes = check_review(review, row.image_width, row.image_height)
        entry = Review(analysis_seq=row.seq, decision=review.decision, boxes=boxes, comment=review.comment,
                       reviewer=reviewer, created_at=audit.utcnow())
        session.add(entry)
        row.review_status = review.decision
        audit.record(session, reviewer, "review", result_id, {"decision": review.decision,
                                                              "boxes": None if boxes is None else len(boxes)})
    return entry


def latest_review(db: Database, analysis_seq: int) -> Review | None:
    with db.transaction() as session:
        return session.scalars(
            select(Review).where(Review.analysis_seq == analysis_seq).order_by(Review.seq.desc()).limit(1)
        ).one_or_none()


def review_json(review: Review | None) -> dict[str, Any] | None:
    """API form: boxes as RSNA-style ``{x, y, width, height}``."""
    if review is None:
        return None
    boxes = None if review.boxes is None else [
        {"x": b[0], "y": b[1], "width": b[2] - b[0], "height": b[3] - b[1]} for b in review.boxes
    ]
    return {"decision": review.decision, "boxes": boxes, "comment": review.comment, "reviewer": review.reviewer,
            "created_at": audit.as_utc(review.created_at).isoformat()}
