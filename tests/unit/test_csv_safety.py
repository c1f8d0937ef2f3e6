"""CSV formula injection (issue 17): text cells starting with = + - @ tab CR are escaped in every CSV pneumo
writes; numbers (negative ones included) are not; pneumo reads its own escaped ids back unchanged."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pneumo.outputs import csv_cell, read_submission_csv, uncsv_cell, write_submission_csv


def test_formula_cells_are_escaped_and_numbers_are_not() -> None:
    for text in ("=1+1", "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx"):
        assert csv_cell(text) == "'" + text and uncsv_cell(csv_cell(text)) == text
    assert csv_cell("c4b2a1-normal-id") == "c4b2a1-normal-id"
    assert csv_cell(-3.5) == -3.5 and csv_cell(7) == 7
    assert uncsv_cell("'plain") == "'plain"  # only our own escape is undone


def test_submission_round_trip_with_a_hostile_id(tmp_path: Path) -> None:
    boxes = np.array([[10, 20, 110, 220, 0.9]], np.float32)
    path = write_submission_csv(tmp_path / "sub.csv", [("=cmd|'/c calc'!A1", boxes), ("ok-id", boxes[:0])])
    rows = list(csv.reader(path.open()))
    assert rows[1][0] == "'=cmd|'/c calc'!A1" and rows[1][1] == "0.900000 10 20 100 200"
    back = read_submission_csv(path)
    assert set(back) == {"=cmd|'/c calc'!A1", "ok-id"}
    np.testing.assert_allclose(back["=cmd|'/c calc'!A1"], boxes)
