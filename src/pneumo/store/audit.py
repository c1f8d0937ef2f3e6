"""The append-only audit trail: who did what to which result, when. Details never hold patient identifiers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pneumo.audit_actions import ACTIONS  # the actions recorded (defined without the database layer)
from pneumo.store.db import Database
from pneumo.store.schema import AuditEvent


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes: they were written as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def record(session: Session, actor: str, action: str, result_id: str | None = None,
           detail: dict[str, Any] | None = None) -> None:
    """Add one event to ``session`` (it commits with the change it records)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    session.add(AuditEvent(at=utcnow(), actor=actor, action=action, result_id=result_id, detail=detail))


def append(db: Database, actor: str, action: str, result_id: str | None = None,
           detail: dict[str, Any] | None = None) -> None:
    """Record one event in its own transaction."""
    with db.transaction() as session:
        record(session, actor, action, result_id, detail)


@dataclass(frozen=True)
class EventOut:
    seq: int
    at: datetime
    actor: str
    action: str
    result_id: str | None
    detail: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at.isoformat(), "actor": self.actor, "action": self.action,
                "result_id": self.result_id, "detail": self.detail}


def events(db: Database, limit: int = 100, before: int | None = None, action: str | None = None,
           actor: str | None = None, result_id: str | None = None) -> list[EventOut]:
    """Newest first; ``before`` = a ``seq`` from the previous page (cursor)."""
    query = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(limit)
    if before is not None:
        query = query.where(AuditEvent.seq < before)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if actor is not None:
        query = query.where(AuditEvent.actor == actor)
    if result_id is not None:
        query = query.where(AuditEvent.result_id == result_id)
    with db.transaction() as session:
        rows = session.scalars(query).all()
        return [EventOut(r.seq, as_utc(r.at), r.actor, r.action, r.result_id, r.detail) for r in rows]
