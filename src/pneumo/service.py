"""``InferenceService``: the only code that runs models for users (CLI predict, console, API, web).

A model is named by a shipped name resolved in the model folder — ``unet``, ``maskrcnn``, ``chexnet``
(``<name>.pt``), ``ensemble`` (``ensemble.json``) and, where fitted, ``baseline`` (``baseline.json``) — or by a
path to a checkpoint (``.pt``) or spec (``.json``). The model folder is the ``model_dir`` argument, else
``$PNEUMO_MODEL_DIR`` (read when the service is built), else the repository's ``models/`` folder.

Models load once, lazily, and are cached (an ensemble shares its members with direct use). The service is
thread-safe: loading is serialised by a lock; concurrent ``predict`` calls are allowed.

Outputs are decision support, not a diagnosis. See docs/decisions/0001-interfaces.md.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from pneumo.errors import CheckpointError, ConfigError, UnknownModelError
from pneumo.export import BACKENDS  # torch-free: the ONNX machinery is imported on first use
from pneumo.inference.predictors import (
    BaselinePredictor,
    CheckpointPredictor,
    EnsemblePredictor,
    ModelInfo,
    Predictor,
)
from pneumo.types import ImageOutput, Prediction, XRay

__all__ = ["InferenceService", "ModelInfo", "SHIPPED_MODELS", "BACKENDS", "default_model_dir"]

#: shipped model names -> file name inside the model folder
SHIPPED_MODELS: dict[str, str] = {
    "unet": "unet.pt",
    "maskrcnn": "maskrcnn.pt",
    "chexnet": "chexnet.pt",
    "ensemble": "ensemble.json",
    "baseline": "baseline.json",
}
MODEL_DIR_ENV = "PNEUMO_MODEL_DIR"
BACKEND_ENV = "PNEUMO_BACKEND"
THREADS_ENV = "PNEUMO_TORCH_THREADS"


def default_model_dir() -> Path:
    """The repository's ``models/`` folder, found relative to the installed package."""
    import pneumo

    return Path(pneumo.__file__).resolve().parents[2] / "models"


class InferenceService:
    """Loads models on first use and answers ``predict`` calls.

    model_dir: folder of shipped models (None: ``$PNEUMO_MODEL_DIR``, else the repo's ``models/``).
    backend: ``"auto"`` (per family the backend measured faster: ONNX Runtime where an up-to-date
      ``<checkpoint>.onnx`` export exists, else PyTorch), ``"torch"`` or ``"onnx"`` (every checkpoint from
      its export; a missing or stale export raises ``CheckpointError``); None: ``$PNEUMO_BACKEND``, else
      ``"auto"``. See ``pneumo.export.predictor``.
    device: torch device for checkpoints (``"cpu"``, ``"cuda"``).
    num_threads: intra-op threads of every ONNX Runtime session, and of torch (set process-wide when the first
      torch model loads; None: ``$PNEUMO_TORCH_THREADS``, else the number of CPUs this process may use).
      With ONNX exports (``backend="onnx"``, or ``"auto"`` with up-to-date exports) nothing imports torch.
    check_content: ``read`` refuses inputs that are not plausible frontal chest radiographs
      (``pneumo.io.content``; docs/decisions/0010-out-of-distribution.md) before any model sees them.
    """

    def __init__(self, model_dir: str | Path | None = None, backend: str | None = None, *, device: str = "cpu",
                 num_threads: int | None = None, check_content: bool = True) -> None:
        if backend is None:
            backend = os.environ.get(BACKEND_ENV, "").strip() or "auto"
        if backend not in BACKENDS:
            raise ConfigError(
                f"inference backend {backend!r} is not available in this build; supported: {', '.join(BACKENDS)}"
            )
        if model_dir is None:
            env = os.environ.get(MODEL_DIR_ENV, "").strip()
            model_dir = Path(env) if env else default_model_dir()
        self.model_dir = Path(model_dir).expanduser()
        self.backend = backend
        self.device = device
        self.check_content = check_content
        self.num_threads = self._set_threads(num_threads)
        self._cache: dict[str, Predictor] = {}
        self._lock = threading.RLock()  # re-entrant: loading an ensemble loads its members

    # ------------------------------------------------------------------ set-up

    @staticmethod
    def _set_threads(num_threads: int | None) -> int:
        """The thread count (argument, ``$PNEUMO_TORCH_THREADS`` or the CPUs this process may use). It is
        handed to ONNX Runtime per session and to torch only when a torch model loads (``_torch_threads``),
        so a service that serves ONNX exports never imports torch."""
        if num_threads is None:
            env = os.environ.get(THREADS_ENV, "").strip()
            if env:
                try:
                    num_threads = int(env)
                except ValueError:
                    raise ConfigError(f"${THREADS_ENV} must be a whole number, got {env!r}") from None
            else:
                num_threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if num_threads < 1:
            raise ConfigError(f"num_threads must be at least 1, got {num_threads}")
        return num_threads

    def _torch_threads(self) -> None:
        """Set torch's intra-op threads process-wide to the service's count (before the first torch model runs)."""
        from pneumo.extras import require_torch

        torch = require_torch("running a checkpoint with the torch backend")
        if torch.get_num_threads() != self.num_threads:
            torch.set_num_threads(self.num_threads)

    # ------------------------------------------------------------------ names

    def _card(self, name: str) -> Path | None:
        card = self.model_dir / f"{name}.md"
        return card if card.is_file() else None

    def installed_names(self) -> list[str]:
        """Shipped names whose file exists in the model folder."""
        return [name for name, file in SHIPPED_MODELS.items() if (self.model_dir / file).is_file()]

    def resolve(self, model: str | Path, base_dir: Path | None = None) -> tuple[str, Path]:
        """A model name or path -> (display name, absolute file path), without loading it. ``base_dir``: where
        an ensemble's member names/paths live. Raises ``UnknownModelError`` / ``CheckpointError``."""
        if not isinstance(model, (str, Path)) or not str(model).strip():
            raise UnknownModelError(f"a model name or checkpoint path is required; available: {self._available_text()}")
        text = str(model).strip()
        folder = self.model_dir if base_dir is None else base_dir
        if text in SHIPPED_MODELS:
            path = folder / SHIPPED_MODELS[text]
            if not path.is_file():
                raise CheckpointError(
                    f"model {text!r} is not installed: {path} does not exist; available: {self._available_text()} "
                    f"(set --model-dir / ${MODEL_DIR_ENV}, or train/export it)"
                )
            return text, path.resolve()
        path = Path(text).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if path.is_file():
            return path.stem, path.resolve()
        if path.suffix.lower() in (".pt", ".pth", ".json") or os.sep in text:
            raise CheckpointError(f"checkpoint {text} does not exist; available models: {self._available_text()}")
        raise UnknownModelError(f"unknown model {text!r}; available: {self._available_text()}")

    def _available_text(self) -> str:
        names = self.installed_names()
        return ", ".join(names) if names else f"none installed in {self.model_dir}"

    # ------------------------------------------------------------------ loading

    def _create(self, name: str, path: Path) -> Predictor:
        card = self._card(name)
        if path.suffix.lower() == ".json":
            kind = _spec_type(path)
            if kind == "ensemble":
                return EnsemblePredictor(path, name, lambda member, base: self._get(member, base), card=card)
            if kind == "baseline":
                return BaselinePredictor(path, name, card=card)
            raise ConfigError(f"{path}: unknown model spec type {kind!r} (expected 'ensemble' or 'baseline')")
        if self.backend != "torch":
            from pneumo.export.predictor import onnx_predictor

            predictor = onnx_predictor(path, name, backend=self.backend, device=self.device, card=card,
                                       num_threads=self.num_threads)
            if predictor is not None:
                return predictor
        self._torch_threads()
        return CheckpointPredictor(path, name, device=self.device, card=card)

    def _get(self, model: str | Path, base_dir: Path | None = None) -> Predictor:
        name, path = self.resolve(model, base_dir)
        key = str(path)
        predictor = self._cache.get(key)
        if predictor is not None:
            return predictor
        with self._lock:
            predictor = self._cache.get(key)
            if predictor is None:
                predictor = self._create(name, path)
                self._cache[key] = predictor
        return predictor

    def load(self, model: str | Path = "ensemble") -> ModelInfo:
        """Load ``model`` now (instead of on the first predict) -> its ModelInfo."""
        return self._get(model).info

    def loaded_models(self) -> list[str]:
        """Paths of the models loaded so far (members of an ensemble included)."""
        return list(self._cache)

    def available_models(self) -> list[ModelInfo]:
        """Installed shipped models with their family, version, metrics, thresholds and card (loads each)."""
        infos = []
        for name in self.installed_names():
            try:
                infos.append(self._get(name).info)
            except (CheckpointError, ConfigError):
                continue  # a broken file is reported when someone asks for that model
        return infos

    def predictor(self, model: str | Path = "ensemble") -> Predictor:
        """The loaded predictor of ``model`` (for tuning and evaluation code)."""
        return self._get(model)

    # ------------------------------------------------------------------ prediction

    def predict(self, xray: XRay, model: str | Path = "ensemble", *, heatmap: bool = True,
                tta: bool | None = None) -> Prediction:
        """One image -> Prediction (probability, boxes in original pixels sorted by confidence, heatmap over the
        image, model and version, timings). ``tta``: horizontal-flip test-time augmentation (None: the model's
        default, i.e. the ensemble spec's ``tta_flip``, else off)."""
        return self.predict_batch([xray], model, heatmap=heatmap, tta=tta)[0]

    def predict_batch(self, xrays: Sequence[XRay], model: str | Path = "ensemble", *, heatmap: bool = True,
                      tta: bool | None = None) -> list[Prediction]:
        """Several images in one model call (same answers as one by one, up to float rounding)."""
        if not xrays:
            return []
        predictions = self._get(model).predict(list(xrays), tta=tta, heatmap=heatmap)
        return [_to_stored_size(p, x) for p, x in zip(predictions, xrays)]

    # ------------------------------------------------------------------ inputs

    def read(self, source: str | Path | bytes, **options: object) -> XRay:
        """The one input gate of every front end: decode with ``pneumo.io.read_xray`` (``options`` are its
        keyword arguments), then, when ``check_content`` is on, refuse an image that is not a plausible frontal
        chest radiograph (``NotChestRadiographError`` with the reason) before any model runs."""
        from pneumo.io import read_xray

        xray = read_xray(source, **options)  # type: ignore[arg-type]
        self.check(xray)
        return xray

    def check(self, xray: XRay) -> None:
        """The content check alone (a no-op when ``check_content`` is off)."""
        if self.check_content:
            from pneumo.io.content import check_radiograph_content

            check_radiograph_content(xray)

    def predict_source(self, source: str | Path | bytes, model: str | Path = "ensemble", *,
                       heatmap: bool = True, tta: bool | None = None) -> tuple[XRay, Prediction]:
        """Decode and check a DICOM/PNG/JPEG (path or bytes) with ``read``, then predict."""
        xray = self.read(source)
        return xray, self.predict(xray, model, heatmap=heatmap, tta=tta)

    def outputs(self, xrays: Sequence[XRay], model: str | Path, *, tta: bool | None = None,
                heatmap: bool = False) -> list[ImageOutput]:
        """Unthresholded outputs in original pixels (for threshold tuning and evaluation)."""
        if not xrays:
            return []
        return self._get(model).outputs(list(xrays), tta=tta, heatmap=heatmap)[0]


def _to_stored_size(prediction: Prediction, xray: XRay) -> Prediction:
    """Boxes of an image the reader reduced (``xray.full_size``) scaled back to the stored pixels."""
    if xray.full_size is None or tuple(xray.full_size) == tuple(prediction.image_size):
        return prediction
    import dataclasses

    from pneumo.types import Box

    (full_h, full_w), (h, w) = xray.full_size, prediction.image_size
    sy, sx = full_h / h, full_w / w
    boxes = tuple(Box(min(b.x1 * sx, full_w), min(b.y1 * sy, full_h), min(b.x2 * sx, full_w),
                      min(b.y2 * sy, full_h), b.confidence) for b in prediction.boxes)
    return dataclasses.replace(prediction, boxes=boxes, image_size=(int(full_h), int(full_w)))


def _spec_type(path: Path) -> str | None:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read model spec {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise ConfigError(f"model spec {path} is not valid JSON: {error.msg} (line {error.lineno})") from None
    return data.get("type") if isinstance(data, dict) else None
