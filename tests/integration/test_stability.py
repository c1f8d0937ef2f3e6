"""Stability of the shipped models on real rsna-mini radiographs (issue 12, deliverable 4).

The same radiograph with +-1/255 noise on every pixel, or re-encoded losslessly (PNG of the decoded 8-bit
pixels; DICOM re-encoded as RLE Lossless), must get a probability within ``MAX_DELTA`` of the original's from
every shipped model and the ensemble (default backend, i.e. ONNX where its export is up to date; each model
with its own TTA default), and a different box count only where some box score (or the gate's probability)
lies within ``MARGIN`` of the threshold that decides it. 075686e1 is the image whose ensemble probability
jumped (Mask R-CNN's top score came from a sub-pixel box at the image edge; see ``maskrcnn.size_taper``).

With the models retrained on 1,247 patients (classifier chexnet-lite0-256-e3, detector maskrcnn-lite0-256-e2,
shipped 2026-12-04) every model and the ensemble stays within the issue's 0.02 on these three images under
+-1/255 noise (largest: classifier 0.017, Mask R-CNN 0.014, ensemble 0.016), so ``NOISE_DELTA`` is empty and this
test guards that. Known limit, not hidden by it: over the first 20 rsna-mini images x 2 noise draws the moves are
larger (median / max: classifier 0.014 / 0.061, Mask R-CNN with flip TTA 0.036 / 0.200, ensemble 0.028 / 0.082;
the detector shipped before, trained on rsna-mini: 0.018 / 0.068, its ensemble 0.017 / 0.053). Mask R-CNN's top
score is the box head's score of whichever proposal wins the RPN's NMS and FPN level assignment, and that choice
flips under noise. A box count may also change where two detector boxes overlap within ``IOU_MARGIN`` of a merge
threshold (0e4f5b45: two right-lung boxes at IoU 0.397 against the detector's NMS IoU 0.4 become one under noise).
Lossless re-encodings must move every model by at most ``MAX_DELTA``.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import RLELossless

from pneumo.io import read_xray
from pneumo.ensemble import fused_member_boxes, score_boxes
from pneumo.postprocess import iou_matrix
from pneumo.service import InferenceService
from pneumo.types import TTA_WBF_IOU

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PATIENTS = ("075686e1-bfe5-4901-b326-1a082ed6b937", "03cd7a5b-d5d7-40a1-81b1-c4264920530a",
            "0e4f5b45-1fa4-406b-8ed8-d5ced6374c0d")
MODELS = ("chexnet", "unet", "maskrcnn", "ensemble")
MAX_DELTA = 0.02
#: per-model bound under +-1/255 noise where it differs from MAX_DELTA (see the module docstring)
NOISE_DELTA: dict[str, float] = {}
MARGIN = 0.02
#: IoU distance from a merge threshold (NMS, TTA or ensemble WBF) within which a box count may change
IOU_MARGIN = 0.01


def _find(folder: Path, prefix: str) -> Path:
    matches = sorted(folder.glob(f"{prefix}.dcm"))
    assert matches, f"rsna-mini has no image {prefix[:8]}*"
    return matches[0]


def _noisy(xray, seed: int):
    rng = np.random.default_rng(seed)
    noise = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=xray.pixels.shape) / 255.0
    return dataclasses.replace(xray, pixels=np.clip(xray.pixels + noise, 0.0, 1.0).astype(np.float32))


def _png(xray):
    buffer = io.BytesIO()
    Image.fromarray(np.round(xray.pixels * 255.0).astype(np.uint8)).save(buffer, format="PNG")
    return read_xray(buffer.getvalue())


def _rle_dicom(path: Path):
    ds = pydicom.dcmread(path)
    ds.decompress()
    ds.compress(RLELossless)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return read_xray(buffer.getvalue())


@pytest.fixture(scope="module")
def service() -> InferenceService:
    return InferenceService(REPO / "models", num_threads=1)


@pytest.fixture(scope="module")
def variants(rsna_mini: Path) -> list[tuple[str, object, dict[str, object]]]:
    out = []
    for k, patient in enumerate(PATIENTS):
        path = _find(rsna_mini / "stage_2_train_images", patient)
        xray = read_xray(path)
        out.append((patient[:8], xray, {"noise": _noisy(xray, k), "png": _png(xray), "rle": _rle_dicom(path)}))
    return out


def test_lossless_reencodings_decode_within_one_grey_level(variants) -> None:
    for _, xray, others in variants:
        for name in ("png", "rle"):
            assert np.abs(others[name].pixels - xray.pixels).max() <= 1.0 / 255 + 1e-6, name
        assert np.abs(others["noise"].pixels - xray.pixels).max() == pytest.approx(1.0 / 255, abs=1e-6)


def _decision_scores(service: InferenceService, name: str, xray) -> tuple[float, np.ndarray, dict[str, float]]:
    """(probability the gate sees, every unthresholded box score, thresholds) of model ``name`` on ``xray``."""
    predictor = service.predictor(name)
    if name == "ensemble":
        outputs, _ = predictor.member_outputs([xray], heatmap=False)
        outputs = {k: v[0] for k, v in outputs.items()}
        spec = predictor.spec
        probability = predictor._fused([xray], None, False)[0][0].probability
        boxes = score_boxes(fused_member_boxes(spec, outputs), probability, spec.fusion.box_score)
    else:
        (output,), _ = predictor.outputs([xray], heatmap=False)
        probability, boxes = output.probability, output.boxes()
    return float(probability), boxes[:, 4], predictor.thresholds


def _near_threshold(scores: tuple, margin: float) -> bool:
    probability, box_scores, thresholds = scores
    gate, box = thresholds.gate, thresholds.box
    return abs(probability - gate) <= margin or bool((np.abs(box_scores - box) <= margin).any())


def _near_merge_threshold(service: InferenceService, name: str, xray, margin: float) -> bool:
    """True when two of the detector's boxes (any test-time view) overlap with an IoU within ``margin`` of an IoU
    that decides whether boxes merge: the detector's NMS IoU, its flip-TTA fusion IoU, or the ensemble's WBF IoU
    (a pair just under one of them is two boxes, just over it one: a threshold like the score thresholds)."""
    if name not in ("maskrcnn", "ensemble"):
        return False
    thresholds = [service.predictor("maskrcnn").config.box_nms_thresh, TTA_WBF_IOU]
    if name == "ensemble":
        predictor = service.predictor("ensemble")
        outputs, _ = predictor.member_outputs([xray], heatmap=False)
        output = outputs["maskrcnn"][0]
        thresholds.append(predictor.spec.fusion.wbf_iou_thr)
    else:
        (output,), _ = service.predictor("maskrcnn").outputs([xray], heatmap=False)
    for view in output.views:
        iou = iou_matrix(view[:, :4], view[:, :4])[np.triu_indices(len(view), k=1)]
        if any(bool((np.abs(iou - t) <= margin).any()) for t in thresholds):
            return True
    return False


@pytest.mark.parametrize("name", MODELS)
def test_probability_and_boxes_are_stable(service: InferenceService, variants, name: str) -> None:
    for patient, xray, others in variants:
        (reference,) = service.predict_batch([xray], name, heatmap=False)
        for kind, other in others.items():
            (changed,) = service.predict_batch([other], name, heatmap=False)
            delta = abs(changed.probability - reference.probability)
            bound = NOISE_DELTA.get(name, MAX_DELTA) if kind == "noise" else MAX_DELTA
            assert delta <= bound, f"{name} {patient} {kind}: probability moved {delta:.4f}"
            if len(changed.boxes) != len(reference.boxes):
                near = [_near_threshold(_decision_scores(service, name, x), MARGIN)
                        or _near_merge_threshold(service, name, x, IOU_MARGIN) for x in (xray, other)]
                assert any(near), (
                    f"{name} {patient} {kind}: {len(reference.boxes)} -> {len(changed.boxes)} boxes with no score "
                    f"within {MARGIN} of a threshold and no box pair within {IOU_MARGIN} IoU of a merge threshold")


def test_ensemble_members_are_stable_under_tta(service: InferenceService, variants) -> None:
    """What the ensemble fuses (every member with flip TTA) moves no more than the members themselves."""
    ensemble = service.predictor("ensemble")
    for patient, xray, others in variants:
        reference, _ = ensemble.member_outputs([xray], heatmap=False)
        changed, _ = ensemble.member_outputs([others["noise"]], heatmap=False)
        for key in reference:
            delta = abs(changed[key][0].probability - reference[key][0].probability)
            bound = NOISE_DELTA.get(Path(key).stem, MAX_DELTA)
            assert delta <= bound, f"member {key} (TTA) {patient}: moved {delta:.4f}"
