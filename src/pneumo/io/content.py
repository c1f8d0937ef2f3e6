"""Is this plausibly a frontal chest radiograph? A cheap content check run once per input before any model.

Hand-set rules on a few image statistics of a 128 x 128 box-averaged thumbnail (no learned weights, no label
file read). Each rule names a property every real radiograph has and most non-radiographs lack; the first rule
broken becomes the refusal reason. Thresholds sit outside the range of every real radiograph in
``../shared/data`` with a margin; the rates (false refusals on real radiographs, true refusals on the generated
corpus of ``pneumo.io.nonradiographs``) are measured by ``bench/ood_rates.py`` and asserted in the tests. See
docs/decisions/0010-out-of-distribution.md. About 14 ms per image on a loaded 2-core machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pneumo.errors import NotChestRadiographError
from pneumo.types import XRay

THUMB = 128  #: side of the thumbnail the statistics are computed on (px)
MIN_SIDE = 64  #: smallest accepted image side (px): below it there is no anatomy to read
MAX_ASPECT = 2.0  #: longest side / shortest side beyond which no detector format fits
MAX_CHROMA = 0.04  #: mean |channel difference| of a colour source, in [0, 1] (radiographs are gray)
MIN_STD = 0.06  #: intensity standard deviation below which the image is blank (real: >= 0.11)
MAX_ROUGHNESS = 0.6  #: mean |Laplacian| / std: noise, fine patterns, text (real: <= 0.38)
MIN_ROUGHNESS = 0.03  #: smooth gradients with no structure (real: >= 0.055)
MIN_ENTROPY = 3.0  #: bits over 32 intensity bins: too few grey levels (real: >= 3.1)
MAX_PEAK = 0.7  #: share of pixels in the commonest of 32 bins (real: <= 0.55)
MAX_BRIGHT = 0.35  #: share of near-white pixels (> 0.98): a light background, an inverted image (real: <= 0.14)
BODY_LEVEL = 0.08  #: intensity above which a thumbnail pixel counts as body rather than air
MIN_BODY_INSET = 0.012  #: body clear of every edge by this share of the side: a slice on air (real: mostly 0)
MAX_ROUND_FILL = 0.82  #: body / bounding box below this: round, not a collimated rectangle (real inset: >= 0.85)


@dataclass(frozen=True)
class ContentStats:
    """Statistics of one image; intensities are MONOCHROME2 in [0, 1] on the thumbnail."""

    height: int
    width: int
    chroma: float
    std: float
    roughness: float
    entropy: float
    peak: float
    bright: float
    body_inset: float  # smallest margin (fraction of the side) between the body's bounding box and an edge
    body_fill: float  # body area / its bounding-box area (an ellipse on air: about 0.785)

    def problem(self) -> str | None:
        """The reason this is not a plausible frontal chest radiograph, or None."""
        side = min(self.height, self.width)
        if side < MIN_SIDE:
            return f"image is only {self.width}x{self.height} pixels (a radiograph has at least {MIN_SIDE} per side)"
        if max(self.height, self.width) / side > MAX_ASPECT:
            return f"image proportions {self.width}x{self.height} do not fit a chest radiograph"
        if self.chroma > MAX_CHROMA:
            return "colour image (radiographs are grayscale): it looks like a photograph or a colour rendering"
        if self.std < MIN_STD:
            return "blank or nearly constant image (no anatomy visible)"
        if self.roughness > MAX_ROUGHNESS:
            return "image is dominated by noise or a fine pattern (noise, text, checkerboard), not anatomy"
        if self.roughness < MIN_ROUGHNESS:
            return "image is a smooth gradient without structure"
        if self.entropy < MIN_ENTROPY or self.peak > MAX_PEAK:
            return "image has too few grey levels for a radiograph (drawing, text, mask or segmentation?)"
        if self.bright > MAX_BRIGHT:
            return "large white background: an inverted (negative) image or a document, not a MONOCHROME2 radiograph"
        if self.body_inset >= MIN_BODY_INSET and self.body_fill < MAX_ROUND_FILL:
            return "a round body outline surrounded by air: looks like a CT or MR slice, not a projection radiograph"
        return None


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] -> (THUMB, THUMB) float32 box average (aspect not kept)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F")
    return np.asarray(image.resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.float32)


def content_stats(xray: XRay) -> ContentStats:
    """The statistics ``check_radiograph_content`` judges (see ``ContentStats``)."""
    pixels = np.asarray(xray.pixels)
    height, width = xray.stored_size
    if min(pixels.shape) < 2:
        return ContentStats(height, width, xray.chroma, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
    return thumbnail_stats(thumbnail(pixels), height, width, xray.chroma)


def thumbnail_stats(t: np.ndarray, height: int, width: int, chroma: float = 0.0) -> ContentStats:
    """``ContentStats`` of a (THUMB, THUMB) thumbnail of an image stored as ``height`` x ``width`` px."""
    t = np.clip(np.nan_to_num(np.asarray(t, dtype=np.float32)), 0.0, 1.0)
    std = float(t.std())
    laplacian = np.abs(4 * t[1:-1, 1:-1] - t[:-2, 1:-1] - t[2:, 1:-1] - t[1:-1, :-2] - t[1:-1, 2:])
    hist = np.histogram(t, bins=32, range=(0.0, 1.0))[0] / t.size
    nonzero = hist[hist > 0]
    inset, fill = _body_shape(t)
    return ContentStats(
        height=height, width=width, chroma=float(chroma), std=std,
        roughness=float(laplacian.mean()) / max(std, 1e-6),
        entropy=float(-(nonzero * np.log2(nonzero)).sum()), peak=float(hist.max()),
        bright=float((t > 0.98).mean()), body_inset=inset, body_fill=fill,
    )


def _body_shape(t: np.ndarray) -> tuple[float, float]:
    """(inset, fill) of the largest bright region of the thumbnail (see ``ContentStats``)."""
    from scipy import ndimage

    body = ndimage.binary_opening(t > BODY_LEVEL, iterations=2)
    labels, count = ndimage.label(body)
    if count == 0:
        return 0.0, 0.0
    sizes = np.bincount(labels.ravel())[1:]
    largest = labels == (int(np.argmax(sizes)) + 1)
    rows, cols = np.flatnonzero(largest.any(axis=1)), np.flatnonzero(largest.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    n = t.shape[0]
    inset = min(top, left, n - bottom, n - right) / n
    fill = float(largest.sum()) / float((bottom - top) * (right - left))
    return float(inset), fill


def check_radiograph_content(xray: XRay) -> None:
    """Raise NotChestRadiographError (with the reason) when ``xray`` is not a plausible frontal chest radiograph."""
    reason = content_stats(xray).problem()
    if reason:
        raise NotChestRadiographError(
            f"not a chest radiograph: {reason}. pneumo analyses frontal chest X-rays only "
            "(decision support); send the radiograph itself"
        )
