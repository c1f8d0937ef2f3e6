"""SIGKILL of a process writing to the store as fast as it can (analyses with their files, reviews), so the
kill lands inside writes: afterwards the database is consistent on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from pneumo.store import open_database
from pneumo.store.schema import Analysis, AuditEvent, Review

REPO = Path(__file__).resolve().parents[2]
WRITER = r'''
import sys, uuid
import numpy as np
from pneumo.api.render import png_bytes
from pneumo.store import audit, open_database
from pneumo.store.analyses import ReviewInput, add_review, save_analysis

db = open_database(sys.argv[1], sys.argv[2])
rng = np.random.default_rng(int(sys.argv[3]))
for i in range(1_000_000):
    rid = uuid.uuid4().hex
    fields = {
        "id": rid, "created_at": audit.utcnow(), "requested_by": "w", "source_format": "png",
        "file_sha256": "0" * 64, "study_uid": None, "series_uid": None, "sop_uid": None, "submission_id": f"p{i}",
        "model": "unet", "model_version": "v", "thresholds": {}, "probability": 0.5, "positive": True,
        "flagged": True, "boxes": [[1.0, 1.0, 5.0, 5.0, 0.5]], "timings": {}, "warnings": [], "ground_truth": None,
        "extra": {}, "payload": {"id": rid}, "image_height": 48, "image_width": 48,
    }
    heat = rng.random((12, 12)).astype(np.float32)
    save_analysis(db, fields, png_bytes(rng.integers(0, 256, (48, 48), dtype=np.uint8)), heat, "w")
    if i % 2:
        add_review(db, rid, ReviewInput("corrected", [[2, 2, 20, 20]], "c"), "r")
    print(i, flush=True)
'''


def check(db) -> int:
    with db.transaction() as session:
        rows = session.scalars(select(Analysis)).all()
        for row in rows:
            assert db.blobs.get(row.image_sha256, ".png") and db.blobs.get_array(row.heatmap_sha256).shape == (12, 12)
            reviews = session.scalars(select(Review).where(Review.analysis_seq == row.seq)).all()
            assert row.review_status == (reviews[-1].decision if reviews else "unreviewed")
        n_analyse = session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "analyse"))
        n_review = session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "review"))
        assert n_analyse == len(rows)
        assert n_review == session.scalar(select(func.count()).select_from(Review))
    if db.engine.dialect.name == "sqlite":
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
    return len(rows)


@pytest.mark.slow
def test_sigkill_inside_writes_leaves_a_consistent_store(database_url: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    open_database(database_url, data).close()  # migrated before the writer starts
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    total = 0
    for round_ in range(3):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, database_url, str(data), str(round_)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        written = 0
        deadline = time.monotonic() + 60
        while written < 15 + 5 * round_ and time.monotonic() < deadline:
            line = writer.stdout.readline()
            assert line, writer.stderr.read()[-2000:]
            written = int(line) + 1
        time.sleep(0.013 * (round_ + 1))  # land somewhere inside the next writes
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
        writer.stdout.close()
        writer.stderr.close()
        db = open_database(database_url, data)
        try:
            stored = check(db)
        finally:
            db.close()
        assert stored >= total + written  # everything reported written is there
        total = stored
    assert total >= 45
