"""Input discovery, decode prefetching and the batch loop behind `pneumo predict` / `evaluate --model`."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pneumo.errors import InvalidImageError
from pneumo.inference.batch import run_files
from pneumo.inference.sources import discover_inputs, prefetch
from pneumo.types import XRay


def _png(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path, format="PNG")
    return path


def _dicom_bytes() -> bytes:
    return b"\0" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00\x00\x00\x00\x00"


def test_discover_inputs_walks_folders_and_sniffs_extensionless_dicom(tmp_path):
    _png(tmp_path / "a" / "one.png")
    _png(tmp_path / "a" / "deep" / "two.PNG")
    (tmp_path / "a" / "three.JPEG").write_bytes(b"\xff\xd8\xff")  # suffix decides inside folders
    (tmp_path / "a" / "four").write_bytes(_dicom_bytes())  # no suffix, DICOM magic
    (tmp_path / "a" / "notes").write_bytes(b"just text, not an image")  # no suffix, not DICOM: ignored
    (tmp_path / "a" / "table.csv").write_text("x")
    _png(tmp_path / "a" / ".hidden" / "five.png")
    _png(tmp_path / "a" / ".six.png")
    explicit = tmp_path / "named.txt"
    explicit.write_text("named explicitly: always taken")
    files, problems = discover_inputs([tmp_path / "a", explicit, tmp_path / "missing.dcm", tmp_path / "a" / "one.png"])
    names = [p.relative_to(tmp_path).as_posix() for p in files]
    assert names == ["a/deep/two.PNG", "a/four", "a/one.png", "a/three.JPEG", "named.txt"]
    assert [(Path(p.path).name, p.reason) for p in problems] == [("missing.dcm", "no such file or folder")]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert discover_inputs([empty])[1][0].reason == "folder holds no DICOM/PNG/JPEG files"


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_prefetch_keeps_order_reports_errors_and_runs_ahead(workers):
    started: list[int] = []
    lock = threading.Lock()

    def work(item):
        with lock:
            started.append(item)
        if item == 3:
            raise InvalidImageError("bad three")
        time.sleep(0.002 * (5 - item % 5))  # later items finish first
        return item * 10

    items = list(range(8))
    seen = []
    with prefetch(work, items, workers=workers, ahead=4) as stream:
        for item, result, error in stream:
            seen.append((item, result, type(error).__name__ if error else None))
            if item == 0 and workers:
                time.sleep(0.05)
                with lock:
                    assert len(started) >= 3, "decoding runs ahead of the consumer"
    assert seen == [(i, None if i == 3 else i * 10, "InvalidImageError" if i == 3 else None) for i in items]


def test_run_files_batches_isolates_a_bad_image_and_reports_decode_errors(tmp_path):
    paths = [tmp_path / f"{i}.png" for i in range(7)]

    def decode(path: Path) -> XRay:
        index = int(path.stem)
        if index == 2:
            raise InvalidImageError("cannot decode")
        return XRay(pixels=np.full((4, 4), index / 10, np.float32), source_format="png")

    calls: list[int] = []

    def infer(xrays):
        calls.append(len(xrays))
        if any(abs(float(x.pixels[0, 0]) - 0.5) < 1e-6 for x in xrays):
            raise InvalidImageError("the model refuses image 5")
        return [float(x.pixels[0, 0]) for x in xrays]

    errors: list[tuple[str, str]] = []
    results = list(run_files(paths, infer, batch_size=3, workers=1, decode=decode, progress=False,
                             on_error=lambda p, e: errors.append((p.name, str(e)))))
    assert [p.name for p, _, _ in results] == ["0.png", "1.png", "3.png", "4.png", "6.png"]
    assert [r for _, _, r in results] == pytest.approx([0.0, 0.1, 0.3, 0.4, 0.6])
    assert errors == [("2.png", "cannot decode"), ("5.png", "the model refuses image 5")]
    assert calls[0] == 3, "images are inferred in batches"
    with pytest.raises(RuntimeError, match="a bug, not a bad image"):  # programming errors are not swallowed
        list(run_files(paths[:1], lambda xs: (_ for _ in ()).throw(RuntimeError("a bug, not a bad image")),
                       decode=decode, progress=False, on_error=lambda p, e: None))
