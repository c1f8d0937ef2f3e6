"""What an exported ``.onnx`` file says about itself: ``metadata_props`` under the ``pneumo.`` prefix.

Every value is a string (ONNX's rule); dicts are JSON. The keys::

    pneumo.format            "pneumo-onnx"
    pneumo.format_version    "1"
    pneumo.family            registered family name ("chexnet", "unet", "maskrcnn")
    pneumo.config            the family config of the checkpoint (JSON)
    pneumo.preprocess        Preprocessor settings (JSON, e.g. {"size": 224})
    pneumo.thresholds        the checkpoint's operating thresholds (JSON)
    pneumo.metrics           the checkpoint's validation metrics (JSON)
    pneumo.source_sha256     sha256 of the checkpoint *file* it was exported from (staleness check)
    pneumo.state_dict_sha256 the checkpoint's own weights hash
    pneumo.source_name       the checkpoint's file name (no folder: paths can identify people and machines)
    pneumo.code_version      the checkpoint's code version (JSON)
    pneumo.graph             how the graph was made (JSON: exporter, opset, inputs, outputs, batch, heatmap,
                             torch and pneumo versions, exported_utc)

An export is *stale* when the checkpoint file's sha256 no longer equals ``pneumo.source_sha256`` (retrained,
re-tuned thresholds, re-copied from elsewhere): ``check_fresh`` refuses it with ``CheckpointError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pneumo.errors import CheckpointError

FORMAT_NAME = "pneumo-onnx"
FORMAT_VERSION = 1
PREFIX = "pneumo."
_JSON_FIELDS = ("config", "preprocess", "thresholds", "metrics", "code_version", "graph")
_TEXT_FIELDS = ("family", "source_sha256", "state_dict_sha256", "source_name")


@dataclass(frozen=True)
class OnnxMetadata:
    """The checkpoint settings and provenance embedded in an exported ONNX file."""

    family: str
    config: dict[str, Any]
    preprocess: dict[str, Any]
    thresholds: dict[str, Any]
    source_sha256: str
    state_dict_sha256: str
    source_name: str
    metrics: dict[str, Any] = field(default_factory=dict)
    code_version: dict[str, Any] = field(default_factory=dict)
    graph: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Model-input side S in pixels (the graph's input is (B, 1, S, S))."""
        from pneumo.preprocess import Preprocessor

        return Preprocessor.from_dict(self.preprocess).size

    def to_props(self) -> dict[str, str]:
        """-> ``{"pneumo.<key>": str}`` for ``ModelProto.metadata_props``."""
        props = {f"{PREFIX}format": FORMAT_NAME, f"{PREFIX}format_version": str(FORMAT_VERSION)}
        for name in _TEXT_FIELDS:
            props[PREFIX + name] = str(getattr(self, name))
        for name in _JSON_FIELDS:
            props[PREFIX + name] = json.dumps(getattr(self, name), sort_keys=True)
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], where: str = "ONNX file") -> "OnnxMetadata":
        """Parse ``metadata_props`` (``CheckpointError`` if this is not a pneumo export or a key is missing)."""
        if props.get(f"{PREFIX}format") != FORMAT_NAME:
            raise CheckpointError(f"{where} is not a pneumo ONNX export (no '{FORMAT_NAME}' metadata); export it with `pneumo export`")
        try:
            version = int(props.get(f"{PREFIX}format_version", ""))
        except ValueError:
            version = -1
        if not 1 <= version <= FORMAT_VERSION:
            raise CheckpointError(f"{where} has pneumo ONNX format version {version}; this pneumo reads up to {FORMAT_VERSION}: re-export it")
        missing = [PREFIX + k for k in _TEXT_FIELDS + _JSON_FIELDS if PREFIX + k not in props]
        if missing:
            raise CheckpointError(f"{where} lacks metadata {', '.join(missing)}; re-export it with `pneumo export`")
        values: dict[str, Any] = {k: props[PREFIX + k] for k in _TEXT_FIELDS}
        for name in _JSON_FIELDS:
            try:
                value = json.loads(props[PREFIX + name])
            except json.JSONDecodeError:
                raise CheckpointError(f"{where}: metadata {PREFIX}{name} is not valid JSON; re-export it") from None
            if not isinstance(value, dict):
                raise CheckpointError(f"{where}: metadata {PREFIX}{name} must be a JSON object; re-export it")
            values[name] = value
        return cls(**values)


def onnx_path_for(checkpoint: str | Path) -> Path:
    """Where the export of ``checkpoint`` lives by default: same folder and stem, ``.onnx`` suffix."""
    return Path(checkpoint).with_suffix(".onnx")


def read_metadata(path: str | Path) -> OnnxMetadata:
    """The ``OnnxMetadata`` of an exported file, without starting an inference session."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"ONNX file {path} does not exist; run `pneumo export --model MODEL --format onnx`")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf raises several types on corrupt files
        raise CheckpointError(f"{path} is not a readable ONNX file ({type(error).__name__}); re-export it") from error
    return OnnxMetadata.from_props({p.key: p.value for p in model.metadata_props}, where=str(path))


def check_fresh(metadata: OnnxMetadata, checkpoint: str | Path, onnx_path: str | Path | None = None) -> None:
    """Refuse (``CheckpointError``) an export whose source checkpoint file changed since it was exported."""
    from pneumo.files import file_sha256

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"source checkpoint {checkpoint} of ONNX export {onnx_path or ''} does not exist")
    actual = file_sha256(checkpoint)
    if actual != metadata.source_sha256:
        raise CheckpointError(
            f"ONNX export {onnx_path or ''} is stale: it was made from checkpoint sha256 {metadata.source_sha256[:12]}..., "
            f"but {checkpoint.name} is now {actual[:12]}...; re-run `pneumo export --model {checkpoint} --format onnx`"
        )
