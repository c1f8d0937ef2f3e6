"""The ONNX side of ``InferenceService``'s backend seam: which backend runs a checkpoint, and the predictor.

Backends (``InferenceService(backend=...)``):

* ``"torch"``: every checkpoint with PyTorch.
* ``"onnx"``: every checkpoint with ONNX Runtime from its export ``<checkpoint stem>.onnx`` beside it; a
  missing or stale export is an error (``CheckpointError``) telling the user to run ``pneumo export``.
* ``"auto"``: per family, the backend measured faster on CPU (``PREFERRED_BACKENDS``, from bench/RESULTS.md and
  docs/decisions/0005-onnx-backend.md), where that is ONNX and an up-to-date export exists; otherwise torch.
  A stale export is skipped with a logged warning (never used).

``OnnxPredictor`` is a ``CheckpointPredictor`` whose model is an ``OnnxModel``: the same preprocessing, TTA,
mapping to original pixels and thresholds, so the two backends differ only in the network's arithmetic.
It reports the same ``version`` as the torch predictor of that checkpoint (same weights, same sha) and adds
``extra["backend"] = "onnx"`` to its Predictions.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pneumo.errors import CheckpointError, ConfigError
from pneumo.export.exporter import onnx_path_for
from pneumo.inference.calibrated import checkpoint_calibrator
from pneumo.inference.predictors import CheckpointPredictor, ModelInfo, Predictor, normalise_thresholds
from pneumo.types import Prediction, XRay

log = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")
#: the faster backend per family on the 2-core CPU machine at serving sizes (bench/RESULTS.md, "Backends";
#: docs/decisions/0005-onnx-backend.md): ONNX Runtime for all three (Mask R-CNN only ~5 % faster with 1 thread,
#: but several times faster with 2 threads on a busy machine, where PyTorch's OpenMP threads stall)
PREFERRED_BACKENDS: dict[str, str] = {"chexnet": "onnx", "unet": "onnx", "maskrcnn": "onnx"}


class OnnxPredictor(CheckpointPredictor):
    """A checkpoint run from its ONNX export. ``path``: the checkpoint (.pt); ``onnx_path``: its export."""

    def __init__(self, path: Path, name: str, onnx_path: Path, card: Path | None = None,
                 num_threads: int | None = None) -> None:
        import torch

        from pneumo.export.runtime import OnnxModel
        from pneumo.models.checkpoint import read_checkpoint_meta
        from pneumo.preprocess import Preprocessor

        self.model = OnnxModel(onnx_path, checkpoint=path, num_threads=num_threads)  # refuses a stale export
        metadata = self.model.metadata
        self.onnx_path = Path(onnx_path)
        self.device = torch.device("cpu")
        self.preprocessor = Preprocessor.from_dict(metadata.preprocess) if metadata.preprocess else Preprocessor()
        self.thresholds = normalise_thresholds(metadata.thresholds)
        self.raw_thresholds = dict(metadata.thresholds)
        self.family = metadata.family
        self.meta = read_checkpoint_meta(path)
        self.config = self.model.config
        self.sha256 = metadata.source_sha256
        code = metadata.code_version.get("pneumo") or "unknown"
        self.info = ModelInfo(
            name=name, family=metadata.family, version=f"{metadata.family}-{code}+{self.sha256[:8]}", path=Path(path),
            metrics=dict(metadata.metrics), thresholds=self.thresholds, card=card,
        )
        self.calibrator = checkpoint_calibrator(path, self.meta, self.sha256)
        if self.calibrator is not None:
            self.info.metrics["calibration"] = self.calibrator.to_dict()
        self._autograd = False
        self._lock = threading.Lock()

    def _infer(self, batch: np.ndarray) -> list:
        with self._lock:  # one inference at a time per model, like the torch predictor (ORT threads do the rest)
            return self.model.infer(batch[:, None])

    def predict(self, xrays: Sequence[XRay], *, tta: bool | None = None, heatmap: bool = True) -> list[Prediction]:
        return [dataclasses.replace(p, extra={**p.extra, "backend": "onnx"})
                for p in super().predict(xrays, tta=tta, heatmap=heatmap)]


def checkpoint_family(path: Path) -> str | None:
    """The family a checkpoint declares (reads its metadata only), or None if unreadable."""
    from pneumo.models.checkpoint import read_checkpoint_meta

    try:
        return str(read_checkpoint_meta(path).get("family"))
    except CheckpointError:
        return None


def onnx_predictor(path: Path, name: str, *, backend: str, device: str = "cpu", card: Path | None = None,
                   num_threads: int | None = None) -> Predictor | None:
    """An ``OnnxPredictor`` for the checkpoint at ``path`` when ``backend`` says so, else None (use torch).

    ``backend="onnx"`` raises ``CheckpointError`` when the export is missing or stale and ``ConfigError`` for a
    non-CPU device; ``"auto"`` falls back to torch in those cases.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"inference backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "torch":
        return None
    onnx_file = onnx_path_for(path)
    if backend == "onnx":
        if device != "cpu":
            raise ConfigError(f"the onnx backend runs on the CPU only; got device {device!r} (use backend 'torch')")
        if not onnx_file.is_file():
            raise CheckpointError(
                f"{path.name} has no ONNX export ({onnx_file} is missing); run `pneumo export --model {path} --format onnx` "
                "or use the torch backend"
            )
        return OnnxPredictor(path, name, onnx_file, card=card, num_threads=num_threads)
    # auto
    if device != "cpu" or not onnx_file.is_file() or PREFERRED_BACKENDS.get(checkpoint_family(path) or "") != "onnx":
        return None
    try:
        return OnnxPredictor(path, name, onnx_file, card=card, num_threads=num_threads)
    except CheckpointError as error:
        log.warning("not using the ONNX export of %s (%s); running it with torch", path.name, error)
        return None
