"""The trivial baseline every model must beat: "the median training box on each lung, on every image".

Training boxes are split by their x-centre at the image mid-line (image-left vs image-right half; on a PA film
the image-left half is the patient's right lung). On each side the median of each normalised coordinate
(x1/W, y1/H, x2/W, y2/H) gives one box. Every image gets both boxes, scaled to its size, with confidence =
the fraction of positive training images that have a box on that side; the image probability is the
training positive rate. Stored as JSON (``{"type": "baseline", ...}``) and served like any other model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.errors import ConfigError

SPEC_TYPE = "baseline"


@dataclass(frozen=True)
class BaselineSpec:
    """boxes: normalised xyxy (fractions of width / height); confidences: one per box; probability: constant."""

    boxes: tuple[tuple[float, float, float, float], ...]
    confidences: tuple[float, ...]
    probability: float
    n_train_images: int = 0
    name: str = "baseline"

    def __post_init__(self) -> None:
        if len(self.boxes) != len(self.confidences):
            raise ConfigError("baseline spec: one confidence per box is needed")
        if not 0.0 <= float(self.probability) <= 1.0:
            raise ConfigError(f"baseline probability must lie in [0, 1], got {self.probability}")

    def boxes_for(self, image_size: tuple[int, int]) -> np.ndarray:
        """(K, 5) xyxy + confidence in the pixels of an image of ``image_size`` = (height, width)."""
        height, width = image_size
        if not self.boxes:
            return np.zeros((0, 5), dtype=np.float32)
        out = np.asarray(self.boxes, dtype=np.float64) * np.array([width, height, width, height])
        return np.column_stack([out, np.asarray(self.confidences)]).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": SPEC_TYPE, "name": self.name, "boxes_normalised_xyxy": [list(b) for b in self.boxes],
            "confidences": list(self.confidences), "probability": self.probability,
            "n_train_images": self.n_train_images,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BaselineSpec":
        if not isinstance(data, Mapping) or data.get("type") != SPEC_TYPE:
            raise ConfigError("not a baseline spec (expected a JSON object with type 'baseline')")
        try:
            return cls(
                boxes=tuple(tuple(float(v) for v in b) for b in data["boxes_normalised_xyxy"]),  # type: ignore[misc]
                confidences=tuple(float(c) for c in data["confidences"]),
                probability=float(data["probability"]),
                n_train_images=int(data.get("n_train_images", 0)),
                name=str(data.get("name", "baseline")),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"malformed baseline spec: {error}") from None

    @classmethod
    def load(cls, path: str | Path) -> "BaselineSpec":
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except OSError as error:
            raise ConfigError(f"cannot read baseline spec {path}: {error.strerror or error}") from None
        except json.JSONDecodeError as error:
            raise ConfigError(f"baseline spec {path} is not valid JSON: {error.msg}") from None

    def save(self, path: str | Path) -> Path:
        from pneumo.files import atomic_write

        with atomic_write(path) as handle:
            handle.write(json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode("utf-8")).hexdigest()


def fit_baseline(boxes_per_image: Sequence[np.ndarray], image_sizes: Sequence[tuple[int, int]]) -> BaselineSpec:
    """Fit the baseline on training images: (N_i, 4) xyxy boxes in original pixels and (height, width) each."""
    if len(boxes_per_image) != len(image_sizes):
        raise ConfigError(f"{len(boxes_per_image)} box arrays for {len(image_sizes)} image sizes")
    if not boxes_per_image:
        raise ConfigError("cannot fit the baseline on zero training images")
    sides: dict[str, list[np.ndarray]] = {"left": [], "right": []}
    images_with: dict[str, int] = {"left": 0, "right": 0}
    positives = 0
    for boxes, (height, width) in zip(boxes_per_image, image_sizes):
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, np.shape(boxes)[-1] if np.size(boxes) else 4)[:, :4]
        if not len(boxes):
            continue
        positives += 1
        norm = boxes / np.array([width, height, width, height], dtype=np.float64)
        centre_x = (norm[:, 0] + norm[:, 2]) / 2
        for side, mask in (("left", centre_x < 0.5), ("right", centre_x >= 0.5)):
            if mask.any():
                sides[side].append(norm[mask])
                images_with[side] += 1
    boxes_out, confidences = [], []
    for side in ("left", "right"):
        if sides[side]:
            median = np.median(np.concatenate(sides[side]), axis=0)
            boxes_out.append(tuple(float(v) for v in np.clip(median, 0.0, 1.0)))
            confidences.append(float(images_with[side] / positives))
    return BaselineSpec(
        boxes=tuple(boxes_out), confidences=tuple(confidences),  # type: ignore[arg-type]
        probability=float(positives / len(boxes_per_image)), n_train_images=len(boxes_per_image),
    )
