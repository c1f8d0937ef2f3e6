"""Torch vs ONNX Runtime on real rsna-mini radiographs, end to end through ``InferenceService``.

Tiny random-init checkpoints at 128 px (speed and parity do not depend on the weights); every family that
exports must give probabilities within 1e-3, heatmaps within 1e-3 and boxes matched one to one with IoU > 0.99,
with and without flip TTA, and so must the ensemble built from them. Shipped checkpoints under models/, when
present, are exported to a temporary copy and checked the same way (slow).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumo.export.exporter import export_checkpoint
from pneumo.io import read_xray
from pneumo.models import create_model
from pneumo.models.checkpoint import save_checkpoint
from pneumo.models.registry import resolve_model_config
from pneumo.postprocess import iou_matrix
from pneumo.service import InferenceService, default_model_dir

SIZE = 128
PROB_TOL = 1e-3
HEAT_TOL = 1e-3
MIN_IOU = 0.99
#: family -> (config for a small 128 px model, thresholds that keep every box so boxes are compared)
FAMILIES: dict[str, dict] = {
    "chexnet": {},
    "unet": {"lung_prior": "off"},
    "maskrcnn": {"image_size": SIZE},
}
KEEP_ALL = {"box_threshold": 0.0, "gate_threshold": 0.0, "probability_threshold": 0.5}


@pytest.fixture(scope="module")
def xrays(rsna_mini: Path) -> list:
    """Four real radiographs: two with opacity boxes, two without."""
    positives, negatives = [], []
    with (rsna_mini / "stage_2_train_labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            bucket = positives if row["Target"] == "1" else negatives
            if row["patientId"] not in bucket:
                bucket.append(row["patientId"])
    chosen = sorted(positives)[:2] + sorted(negatives)[:2]
    return [read_xray(rsna_mini / "stage_2_train_images" / f"{pid}.dcm") for pid in chosen]


def _save(folder: Path, family: str) -> Path:
    torch.manual_seed(0)
    config = resolve_model_config(family, FAMILIES[family])
    model = create_model(family, config)
    if family == "unet":
        torch.nn.init.zeros_(model.seg_head.bias)  # maps around 0.5, so random weights still draw boxes
    return save_checkpoint(folder / f"{family}.pt", model, config=config, preprocess={"size": SIZE},
                           thresholds=KEEP_ALL, metrics={}, data_fingerprint="parity-test")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """chexnet and unet checkpoints with their exports, and an ensemble spec (maskrcnn added by its test)."""
    folder = tmp_path_factory.mktemp("parity-models")
    for family in ("chexnet", "unet"):
        export_checkpoint(_save(folder, family))
    return folder


@pytest.fixture(scope="module")
def maskrcnn_dir(model_dir: Path) -> Path:
    export_checkpoint(_save(model_dir, "maskrcnn"))
    spec = {
        "type": "ensemble", "format_version": 1, "name": "ensemble",
        "members": [{"model": "unet", "weight": 1.0}, {"model": "maskrcnn", "weight": 1.0}],
        "classifier": {"model": "chexnet", "weight": 1.0},
        "fusion": {"box_threshold": 0.0, "gate_threshold": 0.0, "skip_thr": 0.0},
    }
    (model_dir / "ensemble.json").write_text(json.dumps(spec), encoding="utf-8")
    return model_dir


def assert_boxes_match(torch_boxes: np.ndarray, onnx_boxes: np.ndarray, where: str) -> None:
    """Same number of boxes, each torch box's best ONNX partner distinct with IoU > MIN_IOU, confidences within tol."""
    a, b = np.asarray(torch_boxes).reshape(-1, 5), np.asarray(onnx_boxes).reshape(-1, 5)
    assert a.shape == b.shape, f"{where}: {len(a)} torch boxes vs {len(b)} onnx boxes"
    if not len(a):
        return
    iou = iou_matrix(a[:, :4], b[:, :4])
    partner = iou.argmax(axis=1)
    assert len(set(partner.tolist())) == len(a), f"{where}: boxes do not pair one to one"
    assert iou[np.arange(len(a)), partner].min() > MIN_IOU, f"{where}: IoU {iou[np.arange(len(a)), partner].min():.4f}"
    assert np.abs(a[:, 4] - b[partner, 4]).max() < PROB_TOL, f"{where}: box confidences differ"


def compare(folder: Path, model: str, xrays: list, tta: bool) -> int:
    """Compare torch and ONNX services on ``model``; returns the number of boxes compared."""
    torch_service = InferenceService(folder, backend="torch", num_threads=1)
    onnx_service = InferenceService(folder, backend="onnx", num_threads=1)
    compared = 0
    for i, xray in enumerate(xrays):
        where = f"{model} image {i} tta={tta}"
        want = torch_service.predict(xray, model, tta=tta)
        got = onnx_service.predict(xray, model, tta=tta)
        assert abs(want.probability - got.probability) < PROB_TOL, where
        assert want.model_version == got.model_version, where
        assert (want.heatmap is None) == (got.heatmap is None), where
        if want.heatmap is not None:
            assert want.heatmap.shape == got.heatmap.shape
            assert np.abs(want.heatmap - got.heatmap).max() < HEAT_TOL, where
        to_array = lambda p: np.array([[b.x1, b.y1, b.x2, b.y2, b.confidence] for b in p.boxes], dtype=np.float32)
        assert_boxes_match(to_array(want), to_array(got), where)
        compared += len(want.boxes)
    return compared


@pytest.mark.parametrize("family", ["chexnet", "unet"])
@pytest.mark.parametrize("tta", [False, True])
def test_dense_families_agree(model_dir, xrays, family, tta):
    boxes = compare(model_dir, family, xrays, tta)
    assert boxes > 0, "the comparison must include boxes to mean anything"


def test_services_really_use_different_backends(model_dir, xrays):
    onnx_prediction = InferenceService(model_dir, backend="onnx", num_threads=1).predict(xrays[0], "chexnet")
    torch_prediction = InferenceService(model_dir, backend="torch", num_threads=1).predict(xrays[0], "chexnet")
    assert onnx_prediction.extra["backend"] == "onnx" and "backend" not in torch_prediction.extra


@pytest.mark.slow
@pytest.mark.parametrize("tta", [False, True])
def test_maskrcnn_agrees(maskrcnn_dir, xrays, tta):
    assert compare(maskrcnn_dir, "maskrcnn", xrays, tta) > 0


@pytest.mark.slow
def test_ensemble_agrees(maskrcnn_dir, xrays):
    assert compare(maskrcnn_dir, "ensemble", xrays, tta=False) > 0


SHIPPED = [f for f in FAMILIES if (default_model_dir() / f"{f}.pt").is_file()]


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED, reason="no shipped checkpoints under models/ yet")
@pytest.mark.parametrize("family", SHIPPED or ["none"])
def test_shipped_checkpoints_agree(family, xrays, tmp_path):
    source = default_model_dir() / f"{family}.pt"
    shutil.copy2(source, tmp_path / source.name)
    export_checkpoint(tmp_path / source.name)
    compare(tmp_path, family, xrays[:2], tta=False)


@pytest.mark.slow
def test_maskrcnn_without_detections_agrees(xrays, tmp_path):
    """A detector that finds nothing (every score under its threshold) must give empty answers in both."""
    from pneumo.export.runtime import OnnxModel
    from pneumo.models.checkpoint import load_checkpoint
    from pneumo.preprocess import Preprocessor

    torch.manual_seed(0)
    config = resolve_model_config("maskrcnn", {"image_size": SIZE, "box_score_thresh": 0.99})
    path = save_checkpoint(tmp_path / "maskrcnn.pt", create_model("maskrcnn", config), config=config,
                           preprocess={"size": SIZE}, thresholds=KEEP_ALL, metrics={}, data_fingerprint="parity-test")
    report = export_checkpoint(path)
    batch = np.stack([Preprocessor(SIZE)(x.pixels)[0] for x in xrays[:2]])[:, None]
    got = OnnxModel(report.path, checkpoint=path, num_threads=1).infer(batch)
    want = load_checkpoint(path).model.infer(torch.from_numpy(batch))
    for a, b in zip(got, want):
        assert a.boxes.shape == b.boxes.shape == (0, 5)
        assert a.probability == b.probability == 0.0
        assert a.heatmap.shape == (SIZE, SIZE) and not a.heatmap.any()
