"""Images the reader reduced (``XRay.full_size``) get their boxes back in the stored pixels (issue 17)."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.inference.baseline import fit_baseline
from pneumo.service import InferenceService
from pneumo.types import XRay, boxes_to_array


def test_boxes_of_a_reduced_image_come_back_in_stored_pixels(tmp_path) -> None:
    spec = fit_baseline([np.array([[10, 10, 40, 40]], np.float32), np.zeros((0, 4))], [(100, 100)] * 2)
    spec.save(tmp_path / "baseline.json")
    service = InferenceService(tmp_path, num_threads=1)
    pixels = np.zeros((300, 200), np.float32)
    full = service.predict(XRay(pixels, "png"), "baseline")
    reduced = service.predict(XRay(pixels, "png", full_size=(1200, 800)), "baseline")  # stored 4x larger
    assert full.image_size == (300, 200) and reduced.image_size == (1200, 800)
    np.testing.assert_allclose(boxes_to_array(list(reduced.boxes)), 4 * boxes_to_array(list(full.boxes)), atol=1e-3)
    assert reduced.probability == pytest.approx(full.probability)
