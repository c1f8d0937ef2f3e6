"""Paired training augmentations: the image and its boxes move together.

Images are float32 (H, W) in [0, 1] (normally the S x S letterboxed canvas); boxes are float32 (N, 4)
xyxy in the same (input) pixels, continuous coordinates with pixel i covering [i, i + 1). Randomness comes
only from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the training augmentations (defaults: mild, anatomy-preserving)."""

    hflip_p: float = 0.5
    affine_p: float = 0.8
    scale: tuple[float, float] = (0.9, 1.1)
    translate: float = 0.05  # max shift as a fraction of width / height
    rotate_deg: float = 7.0  # max rotation, degrees either way
    intensity_p: float = 0.8
    brightness: float = 0.1  # added offset drawn from [-b, b]
    contrast: float = 0.15  # factor drawn from [1 - c, 1 + c], around the image mean
    gamma: tuple[float, float] = (0.8, 1.25)  # exponent drawn log-uniformly
    min_box_size: float = 2.0  # px: boxes narrower or shorter after the transform are dropped
    min_visible: float = 0.3  # fraction of a transformed box's area that must stay inside the image


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right: x -> W - x for the image and the boxes."""
    width = image.shape[1]
    flipped = np.ascontiguousarray(image[:, ::-1])
    out = _boxes(boxes).copy()
    out[:, [0, 2]] = width - out[:, [2, 0]]
    return flipped, out


def affine_matrix(
    height: int, width: int, scale: float = 1.0, translate: tuple[float, float] = (0.0, 0.0), angle_deg: float = 0.0
) -> np.ndarray:
    """3x3 matrix taking input (x, y, 1) to output coordinates: scale and rotate about the image centre,
    then shift by ``translate`` = (dx, dy) pixels. Positive angles turn clockwise on screen (y down)."""
    cx, cy = width / 2.0, height / 2.0
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta) * scale, math.sin(theta) * scale
    linear = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    to_origin = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    back = np.array([[1.0, 0.0, cx + translate[0]], [0.0, 1.0, cy + translate[1]], [0.0, 0.0, 1.0]])
    return back @ linear @ to_origin


def affine(
    image: np.ndarray,
    boxes: np.ndarray,
    matrix: np.ndarray,
    min_box_size: float = 2.0,
    min_visible: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` by the 3x3 ``matrix`` (bilinear, outside filled with 0) and its boxes by their corners.

    Each box becomes the axis-aligned box around its four transformed corners, clipped to the image; it is
    dropped when narrower / shorter than ``min_box_size`` px or when less than ``min_visible`` of its area
    remains inside the image.
    """
    height, width = image.shape
    inverse = np.linalg.inv(matrix)
    warped = Image.fromarray(np.ascontiguousarray(image, dtype=np.float32), mode="F").transform(
        (width, height),
        Image.Transform.AFFINE,
        data=tuple(inverse[:2].ravel()),
        resample=Image.Resampling.BILINEAR,
        fillcolor=0.0,
    )
    out_image = np.clip(np.asarray(warped, dtype=np.float32), 0.0, 1.0)
    return out_image, transform_boxes(boxes, matrix, height, width, min_box_size, min_visible)


def transform_boxes(
    boxes: np.ndarray, matrix: np.ndarray, height: int, width: int, min_box_size: float = 2.0, min_visible: float = 0.3
) -> np.ndarray:
    """(N, 4) xyxy -> boxes around the transformed corners, clipped to (height, width), small ones dropped."""
    boxes = _boxes(boxes)
    if not len(boxes):
        return boxes.copy()
    x1, y1, x2, y2 = boxes.T.astype(np.float64)
    corners = np.stack(
        [np.stack([x1, y1]), np.stack([x2, y1]), np.stack([x1, y2]), np.stack([x2, y2])], axis=0
    )  # (4, 2, N)
    xs = matrix[0, 0] * corners[:, 0] + matrix[0, 1] * corners[:, 1] + matrix[0, 2]
    ys = matrix[1, 0] * corners[:, 0] + matrix[1, 1] * corners[:, 1] + matrix[1, 2]
    moved = np.stack([xs.min(0), ys.min(0), xs.max(0), ys.max(0)], axis=1)
    clipped = moved.copy()
    clipped[:, [0, 2]] = np.clip(moved[:, [0, 2]], 0, width)
    clipped[:, [1, 3]] = np.clip(moved[:, [1, 3]], 0, height)
    full = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (w >= min_box_size) & (h >= min_box_size) & (w * h >= min_visible * np.maximum(full, 1e-9))
    return clipped[keep].astype(np.float32)


def adjust_intensity(image: np.ndarray, brightness: float = 0.0, contrast: float = 1.0, gamma: float = 1.0) -> np.ndarray:
    """x ** gamma, then (x - mean) * contrast + mean + brightness, clipped to [0, 1]."""
    out = np.power(np.clip(image, 0.0, 1.0, dtype=np.float32), np.float32(gamma))
    mean = np.float32(out.mean())
    out = (out - mean) * np.float32(contrast) + mean + np.float32(brightness)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def augment(
    image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """One random paired augmentation: flip, affine, intensity (each with its probability).

    (H, W) float32 in [0, 1] + (N, 4) xyxy -> the same shapes (N may shrink). The same generator state
    gives the same result.
    """
    image = np.asarray(image, dtype=np.float32)
    boxes = _boxes(boxes)
    height, width = image.shape
    # draw every number up front, so one transform's probability does not shift the others' draws
    u_flip, u_affine, u_intensity = rng.random(3)
    scale = rng.uniform(*config.scale)
    shift = rng.uniform(-config.translate, config.translate, size=2) * (width, height)
    angle = rng.uniform(-config.rotate_deg, config.rotate_deg)
    brightness = rng.uniform(-config.brightness, config.brightness)
    contrast = rng.uniform(1.0 - config.contrast, 1.0 + config.contrast)
    gamma = math.exp(rng.uniform(math.log(config.gamma[0]), math.log(config.gamma[1])))

    if u_flip < config.hflip_p:
        image, boxes = hflip(image, boxes)
    if u_affine < config.affine_p:
        matrix = affine_matrix(height, width, scale, (float(shift[0]), float(shift[1])), angle)
        image, boxes = affine(image, boxes, matrix, config.min_box_size, config.min_visible)
    if u_intensity < config.intensity_p:
        image = adjust_intensity(image, brightness, contrast, gamma)
    return image, boxes


def _boxes(boxes: np.ndarray) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float32)
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) xyxy, got shape {array.shape}")
    return array
