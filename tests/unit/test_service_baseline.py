"""The trivial baseline (median box per lung side) and the fold settings read from checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.errors import ConfigError
from pneumo.inference.baseline import BaselineSpec, fit_baseline
from pneumo.inference.selection import SplitSettings, resolve_split, split_from_meta
from pneumo.service import InferenceService
from pneumo.types import XRay, boxes_to_array


def test_fit_baseline_takes_the_median_box_on_each_side():
    size = (100, 200)  # height, width
    boxes = [
        np.array([[10, 10, 50, 60], [120, 20, 180, 80]], np.float32),  # left and right
        np.array([[20, 30, 60, 70]], np.float32),  # left only
        np.array([[30, 20, 70, 50]], np.float32),  # left only
        np.zeros((0, 4), np.float32),  # a negative
    ]
    spec = fit_baseline(boxes, [size] * 4)
    assert spec.probability == pytest.approx(3 / 4)
    assert spec.n_train_images == 4
    # left: medians of x1 (10, 20, 30), y1 (10, 30, 20), x2 (50, 60, 70), y2 (60, 70, 50) -> 20, 20, 60, 60
    left, right = spec.boxes_for(size)
    np.testing.assert_allclose(left[:4], [20, 20, 60, 60], atol=1e-4)
    np.testing.assert_allclose(right[:4], [120, 20, 180, 80], atol=1e-4)
    assert left[4] == pytest.approx(1.0) and right[4] == pytest.approx(1 / 3)
    # normalised: the same boxes scale with another image size
    np.testing.assert_allclose(spec.boxes_for((50, 100))[0, :4], [10, 10, 30, 30], atol=1e-4)


def test_baseline_is_served_like_any_model(tmp_path):
    spec = fit_baseline([np.array([[10, 10, 40, 40]], np.float32), np.zeros((0, 4))], [(100, 100)] * 2)
    spec.save(tmp_path / "baseline.json")
    assert BaselineSpec.load(tmp_path / "baseline.json") == spec
    service = InferenceService(tmp_path, num_threads=1)
    assert service.installed_names() == ["baseline"]
    prediction = service.predict(XRay(np.zeros((300, 200), np.float32), "png"), "baseline")
    assert prediction.probability == pytest.approx(0.5)
    np.testing.assert_allclose(boxes_to_array(list(prediction.boxes)), [[20, 30, 80, 120]], atol=1e-4)
    assert prediction.model == "baseline" and prediction.model_version.startswith("baseline-")
    with pytest.raises(ConfigError):
        fit_baseline([], [])


def test_split_settings_come_from_the_checkpoint_training_config():
    meta = {"extra": {"train_config": {"folds": 4, "split_seed": 7, "val_fold": 2, "limit": None, "seed": 42}}}
    recorded = split_from_meta(meta)
    assert recorded == SplitSettings(4, 7, 2, None, "checkpoint")
    assert split_from_meta({"extra": {}}) is None
    assert resolve_split(recorded, None, None) == recorded
    assert resolve_split(recorded, 5, None) == SplitSettings(5, 7, 2, None, "arguments")
    assert resolve_split(None, None, None) == SplitSettings()
