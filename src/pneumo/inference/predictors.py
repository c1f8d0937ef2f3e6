"""Predictors: one loaded model each (a checkpoint, an ensemble spec, the trivial baseline), all answering
``outputs`` (unthresholded, original pixels) and ``predict`` (``Prediction``s at the model's operating point).

``InferenceService`` creates and caches them; nothing else should build one for users.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.errors import InvalidImageError
from pneumo.files import file_sha256
from pneumo.inference.calibrated import checkpoint_calibrator, prediction_extra, shown, shown_thresholds
from pneumo.inference.common import flip_boxes_horizontally, make_prediction
from pneumo.postprocess import clip_boxes, mean_heatmap
from pneumo.types import ImageOutput, Prediction, Thresholds, XRay

#: families whose ``infer`` needs autograd (Grad-CAM), so it cannot run under ``torch.inference_mode``;
#: a model class can also declare ``infer_needs_autograd = True``
AUTOGRAD_FAMILIES = frozenset({"chexnet"})


@dataclass(frozen=True)
class ModelInfo:
    """What a front end may show about a model. ``version`` = family-codeversion+sha prefix."""

    name: str
    family: str
    version: str
    path: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    thresholds: Thresholds = field(default_factory=Thresholds)
    card: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "family": self.family, "version": self.version, "path": str(self.path),
            "metrics": self.metrics, "thresholds": self.thresholds.to_dict(),
            "card": None if self.card is None else str(self.card),
        }


def _ms(seconds: float) -> float:
    return seconds * 1000.0


class Predictor(ABC):
    """One loaded model. ``outputs`` and ``predict`` take a batch of XRays; both are thread-safe."""

    info: ModelInfo
    default_tta: bool = False
    #: maps the raw probability to the one ``predict`` shows (``pneumo.inference.calibrated``); None: raw
    calibrator = None

    @property
    def name(self) -> str:
        return self.info.name

    @abstractmethod
    def outputs(self, xrays: Sequence[XRay], *, tta: bool | None = None,
                heatmap: bool = True) -> tuple[list[ImageOutput], list[dict[str, float]]]:
        """-> (one unthresholded ImageOutput per image, per-image timings in ms)."""

    @abstractmethod
    def predict(self, xrays: Sequence[XRay], *, tta: bool | None = None, heatmap: bool = True) -> list[Prediction]:
        """-> one Prediction per image at the model's operating point."""


def _check_xray(xray: XRay) -> None:
    pixels = getattr(xray, "pixels", None)
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 2 or pixels.size == 0:
        raise InvalidImageError(f"expected an XRay with (H, W) pixels, got {getattr(pixels, 'shape', type(pixels))}")


class CheckpointPredictor(Predictor):
    """A ``pneumo.models.checkpoint`` file run with PyTorch.

    Pipeline per batch: ``Preprocessor`` from the checkpoint -> float32 (B, 1, S, S) tensor (with the flipped
    copies appended for TTA) -> ``model.infer`` under ``torch.inference_mode`` (``no_grad`` for Grad-CAM
    families) -> boxes un-flipped, mapped to original pixels with ``GeometryRecord.to_original``, heatmaps
    cropped to the image content -> the checkpoint's thresholds (``predict``).

    Inference on one model is serialised by a lock (models may keep per-call state, e.g. Grad-CAM; intra-op
    threads parallelise each call); pre- and post-processing run concurrently.
    """

    def __init__(self, path: Path, name: str, device: str = "cpu", card: Path | None = None) -> None:
        import torch

        from pneumo.models.checkpoint import load_checkpoint
        from pneumo.preprocess import Preprocessor

        loaded = load_checkpoint(path, map_location=device)
        self.model = loaded.model.eval()
        self.device = torch.device(device)
        self.preprocessor = Preprocessor.from_dict(loaded.preprocess)  # load_checkpoint refused one without it
        self.thresholds = Thresholds.from_dict(loaded.thresholds)
        self.raw_thresholds = dict(loaded.thresholds)
        self.family = loaded.family
        self.meta = loaded.meta
        self.config = loaded.config
        self.sha256 = file_sha256(Path(path))
        code = (loaded.meta.get("code_version") or {}).get("pneumo") or "unknown"
        self.info = ModelInfo(
            name=name, family=loaded.family, version=f"{loaded.family}-{code}+{self.sha256[:8]}", path=Path(path),
            metrics=dict(loaded.metrics), thresholds=self.thresholds, card=card,
        )
        self.calibrator = checkpoint_calibrator(path, self.sha256)
        if self.calibrator is not None:
            self.info.metrics["calibration"] = self.calibrator.to_dict()
        needs_grad = getattr(type(self.model), "infer_needs_autograd", None)
        self._autograd = bool(needs_grad) if needs_grad is not None else loaded.family in AUTOGRAD_FAMILIES
        self._lock = threading.Lock()

    def _context(self):
        import torch

        return torch.no_grad() if self._autograd else torch.inference_mode()

    def _infer(self, batch: np.ndarray) -> list:
        import torch

        tensor = torch.from_numpy(batch)[:, None].to(self.device)
        with self._lock, self._context():
            return self.model.infer(tensor)

    def outputs(self, xrays: Sequence[XRay], *, tta: bool | None = None,
                heatmap: bool = True) -> tuple[list[ImageOutput], list[dict[str, float]]]:
        if not xrays:
            return [], []
        tta = self.default_tta if tta is None else tta
        t0 = time.perf_counter()
        canvases, geometries = [], []
        for xray in xrays:
            _check_xray(xray)
            canvas, geometry = self.preprocessor(np.asarray(xray.pixels, dtype=np.float32))
            canvases.append(canvas)
            geometries.append(geometry)
        batch = np.stack(canvases)
        if tta:
            batch = np.concatenate([batch, batch[:, :, ::-1]])
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        t1 = time.perf_counter()
        raws = self._infer(batch)
        t2 = time.perf_counter()
        n, size = len(xrays), self.preprocessor.size
        results = []
        for i, (xray, geometry) in enumerate(zip(xrays, geometries)):
            views_input = [raws[i].boxes]
            heats = [raws[i].heatmap]
            probs = [float(raws[i].probability)]
            if tta:
                flipped = raws[n + i]
                views_input.append(flip_boxes_horizontally(flipped.boxes, size))
                heats.append(None if flipped.heatmap is None else np.ascontiguousarray(flipped.heatmap[:, ::-1]))
                probs.append(float(flipped.probability))
            views = tuple(
                clip_boxes(geometry.to_original(np.asarray(v, dtype=np.float32).reshape(-1, 5)),
                           xray.original_size, drop_empty=True)
                for v in views_input
            )
            heat = None
            if heatmap:
                fused = mean_heatmap(heats)
                heat = None if fused is None else np.ascontiguousarray(geometry.crop_to_content(fused))
            results.append(ImageOutput(float(np.mean(probs)), views, heat, xray.original_size,
                                       extra={"view_probabilities": tuple(probs)}))
        t3 = time.perf_counter()
        timing = {"preprocess": _ms(t1 - t0) / n, "inference": _ms(t2 - t1) / n, "postprocess": _ms(t3 - t2) / n}
        return results, [dict(timing) for _ in range(n)]

    def predict(self, xrays: Sequence[XRay], *, tta: bool | None = None, heatmap: bool = True) -> list[Prediction]:
        outputs, timings = self.outputs(xrays, tta=tta, heatmap=heatmap)
        predictions = []
        for output, timing in zip(outputs, timings):
            t0 = time.perf_counter()
            boxes = self.thresholds.apply(output.probability, output.boxes(), output.image_size)
            timing = {**timing, "postprocess": timing["postprocess"] + _ms(time.perf_counter() - t0)}
            predictions.append(make_prediction(
                probability=shown(self.calibrator, output.probability), boxes=boxes, heatmap=output.heatmap,
                model=self.info.name, model_version=self.info.version, image_size=output.image_size,
                timing_ms=timing, thresholds=shown_thresholds(self.calibrator, self.thresholds),
                extra={"tta": bool(len(output.views) > 1), **prediction_extra(self.calibrator, output.probability)},
            ))
        return predictions


class EnsemblePredictor(Predictor):
    """An ``ensemble.json`` spec over member predictors (``pneumo.ensemble`` does the fusion).

    ``resolve(member_model_string, base_dir)`` returns the member's (cached) predictor.
    """

    def __init__(self, path: Path, name: str, resolve: Callable[[str, Path | None], Predictor],
                 card: Path | None = None) -> None:
        from pneumo.ensemble import EnsembleSpec

        self.spec = EnsembleSpec.load(path)
        self.members: dict[str, Predictor] = {key: resolve(key, self.spec.base_dir) for key in self.spec.model_keys}
        self.thresholds = self.spec.fusion.thresholds
        self.default_tta = self.spec.fusion.tta_flip
        from pneumo import __version__

        self.calibrator = self.spec.calibrator
        self.info = ModelInfo(
            name=name, family="ensemble", version=f"ensemble-{__version__}+{self.spec.sha256[:8]}", path=Path(path),
            metrics=dict(self.spec.tuning or {}), thresholds=self.thresholds, card=card,
        )
        if self.calibrator is not None:
            self.info.metrics["calibration"] = self.calibrator.to_dict()

    def member_outputs(self, xrays: Sequence[XRay], *, tta: bool | None = None, heatmap: bool = True
                       ) -> tuple[dict[str, list[ImageOutput]], list[dict[str, float]]]:
        """Every member's unthresholded outputs -> ({member key: outputs per image}, summed timings per image)."""
        tta = self.default_tta if tta is None else tta
        outputs: dict[str, list[ImageOutput]] = {}
        timings = [{"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0} for _ in xrays]
        for key, member in self.members.items():
            outputs[key], member_timings = member.outputs(xrays, tta=tta, heatmap=heatmap)
            for total, part in zip(timings, member_timings):
                for k, v in part.items():
                    total[k] = total.get(k, 0.0) + v
        return outputs, timings

    def _fused(self, xrays: Sequence[XRay], tta: bool | None, heatmap: bool):
        from pneumo.ensemble import fuse

        outputs, timings = self.member_outputs(xrays, tta=tta, heatmap=heatmap)
        fused = []
        for i, timing in enumerate(timings):
            t0 = time.perf_counter()
            fused.append(fuse(self.spec, {k: v[i] for k, v in outputs.items()}))
            timing["postprocess"] += _ms(time.perf_counter() - t0)
        return fused, timings, outputs

    def outputs(self, xrays: Sequence[XRay], *, tta: bool | None = None,
                heatmap: bool = True) -> tuple[list[ImageOutput], list[dict[str, float]]]:
        """The fused answer as an ImageOutput (its boxes are already gated, thresholded and shrunk)."""
        fused, timings, _ = self._fused(xrays, tta, heatmap)
        return [ImageOutput(f.probability, (f.boxes,), f.heatmap, x.original_size) for f, x in zip(fused, xrays)], timings

    def predict(self, xrays: Sequence[XRay], *, tta: bool | None = None, heatmap: bool = True) -> list[Prediction]:
        fused, timings, outputs = self._fused(xrays, tta, heatmap)
        predictions = []
        for i, (f, xray, timing) in enumerate(zip(fused, xrays, timings)):
            members = {k: round(float(v[i].probability), 6) for k, v in outputs.items()}
            predictions.append(make_prediction(
                probability=shown(self.calibrator, f.probability), boxes=f.boxes,
                heatmap=f.heatmap if heatmap else None, model=self.info.name, model_version=self.info.version,
                image_size=xray.original_size, timing_ms=timing,
                thresholds=shown_thresholds(self.calibrator, self.thresholds),
                extra={"member_probabilities": members, "tta": bool(self.default_tta if tta is None else tta),
                       **prediction_extra(self.calibrator, f.probability)},
            ))
        return predictions


class BaselinePredictor(Predictor):
    """The trivial comparison model (``pneumo.inference.baseline``): fixed boxes, constant probability."""

    def __init__(self, path: Path, name: str, card: Path | None = None) -> None:
        from pneumo import __version__
        from pneumo.inference.baseline import BaselineSpec

        self.spec = BaselineSpec.load(path)
        self.thresholds = Thresholds(probability=float(self.spec.probability))
        self.info = ModelInfo(
            name=name, family="baseline", version=f"baseline-{__version__}+{self.spec.sha256[:8]}", path=Path(path),
            metrics={"n_train_images": self.spec.n_train_images}, thresholds=self.thresholds, card=card,
        )

    def outputs(self, xrays: Sequence[XRay], *, tta: bool | None = None,
                heatmap: bool = True) -> tuple[list[ImageOutput], list[dict[str, float]]]:
        results = []
        for xray in xrays:
            _check_xray(xray)
            results.append(ImageOutput(self.spec.probability, (self.spec.boxes_for(xray.original_size),), None,
                                       xray.original_size))
        return results, [{"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0} for _ in xrays]

    def predict(self, xrays: Sequence[XRay], *, tta: bool | None = None, heatmap: bool = True) -> list[Prediction]:
        outputs, timings = self.outputs(xrays)
        return [
            make_prediction(probability=o.probability, boxes=o.views[0], heatmap=None, model=self.info.name,
                            model_version=self.info.version, image_size=o.image_size, timing_ms=t,
                            thresholds=self.thresholds)
            for o, t in zip(outputs, timings)
        ]
