import math

import numpy as np
import pytest

from pneumo.errors import MetricInputError
from pneumo.evaluation.rsna_map import mean_average_precision
from pneumo.training.thresholds import map_grid, score_table, tune_thresholds


def _case():
    """Image 0: one true box (0.8) and a spurious one (0.3). Image 1: no opacity, a 0.6 box, probability 0.2.
    Image 2: no opacity, nothing predicted. Image 3: opacity found only at 0.15 confidence, probability 0.7."""
    gts = [
        np.array([[10, 10, 50, 50]], np.float32),
        np.zeros((0, 4), np.float32),
        np.zeros((0, 4), np.float32),
        np.array([[100, 100, 160, 200]], np.float32),
    ]
    outputs = [
        (0.9, np.array([[100, 100, 120, 120, 0.3], [10, 10, 50, 50, 0.8]], np.float32)),  # unsorted on purpose
        (0.2, np.array([[5, 5, 30, 30, 0.6]], np.float32)),
        (0.1, np.zeros((0, 5), np.float32)),
        (0.7, np.array([[102, 98, 160, 200, 0.15]], np.float32)),
    ]
    return outputs, gts


def test_hand_made_case_finds_the_best_operating_point():
    outputs, gts = _case()
    tuned = tune_thresholds(outputs, gts)
    # box threshold <= 0.15 keeps image 3's true box (1.0) and image 0's spurious one (0.5); a gate in (0.2, 0.7]
    # removes image 1's false box (skipped, no ground truth): mean(0.5, 1.0) = 0.75. A box threshold in
    # (0.3, 0.8] would give image 0 1.0 but image 3 0 -> 0.5.
    assert tuned["map"] == pytest.approx(0.75)
    assert tuned["box_threshold"] == pytest.approx(0.05)  # lowest of the tied box thresholds
    assert tuned["gate_threshold"] == pytest.approx(0.25)  # lowest gate that drops image 1 (p = 0.2)
    # keeping every box and no gate: 0.5, 0 (false box), skipped, 1.0 -> 0.5
    assert tuned["map_all_boxes"] == pytest.approx(0.5)
    # probabilities 0.9, 0.7 (positives) vs 0.2, 0.1: perfect separation, Youden picks the lowest positive score
    assert tuned["auc"] == pytest.approx(1.0)
    assert tuned["probability_threshold"] == pytest.approx(0.7)
    assert tuned["sensitivity"] == 1.0 and tuned["specificity"] == 1.0 and tuned["youden_j"] == 1.0


def test_grid_agrees_with_the_reference_metric():
    outputs, gts = _case()
    box_grid, gate_grid = (0.1, 0.5), (0.0, 0.5)
    table = map_grid(*score_table(outputs, gts, box_grid), gate_grid)
    for g, gate in enumerate(gate_grid):
        for b, threshold in enumerate(box_grid):
            preds = {
                str(i): (boxes[boxes[:, 4] >= threshold] if p >= gate else np.zeros((0, 5), np.float32))
                for i, (p, boxes) in enumerate(outputs)
            }
            reference = mean_average_precision(preds, {str(i): gt for i, gt in enumerate(gts)}).map
            assert table[g, b] == pytest.approx(reference), (gate, threshold)


def test_one_class_fold_keeps_default_probability_threshold():
    gts = [np.zeros((0, 4), np.float32)] * 2
    outputs = [(0.4, np.zeros((0, 5), np.float32)), (0.6, np.array([[0, 0, 5, 5, 0.9]], np.float32))]
    tuned = tune_thresholds(outputs, gts)
    assert tuned["probability_threshold"] == 0.5 and math.isnan(tuned["auc"])
    # the only scorable image has a false box (0); a gate above 0.6 or a box threshold above 0.9 leaves no
    # image scored (NaN), which never wins: the result is the lowest pair scoring 0
    assert tuned["map"] == 0.0 and tuned["box_threshold"] == 0.05 and tuned["gate_threshold"] == 0.0


def test_mismatched_lengths_raise():
    with pytest.raises(MetricInputError):
        tune_thresholds([(0.5, np.zeros((0, 5)))], [])
