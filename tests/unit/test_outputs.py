"""Submission CSV, JSON lines, atomic writes, overlays."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from pneumo import DISCLAIMER
from pneumo.errors import DataLayoutError, InvalidImageError
from pneumo.files import atomic_write
from pneumo.outputs import (
    GROUND_TRUTH_COLOUR,
    PREDICTION_COLOUR,
    prediction_to_record,
    read_predictions,
    read_submission_csv,
    render_overlay,
    save_png,
    write_jsonl,
    write_submission_csv,
)
from pneumo.types import Box, Prediction


def test_atomic_write_replaces_on_success_and_keeps_target_on_error(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_write(target) as handle:
        handle.write("first")
    assert target.read_text() == "first"
    os.chmod(target, 0o640)
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]  # no temp file left behind
    with atomic_write(target, "wb") as handle:
        handle.write(b"second")
    assert target.read_bytes() == b"second"
    assert target.stat().st_mode & 0o777 == 0o640  # permissions of the replaced file kept


def test_submission_csv_exact_text_and_round_trip(tmp_path):
    path = tmp_path / "sub.csv"
    boxes = np.array([[10.4, 20.5, 110.6, 220.49, 0.25], [264.0, 152.0, 477.0, 531.0, 0.9]], np.float32)
    write_submission_csv(path, [("a", boxes), ("b", np.zeros((0, 5), np.float32))])
    # highest confidence first; corners rounded half-up: x1 10.4 -> 10, y1 20.5 -> 21, x2 110.6 -> 111,
    # y2 220.49 -> 220; width = 111 - 10, height = 220 - 21
    assert path.read_text() == (
        "patientId,PredictionString\n"
        "a,0.900000 264 152 213 379 0.250000 10 21 101 199\n"
        "b,\n"
    )
    back = read_submission_csv(path)
    assert set(back) == {"a", "b"} and back["b"].shape == (0, 5)
    np.testing.assert_allclose(back["a"], [[264, 152, 477, 531, 0.9], [10, 21, 111, 220, 0.25]])
    np.testing.assert_allclose(back["a"][:, :4], boxes[::-1, :4], atol=0.5)


def test_submission_drops_boxes_that_round_to_nothing(tmp_path):
    path = tmp_path / "sub.csv"
    write_submission_csv(path, [("a", np.array([[10.2, 10, 10.4, 30, 0.5]], np.float32))])
    assert path.read_text().splitlines()[1] == "a,"


@pytest.mark.parametrize(
    "text",
    [
        "patientId,PredictionString\na,0.5 1 2 3\n",  # not a multiple of 5
        "patientId,PredictionString\na,0.5 1 2 3 x\n",  # not a number
        "patientId,PredictionString\na,\na,\n",  # duplicate
        "id,boxes\na,\n",  # wrong header
        "patientId,PredictionString\na,0.5 1 2 -3 4\n",  # negative width
    ],
)
def test_malformed_submissions_raise_data_layout_error(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataLayoutError):
        read_submission_csv(path)


def _prediction(probability, boxes, threshold=None):
    return Prediction(
        probability=probability,
        boxes=tuple(boxes),
        model="unet",
        model_version="1.2",
        image_size=(1024, 1024),
        extra={} if threshold is None else {"threshold": threshold},
    )


def test_jsonl_round_trip_uses_prediction_to_json(tmp_path):
    path = tmp_path / "preds.jsonl"
    preds = [
        ("p1", _prediction(0.83, [Box(10.5, 20.0, 110.5, 220.0, 0.7), Box(300, 300, 400, 450, 0.95)], 0.4)),
        ("p2", _prediction(0.05, [], 0.4)),
    ]
    records = [prediction_to_record(pid, pred) for pid, pred in preds]
    assert records[0]["disclaimer"] == DISCLAIMER and records[0]["threshold"] == 0.4
    assert records[0]["boxes"][0] == {"x": 10.5, "y": 20.0, "width": 100.0, "height": 200.0, "confidence": 0.7}
    write_jsonl(path, records)
    assert len(path.read_text().splitlines()) == 2
    assert json.loads(path.read_text().splitlines()[1])["patientId"] == "p2"
    loaded = read_predictions(path)
    assert loaded.probabilities == {"p1": pytest.approx(0.83), "p2": pytest.approx(0.05)}
    assert loaded.threshold == 0.4 and loaded.models == ("unet",)
    np.testing.assert_allclose(loaded.boxes["p1"], [[300, 300, 400, 450, 0.95], [10.5, 20, 110.5, 220, 0.7]])
    assert loaded.boxes["p2"].shape == (0, 5)


def test_read_predictions_csv_has_no_probabilities_and_rejects_other_formats(tmp_path):
    csv_path = tmp_path / "s.csv"
    write_submission_csv(csv_path, [("a", np.array([[0, 0, 10, 10, 0.5]], np.float32))])
    loaded = read_predictions(csv_path)
    assert loaded.probabilities is None and loaded.threshold is None
    with pytest.raises(DataLayoutError):
        read_predictions(tmp_path / "x.parquet")
    with pytest.raises(DataLayoutError):
        read_predictions(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"patientId": "a", "probability": 1.5, "boxes": []}\n')
    with pytest.raises(DataLayoutError):
        read_predictions(bad)


def test_write_jsonl_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_jsonl(tmp_path / "x.jsonl", [{"p": float("nan")}])
    assert not (tmp_path / "x.jsonl").exists()


def test_render_overlay_draws_boxes_heatmap_and_caption():
    pixels = np.full((128, 160), 0.5, np.float32)
    pred = np.array([[20, 20, 60, 70, 0.87]], np.float32)
    gt = np.array([[90, 30, 140, 100]], np.float32)
    rgb = render_overlay(pixels, pred, gt, None, title="case", model_name="unet")
    assert rgb.shape == (128, 160, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[50, 20]) == PREDICTION_COLOUR  # left edge of the prediction
    assert tuple(rgb[60, 90]) == GROUND_TRUTH_COLOUR  # left edge of the ground truth
    assert tuple(rgb[60, 115]) == (128, 128, 128)  # inside the ground-truth box: untouched grey
    # the caption band differs with the model name
    other = render_overlay(pixels, pred, gt, None, title="case", model_name="chexnet")
    assert not np.array_equal(rgb[-20:], other[-20:]) and np.array_equal(rgb[40:100], other[40:100])

    heat = np.zeros((8, 10), np.float32)
    heat[:4, :5] = 1.0  # top-left quarter hot
    tinted = render_overlay(pixels, heatmap=heat)
    hot, cold = tinted[20, 20].astype(int), tinted[100, 140].astype(int)
    assert tuple(cold) == (128, 128, 128)
    assert hot[0] > 150 and hot[2] < 100  # blended towards red


def test_render_overlay_rejects_bad_pixels():
    with pytest.raises(InvalidImageError):
        render_overlay(np.zeros((4, 4, 3), np.float32), None)


def test_save_png_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    path = save_png(tmp_path / "o.png", rgb)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
    with pytest.raises(InvalidImageError):
        save_png(tmp_path / "f.png", rgb.astype(np.float32))
