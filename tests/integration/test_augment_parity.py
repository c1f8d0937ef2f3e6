"""Paired augmentation now runs on ``torchvision.transforms.v2`` (``tv_tensors.BoundingBoxes``): on real
rsna-mini canvases with their real boxes it must move boxes exactly as pneumo's own code did
(``library_reference``) and warp pixels the same away from the fill border; flips are bit-identical."""

from __future__ import annotations

import numpy as np
import pytest

import library_reference as ref
from pneumo.data import augment as new

SIZE = 256


@pytest.fixture(scope="module")
def canvases(rsna_mini):
    """[(256 x 256 canvas, (N, 4) boxes in canvas pixels)] for 4 positive rsna-mini patients."""
    from pneumo.data.rsna import read_rsna_labels
    from pneumo.io import read_xray
    from pneumo.preprocess import Preprocessor

    labels = read_rsna_labels(rsna_mini / "stage_2_train_labels.csv")
    out = []
    for patient in sorted(k for k, v in labels.items() if len(v))[:4]:
        canvas, geometry = Preprocessor(SIZE)(read_xray(rsna_mini / "stage_2_train_images" / f"{patient}.dcm").pixels)
        out.append((canvas, geometry.to_input(labels[patient]).astype(np.float32)))
    return out


def test_flip_is_identical(canvases):
    for image, boxes in canvases:
        a_img, a_boxes = ref.hflip(image, boxes)
        b_img, b_boxes = new.hflip(image, boxes)
        np.testing.assert_array_equal(b_img, a_img)
        np.testing.assert_array_equal(b_boxes, a_boxes)


@pytest.mark.parametrize("scale, translate, angle", [(1.0, (5.0, -7.0), 0.0), (1.1, (0.0, 0.0), 0.0),
                                                     (0.9, (3.5, 2.0), 7.0), (1.05, (-12.0, 4.0), -6.0)])
def test_affine_moves_boxes_as_before_and_pixels_away_from_the_fill_border(canvases, scale, translate, angle):
    for image, boxes in canvases:
        matrix = ref.affine_matrix(SIZE, SIZE, scale, translate, angle)
        a_img, a_boxes = ref.affine(image, boxes, matrix)
        b_img, b_boxes = new.affine(image, boxes, scale=scale, translate=translate, angle_deg=angle)
        np.testing.assert_allclose(b_boxes, a_boxes, atol=1e-3)
        inside = np.ones_like(image)  # where the warp samples only real pixels (not the 0 fill)
        old_cover = ref.affine(inside, np.zeros((0, 4), np.float32), matrix)[0]
        new_cover = new.affine(inside, np.zeros((0, 4), np.float32), scale=scale, translate=translate, angle_deg=angle)[0]
        interior = (old_cover > 0.999) & (new_cover > 0.999)  # PIL and torch treat the last half pixel differently
        interior[[0, -1], :] = interior[:, [0, -1]] = False
        assert interior.mean() > 0.7
        difference = np.abs(b_img - a_img)
        assert difference[interior].max() < 1e-4
        assert difference.mean() < 5e-3  # the rest differs only along the border with the fill


def test_the_seeded_augmentation_matches_the_old_one(canvases):
    for seed in range(8):
        for image, boxes in canvases:
            a_img, a_boxes = ref_augment(image, boxes, np.random.default_rng(seed))
            b_img, b_boxes = new.augment(image, boxes, np.random.default_rng(seed))
            np.testing.assert_allclose(b_boxes, a_boxes, atol=1e-3)
            assert np.abs(b_img - a_img).mean() < 5e-3


def ref_augment(image, boxes, rng, config=new.AugmentConfig()):
    """The old ``augment`` on the old transforms (same parameter draws in the same order)."""
    import math

    height, width = image.shape
    u_flip, u_affine, u_intensity = rng.random(3)
    scale = rng.uniform(*config.scale)
    shift = rng.uniform(-config.translate, config.translate, size=2) * (width, height)
    angle = rng.uniform(-config.rotate_deg, config.rotate_deg)
    brightness = rng.uniform(-config.brightness, config.brightness)
    contrast = rng.uniform(1.0 - config.contrast, 1.0 + config.contrast)
    gamma = math.exp(rng.uniform(math.log(config.gamma[0]), math.log(config.gamma[1])))
    if u_flip < config.hflip_p:
        image, boxes = ref.hflip(image, boxes)
    if u_affine < config.affine_p:
        matrix = ref.affine_matrix(height, width, scale, (float(shift[0]), float(shift[1])), angle)
        image, boxes = ref.affine(image, boxes, matrix, config.min_box_size, config.min_visible)
    if u_intensity < config.intensity_p:
        image = new.adjust_intensity(image, brightness, contrast, gamma)
    return image, boxes
