import numpy as np
import pytest
import torch

from pneumo.preprocess import GeometryRecord, Preprocessor, check_model_input


@pytest.mark.parametrize("shape", [(1024, 1024), (1955, 1841), (300, 800), (64, 64)])
def test_letterbox_keeps_aspect_and_boxes_round_trip(shape):
    rng = np.random.default_rng(0)
    pixels = rng.random(shape, dtype=np.float32)
    canvas, geometry = Preprocessor(256)(pixels)
    assert canvas.shape == (256, 256) and canvas.dtype == np.float32
    assert 0.0 <= canvas.min() and canvas.max() <= 1.0
    boxes = np.array([[10, 20, 50, 60], [0, 0, shape[1], shape[0]]], dtype=np.float32)
    back = geometry.to_original(geometry.to_input(boxes))
    np.testing.assert_allclose(back, boxes, atol=1e-3)
    assert geometry.crop_to_content(canvas).shape == geometry.content_hw


def test_box_lands_on_the_same_pixels_after_letterbox():
    pixels = np.zeros((400, 800), dtype=np.float32)
    pixels[100:200, 300:500] = 1.0  # a bright block at x 300-500, y 100-200
    canvas, geometry = Preprocessor(200)(pixels)
    x1, y1, x2, y2 = geometry.to_input(np.array([[300, 100, 500, 200]]))[0]
    inside = canvas[int(y1) + 1 : int(y2) - 1, int(x1) + 1 : int(x2) - 1]
    assert inside.min() > 0.99
    assert canvas.sum() == pytest.approx(inside.size + 2 * (inside.shape[0] + inside.shape[1]) + 4, rel=0.1)
    assert geometry == GeometryRecord(400, 800, 200, 0.25, 0.0, 50.0)


def test_model_input_contract():
    check_model_input(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_model_input(torch.rand(1, 1, 8, 8) * 255)
    with pytest.raises(ValueError, match="B, 1, H, W"):
        check_model_input(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError):
        check_model_input(torch.zeros(1, 1, 8, 8, dtype=torch.uint8))
