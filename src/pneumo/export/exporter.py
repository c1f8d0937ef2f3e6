"""``export_checkpoint``: a pneumo checkpoint -> a self-describing ``.onnx`` file beside it.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)`` at opset 17. In torch 2.14 the
``dynamo=True`` exporter fails for every family here: ``torch.export`` cannot trace the model-input range check
(``check_model_input`` turns ``x.min()`` into a Python float, a data-dependent guard) nor torchvision's
Mask R-CNN. The tracer records the check as a no-op instead, so ``OnnxModel.infer`` runs the same check on its
input. Classifier and U-Net graphs have a dynamic batch axis; the detector graph takes one image.
The file is written atomically (``pneumo.files.atomic_path``) with the ``pneumo.*`` metadata of ``metadata``.
"""

from __future__ import annotations

import datetime as _dt
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pneumo.errors import CheckpointError
from pneumo.files import atomic_path, to_jsonable
from pneumo.export.families import INPUT_NAME, adapter
from pneumo.export.metadata import OnnxMetadata, onnx_path_for

__all__ = ["ExportReport", "export_checkpoint", "onnx_path_for", "OPSET", "VERIFY_TOLERANCE"]

OPSET = 17
#: largest |torch - onnx| allowed on the float outputs by the check right after export
VERIFY_TOLERANCE = 1e-3


@dataclass
class ExportReport:
    """What ``export_checkpoint`` did: output path, family, seconds taken, file size, and the largest
    |torch - ONNX| difference per float output on a check input (empty if not verified)."""

    path: Path
    family: str
    seconds: float
    size_bytes: int
    max_abs_diff: dict[str, float] = field(default_factory=dict)


def _example(size: int, batch: int, seed: int = 0) -> torch.Tensor:
    """A deterministic (batch, 1, size, size) input in [0, 1]: smooth structure plus noise (no global RNG)."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = 0.35 + 0.3 * torch.exp(-((xx - 0.35) ** 2 + (yy - 0.5) ** 2) / 0.02)
    noise = torch.rand((batch, 1, size, size), generator=gen) * 0.2
    return (base + noise).clamp(0, 1)


def export_checkpoint(checkpoint: str | Path, output: str | Path | None = None, *, verify: bool = True,
                      opset: int = OPSET) -> ExportReport:
    """Export ``checkpoint`` to ONNX at ``output`` (default ``onnx_path_for(checkpoint)``).

    verify: run the new file with ONNX Runtime on a check input and compare with torch; a difference above
    ``VERIFY_TOLERANCE`` raises ``CheckpointError`` and leaves no file behind.
    """
    import onnx

    from pneumo.files import file_sha256
    from pneumo.models.checkpoint import load_checkpoint
    from pneumo.preprocess import Preprocessor

    start = time.perf_counter()
    checkpoint = Path(checkpoint)
    loaded = load_checkpoint(checkpoint)
    family_adapter = adapter(loaded.family)
    output = Path(output) if output is not None else onnx_path_for(checkpoint)
    size = Preprocessor.from_dict(loaded.preprocess).size  # load_checkpoint refused one without it
    graph = family_adapter.graph(loaded.model).eval()
    example = _example(size, 2 if family_adapter.dynamic_batch else 1)
    names = list(family_adapter.outputs)
    axes = {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}} if family_adapter.dynamic_batch else \
        {n: {0: "detections"} for n in names}

    # the export is as readable as its checkpoint; nothing lands at `output` unless verification passes
    with atomic_path(output, permissions=checkpoint.stat().st_mode & 0o7777) as tmp:
        with torch.no_grad(), warnings.catch_warnings():
            # the tracer warns about every Python-level shape/branch decision (and that it is the legacy
            # exporter); the graph is checked against torch below instead
            warnings.simplefilter("ignore")
            torch.onnx.export(
                graph, (example,), str(tmp), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=names, dynamic_axes=axes, do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        metadata = OnnxMetadata(
            family=loaded.family,
            config=to_jsonable(loaded.meta.get("config") or {}),
            preprocess=dict(loaded.preprocess),
            thresholds=dict(loaded.thresholds),
            metrics=dict(loaded.metrics),
            source_sha256=file_sha256(checkpoint),
            state_dict_sha256=str(loaded.meta.get("state_dict_sha256", "")),
            source_name=checkpoint.name,
            code_version=dict(loaded.meta.get("code_version") or {}),
            graph=_graph_info(opset, names, family_adapter.dynamic_batch, size, family_adapter.heatmap,
                              family_adapter.layout),
        )
        del proto.metadata_props[:]
        for key, value in metadata.to_props().items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = f"pneumo {loaded.family} model exported from {checkpoint.name}; decision support, not a diagnosis"
        onnx.save(proto, str(tmp))
        diffs = _verify(tmp, graph, size, family_adapter.dynamic_batch, names) if verify else {}
        bad = {k: v for k, v in diffs.items() if not v <= VERIFY_TOLERANCE}
        if bad:
            raise CheckpointError(
                f"ONNX export of {checkpoint.name} disagrees with torch ({bad}); the export is not usable, nothing written"
            )
    return ExportReport(output, loaded.family, time.perf_counter() - start, output.stat().st_size, diffs)


def _graph_info(opset: int, outputs: list[str], dynamic_batch: bool, size: int, heatmap: str, layout: int) -> dict:
    from pneumo import __version__

    return {
        "exporter": "torchscript", "opset": opset, "input": INPUT_NAME, "input_shape": ["batch" if dynamic_batch else 1, 1, size, size],
        "outputs": outputs, "dynamic_batch": dynamic_batch, "heatmap": heatmap, "layout": layout, "torch_version": str(torch.__version__),
        "pneumo_version": __version__, "exported_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _verify(path: Path, graph: torch.nn.Module, size: int, dynamic_batch: bool, names: list[str]) -> dict[str, float]:
    """Max |torch - ONNX| per output on a check input of another batch size and other values than the trace's."""
    import onnxruntime as ort

    check = _example(size, 3 if dynamic_batch else 1, seed=1)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: check.numpy()})
    with torch.no_grad():
        want = [t.detach().cpu().numpy() for t in graph(check)]
    diffs = {}
    for name, a, b in zip(names, got, want):
        if a.shape != b.shape:
            diffs[name] = float("inf")
        elif a.size:
            diffs[name] = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
        else:
            diffs[name] = 0.0
    return diffs
