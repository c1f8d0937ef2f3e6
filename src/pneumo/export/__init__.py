"""ONNX export of checkpoints and the ONNX Runtime inference backend.

* ``families``  - per family: the graph that is exported (a thin ``nn.Module`` around the torch model) and
  how ONNX outputs become ``RawOutput``s through the family's own post-processing function;
* ``metadata``  - the ``pneumo.*`` ``metadata_props`` that make an ``.onnx`` file self-describing;
* ``exporter``  - ``export_checkpoint`` (used by ``pneumo export``);
* ``runtime``   - ``OnnxModel``: an ``onnxruntime.InferenceSession`` answering ``infer(images)`` like the
  ``PneumoModel`` it came from;
* ``predictor`` - the ``InferenceService`` seam: picks torch or ONNX per family (see
  docs/decisions/0005-onnx-backend.md).

Nothing here imports onnx/onnxruntime (or torch) at package import time.
"""

#: inference backends (``InferenceService(backend=...)``): "auto" (ONNX Runtime where an up-to-date export exists
#: on the CPU, else PyTorch), "torch", "onnx" (every checkpoint from its export); see ``predictor``
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")
