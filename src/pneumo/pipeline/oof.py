"""Out-of-fold (OOF) outputs of one CV run: computed through the serving code, stored as npz + JSON (no pickle).

A fold's OOF outputs = its validation records predicted by the run's ``OOF_CHECKPOINT`` (the LAST epoch of the
fixed schedule, so the scored fold never chooses the weights it is scored with) through ``CheckpointPredictor``,
unthresholded, without heatmaps. Variants: ``plain``; ``tta`` (flip TTA, when asked); ``prior_off`` (unet: the
same weights with the lung prior switched off, for the ablation).

Files in RUN_DIR (each written atomically; ``oof.json`` last, holding the sha256 of ``oof.npz``, so a pair
left half-written by an interruption reads as missing and is recomputed):

* ``oof.npz`` (``numpy.load(allow_pickle=False)``): per variant V ``V.probability`` float64 (N,),
  ``V.image_size`` int64 (N, 2) (height, width), ``V.n_views`` int64 (N,), ``V.n_boxes`` int64 (total views,),
  ``V.boxes`` float32 (M, 5) xyxy + confidence in original pixels (every view's boxes, in order); unet also
  ``prior`` float32 (S, S), the fold's lung-field prior in input pixels.
* ``oof.json``: ``format``, ``ids`` (validation image ids, in order), ``checkpoint`` (``OOF_CHECKPOINT``, or
  ``sha256:<hex>`` of a fixed experiment's file), ``variants``, ``size``
  (input px), ``geometry`` (one ``GeometryRecord`` dict per image, unet), ``npz_sha256``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pneumo.data.records import ImageRecord
from pneumo.errors import CheckpointError
from pneumo.types import ImageOutput
from pneumo.preprocess import GeometryRecord
from pneumo.files import atomic_write_bytes

OOF_FORMAT = 1
OOF_CHECKPOINT = "last.pt"
OOF_NPZ = "oof.npz"
OOF_JSON = "oof.json"


@dataclass
class OOFOutputs:
    """One fold's OOF outputs: ``variants[name][i]`` is image ``ids[i]``'s ``ImageOutput`` (original px)."""

    ids: list[str]
    checkpoint: str
    variants: dict[str, list[ImageOutput]]
    prior: np.ndarray | None = None
    size: int | None = None
    geometry: list[GeometryRecord] | None = None


def save_oof(run_dir: str | Path, oof: OOFOutputs) -> None:
    """Write ``oof.npz`` then ``oof.json`` atomically into ``run_dir`` (format in the module docstring)."""
    arrays: dict[str, np.ndarray] = {}
    for name, outputs in oof.variants.items():
        if len(outputs) != len(oof.ids):
            raise ValueError(f"variant {name!r} has {len(outputs)} outputs for {len(oof.ids)} ids")
        views = [np.asarray(v, dtype=np.float32).reshape(-1, 5) for o in outputs for v in o.views]
        arrays[f"{name}.probability"] = np.asarray([o.probability for o in outputs], dtype=np.float64)
        arrays[f"{name}.image_size"] = np.asarray([o.image_size for o in outputs], dtype=np.int64).reshape(-1, 2)
        arrays[f"{name}.n_views"] = np.asarray([len(o.views) for o in outputs], dtype=np.int64)
        arrays[f"{name}.n_boxes"] = np.asarray([len(v) for v in views], dtype=np.int64)
        arrays[f"{name}.boxes"] = np.concatenate(views) if views else np.zeros((0, 5), np.float32)
    if oof.prior is not None:
        arrays["prior"] = np.asarray(oof.prior, dtype=np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    meta = {
        "format": OOF_FORMAT, "ids": list(oof.ids), "checkpoint": oof.checkpoint, "variants": list(oof.variants),
        "size": oof.size, "geometry": None if oof.geometry is None else [dataclasses.asdict(g) for g in oof.geometry],
        "npz_sha256": hashlib.sha256(payload).hexdigest(),
    }
    run_dir = Path(run_dir)
    atomic_write_bytes(run_dir / OOF_NPZ, payload)
    atomic_write_bytes(run_dir / OOF_JSON, json.dumps(meta, indent=1).encode())


def load_oof(run_dir: str | Path) -> OOFOutputs | None:
    """The OOF outputs saved in ``run_dir``; None when there are none (or an interrupted write left no complete
    pair); ``CheckpointError`` for files of another format."""
    run_dir = Path(run_dir)
    meta_path, npz_path = run_dir / OOF_JSON, run_dir / OOF_NPZ
    if not meta_path.is_file() or not npz_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{meta_path} is not an OOF record: {error}") from error
    if meta.get("format") != OOF_FORMAT:
        raise CheckpointError(f"{meta_path}: OOF format {meta.get('format')!r}, expected {OOF_FORMAT}")
    payload = npz_path.read_bytes()
    if hashlib.sha256(payload).hexdigest() != meta["npz_sha256"]:
        return None  # the npz was rewritten after this json (an interrupted update): recompute
    with np.load(io.BytesIO(payload), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    variants = {name: _outputs(arrays, name) for name in meta["variants"]}
    geometry = None if meta["geometry"] is None else [GeometryRecord(**g) for g in meta["geometry"]]
    return OOFOutputs(list(meta["ids"]), meta["checkpoint"], variants, arrays.get("prior"), meta["size"], geometry)


def _outputs(arrays: dict[str, np.ndarray], name: str) -> list[ImageOutput]:
    boxes = arrays[f"{name}.boxes"]
    ends = np.cumsum(arrays[f"{name}.n_boxes"])
    views = [boxes[end - n:end] for n, end in zip(arrays[f"{name}.n_boxes"], ends)]
    out, start = [], 0
    for probability, size, n_views in zip(arrays[f"{name}.probability"], arrays[f"{name}.image_size"],
                                          arrays[f"{name}.n_views"]):
        out.append(ImageOutput(float(probability), tuple(views[start:start + n_views]), None,
                               (int(size[0]), int(size[1]))))
        start += int(n_views)
    return out


def predict_oof(run_dir: str | Path, val: Sequence[ImageRecord], family: str, tta: bool,
                checkpoint: Path | None = None) -> OOFOutputs:
    """``run_dir/OOF_CHECKPOINT`` (or ``checkpoint``, a fixed experiment's file, recorded by its sha256) -> the
    OOF outputs of ``val`` (saved in ``run_dir``). An existing record of the same images and checkpoint is kept
    (adding only the flip-TTA outputs if ``tta`` asks for them); other images raise ``CheckpointError``."""
    from pneumo.files import file_sha256
    from pneumo.inference.predictors import CheckpointPredictor
    from pneumo.io import read_xray

    run_dir = Path(run_dir)
    source = run_dir / OOF_CHECKPOINT if checkpoint is None else Path(checkpoint)
    tag = OOF_CHECKPOINT if checkpoint is None else f"sha256:{file_sha256(source)}"
    ids = [r.image_id for r in val]
    run_dir.mkdir(parents=True, exist_ok=True)
    existing = load_oof(run_dir)
    if existing is not None and existing.checkpoint == tag:
        if existing.ids != ids:
            raise CheckpointError(f"{run_dir}: its OOF images differ from the fold's validation records (other data?)")
        if not tta or "tta" in existing.variants:
            return existing
    predictor = CheckpointPredictor(source, run_dir.parent.name)
    xrays = [read_xray(r.path) for r in val]
    if existing is not None and existing.checkpoint == tag:  # --tta after the fact: add only that
        existing.variants["tta"] = _batched(predictor, xrays, tta=True)
        save_oof(run_dir, existing)
        return existing
    plan: dict[str, tuple[bool, str | None]] = {"plain": (False, None)}
    if tta:  # every family: a tta_flip ensemble flips its classifier too
        plan["tta"] = (True, None)
    if family == "unet":
        plan["prior_off"] = (False, "off")
    variants = {}
    for name, (use_tta, prior) in plan.items():
        saved = getattr(predictor.model.config, "lung_prior", None)
        if prior is not None:
            predictor.model.config.lung_prior = prior
        try:
            variants[name] = _batched(predictor, xrays, use_tta)
        finally:
            if prior is not None:
                predictor.model.config.lung_prior = saved
    oof = OOFOutputs(ids, tag, variants)
    if family == "unet":  # the prior (input pixels) and each image's geometry, for the outside-the-lungs measure
        oof.prior = predictor.model.lung_prior[0, 0].detach().cpu().numpy()
        oof.size = int(predictor.preprocessor.size)
        oof.geometry = [predictor.preprocessor(np.asarray(x.pixels, dtype=np.float32))[1] for x in xrays]
    save_oof(run_dir, oof)
    return oof


def _batched(predictor, xrays: list, tta: bool, batch_size: int = 8) -> list[ImageOutput]:
    """``predictor.outputs`` (no heatmaps) over ``xrays`` in batches -> one ImageOutput per image."""
    outputs: list[ImageOutput] = []
    for start in range(0, len(xrays), batch_size):
        outputs.extend(predictor.outputs(xrays[start:start + batch_size], tta=tta, heatmap=False)[0])
    return outputs
