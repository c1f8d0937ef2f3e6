"""The ONNX side of ``InferenceService``'s backend seam: which backend runs a checkpoint, and the predictor.

Backends (``InferenceService(backend=...)``):

* ``"torch"``: every checkpoint with PyTorch.
* ``"onnx"``: every checkpoint with ONNX Runtime from its export ``<checkpoint stem>.onnx`` beside it; a
  missing or stale export is an error (``CheckpointError``) telling the user to run ``pneumo export``.
* ``"auto"``: ONNX Runtime (measured faster on CPU for every family: bench/RESULTS.md and
  docs/decisions/0005-onnx-backend.md) where an up-to-date export exists and the device is the CPU; else torch.
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
from pneumo.export import BACKENDS
from pneumo.export.metadata import onnx_path_for
from pneumo.inference.calibrated import checkpoint_calibrator
from pneumo.inference.predictors import CheckpointPredictor, ModelInfo, Predictor
from pneumo.types import Prediction, Thresholds, XRay

log = logging.getLogger(__name__)

#: "auto" prefers ONNX Runtime for every family: it was measured faster for all three on the 2-core CPU machine
#: at serving sizes (bench/RESULTS.md, "Backends"; docs/decisions/0005-onnx-backend.md; Mask R-CNN only ~5 %
#: faster with 1 thread, but several times faster with 2 threads on a busy machine)


class OnnxPredictor(CheckpointPredictor):
    """A checkpoint run from its ONNX export. ``path``: the checkpoint (.pt); ``onnx_path``: its export.

    Torch-free: everything serving needs (family, config, preprocessing, thresholds, metrics, code version and
    the checkpoint file's sha256) comes from the export's own metadata; the freshness check hashes the .pt
    file's bytes without unpickling it. Only ``meta`` (the checkpoint's full metadata, for tuning and
    evaluation) reads the checkpoint, on first use.
    """

    def __init__(self, path: Path, name: str, onnx_path: Path, card: Path | None = None,
                 num_threads: int | None = None) -> None:
        from pneumo.export.runtime import OnnxModel
        from pneumo.preprocess import Preprocessor

        self.model = OnnxModel(onnx_path, checkpoint=path, num_threads=num_threads)  # refuses a stale export
        metadata = self.model.metadata
        self.path = Path(path)
        self.onnx_path = Path(onnx_path)
        self.device = "cpu"
        self.preprocessor = Preprocessor.from_dict(metadata.preprocess)
        self.thresholds = Thresholds.from_dict(metadata.thresholds)
        self.raw_thresholds = dict(metadata.thresholds)
        self.family = metadata.family
        self._meta: dict | None = None
        self.config = self.model.config
        self.sha256 = metadata.source_sha256
        code = metadata.code_version.get("pneumo") or "unknown"
        self.info = ModelInfo(
            name=name, family=metadata.family, version=f"{metadata.family}-{code}+{self.sha256[:8]}", path=Path(path),
            metrics=dict(metadata.metrics), thresholds=self.thresholds, card=card,
        )
        self.calibrator = checkpoint_calibrator(path, self.sha256)
        if self.calibrator is not None:
            self.info.metrics["calibration"] = self.calibrator.to_dict()
        self._autograd = False
        self._lock = threading.Lock()

    @property
    def meta(self) -> dict:
        """The checkpoint's metadata (training config, split, ...), read from the .pt file on first use: tuning
        and evaluation need it, serving does not (this is the only part of the ONNX path that imports torch)."""
        if self._meta is None:
            from pneumo.models.checkpoint import read_checkpoint_meta

            self._meta = read_checkpoint_meta(self.path)
        return self._meta

    def _infer(self, batch: np.ndarray) -> list:
        with self._lock:  # one inference at a time per model, like the torch predictor (ORT threads do the rest)
            return self.model.infer(batch[:, None])

    def predict(self, xrays: Sequence[XRay], *, tta: bool | None = None, heatmap: bool = True) -> list[Prediction]:
        return [dataclasses.replace(p, extra={**p.extra, "backend": "onnx"})
                for p in super().predict(xrays, tta=tta, heatmap=heatmap)]


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
    # auto: the family comes from the export's metadata (no torch: the checkpoint is hashed, never unpickled)
    if device != "cpu" or not onnx_file.is_file():
        return None
    try:
        return OnnxPredictor(path, name, onnx_file, card=card, num_threads=num_threads)
    except (CheckpointError, ConfigError) as error:
        log.warning("not using the ONNX export of %s (%s); running it with torch", path.name, error)
        return None
