"""ONNX export of checkpoints and the ONNX Runtime inference backend.

* ``decoders``  - per family, torch-free: the graph's output names and how its ONNX outputs become
  ``RawOutput``s through the family's own decoding (``pneumo.decode``): what serving needs;
* ``families``  - per family: the graph that is exported (a thin ``nn.Module`` around the torch model);
* ``metadata``  - the ``pneumo.*`` ``metadata_props`` that make an ``.onnx`` file self-describing;
* ``exporter``  - ``export_checkpoint`` (used by ``pneumo export``; needs torch, the ``train`` extra);
* ``runtime``   - ``OnnxModel``: an ``onnxruntime.InferenceSession`` answering ``infer(images)`` like the
  ``PneumoModel`` it came from;
* ``predictor`` - the ``InferenceService`` seam: picks torch or ONNX per family (see
  docs/decisions/0005-onnx-backend.md).

Nothing here imports onnx/onnxruntime (or torch) at package import time.
"""

#: inference backends (``InferenceService(backend=...)``): "auto" (ONNX Runtime where an up-to-date export exists
#: on the CPU, else PyTorch), "torch", "onnx" (every checkpoint from its export); see ``predictor``
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")
