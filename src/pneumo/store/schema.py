"""The database tables (SQLAlchemy 2 ORM). The Alembic migrations in ``migrations/versions`` create them;
this module is their one description in Python.

Boxes in JSON columns (original-image pixels, xyxy): the model's ``boxes`` are ``[x1, y1, x2, y2, confidence]``
lists; ``ground_truth`` and review ``boxes`` are ``[x1, y1, x2, y2]``.
Times are UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: an auto-increment key: BIGINT on PostgreSQL, INTEGER (the rowid) on SQLite
SEQ = BigInteger().with_variant(Integer, "sqlite")
REVIEW_STATUSES = ("unreviewed", "agree", "disagree", "corrected")
ROLES = ("reader", "admin")


class Base(DeclarativeBase):
    pass


class Analysis(Base):
    """One analysed image: provenance, the model's answer and where its pixels are kept."""

    __tablename__ = "analyses"

    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)  # newest = largest (cursor)
    id: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)  # public result id
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    requested_by: Mapped[str] = mapped_column(String(64), nullable=False)
    source_format: Mapped[str] = mapped_column(String(16), nullable=False)
    file_sha256: Mapped[str] = mapped_column(String(64), nullable=False)  # of the uploaded bytes
    study_uid: Mapped[str | None] = mapped_column(String(64))
    series_uid: Mapped[str | None] = mapped_column(String(64))
    sop_uid: Mapped[str | None] = mapped_column(String(64))
    submission_id: Mapped[str] = mapped_column(String(256), nullable=False)  # RSNA patientId: never logged
    model: Mapped[str] = mapped_column(String(64), nullable=False)
    model_version: Mapped[str] = mapped_column(String(256), nullable=False)
    thresholds: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    probability: Mapped[float] = mapped_column(Float, nullable=False)  # calibrated, in [0, 1]
    positive: Mapped[bool | None] = mapped_column(Boolean)
    flagged: Mapped[bool] = mapped_column(Boolean, nullable=False)  # positive at the operating threshold
    boxes: Mapped[list[list[float]]] = mapped_column(JSON, nullable=False)
    timings: Mapped[dict[str, float]] = mapped_column(JSON, nullable=False)
    warnings: Mapped[list[str]] = mapped_column(JSON, nullable=False)
    ground_truth: Mapped[list[list[float]] | None] = mapped_column(JSON)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)  # the Prediction's extra (JSON-safe)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)  # the API's response body
    image_sha256: Mapped[str] = mapped_column(String(64), nullable=False)  # decoded 8-bit PNG, on disk
    heatmap_sha256: Mapped[str | None] = mapped_column(String(64))  # float32 .npy, on disk
    image_height: Mapped[int] = mapped_column(Integer, nullable=False)
    image_width: Mapped[int] = mapped_column(Integer, nullable=False)
    review_status: Mapped[str] = mapped_column(String(16), nullable=False, default="unreviewed")

    __table_args__ = (Index("ix_analyses_status_flagged", "review_status", "flagged", "seq"),)


class Review(Base):
    """A reader's verdict on one analysis (the latest one counts; earlier ones stay)."""

    __tablename__ = "reviews"

    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    analysis_seq: Mapped[int] = mapped_column(SEQ, ForeignKey("analyses.seq", ondelete="RESTRICT"), nullable=False,
                                              index=True)
    decision: Mapped[str] = mapped_column(String(16), nullable=False)  # agree | disagree | corrected
    boxes: Mapped[list[list[float]] | None] = mapped_column(JSON)  # xyxy original px; None = not given
    comment: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class User(Base):
    """A person with an API key. Only a slow salted hash of the key's secret part is kept."""

    __tablename__ = "users"

    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    key_id: Mapped[str] = mapped_column(String(16), unique=True, nullable=False)  # non-secret lookup prefix
    key_salt: Mapped[str] = mapped_column(String(64), nullable=False)  # hex
    key_hash: Mapped[str] = mapped_column(String(128), nullable=False)  # hex scrypt
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEvent(Base):
    """Append-only: who did what to which result, when (the migration adds triggers refusing UPDATE/DELETE)."""

    __tablename__ = "audit"

    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    actor: Mapped[str] = mapped_column(String(64), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    result_id: Mapped[str | None] = mapped_column(String(32), index=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # never patient identifiers
