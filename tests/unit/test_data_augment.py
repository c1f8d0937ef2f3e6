"""Paired augmentations keep boxes on the same pixels as the image content."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.data.augment import (
    AugmentConfig,
    add_noise,
    adjust_intensity,
    affine,
    augment,
    hflip,
)

S = 128
GEOMETRIC = AugmentConfig(hflip_p=0.5, affine_p=1.0, intensity_p=0.0)


def _scene(box=(40, 30, 90, 60)) -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((S, S), dtype=np.float32)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 1.0
    return image, np.array([box], dtype=np.float32)


def _coverage(image: np.ndarray, box: np.ndarray) -> tuple[float, float]:
    """(share of the bright mass inside the box, share of the box area that is bright)."""
    x1, y1, x2, y2 = box
    ys, xs = np.mgrid[0:S, 0:S] + 0.5  # pixel centres
    inside = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
    bright = image > 0.5
    return float((bright & inside).sum() / bright.sum()), float((bright & inside).sum() / inside.sum())


def test_hflip_moves_boxes_with_pixels_and_is_an_involution():
    image, boxes = _scene()
    flipped, fboxes = hflip(image, boxes)
    np.testing.assert_array_equal(fboxes, [[S - 90, 30, S - 40, 60]])
    assert _coverage(flipped, fboxes[0]) == (1.0, 1.0)
    back, bboxes = hflip(flipped, fboxes)
    np.testing.assert_array_equal(back, image)
    np.testing.assert_array_equal(bboxes, boxes)


def test_pure_translation_and_scale_are_pixel_exact():
    image, boxes = _scene()
    moved, mboxes = affine(image, boxes, translate=(5, 7))
    np.testing.assert_array_equal(mboxes, [[45, 37, 95, 67]])
    assert _coverage(moved, mboxes[0]) == (1.0, 1.0)
    scaled, sboxes = affine(image, boxes, scale=1.1)
    covered, purity = _coverage(scaled, sboxes[0])
    assert covered == 1.0 and purity > 0.95


@pytest.mark.parametrize("seed", range(25))
def test_random_augmentation_keeps_the_box_on_the_bright_pixels(seed):
    image, boxes = _scene()
    out, oboxes = augment(image, boxes, np.random.default_rng(seed), GEOMETRIC)
    assert out.shape == (S, S) and out.dtype == np.float32 and oboxes.shape == (1, 4)
    covered, purity = _coverage(out, oboxes[0])
    assert covered > 0.97  # the transformed box holds the bright block ...
    assert purity > 0.7  # ... and little else (a rotated block fills ~80% of its axis-aligned box)


def test_boxes_pushed_out_of_the_image_are_dropped_and_partial_ones_clipped():
    boxes = np.array([[0, 0, 10, 10], [60, 60, 70, 70], [100, 50, 128, 60]], dtype=np.float32)
    blank = np.zeros((S, S), np.float32)
    out = affine(blank, boxes, translate=(-20, 0))[1]
    np.testing.assert_allclose(out, [[40, 60, 50, 70], [80, 50, 108, 60]])
    clipped = affine(blank, np.array([[0, 0, 20, 20]], np.float32), translate=(-10, 0))[1]
    np.testing.assert_allclose(clipped, [[0, 0, 10, 20]])  # half visible: kept, clipped
    gone = affine(blank, np.array([[0, 0, 20, 20]], np.float32), translate=(-16, 0))[1]
    assert gone.shape == (0, 4)  # 20% visible < min_visible 0.3


def test_same_generator_state_same_result_and_configs_are_respected():
    image, boxes = _scene()
    a = augment(image, boxes, np.random.default_rng(7))
    b = augment(image, boxes, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = augment(image, boxes, np.random.default_rng(8))
    assert not np.array_equal(a[0], c[0])
    nothing = AugmentConfig(hflip_p=0.0, affine_p=0.0, intensity_p=0.0)
    same, same_boxes = augment(image, boxes, np.random.default_rng(0), nothing)
    np.testing.assert_array_equal(same, image)
    np.testing.assert_array_equal(same_boxes, boxes)


def test_empty_boxes_and_bad_box_shapes():
    image, _ = _scene()
    out, oboxes = augment(image, np.zeros((0, 4), np.float32), np.random.default_rng(0))
    assert oboxes.shape == (0, 4) and out.shape == image.shape
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        hflip(image, np.zeros((2, 3), np.float32))


def test_intensity_changes_stay_in_range_and_keep_order():
    ramp = np.tile(np.linspace(0, 1, S, dtype=np.float32), (S, 1))
    for brightness, contrast, gamma in [(0.1, 1.15, 0.8), (-0.1, 0.85, 1.25), (0.0, 1.0, 1.0)]:
        out = adjust_intensity(ramp, brightness, contrast, gamma)
        assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0
        assert np.all(np.diff(out[0]) >= 0)  # monotone: anatomy's bright/dark order kept
    np.testing.assert_allclose(adjust_intensity(ramp, 0.0, 1.0, 1.0), ramp, atol=1e-6)
    assert adjust_intensity(ramp, 0.1, 1.0, 1.0).mean() > ramp.mean() + 0.05


def test_pixel_noise_has_the_drawn_spread_keeps_range_and_boxes():
    flat = np.full((S, S), 0.5, dtype=np.float32)
    noisy = add_noise(flat, 0.02, np.random.default_rng(0))
    assert noisy.dtype == np.float32 and noisy.shape == flat.shape
    assert abs(float(noisy.mean()) - 0.5) < 0.002 and 0.018 < float(noisy.std()) < 0.022
    assert 0.0 <= add_noise(np.zeros((S, S), np.float32), 0.1, np.random.default_rng(1)).min()
    only_noise = AugmentConfig(hflip_p=0.0, affine_p=0.0, intensity_p=0.0, noise_p=1.0, noise_std=0.05)
    image, boxes = _scene()
    out, out_boxes = augment(image, boxes, np.random.default_rng(3), only_noise)
    np.testing.assert_array_equal(out_boxes, boxes)
    spread = float((out - image)[40:90, 40:90].std())  # a region spanning both levels, noise away from the clip
    assert 0.0 < spread <= 0.05 * 1.2


def test_noise_off_keeps_the_random_stream_of_earlier_recipes():
    """noise_p = 0 (the default) draws nothing extra: a recipe without noise augments exactly as before."""
    image, boxes = _scene()
    explicit_off = AugmentConfig(noise_p=0.0, noise_std=0.05)
    for seed in range(3):
        a = augment(image, boxes, np.random.default_rng(seed))
        b = augment(image, boxes, np.random.default_rng(seed), explicit_off)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    noisy = AugmentConfig(noise_p=1.0, noise_std=0.05)
    a = augment(image, boxes, np.random.default_rng(0))
    c = augment(image, boxes, np.random.default_rng(0), noisy)
    np.testing.assert_array_equal(a[1], c[1])  # same geometry: noise is drawn after every other number
    assert 0.0 < float(np.abs(c[0] - a[0]).max()) < 0.5
