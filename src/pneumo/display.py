"""Bounded display copies: what is kept per result for viewing, and boxes mapped onto it.

Whatever the input size, an overlay or heatmap render works on at most ``DISPLAY_MAX_PIXELS`` (a 1536 x 1536
overlay with a heatmap peaks at about 130 MiB; at 2048 x 2048 it was 230 MiB, at the 60 MP the readers accept
3.7 GiB). Real radiographs up to 1536 px a side (every RSNA/NIH image) are kept at full size.
"""

from __future__ import annotations

import math

import numpy as np

#: largest display copy kept per result (pixels)
DISPLAY_MAX_PIXELS = 1536 * 1536


def display_size(height: int, width: int, max_pixels: int = DISPLAY_MAX_PIXELS) -> tuple[int, int]:
    """(height, width) of the display copy of an image of ``height`` x ``width`` px (aspect kept)."""
    if height * width <= max_pixels:
        return height, width
    scale = math.sqrt(max_pixels / (height * width))
    return max(1, int(height * scale)), max(1, int(width * scale))


def display_copy(pixels: np.ndarray, max_pixels: int = DISPLAY_MAX_PIXELS) -> np.ndarray:
    """(H, W) float in [0, 1] -> uint8 (h, w) with h * w <= ``max_pixels`` (box-filtered when reduced)."""
    from PIL import Image

    u8 = (np.clip(np.nan_to_num(pixels), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    h, w = display_size(*u8.shape, max_pixels=max_pixels)
    if (h, w) == u8.shape:
        return u8
    return np.asarray(Image.fromarray(u8).resize((w, h), Image.Resampling.BOX))


def boxes_to_display(boxes: np.ndarray, original_size: tuple[int, int], shown_size: tuple[int, int]) -> np.ndarray:
    """(N, 4 or 5) xyxy[+conf] boxes in original pixels -> the same boxes in a copy of ``shown_size``
    (height, width); the confidence column is kept."""
    out = np.array(boxes, dtype=np.float32, copy=True).reshape(-1, np.shape(boxes)[-1] if np.size(boxes) else 4)
    if tuple(original_size) == tuple(shown_size) or not len(out):
        return out
    sy, sx = shown_size[0] / original_size[0], shown_size[1] / original_size[1]
    out[:, [0, 2]] *= sx
    out[:, [1, 3]] *= sy
    return out
