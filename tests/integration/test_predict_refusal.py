"""`pneumo predict` refuses non-radiographs with a clear error before any model (issue 17) and still predicts
the real radiographs beside them (exit 3 = some inputs skipped)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from pneumo.cli import main
from pneumo.io import probes

REPO = Path(__file__).resolve().parents[2]


def test_noise_and_tiny_images_are_skipped_with_the_reason(tmp_path: Path, nih_weak: Path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    real = sorted((nih_weak / "images").glob("*.png"))[0]
    shutil.copy(real, folder / real.name)
    (folder / "noise.png").write_bytes(probes.rgb_noise_png(256))
    (folder / "dot.png").write_bytes(probes.tiny_black_png(1))
    out = tmp_path / "sub.csv"
    code = main(["predict", "--model", "baseline", "--model-dir", str(REPO / "models"), str(folder),
                 "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 3
    assert "noise.png: NotChestRadiographError: not a chest radiograph: colour image" in err
    assert "dot.png: NotChestRadiographError: not a chest radiograph: image is only 1x1 pixels" in err
    rows = list(csv.reader(out.open()))
    assert [r[0] for r in rows[1:]] == [real.stem]
