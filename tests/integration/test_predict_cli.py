"""`pneumo predict` end to end on real files: rsna-mini DICOMs, an NIH PNG, an extensionless DICOM and a corrupt
file, with a tiny random-init Mask R-CNN checkpoint at 64 px (plumbing, not accuracy)."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumo.cli import main
from pneumo.evaluation.rsna_map import mean_average_precision
from pneumo.io import read_xray
from pneumo.models import create_model
from pneumo.models.checkpoint import save_checkpoint
from pneumo.outputs import read_submission_csv
from pneumo.preprocess import Preprocessor
from pneumo.service import InferenceService
from pneumo.types import boxes_to_array

SIZE = 64
NUMBER = r"\d+"
CONF = r"(0|1)\.\d{6}"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    model = create_model("maskrcnn", {"image_size": SIZE, "box_score_thresh": 0.0})
    save_checkpoint(folder / "maskrcnn.pt", model, config=model.config, preprocess=Preprocessor(SIZE).to_dict(),
                    thresholds={"box_threshold": 0.0, "gate_threshold": 0.0, "probability_threshold": 0.4},
                    metrics={}, data_fingerprint="test", half=True)
    return folder


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, rsna_mini, nih_weak) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    dicoms = sorted((rsna_mini / "stage_2_train_images").glob("*.dcm"))[:4]
    for path in dicoms[:3]:
        shutil.copy(path, folder / path.name)
    nested = folder / "nested" / "deeper"
    nested.mkdir(parents=True)
    shutil.copy(dicoms[3], nested / dicoms[3].stem)  # no suffix: found by sniffing
    png = sorted((nih_weak / "images").glob("*.png"))[0]
    shutil.copy(png, folder / "nested" / png.name)
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"truncated nonsense")
    return folder


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["predict", "--no-progress", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _stems(inputs: Path) -> list[str]:
    return sorted(p.stem for p in inputs.rglob("*") if p.is_file() and p.name != "broken.dcm")


def test_csv_is_exactly_kaggle_format_and_the_bad_file_is_skipped(capsys, model_dir, inputs, tmp_path):
    output = tmp_path / "submission.csv"
    code, _, err = _run(capsys, "--model", "maskrcnn", "--model-dir", str(model_dir), str(inputs), "-o", str(output))
    assert code == 3
    lines = output.read_text().split("\n")
    assert lines[0] == "patientId,PredictionString" and lines[-1] == ""
    rows = [line.split(",") for line in lines[1:-1]]
    assert sorted(r[0] for r in rows) == _stems(inputs)
    box = rf"{CONF} {NUMBER} {NUMBER} {NUMBER} {NUMBER}"
    for patient_id, prediction in rows:
        assert re.fullmatch(rf"({box}( {box})*)?", prediction), prediction
    # the skipped file is named with the reason; no other file name (= patient id) appears on stderr
    assert re.search(r"skipped .*broken\.dcm: \w+Error", err)
    assert not any(stem in err for stem in _stems(inputs))

    # every row holds the service's boxes in original pixels (1024 x 1024 DICOMs, 512 x 512 PNG)
    service = InferenceService(model_dir, num_threads=1)
    submission = read_submission_csv(output)
    for path in [p for p in inputs.rglob("*") if p.is_file() and p.name != "broken.dcm"]:
        xray = read_xray(path)
        expected = boxes_to_array(list(service.predict(xray, "maskrcnn").boxes), with_confidence=True)
        boxes = submission[path.stem]
        assert boxes.shape == expected.shape  # same boxes up to float rounding (thread counts differ)
        np.testing.assert_allclose(boxes[:, 4], expected[:, 4], atol=2e-6)
        np.testing.assert_allclose(boxes[:, :4], expected[:, :4], atol=1.0)  # whole pixels in the file
        assert len(boxes) > 0
        assert boxes[:, [0, 2]].max() <= xray.width and boxes[:, [1, 3]].max() <= xray.height
        assert np.all(np.diff(boxes[:, 4]) <= 0)
    assert {read_xray(p).width for p in inputs.rglob("*") if p.is_file() and p.name != "broken.dcm"} == {1024, 512}


@pytest.mark.slow
def test_jsonl_fields_and_batched_threaded_run_match(capsys, model_dir, inputs, tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert _run(capsys, "--model", "maskrcnn", "--model-dir", str(model_dir), str(inputs), "-o", str(first))[0] == 3
    code, _, _ = _run(capsys, "--model", "maskrcnn", "--model-dir", str(model_dir), str(inputs), "-o", str(second),
                      "--batch-size", "3", "--workers", "2")
    assert code == 3
    records = [json.loads(line) for line in first.read_text().splitlines()]
    assert sorted(r["patientId"] for r in records) == _stems(inputs)
    for record in records:
        assert {"patientId", "probability", "boxes", "model", "model_version", "threshold"} <= set(record)
        assert 0.0 <= record["probability"] <= 1.0
        assert record["model"] == "maskrcnn" and record["model_version"].startswith("maskrcnn-0.1.0+")
        assert record["threshold"] == 0.4
        assert record["boxes"] and all(set(b) == {"x", "y", "width", "height", "confidence"} for b in record["boxes"])
    batched = {r["patientId"]: r for r in map(json.loads, second.read_text().splitlines())}
    for record in records:
        other = batched[record["patientId"]]
        assert other["probability"] == pytest.approx(record["probability"], abs=1e-5)
        assert len(other["boxes"]) == len(record["boxes"])


def test_nothing_usable_exits_2_and_writes_nothing(capsys, model_dir, inputs, tmp_path):
    output = tmp_path / "none.csv"
    code, _, err = _run(capsys, "--model", "maskrcnn", "--model-dir", str(model_dir), str(inputs / "broken.dcm"),
                        str(tmp_path / "missing"), "-o", str(output))
    assert code == 2 and not output.exists()
    assert "missing: no such file or folder" in err and "nothing written" in err
    code, _, err = _run(capsys, "--model", "no-such-model", "--model-dir", str(model_dir), str(inputs), "-o", str(output))
    assert code == 2 and "unknown model 'no-such-model'; available: maskrcnn" in err and not output.exists()
    code, _, err = _run(capsys, "--model", "maskrcnn", "--model-dir", str(model_dir), str(inputs), "-o", str(tmp_path / "x.txt"))
    assert code == 2 and ".csv" in err


def test_an_interrupted_write_leaves_no_partial_file(capsys, model_dir, inputs, tmp_path, monkeypatch):
    import pneumo.outputs

    output = tmp_path / "out.csv"
    output.write_text("previous run\n")
    calls = {"n": 0}
    real = pneumo.outputs.format_prediction_string

    def interrupted(boxes):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of writing rows
        return real(boxes)

    monkeypatch.setattr(pneumo.outputs, "format_prediction_string", interrupted)
    two = sorted(str(p) for p in inputs.glob("*.dcm") if p.name != "broken.dcm")[:2]
    code, _, err = _run(capsys, "--model", "maskrcnn", "--model-dir", str(model_dir), *two, "-o", str(output))
    assert code == 130 and "interrupted" in err
    assert output.read_text() == "previous run\n", "the old file is untouched"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"], "no temporary file left behind"


def test_overlays_are_written_at_original_size(capsys, model_dir, inputs, tmp_path):
    from PIL import Image

    overlays = tmp_path / "overlays"
    dicom = sorted(inputs.glob("*.dcm"))[0]
    code, _, _ = _run(capsys, "--model", "maskrcnn", "--model-dir", str(model_dir), str(dicom),
                      "-o", str(tmp_path / "one.csv"), "--overlays", str(overlays), "--tta")
    assert code == 0
    with Image.open(overlays / f"{dicom.stem}.png") as image:
        assert image.size == (1024, 1024) and image.mode == "RGB"


def test_evaluate_round_trip_on_the_written_csv(capsys, model_dir, inputs, rsna_mini, tmp_path):
    output = tmp_path / "dicoms.csv"
    dicoms = sorted(str(p) for p in inputs.glob("*.dcm") if p.name != "broken.dcm")
    assert _run(capsys, "--model", "maskrcnn", "--model-dir", str(model_dir), *dicoms, "-o", str(output))[0] == 0
    labels_csv = rsna_mini / "stage_2_train_labels.csv"
    assert main(["evaluate", "--predictions", str(output), "--labels", str(labels_csv), "--bootstrap", "0"]) == 0
    summary = json.loads(capsys.readouterr().out)

    from pneumo.data.rsna import read_rsna_labels

    labels = read_rsna_labels(labels_csv)
    expected = mean_average_precision(read_submission_csv(output), labels)
    assert summary["map"] == pytest.approx(expected.map)
    assert summary["n_images"] == len(labels) and summary["n_missing_predictions"] == len(labels) - len(dicoms)
    with open(output, newline="") as handle:
        assert [row["patientId"] for row in csv.DictReader(handle)] == [Path(p).stem for p in dicoms]
