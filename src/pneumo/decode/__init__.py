"""The torch-free half of each model family: its config dataclass and the decoding of raw network outputs
(numpy arrays in model-input pixels) into ``RawOutput``s.

The torch models (``pneumo.models``) and the ONNX Runtime backend (``pneumo.export.runtime``) both call these
functions, so the two backends share one copy of the post-processing, and serving an ONNX export never imports
torch. Nothing here may import ``pneumo.models`` (checked by ``tests/unit/test_import_layers.py``).
"""
