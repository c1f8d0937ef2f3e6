"""Weighted boxes fusion now comes from ``ensemble_boxes``: on real outputs of the shipped models (flip TTA on
rsna-mini images) it must give what pneumo's own WBF gave (``library_reference``): the same clusters, boxes
within 1e-3 px, confidences within 1e-5 - for one model's TTA views, for the ensemble's member fusion and for
the ensemble's final answer."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

import library_reference as ref
from pneumo.postprocess import as_boxes, fuse_views, weighted_boxes_fusion
from pneumo.types import TTA_WBF_IOU

fuse_module = importlib.import_module("pneumo.ensemble.fuse")  # the module (the package exports its function `fuse`)
MODELS = Path(__file__).resolve().parents[2] / "models"
pytestmark = pytest.mark.slow  # runs the three shipped models with TTA (about a minute on 2 cores)
N_POSITIVE, N_NEGATIVE = 4, 2


@pytest.fixture(scope="module")
def real_outputs(rsna_mini):
    """(ensemble predictor, [{member: ImageOutput with 2 TTA views}] for a few rsna-mini patients)."""
    from pneumo.data.rsna import read_rsna_labels
    from pneumo.io import read_xray
    from pneumo.service import InferenceService

    labels = read_rsna_labels(rsna_mini / "stage_2_train_labels.csv")
    positive = sorted(k for k, v in labels.items() if len(v))[:N_POSITIVE]
    negative = sorted(k for k, v in labels.items() if not len(v))[:N_NEGATIVE]
    xrays = [read_xray(rsna_mini / "stage_2_train_images" / f"{p}.dcm") for p in positive + negative]
    ensemble = InferenceService(MODELS, backend="torch", num_threads=2).predictor("ensemble")
    outputs, _ = ensemble.member_outputs(xrays, tta=True, heatmap=False)
    return ensemble, [{k: v[i] for k, v in outputs.items()} for i in range(len(xrays))]


def _canonical(boxes: np.ndarray) -> np.ndarray:
    """Rows by descending confidence, equal confidences by coordinates (the two WBFs order ties differently)."""
    b = np.asarray(boxes, dtype=np.float64)
    return b[np.lexsort((b[:, 3], b[:, 2], b[:, 1], b[:, 0], -np.round(b[:, 4], 5)))]


def assert_same_boxes(new: np.ndarray, old: np.ndarray) -> None:
    assert new.shape == old.shape
    assert (np.diff(new[:, 4]) <= 0).all()  # still sorted by confidence
    new, old = _canonical(new), _canonical(old)
    np.testing.assert_allclose(new[:, :4], old[:, :4], atol=1e-3)
    np.testing.assert_allclose(new[:, 4], old[:, 4], atol=1e-5)


def test_tta_views_fuse_as_before(real_outputs):
    _, per_image = real_outputs
    multi = 0
    for outputs in per_image:
        for output in outputs.values():
            assert len(output.views) == 2
            old = ref.weighted_boxes_fusion(list(output.views), iou_thr=TTA_WBF_IOU, conf_type="avg")
            assert_same_boxes(fuse_views(output.views, TTA_WBF_IOU), old)
            multi += int(sum(len(v) for v in output.views) >= 2)
    assert multi >= 3  # enough views with boxes to fuse for the comparison to mean something


@pytest.mark.parametrize("conf_type", ["avg", "max"])
@pytest.mark.parametrize("iou_thr", [0.4, 0.5, 0.6])
def test_member_fusion_matches_the_hand_written_wbf(real_outputs, iou_thr, conf_type):
    ensemble, per_image = real_outputs
    spec, fused = ensemble.spec, 0
    for outputs in per_image:
        boxes_list, weights = [], []
        for member in spec.members:
            views = outputs[member.model].views
            boxes_list += list(views)
            weights += [member.weight / len(views)] * len(views)
        new = weighted_boxes_fusion(boxes_list, weights, iou_thr=iou_thr, skip_thr=spec.fusion.skip_thr,
                                    conf_type=conf_type)
        old = ref.weighted_boxes_fusion(boxes_list, weights, iou_thr=iou_thr, skip_thr=spec.fusion.skip_thr,
                                        conf_type=conf_type)
        assert_same_boxes(new, old)
        fused += int(len(new) < sum(int((as_boxes(b, 5)[:, 4] >= spec.fusion.skip_thr).sum()) for b in boxes_list))
    assert fused >= 2  # some boxes were actually merged


def test_ensemble_answer_is_unchanged(real_outputs, monkeypatch):
    ensemble, per_image = real_outputs
    new = [fuse_module.fuse(ensemble.spec, outputs) for outputs in per_image]
    monkeypatch.setattr(fuse_module, "weighted_boxes_fusion", ref.weighted_boxes_fusion)
    old = [fuse_module.fuse(ensemble.spec, outputs) for outputs in per_image]
    assert sum(len(o.boxes) for o in old) >= 1
    for a, b in zip(new, old):
        assert a.probability == pytest.approx(b.probability, abs=1e-12)
        assert_same_boxes(a.boxes, b.boxes)
