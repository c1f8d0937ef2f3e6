"""Memory bounds of decoding: a byte budget checked from the header before any pixel is decoded, and the
reduction of very large images to the working resolution right after decoding.

The models work at 224-512 px, so a 60-megapixel image carries nothing they can use that a 4-megapixel one
lacks. Readers therefore (1) refuse a file whose decoded buffer (as the decoder lays it out in memory, plus
any conversion copy) would exceed ``DEFAULT_DECODE_BYTES`` — checked from the header only; (2) reduce an
image above ``DEFAULT_WORKING_PIXELS`` by an integer box average (JPEG: in the decoder itself, via Pillow's
``draft``), recording the stored size in ``XRay.full_size`` so boxes still come back in original pixels.
"""

from __future__ import annotations

import math

import numpy as np

from pneumo.errors import ImageTooLargeError

#: pixels (rows x columns) above which an image is reduced on read: 2048 x 2048, 4x the largest model input
#: side, and above every real radiograph in the shared data (largest: 1841 x 1955)
DEFAULT_WORKING_PIXELS = 2048 * 2048
#: the largest buffer one decode may allocate (decoded frame plus conversion copy), in bytes
DEFAULT_DECODE_BYTES = 192 << 20


def check_decode_budget(nbytes: int, budget: int, what: str) -> None:
    """Raise ImageTooLargeError when decoding would allocate ``nbytes`` > ``budget``."""
    if nbytes > budget:
        raise ImageTooLargeError(
            f"{what} would need {nbytes / 1048576:,.0f} MiB to decode, above the {budget / 1048576:,.0f} MiB "
            "decode budget (a guard against decompression bombs); send a smaller or compressed-gray image"
        )


def reduction_factor(height: int, width: int, working_pixels: int | None) -> int:
    """Smallest integer f with ceil(h/f) * ceil(w/f) <= ``working_pixels`` (1 when None or already small)."""
    if working_pixels is None or height * width <= working_pixels:
        return 1
    factor = max(2, math.ceil(math.sqrt(height * width / working_pixels)))
    while math.ceil(height / factor) * math.ceil(width / factor) > working_pixels:
        factor += 1
    return factor


def block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """Box average of ``array`` (H, W) or (H, W, C) over ``factor`` x ``factor`` blocks -> float32
    (ceil(H/f), ceil(W/f)[, C]); edge blocks average the pixels they hold. Works one output row at a time, so
    the temporary memory is ``f`` input rows, never a float copy of the whole input."""
    if factor <= 1:
        return np.asarray(array, dtype=np.float32)
    height, width = array.shape[:2]
    out_h, out_w = math.ceil(height / factor), math.ceil(width / factor)
    out = np.empty((out_h, out_w) + array.shape[2:], dtype=np.float32)
    starts = np.arange(0, width, factor)
    col_counts = np.minimum(factor, width - starts).astype(np.float32)
    col_counts = col_counts.reshape((1, -1) + (1,) * (array.ndim - 2))
    for r in range(out_h):
        rows = array[r * factor:min(height, (r + 1) * factor)]
        sums = np.add.reduceat(rows.sum(axis=0, dtype=np.float32), starts, axis=0)
        out[r] = sums / (col_counts[0] * rows.shape[0])
    return out


def reduce_stored(array: np.ndarray, factor: int) -> np.ndarray:
    """``block_mean`` rounded back to the input's integer dtype (so LUTs and bit-depth scaling still apply)."""
    if factor <= 1:
        return array
    mean = block_mean(array, factor)
    if np.issubdtype(array.dtype, np.integer):
        return np.rint(mean).astype(array.dtype)
    if array.dtype == np.bool_:
        return mean
    return mean.astype(array.dtype, copy=False)
