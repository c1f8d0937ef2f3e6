"""Core records shared by every layer.

Box convention (one format inside the code): ``xyxy`` = ``(x1, y1, x2, y2)`` as float pixels of the
*original* image, x to the right, y downwards, x2/y2 exclusive edges (so width = x2 - x1). Arrays of boxes
are ``float32`` of shape ``(N, 4)``; with a confidence column ``(N, 5)``. RSNA's ``x y width height`` appears
only where RSNA files, submissions, JSON or API payloads are read or written (``Box.to_xywh``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class XRay:
    """A decoded radiograph.

    ``pixels``: float32 array of shape (H, W) in [0, 1], MONOCHROME2 orientation (air dark, bone bright),
    after modality and VOI transforms (see docs/decisions/0002-intensity-policy.md).
    """

    pixels: np.ndarray
    source_format: str  # "dicom", "png" or "jpeg"
    photometric_interpretation: str = "MONOCHROME2"  # as stored in the file, before pneumo's conversion
    bits_stored: int = 8
    pixel_spacing_mm: tuple[float, float] | None = None  # (row spacing, column spacing)
    modality: str | None = None
    body_part: str | None = None
    view_position: str | None = None
    patient_id: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    sop_uid: str | None = None
    transfer_syntax: str | None = None
    number_of_frames: int = 1
    warnings: tuple[str, ...] = ()  # things the caller should see (RGB converted, frame 1 of N used, ...)
    #: (height, width) as stored in the file when the reader reduced a very large image to its working
    #: resolution (``pixels`` is then a box average by an integer factor); None: ``pixels`` is full size
    full_size: tuple[int, int] | None = None
    chroma: float = 0.0  # colour sources: mean |R-G|, |G-B| difference in [0, 1] before the luminance conversion

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def original_size(self) -> tuple[int, int]:
        """(height, width) of ``pixels``: the frame model outputs (boxes) refer to."""
        return self.height, self.width

    @property
    def stored_size(self) -> tuple[int, int]:
        """(height, width) of the image as stored in the file (``full_size``, else the pixels' size)."""
        return self.full_size if self.full_size is not None else self.original_size


@dataclass(frozen=True)
class Box:
    """One box in original-image pixels, xyxy, with a confidence in [0, 1]."""

    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float = 1.0

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    def to_xywh(self) -> dict[str, float]:
        """RSNA/API form: ``{x, y, width, height, confidence}``."""
        return {
            "x": float(self.x1),
            "y": float(self.y1),
            "width": float(self.width),
            "height": float(self.height),
            "confidence": float(self.confidence),
        }

    @classmethod
    def from_xywh(cls, x: float, y: float, width: float, height: float, confidence: float = 1.0) -> "Box":
        return cls(float(x), float(y), float(x) + float(width), float(y) + float(height), float(confidence))


def boxes_to_array(boxes: list[Box] | tuple[Box, ...], with_confidence: bool = False) -> np.ndarray:
    """Boxes -> float32 array (N, 4) xyxy, or (N, 5) with the confidence as the last column."""
    cols = 5 if with_confidence else 4
    if not boxes:
        return np.zeros((0, cols), dtype=np.float32)
    rows = [(b.x1, b.y1, b.x2, b.y2, b.confidence)[:cols] for b in boxes]
    return np.asarray(rows, dtype=np.float32)


def array_to_boxes(array: np.ndarray) -> list[Box]:
    """(N, 4) or (N, 5) xyxy[+confidence] array -> list of Box."""
    array = np.asarray(array, dtype=np.float64).reshape(-1, array.shape[-1] if array.size else 4)
    if array.shape[1] == 4:
        return [Box(*map(float, row)) for row in array]
    return [Box(*map(float, row[:5])) for row in array]


@dataclass(frozen=True)
class Prediction:
    """What pneumo says about one image: decision support, not a diagnosis.

    ``boxes`` are in original-image pixels (xyxy) sorted by descending confidence; ``heatmap`` is a float32
    (H', W') array in [0, 1] covering the whole original image (any resolution; upsample to display).
    """

    probability: float
    boxes: tuple[Box, ...]
    model: str
    model_version: str
    image_size: tuple[int, int]  # (height, width) of the original image
    heatmap: np.ndarray | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable form (no heatmap): probability, boxes as RSNA xywh, model and version."""
        from pneumo import DISCLAIMER

        return {
            "probability": float(self.probability),
            "boxes": [b.to_xywh() for b in self.boxes],
            "model": self.model,
            "model_version": self.model_version,
            "image_height": int(self.image_size[0]),
            "image_width": int(self.image_size[1]),
            "disclaimer": DISCLAIMER,
        }
