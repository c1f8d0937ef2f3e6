"""The one preprocessing step shared by training and serving.

An ``XRay``'s (H, W) float pixels in [0, 1] are letterboxed into a square ``size x size`` canvas: scaled by
``scale = size / max(H, W)`` (aspect ratio kept), centred, padded with 0 (air). ``GeometryRecord`` keeps what
is needed to map boxes between original pixels and model-input pixels in both directions.

Model input contract (checked by ``check_model_input``): float32 tensor (B, 1, S, S), values in [0, 1].
Intensity normalisation (mean/std) happens inside each model, never outside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from PIL import Image

from pneumo.errors import ConfigError


@dataclass(frozen=True)
class GeometryRecord:
    """Mapping original image (orig_h x orig_w px) <-> model input (size x size px).

    input = original * scale + (pad_x, pad_y)
    """

    orig_h: int
    orig_w: int
    size: int
    scale: float
    pad_x: float  # whole pixels of padding left of the image
    pad_y: float  # whole pixels of padding above the image

    @classmethod
    def for_image(cls, orig_h: int, orig_w: int, size: int) -> "GeometryRecord":
        scale = size / max(orig_h, orig_w)
        new_h, new_w = round(orig_h * scale), round(orig_w * scale)
        return cls(orig_h, orig_w, size, scale, float((size - new_w) // 2), float((size - new_h) // 2))

    @property
    def content_hw(self) -> tuple[int, int]:
        """(height, width) of the resized image inside the square canvas."""
        return round(self.orig_h * self.scale), round(self.orig_w * self.scale)

    def to_input(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, 4+) boxes in original pixels -> model-input pixels (extra columns, e.g. confidence, kept)."""
        out = np.array(boxes_xyxy, dtype=np.float32, copy=True).reshape(-1, np.shape(boxes_xyxy)[-1] if np.size(boxes_xyxy) else 4)
        out[:, [0, 2]] = out[:, [0, 2]] * self.scale + self.pad_x
        out[:, [1, 3]] = out[:, [1, 3]] * self.scale + self.pad_y
        return out

    def to_original(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, 4+) boxes in model-input pixels -> original pixels, clipped to the image."""
        out = np.array(boxes_xyxy, dtype=np.float32, copy=True).reshape(-1, np.shape(boxes_xyxy)[-1] if np.size(boxes_xyxy) else 4)
        out[:, [0, 2]] = np.clip((out[:, [0, 2]] - self.pad_x) / self.scale, 0, self.orig_w)
        out[:, [1, 3]] = np.clip((out[:, [1, 3]] - self.pad_y) / self.scale, 0, self.orig_h)
        return out

    def crop_to_content(self, map_2d: np.ndarray) -> np.ndarray:
        """A (size, size) map over the canvas -> the (h, w) part that covers the original image."""
        h, w = self.content_hw
        y0, x0 = int(self.pad_y), int(self.pad_x)
        return map_2d[y0 : y0 + h, x0 : x0 + w]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Preprocessor:
    """Letterbox to a ``size`` x ``size`` px canvas. Saved inside every checkpoint (``to_dict``/``from_dict``):
    the one home of a model's input size (no default: a model is always run at the size it was trained at)."""

    size: int

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) or not 8 <= int(self.size) <= 8192:
            raise ConfigError(f"preprocessor size must be a whole number of pixels in [8, 8192], got {self.size!r}")
        object.__setattr__(self, "size", int(self.size))

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, GeometryRecord]:
        """(H, W) float32 in [0, 1] -> ((size, size) float32 in [0, 1], geometry)."""
        if pixels.ndim != 2:
            raise ValueError(f"expected a 2-D (H, W) image, got shape {pixels.shape}")
        geometry = GeometryRecord.for_image(pixels.shape[0], pixels.shape[1], self.size)
        canvas = np.zeros((self.size, self.size), dtype=np.float32)
        h, w = geometry.content_hw
        resized = resize_float(pixels, h, w)
        y0, x0 = int(geometry.pad_y), int(geometry.pad_x)
        canvas[y0 : y0 + h, x0 : x0 + w] = resized
        return canvas, geometry

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "Preprocessor":
        """The stored settings -> Preprocessor; ``ConfigError`` when the input size is missing or unknown keys appear."""
        if not isinstance(data, Mapping) or "size" not in data:
            raise ConfigError("preprocessor settings lack the model input size ('size'); the model cannot be run "
                              "at the size it was trained at")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown preprocessor setting(s): {', '.join(sorted(map(str, unknown)))}")
        return cls(**dict(data))


def resize_float(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-averaged (antialiased) resize of a float32 (H, W) image to (height, width), values kept in [0, 1]."""
    if pixels.shape == (height, width):
        return pixels.astype(np.float32, copy=False)
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F")
    resample = Image.Resampling.BOX if height < pixels.shape[0] else Image.Resampling.BILINEAR
    out = np.asarray(image.resize((width, height), resample=resample), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def check_model_input(x: "torch.Tensor") -> None:  # noqa: F821 - torch imported lazily by callers
    """Raise ValueError unless x is float32 (B, 1, S, S) with values in [0, 1] (the model input contract)."""
    import torch

    if not isinstance(x, torch.Tensor) or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"model input must be a float tensor, got {getattr(x, 'dtype', type(x))}")
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"model input must be (B, 1, H, W), got {tuple(x.shape)}")
    if x.numel() and (float(x.min()) < -1e-3 or float(x.max()) > 1.001):
        raise ValueError(
            f"model input must be in [0, 1] (got [{float(x.min()):.3g}, {float(x.max()):.3g}]); "
            "pass XRay.pixels through Preprocessor, not raw DICOM values"
        )
