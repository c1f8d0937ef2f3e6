"""The store on SQLite and PostgreSQL: migrations, all-or-nothing saves, the worklist, reviews, users, the
append-only audit trail and the RSNA label export."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, inspect, select, text

from pneumo.data.rsna import read_rsna_labels
from pneumo.errors import (
    AuthenticationError,
    ConfigError,
    ConflictError,
    InvalidReviewError,
    RecordNotFoundError,
    StoreError,
)
from pneumo.store import audit, migrate, open_database
from pneumo.store.analyses import ReviewInput, add_review, get_analysis, latest_review, list_analyses, save_analysis
from pneumo.store.export import export_reviews
from pneumo.store.schema import AuditEvent
from pneumo.store.users import add_user, authenticate, disable_user, list_users


def fields(flagged: bool = False, patient: str = "P1", boxes: list | None = None) -> dict:
    result_id = uuid.uuid4().hex
    boxes = [[10.0, 12.5, 30.0, 42.75, 0.875]] if boxes is None else boxes
    return {
        "id": result_id, "created_at": audit.utcnow(), "requested_by": "alice", "source_format": "dicom",
        "file_sha256": "ab" * 32, "study_uid": "1.2.3", "series_uid": "1.2.3.4", "sop_uid": "1.2.3.4.5",
        "submission_id": patient, "model": "chexnet", "model_version": "chexnet-0.1.0+abc",
        "thresholds": {"probability_threshold": 0.5}, "probability": 0.8 if flagged else 0.2,
        "positive": flagged, "flagged": flagged, "boxes": boxes, "timings": {"decode": 1.5}, "warnings": ["w"],
        "ground_truth": None, "extra": {"threshold": 0.5}, "payload": {"id": result_id, "probability": 0.5},
        "image_height": 64, "image_width": 80,
    }


def image_png(seed: int = 0) -> bytes:
    from pneumo.api.render import png_bytes

    return png_bytes(np.random.default_rng(seed).integers(0, 256, (64, 80), dtype=np.uint8))


def count(db, model) -> int:
    with db.transaction() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_migrations_create_every_table_and_are_idempotent(db) -> None:
    assert migrate.current(db.engine) == migrate.head() == "0001"
    migrate.upgrade(db.engine)  # again: nothing to do, nothing lost
    assert {"analyses", "reviews", "users", "audit", "alembic_version"} <= set(inspect(db.engine).get_table_names())


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    database = open_database(None, tmp_path)
    try:
        with database.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert (tmp_path / "pneumo.db").exists()
    finally:
        database.close()


def test_unsupported_database_url_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unsupported database"):
        open_database("mysql://x@localhost/db", tmp_path)


def test_save_and_load_round_trip_with_blobs(db) -> None:
    record = fields(flagged=True)
    heat = np.random.default_rng(1).random((8, 10)).astype(np.float32)
    png = image_png(1)
    save_analysis(db, record, png, heat, actor="alice")
    row = get_analysis(db, record["id"])
    for key in ("model", "model_version", "thresholds", "probability", "boxes", "timings", "warnings", "sop_uid",
                "study_uid", "series_uid", "requested_by", "payload", "submission_id"):
        assert getattr(row, key) == record[key], key
    assert row.review_status == "unreviewed"
    assert db.blobs.get(row.image_sha256, ".png") == png
    np.testing.assert_array_equal(db.blobs.get_array(row.heatmap_sha256), heat)
    events = audit.events(db, action="analyse")
    assert [(e.actor, e.result_id) for e in events] == [("alice", record["id"])]


def test_failed_save_leaves_no_row_and_no_audit_event(db) -> None:
    record = fields()
    save_analysis(db, record, image_png(), None, actor="alice")
    with pytest.raises(StoreError):
        save_analysis(db, dict(record), image_png(2), None, actor="bob")  # same id: the insert fails
    from pneumo.store.schema import Analysis

    assert count(db, Analysis) == 1 and count(db, AuditEvent) == 1
    with pytest.raises(RecordNotFoundError):
        get_analysis(db, "0" * 32)


def test_corrupt_or_missing_blob_is_a_store_error(db) -> None:
    record = fields()
    row = save_analysis(db, record, image_png(3), None, actor="alice")
    path = db.blobs.path(row.image_sha256, ".png")
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(StoreError, match="corrupt"):
        db.blobs.get(row.image_sha256, ".png")
    path.unlink()
    with pytest.raises(StoreError, match="missing"):
        db.blobs.get(row.image_sha256, ".png")


def test_worklist_is_newest_first_with_cursor_pages_and_filters(db) -> None:
    ids = []
    for i in range(7):
        record = fields(flagged=i % 2 == 0)
        save_analysis(db, record, image_png(), None, actor="alice")
        ids.append(record["id"])
    seen, cursor, pages = [], None, 0
    while True:
        rows, cursor = list_analyses(db, limit=3, cursor=cursor)
        seen += [r.id for r in rows]
        pages += 1
        if cursor is None:
            break
    assert seen == ids[::-1] and pages == 3
    flagged, _ = list_analyses(db, flagged=True, limit=50)
    assert [r.id for r in flagged] == [ids[i] for i in (6, 4, 2, 0)]
    add_review(db, ids[4], ReviewInput("agree"), reviewer="bob")
    unreviewed_flagged, _ = list_analyses(db, status="unreviewed", flagged=True)
    assert [r.id for r in unreviewed_flagged] == [ids[i] for i in (6, 2, 0)]
    assert [r.id for r in list_analyses(db, status="reviewed")[0]] == [ids[4]]
    assert [r.id for r in list_analyses(db, status="agree")[0]] == [ids[4]]
    with pytest.raises(InvalidReviewError):
        list_analyses(db, status="bogus")


def test_reviews_validate_record_and_audit(db) -> None:
    record = fields(flagged=True)
    save_analysis(db, record, image_png(), None, actor="alice")
    before = count(db, AuditEvent)
    bad = [
        ReviewInput("maybe"),
        ReviewInput("corrected"),  # a correction without boxes
        ReviewInput("corrected", [[10, 10, 90, 20]]),  # outside the 80 px wide image
        ReviewInput("corrected", [[10, 10, 5, 20]]),  # negative width
        ReviewInput("agree", comment="x" * 5000),
    ]
    for review in bad:
        with pytest.raises(InvalidReviewError):
            add_review(db, record["id"], review, reviewer="bob")
    with pytest.raises(RecordNotFoundError):
        add_review(db, "f" * 32, ReviewInput("agree"), reviewer="bob")
    assert count(db, AuditEvent) == before and get_analysis(db, record["id"]).review_status == "unreviewed"

    add_review(db, record["id"], ReviewInput("disagree", comment="artefact"), reviewer="bob")
    add_review(db, record["id"], ReviewInput("corrected", [[1, 2, 30, 40]], "left base"), reviewer="carol")
    row = get_analysis(db, record["id"])
    latest = latest_review(db, row.seq)
    assert row.review_status == "corrected"
    assert (latest.reviewer, latest.boxes, latest.comment) == ("carol", [[1.0, 2.0, 30.0, 40.0]], "left base")
    assert [e.actor for e in audit.events(db, action="review")] == ["carol", "bob"]


def test_audit_table_is_append_only_in_the_database(db) -> None:
    audit.append(db, "alice", "view", "a" * 32, {"kind": "image"})
    for statement in ("UPDATE audit SET actor = 'mallory'", "DELETE FROM audit"):
        with pytest.raises(Exception, match="append-only"):
            with db.engine.begin() as conn:
                conn.execute(text(statement))
    assert [e.actor for e in audit.events(db)] == ["alice"]
    with pytest.raises(ValueError):
        audit.append(db, "alice", "delete-everything")


def test_users_keys_are_hashed_verified_and_disabled(db) -> None:
    info, key = add_user(db, "alice", "reader", actor="cli")
    assert info.role == "reader" and key.startswith(f"pn_{info.key_id}_")
    with db.engine.connect() as conn:
        stored = conn.execute(text("SELECT key_id, key_salt, key_hash FROM users")).one()
    assert key.split("_", 2)[2] not in "".join(stored)  # only the id and a salted hash are kept
    cache: dict[str, str] = {}
    assert authenticate(db, key, cache).name == "alice" and info.key_id in cache
    assert authenticate(db, key, cache).name == "alice"  # from the cache, still checked for being enabled
    with pytest.raises(AuthenticationError):
        authenticate(db, key[:-1] + ("A" if key[-1] != "A" else "B"))
    with pytest.raises(AuthenticationError):
        authenticate(db, "not-a-key")
    with pytest.raises(ConflictError):
        add_user(db, "alice", "admin", actor="cli")
    with pytest.raises(ConfigError):
        add_user(db, "bob", "superuser", actor="cli")
    add_user(db, "bob", "admin", actor="cli")
    disable_user(db, "alice", actor="bob")
    with pytest.raises(AuthenticationError, match="disabled"):
        authenticate(db, key, cache)
    assert [(u.name, u.disabled) for u in list_users(db)] == [("alice", True), ("bob", False)]
    with pytest.raises(RecordNotFoundError):
        disable_user(db, "nobody", actor="bob")
    actions = [(e.action, e.detail["user"]) for e in audit.events(db)]
    assert actions == [("user_disable", "alice"), ("user_add", "bob"), ("user_add", "alice")]


def test_export_reviews_writes_rsna_labels(db, tmp_path: Path) -> None:
    box = [10.0, 12.5, 30.0, 42.5, 0.9]
    cases = {
        "AGREE": (fields(True, "AGREE", [box]), ReviewInput("agree")),
        "NEG": (fields(True, "NEG", [box]), ReviewInput("disagree")),
        "FIX": (fields(True, "FIX", [box]), ReviewInput("corrected", [[1, 2, 31, 42], [40, 5, 60, 25]])),
        "UNLABELLABLE": (fields(False, "UNLABELLABLE", []), ReviewInput("disagree")),
    }
    for record, review in cases.values():
        save_analysis(db, record, image_png(), None, actor="alice")
        add_review(db, record["id"], review, reviewer="bob")
    save_analysis(db, fields(True, "UNREVIEWED"), image_png(), None, actor="alice")
    out = tmp_path / "labels.csv"
    summary = export_reviews(db, out, actor="bob")
    assert (summary.patients, summary.boxes, summary.skipped) == (3, 3, 1)
    labels = read_rsna_labels(out)
    assert set(labels) == {"AGREE", "NEG", "FIX"}
    np.testing.assert_allclose(labels["AGREE"], [[10, 12.5, 30, 42.5]])
    assert labels["NEG"].shape == (0, 4)
    np.testing.assert_allclose(sorted(labels["FIX"].tolist()), [[1, 2, 31, 42], [40, 5, 60, 25]])
    with open(out, newline="") as handle:
        assert next(csv.reader(handle)) == ["patientId", "x", "y", "width", "height", "Target"]
    assert audit.events(db, action="export")[0].detail == {"patients": 3, "boxes": 3}
