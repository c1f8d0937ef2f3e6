"""``OnnxModel``: an exported model run by ONNX Runtime, answering ``infer`` like the ``PneumoModel`` it came from.

Threads: ``intra_op_num_threads`` = ``num_threads`` (the service passes its own thread count, so torch and ONNX
Runtime use the same number of cores), ``inter_op_num_threads`` = 1 and sequential execution (these graphs
are chains; parallel branches only add contention on a few cores), and no spin-waiting between operators
(``allow_spinning`` 0): on the shared 2-core machine DenseNet-121 @ 224 px took 114 ms with 2 spinning-off
threads vs 157 ms spinning (78 vs 84 ms with 1 thread), and idle threads that spin steal the cores the
decoding workers need. ORT's own warnings are silenced below error level: it warns on every Mask R-CNN run
that a data-dependent output shape differs from the traced one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.errors import CheckpointError
from pneumo.export.decoders import INPUT_NAME, decoder
from pneumo.export.metadata import OnnxMetadata, check_fresh
from pneumo.types import RawOutput


def default_threads() -> int:
    """CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class OnnxModel:
    """An exported pneumo model.

    path: the ``.onnx`` file. checkpoint: its source checkpoint; when given, an export made from another
    version of that file is refused (``CheckpointError``). num_threads: ORT intra-op threads (None: all CPUs
    this process may use).
    """

    def __init__(self, path: str | Path, *, checkpoint: str | Path | None = None, num_threads: int | None = None) -> None:
        import onnxruntime as ort

        from pneumo.config import apply_values

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"ONNX file {self.path} does not exist; run `pneumo export --model MODEL --format onnx`")
        self.num_threads = int(num_threads) if num_threads else default_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # ORT raises its own exception types for corrupt/invalid graphs
            raise CheckpointError(f"{self.path} is not a loadable ONNX model ({type(error).__name__}); re-export it") from error
        self.metadata = OnnxMetadata.from_props(self.session.get_modelmeta().custom_metadata_map, where=str(self.path))
        if checkpoint is not None:
            check_fresh(self.metadata, checkpoint, self.path)
        self.family = self.metadata.family
        self.adapter = decoder(self.family)
        layout = int(self.metadata.graph.get("layout", 1))
        if layout != self.adapter.layout:
            raise CheckpointError(
                f"{self.path} has graph layout {layout}, this pneumo version reads {self.family} layout "
                f"{self.adapter.layout}; re-export it: `pneumo export --model {checkpoint or 'CHECKPOINT.pt'} --format onnx`"
            )
        try:
            self.config: Any = apply_values(self.adapter.config(), dict(self.metadata.config))
        except Exception as error:
            raise CheckpointError(f"{self.path}: its {self.family} config does not fit this pneumo version ({error})") from error
        self.size = self.metadata.size
        self._outputs = list(self.adapter.outputs)

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """Raw graph outputs (see ``pneumo.export.families``) for float32 images (B, 1, S, S) in [0, 1]."""
        return self.session.run(self._outputs, {INPUT_NAME: images})

    def infer(self, images: Any) -> list[RawOutput]:
        """(B, 1, S, S) float32 in [0, 1] (numpy array or torch tensor) -> one RawOutput per image, in
        model-input pixels, post-processed by the family's own function (same as the torch model's ``infer``)."""
        if hasattr(images, "detach"):  # a torch tensor
            images = images.detach().cpu().numpy()
        batch = np.ascontiguousarray(images, dtype=np.float32)
        check_input_array(batch)
        if batch.shape[-2:] != (self.size, self.size):
            raise ValueError(
                f"this {self.family} export takes {self.size} x {self.size} px inputs, got {batch.shape[-2]} x {batch.shape[-1]}"
            )
        if batch.shape[0] == 0:
            return []
        return self.adapter.decode(self.run, batch, self.config)


def check_input_array(batch: np.ndarray) -> None:
    """The model-input contract of ``pneumo.preprocess.check_model_input`` on a numpy batch: ``ValueError``
    unless (B, 1, H, W) with values in [0, 1]. Checked in numpy: torch's threaded min/max cost ~10 ms per call
    on the busy 2-core machine (OpenMP wake-ups), more than the rest of the classifier's pre-processing."""
    if batch.ndim != 4 or batch.shape[1] != 1:
        raise ValueError(f"model input must be (B, 1, H, W), got {tuple(batch.shape)}")
    if batch.size:
        low, high = float(batch.min()), float(batch.max())
        if low < -1e-3 or high > 1.001:
            raise ValueError(
                f"model input must be in [0, 1] (got [{low:.3g}, {high:.3g}]); "
                "pass XRay.pixels through Preprocessor, not raw DICOM values"
            )
