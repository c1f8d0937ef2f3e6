"""Box post-processing: IoU, NMS, WBF, shrink, filters, masks -> boxes."""

import numpy as np
import pytest

from pneumo.errors import ConfigError, InvalidBoxesError
from pneumo.postprocess import (
    as_boxes,
    clip_boxes,
    heatmap_to_boxes,
    iou_matrix,
    mask_to_boxes,
    shrink_boxes,
    weighted_boxes_fusion,
)


def b5(*rows):
    return np.asarray(rows, dtype=np.float32).reshape(-1, 5)


def test_iou_matrix_values_and_shape():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)  # second is zero-area
    b = np.array([[5, 0, 15, 10, 0.3], [20, 20, 30, 30, 0.1], [0, 0, 10, 10, 0.9]], np.float32)
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3) and iou.dtype == np.float64
    np.testing.assert_allclose(iou[0], [50 / 150, 0.0, 1.0])
    np.testing.assert_array_equal(iou[1], [0, 0, 0])
    np.testing.assert_allclose(iou_matrix(b, a), iou.T)
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_the_metric_uses_this_iou():
    import pneumo.evaluation.rsna_map as rsna_map

    assert rsna_map.iou_matrix is iou_matrix


def test_as_boxes_validates():
    assert as_boxes([], 5).shape == (0, 5)
    assert as_boxes([1, 2, 3, 4, 0.5], 4).tolist() == [[1, 2, 3, 4]]
    for bad in ([[0, 0, 1]], [[2, 0, 1, 1]], [[0, 0, np.inf, 1]]):
        with pytest.raises(InvalidBoxesError):
            as_boxes(bad, 4)


def test_wbf_of_identical_boxes_from_two_models_is_that_box():
    box = b5([10, 20, 50, 80, 0.7])
    fused = weighted_boxes_fusion([box, box.copy()], iou_thr=0.55)
    np.testing.assert_allclose(fused, box, rtol=1e-6)


def test_wbf_keeps_disjoint_boxes_with_confidence_scaled_by_model_count():
    fused = weighted_boxes_fusion([b5([0, 0, 10, 10, 0.8]), b5([20, 20, 30, 30, 0.6])])
    # each cluster has 1 box of 2 models: confidence x min(1, 2) / 2
    np.testing.assert_allclose(fused, b5([0, 0, 10, 10, 0.4], [20, 20, 30, 30, 0.3]))


def test_wbf_confidence_weighted_coordinates_and_model_weights():
    a, b = b5([0, 0, 10, 10, 0.8]), b5([2, 0, 12, 10, 0.4])  # IoU 8/12 = 0.667 > 0.55: one cluster
    fused = weighted_boxes_fusion([a, b])
    # x1 = (0.8*0 + 0.4*2) / 1.2, x2 = (0.8*10 + 0.4*12) / 1.2, confidence = mean = 0.6 (x 2/2)
    np.testing.assert_allclose(fused, b5([0.8 / 1.2, 0, 12.8 / 1.2, 10, 0.6]), rtol=1e-6)
    weighted = weighted_boxes_fusion([a, b], weights=[2, 1])
    # weighted confidences 1.6 and 0.4: x1 = 0.8 / 2.0; confidence = mean(1.6, 0.4) x min(2, 2) / 3
    np.testing.assert_allclose(weighted, b5([0.4, 0, 20.8 / 2, 10, 2 / 3]), rtol=1e-6)
    maxed = weighted_boxes_fusion([a, b], conf_type="max")
    assert maxed[0, 4] == pytest.approx(0.8)
    # below skip_thr the second box is ignored: the first stays alone, halved
    np.testing.assert_allclose(weighted_boxes_fusion([a, b], skip_thr=0.5), b5([0, 0, 10, 10, 0.4]))
    assert len(weighted_boxes_fusion([a, b], iou_thr=0.7)) == 2  # IoU 0.667 is not above 0.7: two clusters


def test_wbf_rejects_bad_settings():
    with pytest.raises(ConfigError):
        weighted_boxes_fusion([b5()], conf_type="box_and_model_avg")
    with pytest.raises(ConfigError):
        weighted_boxes_fusion([b5(), b5()], weights=[1.0])
    assert weighted_boxes_fusion([b5(), b5()]).shape == (0, 5)


def test_shrink_keeps_centre_and_scales_size():
    boxes = b5([10, 20, 50, 100, 0.7])
    out = shrink_boxes(boxes, 0.875)
    np.testing.assert_allclose(out, b5([12.5, 25, 47.5, 95, 0.7]))
    np.testing.assert_allclose((out[:, :2] + out[:, 2:4]) / 2, (boxes[:, :2] + boxes[:, 2:4]) / 2)
    assert shrink_boxes(boxes[:, :4], 0.5).shape == (1, 4)


def test_clip_boxes():
    boxes = b5([-5, 10, 30, 200, 0.5], [300, 300, 400, 400, 0.4])
    out = clip_boxes(boxes, (100, 120))
    np.testing.assert_allclose(out, b5([0, 10, 30, 100, 0.5], [120, 100, 120, 100, 0.4]))
    assert len(clip_boxes(boxes, (100, 120), drop_empty=True)) == 1


def test_mask_with_two_blobs_gives_two_boxes_with_right_extents():
    prob = np.zeros((40, 60), np.float32)
    prob[5:10, 3:20] = 0.8  # rows 5-9, cols 3-19
    prob[20:35, 40:50] = 0.6
    prob[22, 45] = 0.9
    boxes = mask_to_boxes(prob, threshold=0.5)
    mean_second = (0.6 * 149 + 0.9) / 150
    np.testing.assert_allclose(boxes, b5([3, 5, 20, 10, 0.8], [40, 20, 50, 35, mean_second]), rtol=1e-6)
    peak = mask_to_boxes(prob, threshold=0.5, reduce="max")
    assert peak[0, 4] == pytest.approx(0.9) and peak[0, 0] == 40
    assert len(mask_to_boxes(prob, threshold=0.5, min_area=100)) == 1  # the 85-pixel blob is dropped
    assert mask_to_boxes(prob, threshold=0.95).shape == (0, 5)


def test_mask_components_are_eight_connected():
    prob = np.zeros((5, 5), np.float32)
    prob[1, 1] = prob[2, 2] = 1.0  # diagonal neighbours
    np.testing.assert_allclose(mask_to_boxes(prob, 0.5), b5([1, 1, 3, 3, 1.0]))


def test_heatmap_boxes_are_scaled_to_original_pixels():
    heat = np.zeros((16, 16), np.float32)
    heat[4:8, 2:6] = 1.0
    boxes = heatmap_to_boxes(heat, image_size=(128, 256), threshold=0.5)  # x scale 16, y scale 8
    np.testing.assert_allclose(boxes, b5([32, 32, 96, 64, 1.0]))
    assert len(heatmap_to_boxes(heat, (128, 256), min_area=64 * 32 + 1)) == 0  # area in original px
