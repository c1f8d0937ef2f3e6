"""RSNA Kaggle-layout reader: records, labels, header fields and every layout error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pneumo.data.records import parse_age
from pneumo.data.replica import ReplicaEntry, write_kaggle_layout
from pneumo.data.rsna import (
    CLASS_CSV,
    IMAGES_DIR,
    LABELS_CSV,
    check_layout,
    read_rsna,
    read_rsna_classes,
    read_rsna_labels,
)
from pneumo.errors import DataLayoutError

HEADER = "patientId,x,y,width,height,Target\n"


@pytest.fixture(scope="module")
def mini_records(rsna_mini):
    return read_rsna(rsna_mini)


@pytest.fixture(scope="module")
def sample_dcm(rsna_mini) -> Path:
    return sorted((rsna_mini / IMAGES_DIR).glob("*.dcm"))[0]


@pytest.fixture()
def small_layout(tmp_path, mini_records) -> tuple[Path, list]:
    """6 real patients (positives with 1 and 2+ boxes, both negative classes) in a temp Kaggle layout."""
    positives = [r for r in mini_records if r.target]
    picks = [
        next(r for r in positives if r.num_boxes >= 2),
        next(r for r in positives if r.num_boxes == 1),
        *[r for r in mini_records if r.klass == "Normal"][:2],
        *[r for r in mini_records if r.klass == "No Lung Opacity / Not Normal"][:2],
    ]
    entries = [ReplicaEntry(r.path, f"p{i:02d}", r.boxes, r.klass) for i, r in enumerate(picks)]
    return write_kaggle_layout(tmp_path / "kaggle", entries), picks


def _write(root: Path, labels: str, images: list[str], source: Path) -> Path:
    (root / IMAGES_DIR).mkdir(parents=True)
    (root / LABELS_CSV).write_text(labels)
    for name in images:
        shutil.copy(source, root / IMAGES_DIR / f"{name}.dcm")
    return root


def test_small_layout_reads_boxes_classes_and_headers(small_layout):
    root, picks = small_layout
    records = read_rsna(root)
    assert [r.patient_id for r in records] == [f"p{i:02d}" for i in range(6)]
    for record, source in zip(records, picks):
        assert record.image_id == record.patient_id
        assert record.boxes.dtype == np.float32 and record.boxes.shape == source.boxes.shape
        np.testing.assert_allclose(record.boxes, source.boxes, atol=0.05)
        assert record.target == source.target == int(record.num_boxes > 0)
        assert record.klass == source.klass
        assert (record.view, record.age, record.sex) == (source.view, source.age, source.sex)
        assert record.view in ("PA", "AP") and record.sex in ("M", "F") and 0 < record.age < 120
        assert not record.boxes.flags.writeable


def test_boxes_are_xyxy_from_rsna_xywh(tmp_path, sample_dcm):
    root = _write(tmp_path / "d", HEADER + "a,10,20,30,40,1\na,100.5,200,5,6,1\nb,,,,,0\n", ["a", "b"], sample_dcm)
    labels = read_rsna_labels(root / LABELS_CSV)
    np.testing.assert_array_equal(labels["a"], [[10, 20, 40, 60], [100.5, 200, 105.5, 206]])
    assert labels["b"].shape == (0, 4) and labels["b"].dtype == np.float32
    records = {r.patient_id: r for r in read_rsna(root)}
    assert records["a"].target == 1 and records["b"].target == 0 and records["b"].klass is None


def test_limit_takes_first_patients_in_sorted_order(small_layout):
    root, _ = small_layout
    assert [r.patient_id for r in read_rsna(root, limit=3)] == ["p00", "p01", "p02"]
    assert [r.view for r in read_rsna(root, read_headers=False)] == [None] * 6
    with pytest.raises(ValueError):
        read_rsna(root, limit=0)


@pytest.mark.parametrize(
    "value, years",
    [("49", 49), ("049Y", 49), (b"07Y ", 7), ("018M", 1), ("006M", 0), ("010W", 0), ("400D", 1),
     (63, 63), ("", None), (None, None), ("155", None), ("abc", None), ("4.5", None)],
)
def test_parse_age(value, years):
    assert parse_age(value) == years


def test_class_file_may_repeat_rows_but_not_disagree(tmp_path):
    path = tmp_path / CLASS_CSV
    path.write_text("patientId,class\na,Lung Opacity\na,Lung Opacity\nb,Normal\n")
    assert read_rsna_classes(path) == {"a": "Lung Opacity", "b": "Normal"}
    path.write_text("patientId,class\na,Lung Opacity\na,Normal\n")
    with pytest.raises(DataLayoutError, match="line 3"):
        read_rsna_classes(path)


def test_class_contradicting_target_is_an_error(tmp_path, sample_dcm):
    root = _write(tmp_path / "d", HEADER + "a,,,,,0\n", ["a"], sample_dcm)
    (root / CLASS_CSV).write_text("patientId,class\na,Lung Opacity\n")
    with pytest.raises(DataLayoutError, match="contradicts"):
        read_rsna(root)


@pytest.mark.parametrize(
    "labels, match",
    [
        ("patientId,x,y,width,height\na,,,,\n", "missing column"),
        (HEADER + "a,,,,,1\n", "line 2: Target=1 but no box"),
        (HEADER + "a,1,2,3,4,0\n", "Target=0 but a box"),
        (HEADER + "a,1,2,,4,1\n", "all set or all empty"),
        (HEADER + "a,1,two,3,4,1\n", "not numbers"),
        (HEADER + "a,1,2,-3,4,1\n", "width, height > 0"),
        (HEADER + "a,1,2,3,nan,1\n", "width, height > 0"),
        (HEADER + "a,1,2,3,4,1\na,,,,,0\n", "line 3: Target differs"),
        (HEADER + "a,,,,,0\na,,,,,0\n", "repeated negative"),
        (HEADER + "a,,,,,2\n", "Target must be 0 or 1"),
        (HEADER + ",,,,,0\n", "empty patientId"),
        (HEADER + "a,,,,,0,extra\n", "wrong number of fields"),
        (HEADER + "a,,,,\n", "wrong number of fields"),
    ],
)
def test_malformed_label_rows_raise(tmp_path, sample_dcm, labels, match):
    root = _write(tmp_path / "d", labels, ["a"], sample_dcm)
    with pytest.raises(DataLayoutError, match=match):
        read_rsna(root)


def test_missing_folder_images_or_csv_raise(tmp_path, sample_dcm):
    with pytest.raises(DataLayoutError, match="not found"):
        read_rsna(tmp_path / "nowhere")
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / LABELS_CSV).write_text(HEADER)
    with pytest.raises(DataLayoutError, match=IMAGES_DIR):
        read_rsna(tmp_path / "no_images")
    (tmp_path / "no_csv" / IMAGES_DIR).mkdir(parents=True)
    with pytest.raises(DataLayoutError, match=LABELS_CSV):
        read_rsna(tmp_path / "no_csv")


def test_label_row_without_dicom_errors_or_skips_with_warning(tmp_path, sample_dcm):
    root = _write(tmp_path / "d", HEADER + "a,,,,,0\nsecret-id,1,2,3,4,1\n", ["a"], sample_dcm)
    with pytest.raises(DataLayoutError, match=r"1 labelled patient\(s\) without a DICOM.*line 3") as error:
        read_rsna(root)
    assert "secret-id" not in str(error.value)  # messages never name a patient
    with pytest.warns(UserWarning, match="skipped"):
        records = read_rsna(root, on_mismatch="skip")
    assert [r.patient_id for r in records] == ["a"]
    assert check_layout(root).missing_images == ("secret-id",)


def test_dicom_without_label_row_errors_or_skips(tmp_path, sample_dcm):
    root = _write(tmp_path / "d", HEADER + "a,,,,,0\n", ["a", "unlabelled"], sample_dcm)
    (root / IMAGES_DIR / "notes.txt").write_text("not an image")  # ignored: not *.dcm
    with pytest.raises(DataLayoutError, match=r"1 DICOM\(s\) without a row"):
        read_rsna(root)
    with pytest.warns(UserWarning):
        assert len(read_rsna(root, on_mismatch="skip")) == 1
    report = check_layout(root)
    assert [p.name for p in report.unlabelled_images] == ["unlabelled.dcm"] and not report.consistent


def test_unreadable_dicom_header_raises_layout_error(tmp_path, sample_dcm):
    root = _write(tmp_path / "d", HEADER + "a,,,,,0\n", [], sample_dcm)
    (root / IMAGES_DIR / "a.dcm").write_bytes(b"this is not a DICOM file")
    with pytest.raises(DataLayoutError, match="line 2 cannot be read"):
        read_rsna(root)
    assert read_rsna(root, read_headers=False)[0].view is None  # labels alone stay readable
