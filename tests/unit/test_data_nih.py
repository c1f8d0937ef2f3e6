"""NIH weak-label reader: targets, 512-px boxes, patient ids, patient-level split, layout errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pneumo.data.folds import assign_folds, split_records
from pneumo.data.nih import nih_patient_id, read_nih
from pneumo.errors import DataLayoutError

HEADER = "image,nih_patient,label,finding_labels,view_position,patient_age,patient_sex,pneumonia_boxes_xywh_512\n"


@pytest.fixture()
def layout(tmp_path, nih_weak) -> Path:
    """4 real NIH PNGs under made-up names: 2 patients, 2 images each."""
    sources = sorted((nih_weak / "images").glob("*.png"))[:4]
    root = tmp_path / "nih"
    (root / "images").mkdir(parents=True)
    names = ["00000001_000.png", "00000001_001.png", "00000002_000.png", "00000002_001.png"]
    for source, name in zip(sources, names):
        shutil.copy(source, root / "images" / name)
    (root / "labels.csv").write_text(
        HEADER
        + '00000001_000.png,00000001,Pneumonia,Infiltration|Pneumonia,AP,55,,"[[300.7, 298.0, 107.8, 90.5], [10, 20, 30, 40]]"\n'
        + "00000001_001.png,00000001,Pneumonia,Pneumonia,PA,56,M,\n"
        + "00000002_000.png,00000002,No Finding,No Finding,PA,049Y,F,\n"
        + "00000002_001.png,00000002,No Finding,No Finding,XX,,,\n"
    )
    return root


def test_reads_targets_boxes_and_fields(layout):
    records = read_nih(layout)
    assert [r.image_id for r in records] == ["00000001_000", "00000001_001", "00000002_000", "00000002_001"]
    assert [r.patient_id for r in records] == ["00000001", "00000001", "00000002", "00000002"]
    assert [r.target for r in records] == [1, 1, 0, 0]
    np.testing.assert_allclose(records[0].boxes, [[300.7, 298.0, 408.5, 388.5], [10, 20, 40, 60]], atol=1e-4)
    assert records[0].boxes.dtype == np.float32
    assert records[1].num_boxes == 0 and not records[1].boxes_known  # weak positive: boxes unknown
    assert records[2].boxes_known and records[0].boxes_known
    assert [r.view for r in records] == ["AP", "PA", "PA", None]
    assert [r.age for r in records] == [55, 56, 49, None]
    assert [r.sex for r in records] == [None, "M", "F", None]
    assert records[0].finding_labels == ("Infiltration", "Pneumonia") and records[0].klass == "Pneumonia"
    assert all(r.path.is_file() for r in records)
    assert len(read_nih(layout, limit=2)) == 2


def test_patient_id_falls_back_to_first_8_characters(layout):
    text = (layout / "labels.csv").read_text().replace(",00000002,", ",,")
    (layout / "labels.csv").write_text(text)
    assert [r.patient_id for r in read_nih(layout)][2:] == ["00000002", "00000002"]
    assert nih_patient_id("00030805_000.png") == "00030805"
    with pytest.raises(DataLayoutError):
        nih_patient_id("x.png")


def test_patient_split_keeps_images_of_a_patient_together(layout):
    records = read_nih(layout)
    folds = assign_folds(records, k=2, seed=0)
    assert set(folds) == {"00000001", "00000002"} and set(folds.values()) == {0, 1}
    train, val = split_records(records, folds, 0)
    assert len(train) == len(val) == 2
    assert {r.patient_id for r in train}.isdisjoint({r.patient_id for r in val})


@pytest.mark.parametrize(
    "row, match",
    [
        ("00000003_000.png,00000003,Pneumonia,,PA,1,,\n", "image file missing"),
        ("00000001_000.png,00000001,Effusion,,PA,1,,\n", "label must be one of"),
        ('00000001_000.png,00000001,Pneumonia,,PA,1,,"[[1, 2, 3]]"\n', "JSON list"),
        ('00000001_000.png,00000001,Pneumonia,,PA,1,,"[[1, 2, 0, 4]]"\n', "JSON list"),
        ('00000001_000.png,00000001,Pneumonia,,PA,1,,"not json"\n', "JSON list"),
        ('00000001_000.png,00000001,No Finding,,PA,1,,"[[1, 2, 3, 4]]"\n', "has pneumonia boxes"),
        ("00000001_000.png,00000001,Pneumonia\n", "wrong number of fields"),
    ],
)
def test_bad_rows_raise_with_line_number(layout, row, match):
    (layout / "labels.csv").write_text(HEADER + row)
    with pytest.raises(DataLayoutError, match=match):
        read_nih(layout)


def test_bad_layouts_raise(tmp_path, layout):
    with pytest.raises(DataLayoutError, match="not found"):
        read_nih(tmp_path / "missing")
    (layout / "labels.csv").write_text("file,finding\n")
    with pytest.raises(DataLayoutError, match="missing column"):
        read_nih(layout)
    (layout / "labels.csv").unlink()
    with pytest.raises(DataLayoutError, match="labels.csv"):
        read_nih(layout)
    shutil.rmtree(layout / "images")
    with pytest.raises(DataLayoutError, match="images"):
        read_nih(layout)
    (layout / "labels.csv").write_text(HEADER + "00000009_000.png,,No Finding,,,,,\n00000009_000.png,,No Finding,,,,,\n")
    (layout / "images").mkdir()
    (layout / "images" / "00000009_000.png").write_bytes(b"")
    with pytest.raises(DataLayoutError, match="listed twice"):
        read_nih(layout)
