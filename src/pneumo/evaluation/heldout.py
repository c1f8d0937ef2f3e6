"""Raw per-image outputs of the shipped models on held-out data, saved as npz (no pickle) for re-use.

One ``HeldoutOutputs`` holds, for N patients in a fixed order: ``patient_ids`` (N,), ``labels`` (N,) 0/1,
ground-truth boxes (xyxy, original pixels) and, per member model key, the per-view probabilities
(N, V) (view 0 = plain image, view 1 = horizontal flip) and each view's (K, 5) xyxy + confidence boxes in
original pixels, concatenated with (N + 1,) offsets. ``done`` (N,) marks images every member answered.
``image_output`` rebuilds a member's ``ImageOutput``; with ``taper`` it re-applies Mask R-CNN's size taper
(``pneumo.models.maskrcnn.size_taper``) to raw boxes (they are saved untapered, so old and new can be compared).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pneumo.errors import ConfigError
from pneumo.types import ImageOutput

VIEWS = 2
_IMAGE_SIZE = (1024, 1024)


def member_keys(spec) -> list[str]:
    """The member model strings of an ``EnsembleSpec`` (box members, then the classifier)."""
    return list(spec.model_keys)


@dataclass
class HeldoutOutputs:
    patient_ids: list[str]
    gt: list[np.ndarray]
    keys: list[str]
    probs: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (N, VIEWS), NaN = not run
    boxes: dict[str, list[list[np.ndarray]]] = field(default_factory=dict)  # key -> view -> image -> (K, 5)
    image_size: np.ndarray | None = None  # (N, 2) height, width
    done: np.ndarray | None = None

    @classmethod
    def empty(cls, ids: Sequence[str], gt: Sequence[np.ndarray], keys: Sequence[str]) -> "HeldoutOutputs":
        n = len(ids)
        out = cls(list(ids), [np.asarray(g, np.float32).reshape(-1, 4) for g in gt], list(keys))
        for key in keys:
            out.probs[key] = np.full((n, VIEWS), np.nan)
            out.boxes[key] = [[np.zeros((0, 5), np.float32) for _ in range(n)] for _ in range(VIEWS)]
        out.image_size = np.tile(np.array(_IMAGE_SIZE, np.int64), (n, 1))
        out.done = np.zeros(n, dtype=bool)
        return out

    @property
    def labels(self) -> np.ndarray:
        return np.array([int(len(g) > 0) for g in self.gt], dtype=np.int64)

    def set(self, key: str, i: int, output: ImageOutput) -> None:
        """Store one member's TTA output (``extra['view_probabilities']`` and both views) for image i."""
        views = output.extra.get("view_probabilities")
        if views is None or len(views) != VIEWS or len(output.views) != VIEWS:
            raise ConfigError("held-out outputs need flip-TTA outputs with per-view probabilities")
        self.probs[key][i] = views
        for v in range(VIEWS):
            self.boxes[key][v][i] = np.asarray(output.views[v], np.float32).reshape(-1, 5)
        self.image_size[i] = output.image_size

    def image_output(self, key: str, i: int, *, tta: bool, taper: float = 0.0) -> ImageOutput:
        """Member ``key``'s output for image i: the plain view, or both (tta) with the mean probability.

        ``taper`` > 0: scores multiplied by ``size_taper`` with min side ``taper`` x the image's longer side
        (the letterbox scale maps it to the same fraction of the model input) and, for a detector whose
        probability is its top box score, the probability recomputed as the tapered top score."""
        from pneumo.models.maskrcnn import size_taper

        n_views = VIEWS if tta else 1
        views, probs = [], []
        for v in range(n_views):
            b = self.boxes[key][v][i].copy()
            p = float(self.probs[key][i, v])
            if taper > 0:
                b[:, 4] = (b[:, 4] * size_taper(b, taper * float(max(self.image_size[i])))).astype(np.float32)
                b = b[np.argsort(-b[:, 4], kind="stable")]
                p = float(b[:, 4].max()) if len(b) else 0.0
            views.append(b)
            probs.append(p)
        size = (int(self.image_size[i][0]), int(self.image_size[i][1]))
        return ImageOutput(float(np.mean(probs)), tuple(views), None, size, extra={"view_probabilities": tuple(probs)})

    # ------------------------------------------------------------------ npz

    def save(self, path: str | Path) -> Path:
        from pneumo.files import atomic_write

        arrays: dict[str, np.ndarray] = {
            "patient_ids": np.array(self.patient_ids, dtype=str),
            "keys": np.array(self.keys, dtype=str),
            "image_size": self.image_size,
            "done": self.done,
        }
        arrays.update(_pack("gt", self.gt))
        for key in self.keys:
            arrays[f"{key}/probs"] = self.probs[key]
            for v in range(VIEWS):
                arrays.update(_pack(f"{key}/view{v}", self.boxes[key][v]))
        with atomic_write(path, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "HeldoutOutputs":
        with np.load(path, allow_pickle=False) as data:
            keys = [str(k) for k in data["keys"]]
            out = cls([str(p) for p in data["patient_ids"]], _unpack(data, "gt", 4), keys)
            for key in keys:
                out.probs[key] = data[f"{key}/probs"]
                out.boxes[key] = [_unpack(data, f"{key}/view{v}", 5) for v in range(VIEWS)]
            out.image_size = data["image_size"]
            out.done = data["done"]
        return out


def _pack(name: str, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    offsets = np.cumsum([0] + [len(a) for a in arrays]).astype(np.int64)
    width = arrays[0].shape[1] if arrays else 5
    values = np.concatenate(arrays).astype(np.float32) if arrays else np.zeros((0, width), np.float32)
    return {f"{name}/values": values, f"{name}/offsets": offsets}


def _unpack(data, name: str, width: int) -> list[np.ndarray]:
    values, offsets = data[f"{name}/values"].reshape(-1, width), data[f"{name}/offsets"]
    return [values[offsets[i]: offsets[i + 1]] for i in range(len(offsets) - 1)]
