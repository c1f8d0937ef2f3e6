"""The checkpoint format: weights plus everything needed to use them the way they were validated.

A checkpoint is one ``torch.save`` file (zip) holding a plain dict (loadable with ``weights_only=True``)::

    format            "pneumo-checkpoint"
    format_version    1
    family            registered family name ("unet", ...)
    config            the family's resolved config (dict)
    preprocess        Preprocessor settings (dict, e.g. {"size": 512})
    thresholds        e.g. {"box_confidence": 0.3, "image_gate": 0.5, "calibration": {...}}
    metrics           validation metrics the weights earned
    data_fingerprint  identifies the training data / split
    code_version      {"pneumo": __version__, "git": `git describe --always --dirty` or None} (at save time)
    created_utc, torch_version, dtype ("float32" or "float16"), extra (dict)
    state_dict_sha256 sha256 over the state dict in canonical form (see ``state_dict_sha256``)
    state_dict        the weights (floating tensors in fp16 when saved with ``half=True``)

``load_checkpoint`` refuses a missing/corrupt file, a hash mismatch, an unknown format or the wrong family with
``CheckpointError`` and returns the model in eval mode, float32.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import subprocess
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pneumo.errors import CheckpointError, ConfigError
from pneumo.files import atomic_write
from pneumo.models.base import PneumoModel
from pneumo.preprocess import Preprocessor
from pneumo.types import Thresholds

FORMAT_NAME = "pneumo-checkpoint"
FORMAT_VERSION = 1


@dataclass
class LoadedCheckpoint:
    """A loaded checkpoint: the model (eval mode, float32) and the settings saved with it."""

    model: PneumoModel
    family: str
    config: Any
    preprocess: dict[str, Any]
    thresholds: dict[str, Any]
    metrics: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)  # format_version, code_version, data_fingerprint, sha, ...


def code_version() -> dict[str, str | None]:
    """``{"pneumo": __version__, "git": "git describe --always --dirty" of the source tree or None}``."""
    from pneumo import __version__

    git = None
    try:
        result = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if result.returncode == 0 and result.stdout.strip():
            git = result.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        git = None
    return {"pneumo": __version__, "git": git}


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the state dict in canonical form: for each key in sorted order, the key, dtype, shape and
    the tensor's raw bytes (contiguous, CPU). Independent of pickling details, so it can be re-checked."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key]
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"state dict entry {key!r} is not a tensor ({type(tensor).__name__})")
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _plain(value: Any, where: str) -> Any:
    """Recursively turn metadata into types ``weights_only`` loading accepts (dict/list/str/int/float/bool/None)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor) and value.numel() <= 10_000:
        return value.detach().cpu().tolist()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value), where)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    raise CheckpointError(f"cannot store {where} of type {type(value).__name__} in a checkpoint; use plain values")


def _preprocessor(settings: Any, where: str) -> Preprocessor:
    """The stored preprocessing -> ``Preprocessor``; a checkpoint without its input size is refused."""
    if isinstance(settings, Preprocessor):
        return settings
    try:
        return Preprocessor.from_dict(settings)
    except ConfigError as error:
        raise CheckpointError(
            f"checkpoint {where}: {error}. pneumo no longer guesses a size (it used to run such models at 256 px); "
            "re-save the checkpoint with its training preprocessing (preprocess={'size': S})"
        ) from None


def save_checkpoint(
    path: str | Path,
    model: PneumoModel,
    *,
    config: Any,
    preprocess: Preprocessor | Mapping[str, Any],
    thresholds: Thresholds | Mapping[str, Any],
    metrics: Mapping[str, Any],
    data_fingerprint: str,
    extra: Mapping[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write ``model`` and its settings to ``path`` atomically (``pneumo.files.atomic_write``); returns the path.

    ``config``: the family's config dataclass (or its dict). ``half=True`` stores floating weights as fp16
    (half the size, for shipping); loading always gives a float32 model.
    """
    from pneumo.models.registry import config_class

    family = getattr(model, "family", "")
    if not family:
        raise CheckpointError(f"{type(model).__name__} is not a registered model family; cannot save it")
    config_cls = config_class(family)
    if isinstance(config, Mapping):
        config_dict = _plain(dict(config), "config")
    elif isinstance(config, config_cls):
        config_dict = _plain(dataclasses.asdict(config), "config")
    else:
        raise CheckpointError(f"config must be a {config_cls.__name__} or a dict, got {type(config).__name__}")
    preprocessor = _preprocessor(preprocess, str(path))
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, tensor in model.state_dict().items():
        t = tensor.detach().cpu().clone()
        if half and t.is_floating_point():
            t = t.half()
        state[key] = t
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "family": family,
        "config": config_dict,
        "preprocess": _plain(preprocessor.to_dict(), "preprocess"),
        "thresholds": _plain(thresholds.to_dict() if isinstance(thresholds, Thresholds) else dict(thresholds), "thresholds"),
        "metrics": _plain(dict(metrics), "metrics"),
        "data_fingerprint": str(data_fingerprint),
        "code_version": code_version(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": str(torch.__version__),
        "dtype": "float16" if half else "float32",
        "extra": _plain(dict(extra or {}), "extra"),
        "state_dict_sha256": state_dict_sha256(state),
        "state_dict": state,
    }
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)
    return path


def _read(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file); check the path or train/export one first")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises many types for corrupt zips/pickles
        raise CheckpointError(
            f"checkpoint {path} is corrupt, truncated or not a pneumo checkpoint ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); re-copy or re-export it"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a pneumo checkpoint (no '{FORMAT_NAME}' header); was it saved by save_checkpoint?")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this pneumo reads up to {FORMAT_VERSION}: upgrade pneumo"
        )
    missing = [k for k in ("family", "config", "state_dict", "state_dict_sha256") if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; it is incomplete, re-export it")
    return payload


def _meta(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "state_dict"}


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """Everything in the checkpoint except the weights, without building the model (no hash check)."""
    return _meta(_read(path, mmap=True))


def load_checkpoint(path: str | Path, expected_family: str | None = None, map_location: Any = "cpu") -> LoadedCheckpoint:
    """Load and verify a checkpoint -> ``LoadedCheckpoint`` (model in eval mode, float32, on ``map_location``)."""
    from pneumo.models.registry import config_class, list_models, model_class

    path = Path(path)
    payload = _read(path, map_location="cpu")
    family = payload["family"]
    if expected_family is not None and family != expected_family:
        raise CheckpointError(
            f"checkpoint {path} holds a {family!r} model, not {expected_family!r}; "
            f"pick a {expected_family} checkpoint or ask for model family {family!r}"
        )
    if family not in list_models():
        raise CheckpointError(
            f"checkpoint {path} holds model family {family!r}, which this pneumo does not know "
            f"(known: {', '.join(list_models())}); upgrade pneumo"
        )
    state = payload["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint {path}: state_dict is not a mapping of tensors; re-export it")
    actual = state_dict_sha256(state)
    if actual != payload["state_dict_sha256"]:
        raise CheckpointError(
            f"checkpoint {path} fails its integrity check (weights sha256 {actual[:12]}... != recorded "
            f"{str(payload['state_dict_sha256'])[:12]}...); the file was altered or damaged: re-copy it"
        )
    size = _preprocessor(payload.get("preprocess"), str(path)).size
    try:
        from pneumo.config import apply_values

        config = apply_values(config_class(family)(), dict(payload["config"]))
    except (ConfigError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path}: its {family} config does not fit this pneumo version ({error})") from error
    if getattr(config, "image_size", size) != size:  # a family that sizes itself (Mask R-CNN anchors) must agree
        raise CheckpointError(
            f"checkpoint {path}: its {family} config says image_size {config.image_size} but its preprocessing "
            f"(the input size the model is run at) says {size}; the file is inconsistent: re-save it"
        )
    # the saved weights replace any initialisation: never load ImageNet weights just to overwrite them
    build_config = dataclasses.replace(config, pretrained=False) if hasattr(config, "pretrained") else config
    model = model_class(family)(build_config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit the {family} model built from its config ({str(error).splitlines()[0]}); "
            "the checkpoint comes from an incompatible pneumo version"
        ) from error
    model.config = config
    model = model.float().eval()
    if map_location not in (None, "cpu") and isinstance(map_location, (str, torch.device)):
        model = model.to(map_location)
    return LoadedCheckpoint(
        model=model,
        family=family,
        config=config,
        preprocess=dict(payload.get("preprocess") or {}),
        thresholds=dict(payload.get("thresholds") or {}),
        metrics=dict(payload.get("metrics") or {}),
        meta=_meta(payload),
    )
