"""Core records shared by every layer: the decoded image, boxes, model/ensemble outputs and the prediction.

Box convention (one format inside the code): ``xyxy`` = ``(x1, y1, x2, y2)`` as float pixels of the
*original* image, x to the right, y downwards, x2/y2 exclusive edges (so width = x2 - x1). Arrays of boxes
are ``float32`` of shape ``(N, 4)``; with a confidence column ``(N, 5)``. RSNA's ``x y width height`` appears
only where RSNA files, submissions, JSON or API payloads are read or written (``Box.to_xywh``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pneumo.errors import ConfigError
from pneumo.postprocess import clip_boxes, fuse_views, sort_by_confidence

if TYPE_CHECKING:  # torch only for annotations: this module (and the ONNX serving path) stays torch-free
    import torch


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


@dataclass
class Target:
    """Ground truth of one image: boxes (N, 4) float32 xyxy in model-input pixels; label 1 = pneumonia opacity."""

    boxes: "torch.Tensor"
    label: int


@dataclass
class RawOutput:
    """A model's answer for one image, in model-input pixels.

    probability: image-level pneumonia score in [0, 1] (before the checkpoint's operating thresholds).
    boxes: float32 (N, 5) xyxy + confidence in [0, 1], descending confidence.
    heatmap: float32 (S, S) in [0, 1] over the input canvas, or None.
    """

    probability: float
    boxes: np.ndarray
    heatmap: np.ndarray | None = None


#: WBF IoU threshold that merges one model's boxes from the plain and the flipped view (single-model TTA)
TTA_WBF_IOU = 0.55


@dataclass(frozen=True)
class ImageOutput:
    """One model's answer for one image before operating thresholds, in original pixels.

    probability: image-level score in [0, 1]. views: one float32 (N, 5) xyxy + confidence array per
    test-time view (1 without TTA, 2 with the flip). heatmap: float32 (h, w) in [0, 1] covering the whole
    original image (any resolution), or None. image_size: (height, width) of the original image.
    """

    probability: float
    views: tuple[np.ndarray, ...]
    heatmap: np.ndarray | None
    image_size: tuple[int, int]
    extra: dict = field(default_factory=dict)

    def boxes(self, iou_thr: float = TTA_WBF_IOU) -> np.ndarray:
        """The views merged into one (N, 5) array (weighted box fusion when there are several)."""
        return fuse_views(self.views, iou_thr)


@dataclass(frozen=True)
class FusedOutput:
    """The ensemble's answer for one image: probability in [0, 1], final (K, 5) xyxy + confidence boxes in
    original pixels (after gate, box threshold and shrink), the fused heatmap or None."""

    probability: float
    boxes: np.ndarray
    heatmap: np.ndarray | None


#: threshold names older checkpoints may use -> the names checkpoints store today
THRESHOLD_ALIASES = {"box_confidence": "box_threshold", "image_gate": "gate_threshold"}


@dataclass(frozen=True)
class Thresholds:
    """A model's operating point, each in [0, 1]; the defaults are neutral (every box, no gate, 0.5).

    box: keep boxes with confidence >= it. gate: drop every box of an image whose probability is < it.
    probability: call an image positive when its probability >= it (reporting only; boxes do not depend on it).
    Checkpoints and JSON store it as ``{"box_threshold", "gate_threshold", "probability_threshold"}``.
    """

    box: float = 0.0
    gate: float = 0.0
    probability: float = 0.5

    def __post_init__(self) -> None:
        for name in ("box", "gate", "probability"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                    or not 0.0 <= float(value) <= 1.0:
                raise ConfigError(f"threshold {name} must be a number in [0, 1], got {value!r}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def from_dict(cls, data: "Mapping[str, Any] | None", default: "Thresholds | None" = None) -> "Thresholds":
        """The stored form (old names in ``THRESHOLD_ALIASES`` accepted) -> Thresholds. Missing, non-numeric or
        non-finite entries keep ``default``'s value (neutral if None); other keys (metrics) are ignored."""
        base = default or cls()
        values = {"box": base.box, "gate": base.gate, "probability": base.probability}
        for key, value in (data or {}).items():
            key = THRESHOLD_ALIASES.get(key, key)
            if key.endswith("_threshold") and key[: -len("_threshold")] in values and not isinstance(value, bool) \
                    and isinstance(value, (int, float)) and np.isfinite(value):
                values[key[: -len("_threshold")]] = float(value)
        return cls(**values)

    def to_dict(self) -> dict[str, float]:
        return {"box_threshold": self.box, "gate_threshold": self.gate, "probability_threshold": self.probability}

    def apply(self, probability: float, boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
        """(N, 5) xyxy + confidence boxes in original pixels -> the (K, 5) to show: none when ``probability <
        gate``, else those with confidence >= ``box``, clipped to the image (``image_size`` = (height, width)),
        empty ones removed, by descending confidence."""
        boxes = sort_by_confidence(boxes)
        if probability < self.gate:
            return boxes[:0]
        return clip_boxes(boxes[boxes[:, 4] >= self.box], image_size, drop_empty=True)


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
