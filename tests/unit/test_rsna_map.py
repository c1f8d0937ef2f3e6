"""The RSNA metric against hand-computed cases."""

import numpy as np
import pytest

from pneumo.errors import InvalidBoxesError
from pneumo.evaluation.rsna_map import IOU_THRESHOLDS, image_score, mean_average_precision, per_threshold_scores


def p(*rows):
    """Predictions (N, 5) xyxy + confidence."""
    return np.asarray(rows, dtype=np.float32).reshape(-1, 5)


def g(*rows):
    """Ground truth (M, 4) xyxy."""
    return np.asarray(rows, dtype=np.float32).reshape(-1, 4)


def test_thresholds_are_the_challenge_ones():
    assert IOU_THRESHOLDS == (0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75)


def test_perfect_match_scores_one():
    gt = g([0, 0, 10, 10], [50, 50, 80, 90])
    pred = p([50, 50, 80, 90, 0.7], [0, 0, 10, 10, 0.9])
    assert image_score(pred, gt) == 1.0
    np.testing.assert_array_equal(per_threshold_scores(pred, gt), np.ones(8))


def test_one_true_positive_and_one_false_positive_is_half_at_every_threshold():
    gt = g([0, 0, 10, 10])
    pred = p([0, 0, 10, 10, 0.9], [100, 100, 120, 120, 0.8])  # TP=1, FP=1, FN=0 -> 1/2
    np.testing.assert_allclose(per_threshold_scores(pred, gt), np.full(8, 0.5))
    assert image_score(pred, gt) == pytest.approx(0.5)


def test_iou_exactly_half_counts_up_to_threshold_half():
    # IoU = 50 / 100 = 0.5: TP at 0.40, 0.45, 0.50 (score 1); above, FP + FN (score 0 / 2 = 0)
    gt = g([0, 0, 10, 10])
    pred = p([0, 0, 10, 5, 0.9])
    np.testing.assert_array_equal(per_threshold_scores(pred, gt), [1, 1, 1, 0, 0, 0, 0, 0])
    assert image_score(pred, gt) == pytest.approx(3 / 8)


def test_iou_exactly_at_a_non_dyadic_threshold_counts():
    # IoU = 55 / 100 = 0.55 exactly in geometry; float rounding must not drop the match at t = 0.55
    gt = g([0, 0, 100, 1])
    pred = p([0, 0, 55, 1, 0.5])
    np.testing.assert_array_equal(per_threshold_scores(pred, gt), [1, 1, 1, 1, 0, 0, 0, 0])


def test_partial_matches_hand_computed():
    # GT A matched at IoU 64/100 = 0.64 (an 8x8 box inside a 10x10 one), GT B missed, one FP far away:
    # at t <= 0.60 TP=1, FP=1, FN=1 -> 1/3; at 0.65-0.75 TP=0, FP=2, FN=2 -> 0
    gt = g([0, 0, 10, 10], [200, 200, 220, 220])
    pred = p([1, 1, 9, 9, 0.9], [500, 500, 510, 510, 0.3])
    expected = [1 / 3] * 5 + [0, 0, 0]
    np.testing.assert_allclose(per_threshold_scores(pred, gt), expected)
    assert image_score(pred, gt) == pytest.approx(5 / 24)


def test_skip_rule_and_zero_rules():
    assert per_threshold_scores(p(), g()) is None
    assert image_score(p(), g()) is None
    assert image_score(p([0, 0, 5, 5, 0.1]), g()) == 0.0  # predictions on an image without ground truth
    assert image_score(p(), g([0, 0, 5, 5])) == 0.0  # ground truth, no predictions


def test_confidence_order_changes_the_score():
    gt = g([0, 0, 10, 10], [4, 0, 14, 10])
    a = [1, 0, 11, 10]  # IoU 9/11 = 0.818 with GT1, 7/13 = 0.538 with GT2
    b = [0, 0, 10, 10]  # IoU 1 with GT1, 6/14 = 0.429 with GT2
    # a first: a takes GT1; b is left GT2 at 0.429 -> TP only at t = 0.40. Scores: 1, then 1/3 x 7
    a_first = image_score(p(a + [0.9], b + [0.8]), gt)
    # b first: b takes GT1; a takes GT2 at 0.538 -> TP at t <= 0.50. Scores: 1 x 3, then 1/3 x 5
    b_first = image_score(p(a + [0.8], b + [0.9]), gt)
    assert a_first == pytest.approx((1 + 7 / 3) / 8)
    assert b_first == pytest.approx((3 + 5 / 3) / 8)


def test_prediction_takes_the_unmatched_ground_truth_with_highest_iou():
    # P overlaps GT1 at 7/13 = 0.538 and GT2 at 9/11 = 0.818 -> takes GT2 (not the first GT in the list),
    # leaving GT1 for Q (IoU 1): a perfect image at every threshold.
    gt = g([0, 0, 10, 10], [4, 0, 14, 10])
    pred = p([3, 0, 13, 10, 0.9], [0, 0, 10, 10, 0.8])
    assert image_score(pred, gt) == 1.0


def test_equal_confidences_keep_input_order():
    gt = g([0, 0, 10, 10], [4, 0, 14, 10])
    a, b = [1, 0, 11, 10], [0, 0, 10, 10]
    assert image_score(p(a + [0.5], b + [0.5]), gt) == pytest.approx((1 + 7 / 3) / 8)
    assert image_score(p(b + [0.5], a + [0.5]), gt) == pytest.approx((3 + 5 / 3) / 8)


def _reference(pred, gt, thresholds=IOU_THRESHOLDS):
    """Plain-Python version of the documented rule, for a randomised cross-check."""
    if len(pred) == 0 and len(gt) == 0:
        return None
    order = sorted(range(len(pred)), key=lambda i: -pred[i][4])

    def iou(a, b):
        ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = ix * iy
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    total = 0.0
    for t in thresholds:
        free, tp = set(range(len(gt))), 0
        for i in order:
            best = max(free, key=lambda j: iou(pred[i], gt[j]), default=None)
            if best is not None and iou(pred[i], gt[best]) >= t - 1e-9:
                free.discard(best)
                tp += 1
        total += tp / (len(pred) + len(gt) - tp)
    return total / len(thresholds)


def test_matches_plain_python_reference_on_random_images():
    rng = np.random.default_rng(3)
    for _ in range(60):
        n, m = rng.integers(0, 5), rng.integers(0, 4)
        xy = rng.uniform(0, 60, size=(n + m, 2))
        wh = rng.uniform(5, 40, size=(n + m, 2))
        boxes = np.hstack([xy, xy + wh]).astype(np.float32)
        conf = rng.permutation(n).astype(np.float32) / max(n, 1) + 0.01  # distinct confidences
        pred = np.hstack([boxes[:n], conf[:, None]]) if n else p()
        gt = boxes[n:]
        expected = _reference(pred.astype(np.float64).tolist(), gt.astype(np.float64).tolist())
        got = image_score(pred, gt)
        assert (got is None) == (expected is None)
        if got is not None:
            assert got == pytest.approx(expected, abs=1e-12)


def test_mean_average_precision_over_images():
    preds = {
        "perfect": p([0, 0, 10, 10, 0.9]),
        "half_iou": p([0, 0, 10, 5, 0.9]),
        "false_positive": p([0, 0, 5, 5, 0.2]),
    }
    gts = {"perfect": g([0, 0, 10, 10]), "half_iou": g([0, 0, 10, 10]), "skipped": g()}
    result = mean_average_precision(preds, gts)
    assert result.per_image == {"perfect": 1.0, "half_iou": 0.375, "false_positive": 0.0, "skipped": None}
    assert result.n_scored == 3 and result.n_images == 4
    assert result.map == pytest.approx((1 + 0.375 + 0) / 3)
    assert result.per_threshold[0.40] == pytest.approx(2 / 3)
    assert result.per_threshold[0.75] == pytest.approx(1 / 3)
    assert np.mean(list(result.per_threshold.values())) == pytest.approx(result.map)


def test_nothing_scored_gives_nan():
    result = mean_average_precision({}, {"a": g(), "b": g()})
    assert result.n_scored == 0 and np.isnan(result.map)
    assert all(np.isnan(v) for v in result.per_threshold.values())


def test_malformed_boxes_raise_typed_error():
    with pytest.raises(InvalidBoxesError):
        image_score(np.zeros((1, 4), np.float32), g([0, 0, 1, 1]))  # no confidence column
    with pytest.raises(InvalidBoxesError):
        image_score(p([5, 0, 0, 5, 0.5]), g([0, 0, 1, 1]))  # x2 < x1
    with pytest.raises(InvalidBoxesError):
        image_score(p([0, 0, np.nan, 5, 0.5]), g())
