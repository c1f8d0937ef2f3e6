"""Paired training augmentations: the image and its boxes move together (``torchvision.transforms.v2`` on
``tv_tensors.Image`` + ``tv_tensors.BoundingBoxes``; the models draw their box masks from the moved boxes).

Images are float32 (H, W) in [0, 1] (normally the S x S letterboxed canvas); boxes are float32 (N, 4)
xyxy in the same (input) pixels, continuous coordinates with pixel i covering [i, i + 1). Randomness comes
only from the ``numpy.random.Generator`` passed in (it draws the parameters; the v2 functional ops are
deterministic), never from global random state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


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
    noise_p: float = 0.0  # probability of additive Gaussian pixel noise (0: off, the default of earlier recipes)
    noise_std: float = 0.0  # its standard deviation is drawn from [0, noise_std] (intensity units, [0, 1] scale)
    min_box_size: float = 2.0  # px: boxes narrower or shorter after the transform are dropped
    min_visible: float = 0.3  # fraction of a transformed box's area that must stay inside the image


def _to_tv(image: np.ndarray, boxes: np.ndarray):
    """numpy (H, W) image + (N, 4) xyxy -> torchvision ``Image`` (1, H, W) + unclamped ``BoundingBoxes``."""
    import torch
    from torchvision import tv_tensors

    height, width = image.shape
    tv_image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None])
    tv_boxes = tv_tensors.BoundingBoxes(torch.from_numpy(_boxes(boxes).copy()), format="XYXY",
                                        canvas_size=(height, width), clamping_mode=None)
    return tv_image, tv_boxes


def hflip(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right (``torchvision.transforms.v2.functional.horizontal_flip``): x -> W - x for the image
    and the boxes."""
    from torchvision.transforms.v2 import functional as F

    tv_image, tv_boxes = _to_tv(image, boxes)
    out_image, out_boxes = F.horizontal_flip(tv_image), F.horizontal_flip(tv_boxes)
    return np.ascontiguousarray(out_image.numpy()[0]), out_boxes.numpy().astype(np.float32).reshape(-1, 4)


def affine(
    image: np.ndarray,
    boxes: np.ndarray,
    *,
    scale: float = 1.0,
    translate: tuple[float, float] = (0.0, 0.0),
    angle_deg: float = 0.0,
    min_box_size: float = 2.0,
    min_visible: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and rotate about the image centre, then shift by ``translate`` = (dx, dy) px
    (``torchvision.transforms.v2.functional.affine``: bilinear, outside filled with 0; positive angles turn
    clockwise on screen, y down).

    Each box becomes the axis-aligned box around its four transformed corners (torchvision's box transform),
    clipped to the image; it is dropped when narrower / shorter than ``min_box_size`` px or when less than
    ``min_visible`` of its area remains inside the image.
    """
    from torchvision.transforms.v2 import functional as F

    height, width = image.shape
    tv_image, tv_boxes = _to_tv(image, boxes)
    params = dict(angle=float(angle_deg), translate=[float(translate[0]), float(translate[1])], scale=float(scale),
                  shear=[0.0, 0.0])
    warped = F.affine(tv_image, **params, interpolation=F.InterpolationMode.BILINEAR, fill=0.0)
    moved = F.affine(tv_boxes, **params).numpy().astype(np.float64).reshape(-1, 4)
    out_image = np.clip(warped.numpy()[0], 0.0, 1.0).astype(np.float32)
    return out_image, _keep_visible(moved, height, width, min_box_size, min_visible)


def _keep_visible(moved: np.ndarray, height: int, width: int, min_box_size: float, min_visible: float) -> np.ndarray:
    """Transformed (N, 4) boxes -> clipped to the image, those too small or mostly outside dropped."""
    clipped = moved.copy()
    clipped[:, [0, 2]] = np.clip(moved[:, [0, 2]], 0, width)
    clipped[:, [1, 3]] = np.clip(moved[:, [1, 3]], 0, height)
    full = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    keep = (w >= min_box_size) & (h >= min_box_size) & (w * h >= min_visible * np.maximum(full, 1e-9))
    return clipped[keep].astype(np.float32).reshape(-1, 4)


def adjust_intensity(image: np.ndarray, brightness: float = 0.0, contrast: float = 1.0, gamma: float = 1.0) -> np.ndarray:
    """x ** gamma, then (x - mean) * contrast + mean + brightness, clipped to [0, 1]."""
    out = np.power(np.clip(image, 0.0, 1.0, dtype=np.float32), np.float32(gamma))
    mean = np.float32(out.mean())
    out = (out - mean) * np.float32(contrast) + mean + np.float32(brightness)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def add_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Independent Gaussian noise of standard deviation ``std`` on every pixel, clipped to [0, 1].

    Meant to teach the network that pixel-level noise (sensor noise, +-1 grey level) carries no information.
    Measured on the classifier (experiment chexnet-lite0-256-e3-noise): it lowered the median move under
    +-1/255 noise but not the largest, and cost AUC; off by default.
    """
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(std)
    return np.clip(image + noise, 0.0, 1.0).astype(np.float32, copy=False)


def augment(
    image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """One random paired augmentation: flip, affine, intensity, pixel noise (each with its probability).

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
        image, boxes = affine(image, boxes, scale=scale, translate=(float(shift[0]), float(shift[1])), angle_deg=angle,
                              min_box_size=config.min_box_size, min_visible=config.min_visible)
    if u_intensity < config.intensity_p:
        image = adjust_intensity(image, brightness, contrast, gamma)
    if config.noise_p > 0 and config.noise_std > 0:  # drawn last: recipes without noise keep their random stream
        u_noise, std = rng.random(), rng.uniform(0.0, config.noise_std)
        if u_noise < config.noise_p:
            image = add_noise(image, std, rng)
    return image, boxes


def _boxes(boxes: np.ndarray) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float32)
    if array.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) xyxy, got shape {array.shape}")
    return array
