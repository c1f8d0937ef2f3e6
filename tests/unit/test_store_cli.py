"""`pneumo users`, `pneumo audit` and `pneumo export-reviews` on a SQLite database in a temporary folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from pneumo.cli import main
from pneumo.data.rsna import read_rsna_labels
from pneumo.store import audit, open_database
from pneumo.store.analyses import ReviewInput, add_review, save_analysis
from pneumo.store.users import authenticate


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_users_add_list_disable_and_audit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    where = ("--data-dir", str(tmp_path))
    code, out, _ = run(capsys, "users", "add", "alice", "--role", "admin", *where)
    assert code == 0
    key = re.search(r"^(pn_[0-9a-f]{12}_\S+)$", out, re.M).group(1)
    db = open_database(None, tmp_path)
    try:
        assert authenticate(db, key).role == "admin"
    finally:
        db.close()
    code, _, err = run(capsys, "users", "add", "alice", *where)
    assert code == 2 and "already exists" in err  # taken: a one-line error
    code, out, _ = run(capsys, "users", "list", *where)
    assert code == 0 and re.search(r"^alice\s+admin\s+[0-9a-f]{12}\s.*active$", out, re.M) and key not in out
    assert run(capsys, "users", "disable", "alice", *where)[0] == 0
    assert "disabled" in run(capsys, "users", "list", *where)[1]
    code, _, err = run(capsys, "users", "disable", "ghost", *where)
    assert code == 2 and "no user named 'ghost'" in err
    code, out, _ = run(capsys, "audit", "--json", *where)
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["action"] for e in events] == ["user_disable", "user_add"]
    assert all(e["actor"].startswith("cli") for e in events)
    assert run(capsys, "audit", "--action", "review", *where)[1] == ""


def test_export_reviews_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pneumo.api.render import png_bytes

    db = open_database(None, tmp_path)
    try:
        record = {
            "id": "c" * 32, "created_at": audit.utcnow(), "requested_by": "r", "source_format": "png",
            "file_sha256": "0" * 64, "study_uid": None, "series_uid": None, "sop_uid": None,
            "submission_id": "patient-9", "model": "unet", "model_version": "unet-1", "thresholds": {},
            "probability": 0.9, "positive": True, "flagged": True, "boxes": [[4.0, 4.0, 20.0, 30.0, 0.7]],
            "timings": {}, "warnings": [], "ground_truth": None, "extra": {}, "payload": {},
            "image_height": 32, "image_width": 32,
        }
        save_analysis(db, record, png_bytes(np.zeros((32, 32), np.uint8)), None, actor="r")
        add_review(db, record["id"], ReviewInput("agree"), reviewer="r")
    finally:
        db.close()
    out = tmp_path / "labels.csv"
    code, text, _ = run(capsys, "export-reviews", "--output", str(out), "--data-dir", str(tmp_path))
    assert code == 0 and "1 patients, 1 boxes" in text
    np.testing.assert_allclose(read_rsna_labels(out)["patient-9"], [[4, 4, 20, 30]])
    assert "export" in run(capsys, "audit", "--data-dir", str(tmp_path))[1]
