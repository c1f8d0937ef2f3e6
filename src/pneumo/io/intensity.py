"""The one intensity policy (docs/decisions/0002-intensity-policy.md), shared by the DICOM and raster readers.

Every reader ends with a float32 (H, W) array in [0, 1], MONOCHROME2 (air dark, bone bright):

1. modality transform (DICOM only): Modality LUT Sequence, else Rescale Slope/Intercept;
2. if the file carries a VOI transform (VOI LUT Sequence, else Window Center/Width): apply the first one,
   its output range maps to [0, 1];
3. otherwise map the *possible* stored range linearly: ``(v - lo) / (hi - lo)`` with ``lo, hi`` the smallest
   and largest value the bit depth allows (``0 .. 2**bits - 1`` unsigned, ``-2**(bits-1) .. 2**(bits-1) - 1``
   signed), passed through the modality transform. No data-dependent (min-max / percentile) stretching;
4. MONOCHROME1 -> ``1 - x``.
"""

from __future__ import annotations

import numpy as np

#: ITU-R BT.601 luma weights (what Pillow's ``convert("L")`` uses), applied to R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

#: below this span (max - min, in [0, 1] units) of the final image a reader adds a low-contrast warning
LOW_DYNAMIC_RANGE = 0.125


def stored_range(bits_stored: int, signed: bool) -> tuple[int, int]:
    """Smallest and largest stored value a ``bits_stored``-bit (signed or unsigned) sample can take."""
    if signed:
        return -(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1
    return 0, 2**bits_stored - 1


def full_scale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map ``lo .. hi`` linearly to ``0 .. 1`` (clipped); float32 of the same shape as ``values``."""
    if hi == lo:
        return np.zeros(values.shape, dtype=np.float32)
    if hi < lo:  # a negative rescale slope: lo/hi swap keeps "bigger stored value = brighter"
        lo, hi = hi, lo
    out = (np.asarray(values, dtype=np.float32) - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM VOI windowing (PS3.3 C.11.2.1.2) with output range [0, 1]; float32, same shape.

    ``function``: ``LINEAR`` (width >= 1), ``LINEAR_EXACT`` or ``SIGMOID`` (width > 0). The caller checks
    the width (``valid_window``).
    """
    x = np.asarray(values, dtype=np.float32)
    c, w = float(center), float(width)
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        out = 1.0 / (1.0 + np.exp(np.float32(-4.0 / w) * (x - np.float32(c))))
        return out.astype(np.float32, copy=False)
    if function == "LINEAR_EXACT":
        out = (x - np.float32(c)) * np.float32(1.0 / w) + np.float32(0.5)
    else:  # LINEAR
        if w <= 1.0:  # width 1: a hard threshold at c - 0.5
            return (x > np.float32(c - 0.5)).astype(np.float32)
        out = (x - np.float32(c - 0.5)) * np.float32(1.0 / (w - 1.0)) + np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


def valid_window(width: float, function: str = "LINEAR") -> bool:
    """Whether a window width is usable for ``function`` (LINEAR needs >= 1, the others > 0)."""
    if not np.isfinite(width):
        return False
    return width >= 1.0 if (function or "LINEAR").upper() == "LINEAR" else width > 0.0


def apply_lut(values: np.ndarray, first_mapped: int, lut: np.ndarray) -> np.ndarray:
    """DICOM LUT lookup (PS3.3 C.11.1/C.11.2): values below ``first_mapped`` take the first entry, values past
    the end the last one. Returns float32 of the shape of ``values``."""
    index = np.rint(np.asarray(values, dtype=np.float64)) - first_mapped
    index = np.clip(index, 0, len(lut) - 1).astype(np.intp)
    return np.asarray(lut, dtype=np.float32)[index]


def luminance(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) -> (H, W) float32 BT.601 luma in the input's units (no rounding)."""
    rgb = np.asarray(rgb)
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    return np.float32(LUMA_WEIGHTS[0]) * r + np.float32(LUMA_WEIGHTS[1]) * g + np.float32(LUMA_WEIGHTS[2]) * b


def to_monochrome2(unit: np.ndarray, photometric: str) -> np.ndarray:
    """Invert MONOCHROME1 (``1 - x``) so air is dark; other interpretations pass through. float32 in [0, 1]."""
    out = np.asarray(unit, dtype=np.float32)
    if photometric == "MONOCHROME1":
        out = np.float32(1.0) - out
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


def low_dynamic_range_warning(pixels: np.ndarray) -> str | None:
    """A warning when the final image spans less than LOW_DYNAMIC_RANGE of [0, 1] (e.g. 12-bit data in 16 bits)."""
    if pixels.size == 0:
        return None
    span = float(pixels.max()) - float(pixels.min())
    if span < LOW_DYNAMIC_RANGE:
        return (
            f"low contrast: pixel values span only {span:.1%} of the full intensity range (no VOI window in the "
            "file and the data use few of the stored bits); results may be unreliable"
        )
    return None
