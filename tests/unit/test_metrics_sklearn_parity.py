"""ROC/PR/AUC/AP/Brier now come from scikit-learn: they must give what pneumo's hand-written versions gave
(``library_reference``), on data with ties and with an absent class, to float precision."""

from __future__ import annotations

import numpy as np
import pytest

import library_reference as ref
from pneumo.evaluation import classification as cls


def _cases(seed: int = 0, n_cases: int = 200):
    rng = np.random.default_rng(seed)
    for _ in range(n_cases):
        n = int(rng.integers(1, 60))
        scores = np.round(rng.random(n), int(rng.integers(1, 4)))  # 1-3 decimals: many ties
        labels = (rng.random(n) < rng.random()).astype(np.int64)  # sometimes one class only
        yield scores, labels


@pytest.mark.parametrize("name", ["roc_auc", "average_precision", "brier_score"])
def test_scalar_metrics_match_the_hand_written_ones(name):
    compared = 0
    for scores, labels in _cases():
        old, new = getattr(ref, name)(scores, labels), getattr(cls, name)(scores, labels)
        if np.isnan(old):
            assert np.isnan(new)
        else:
            assert new == pytest.approx(old, abs=1e-12)
            compared += 1
    assert compared > 100


@pytest.mark.parametrize("name", ["roc_curve", "precision_recall_curve"])
def test_curves_match_point_for_point(name):
    for scores, labels in _cases(seed=1):
        for old, new in zip(getattr(ref, name)(scores, labels), getattr(cls, name)(scores, labels)):
            assert new.shape == old.shape
            np.testing.assert_allclose(new, old, atol=1e-12, equal_nan=True)


def test_the_comparison_can_fail():
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    assert cls.roc_auc(scores, labels) == pytest.approx(0.75)
    assert cls.roc_auc(scores, labels) != pytest.approx(cls.roc_auc(scores, 1 - labels))
    assert cls.brier_score(np.array([0.0, 1.0]), np.array([1, 1])) == pytest.approx(0.5)


def test_numpy_iou_matches_torchvision_box_iou_on_real_boxes(rsna_mini):
    """The serving side keeps its numpy IoU (no torch when serving ONNX): it must equal torchvision.ops.box_iou
    on the real RSNA boxes (and on shifted copies, so partial overlaps are compared)."""
    import torch
    from torchvision.ops import box_iou

    from pneumo.data.rsna import read_rsna_labels
    from pneumo.postprocess import iou_matrix

    labels = read_rsna_labels(rsna_mini / "stage_2_train_labels.csv")
    boxes = np.concatenate([b for b in labels.values() if len(b)])[:300].astype(np.float64)
    shifted = boxes + np.random.default_rng(0).normal(0, 40, size=(len(boxes), 1)) * np.array([1, 1, 1, 1])
    ours = iou_matrix(boxes, shifted)
    theirs = box_iou(torch.from_numpy(boxes), torch.from_numpy(shifted)).numpy()
    assert 0.0 < ours.mean() < 1.0 and ((ours > 0) & (ours < 1)).sum() > 100
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
