"""pneumo.files: the one atomic write and the one to-JSON converter (and that nothing else does their jobs)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest

from pneumo.files import atomic_path, atomic_write, atomic_write_bytes, to_jsonable

SRC = Path(__file__).resolve().parents[2] / "src" / "pneumo"


def test_atomic_write_bytes_round_trip_and_no_temporary_left(tmp_path):
    target = tmp_path / "sub" / "out.bin"  # the parent is created
    assert atomic_write_bytes(target, b"\x00\x01abc") == target
    assert target.read_bytes() == b"\x00\x01abc"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


def test_error_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half of the new")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_permissions_of_the_replaced_file_are_kept_else_0644_or_given(tmp_path):
    old = tmp_path / "old.txt"
    old.write_text("x")
    os.chmod(old, 0o600)
    atomic_write_bytes(old, b"y")
    assert old.stat().st_mode & 0o777 == 0o600
    new = tmp_path / "new.txt"
    atomic_write_bytes(new, b"y")
    assert new.stat().st_mode & 0o777 == 0o644
    with atomic_write(tmp_path / "given.txt", permissions=0o640) as handle:
        handle.write("z")
    assert (tmp_path / "given.txt").stat().st_mode & 0o777 == 0o640


def test_atomic_path_publishes_what_a_path_based_writer_left_there(tmp_path):
    target = tmp_path / "model.onnx"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.unlink()  # a writer that replaces the file instead of writing into it
        tmp.write_bytes(b"graph")
        assert not target.exists()  # nothing visible before the block ends
    assert target.read_bytes() == b"graph"


def test_text_mode_writes_newlines_untranslated_and_rejects_other_modes(tmp_path):
    with atomic_write(tmp_path / "a.csv") as handle:
        handle.write("a\r\nb\n")
    assert (tmp_path / "a.csv").read_bytes() == b"a\r\nb\n"
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "b.txt", "a"):
            pass


@dataclasses.dataclass
class _Record:
    name: str
    score: float


def test_to_jsonable_is_strict_json_and_keeps_values():
    value = {
        1: np.float32(0.5), "nan": float("nan"), "inf": np.float64(-np.inf), "int": np.int64(7),
        "bool": np.bool_(True), "array": np.array([[1, 2], [3, 4]], dtype=np.int16), "tuple": (1.5, None),
        "path": Path("/a/b"), "record": _Record("x", math.nan), "set": {3}, "text": "t",
    }
    out = to_jsonable(value)
    assert out == {
        "1": 0.5, "nan": None, "inf": None, "int": 7, "bool": True, "array": [[1, 2], [3, 4]],
        "tuple": [1.5, None], "path": "/a/b", "record": {"name": "x", "score": None}, "set": [3], "text": "t",
    }
    assert type(out["int"]) is int and type(out["bool"]) is bool and type(out["1"]) is float
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_to_jsonable_turns_unknown_objects_into_text():
    class Thing:
        def __str__(self) -> str:
            return "thing"

    assert to_jsonable([Thing()]) == ["thing"]


def test_no_other_module_replaces_files_or_converts_to_json_itself():
    """One home for each job: ``os.replace``/``os.rename`` and hand-written JSON converters live in files.py only
    (different jobs, listed here: the image cache publishes a whole folder with ``os.rename``; the DICOM node's
    outbox moves a finished, unsendable entry into ``rejected/``)."""
    allowed_replace = {"files.py", "data/cache.py", "node/queue.py"}
    converter = re.compile(r"^def _?(json_safe|jsonable|_json_safe|to_jsonable|_plain)\b", re.M)
    offenders = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        text = path.read_text(encoding="utf-8")
        if re.search(r"\bos\.(replace|rename)\(", text) and rel not in allowed_replace:
            offenders.append(f"{rel}: os.replace/os.rename")
        if converter.search(text) and rel not in {"files.py", "models/checkpoint.py"}:
            offenders.append(f"{rel}: its own JSON converter")
    assert not offenders, offenders
