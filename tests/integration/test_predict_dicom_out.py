"""`pneumo predict --dicom-out` on real rsna-mini DICOMs (and a PNG): the SR read back gives the JSON's answer."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest

from dicom_tools import dciodvfy_errors
from pneumo.cli import main
from pneumo.dicom_out import read_sr


def test_dicom_out_matches_the_json_output(tmp_path, capsys, rsna_mini, nih_weak):
    inputs = tmp_path / "in"
    inputs.mkdir()
    dicoms = sorted((rsna_mini / "stage_2_train_images").glob("*.dcm"))[:2]
    for path in dicoms:
        shutil.copy(path, inputs / path.name)
    png = sorted((nih_weak / "images").glob("*.png"))[0]
    shutil.copy(png, inputs / png.name)
    out, jsonl = tmp_path / "dicom", tmp_path / "p.jsonl"

    code = main(["predict", "--no-progress", "--model", "baseline", str(inputs), "-o", str(jsonl),
                 "--dicom-out", str(out)])
    err = capsys.readouterr().err
    assert code == 3  # the PNG got no DICOM result
    assert f"no DICOM output for {inputs / png.name}: DICOM output needs a DICOM input" in err
    records = {r["patientId"]: r for r in map(json.loads, jsonl.read_text().splitlines())}
    assert len(records) == 3  # the PNG is still predicted
    assert any(records[p.stem]["boxes"] for p in dicoms), "the comparison needs at least one box"

    files = sorted(out.glob("*.dcm"))
    assert len(files) == 3 * len(dicoms)
    by_class: dict[str, list[pydicom.Dataset]] = {}
    for path in files:
        ds = pydicom.dcmread(path)
        assert path.name == f"{ds.SOPInstanceUID}.dcm"
        by_class.setdefault(ds.SOPClassUID.name, []).append(ds)
    assert sorted(by_class) == ["Comprehensive 3D SR Storage", "Grayscale Softcopy Presentation State Storage",
                                "Secondary Capture Image Storage"]
    for ds in by_class["Comprehensive 3D SR Storage"]:
        record = records[str(ds.PatientID)]
        findings = read_sr(ds)
        assert findings.probability == pytest.approx(record["probability"], abs=1e-6)
        assert findings.threshold == pytest.approx(record["threshold"], abs=1e-6)
        assert findings.version == record["model_version"]
        want = np.array([[b["x"], b["y"], b["x"] + b["width"], b["y"] + b["height"], b["confidence"]]
                         for b in record["boxes"]]).reshape(-1, 5)
        got = np.array([[b.x1, b.y1, b.x2, b.y2, b.confidence] for b in findings.boxes]).reshape(-1, 5)
        np.testing.assert_allclose(got, want, atol=1e-3)
    for path in files[:3]:
        assert dciodvfy_errors(path) == []
