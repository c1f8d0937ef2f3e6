"""Validation of one epoch: loss, model outputs mapped to original pixels, RSNA mAP, AUC, tuned thresholds.

Under DDP every rank validates its share of the validation images (``rank::world_size``); the outputs are
gathered and the metrics computed once, on the full set, then broadcast so all ranks agree.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from pneumo.data.cache import ImageCache
from pneumo.data.records import ImageRecord
from pneumo.evaluation.classification import roc_auc
from pneumo.models.base import PneumoModel, Target
from pneumo.training import distributed
from pneumo.training.thresholds import DEFAULT_THRESHOLDS, tune_thresholds

_NORM_AND_DROPOUT = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.GroupNorm, nn.LayerNorm)


@contextlib.contextmanager
def loss_mode(model: nn.Module) -> Iterator[None]:
    """Train mode (families such as torchvision detectors compute losses only then) but with BatchNorm using
    its running statistics and dropout off, so validation neither changes the model nor is random there.
    Every module's previous mode is restored afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.train()
    for module in model.modules():
        if isinstance(module, _NORM_AND_DROPOUT):
            module.eval()
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode


@dataclass
class ValidationResult:
    """Per validation image (in the validation records' order): probability and (N, 5) boxes in original
    pixels; plus the mean loss and the metrics (``val_loss``, ``val_map``, ``val_auc``) and tuned thresholds."""

    loss: float
    outputs: list[tuple[float, np.ndarray]]
    metrics: dict[str, float]
    tuned: dict[str, float] = field(default_factory=dict)


def move_targets(targets: Sequence[Target], device: torch.device) -> list[Target]:
    return [Target(boxes=t.boxes.to(device, non_blocking=True), label=int(t.label)) for t in targets]


def validate(
    model: PneumoModel,
    dataset: Dataset,
    records: Sequence[ImageRecord],
    cache: ImageCache,
    *,
    batch_size: int,
    device: torch.device,
    collate: Any,
    amp: bool = False,
    channels_last: bool = False,
    num_workers: int = 0,
    progress: Any = None,
) -> ValidationResult:
    """Run ``compute_loss`` (in ``loss_mode``) and ``infer`` over ``dataset`` (un-augmented, aligned with
    ``records``); boxes go back to original pixels through the cache's ``GeometryRecord``s; metrics are
    computed against the records' original-pixel boxes. ``progress``: optional callable(n_done) for a bar."""
    world, rank = distributed.world_size(), distributed.rank()
    mine = list(range(rank, len(records), world))
    loader = DataLoader(
        Subset(dataset, mine),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
    )
    loss_sum, count = 0.0, 0
    local: list[tuple[int, float, np.ndarray]] = []
    cursor = 0
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    with torch.no_grad():
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = move_targets(targets, device)
            with loss_mode(model), autocast:
                losses = model.compute_loss(images, targets)
            loss_sum += float(losses["loss"].detach().float()) * images.shape[0]
            count += images.shape[0]
            with autocast:
                raw = model.infer(images)
            for output in raw:
                index = mine[cursor]
                cursor += 1
                geometry = cache.geometry(cache.index_of(records[index].image_id))
                boxes = geometry.to_original(np.asarray(output.boxes, dtype=np.float32).reshape(-1, 5))
                local.append((index, float(output.probability), boxes))
            if progress is not None:
                progress(images.shape[0])
    gathered = distributed.all_gather_objects((loss_sum, count, local))
    result: ValidationResult | None = None
    if rank == 0:
        total = sum(g[0] for g in gathered)
        n = sum(g[1] for g in gathered)
        items = sorted((item for g in gathered for item in g[2]), key=lambda item: item[0])
        outputs = [(p, b) for _, p, b in items]
        result = compute_metrics(outputs, records, total / n if n else float("nan"))
    return distributed.broadcast_object(result)


def compute_metrics(outputs: list[tuple[float, np.ndarray]], records: Sequence[ImageRecord], loss: float) -> ValidationResult:
    """Metrics of validation ``outputs`` (original pixels) against ``records``.

    val_map: RSNA mAP at the best (box threshold, gate) of the ``tune_thresholds`` grid, over images whose
    boxes are known (``boxes_known``); val_auc: ROC AUC of the image probability vs the record target.
    """
    labels = [int(r.target) for r in records]
    scored = [i for i, r in enumerate(records) if getattr(r, "boxes_known", True)]
    tuned = tune_thresholds(
        [outputs[i] for i in scored], [records[i].boxes for i in scored], labels=[labels[i] for i in scored]
    ) if scored else {**DEFAULT_THRESHOLDS.to_dict(), "map": float("nan")}
    probabilities = np.asarray([p for p, _ in outputs], dtype=np.float64)
    auc = roc_auc(probabilities, labels) if len(outputs) else float("nan")
    if scored and len(scored) != len(records):  # Youden's J over every labelled image, not only boxed ones
        tuned.update(_probability_operating_point(probabilities, labels))
    metrics = {
        "val_loss": float(loss),
        "val_map": float(tuned.get("map", float("nan"))),
        "val_auc": float(auc),
        "val_map_all_boxes": float(tuned.get("map_all_boxes", float("nan"))),
        "val_sensitivity": float(tuned.get("sensitivity", float("nan"))),
        "val_specificity": float(tuned.get("specificity", float("nan"))),
        "val_images": float(len(outputs)),
    }
    return ValidationResult(loss=float(loss), outputs=outputs, metrics=metrics, tuned=tuned)


def _probability_operating_point(probabilities: np.ndarray, labels: list[int]) -> dict[str, float]:
    from pneumo.evaluation.classification import confusion_at_threshold, youden_threshold

    threshold = youden_threshold(probabilities, labels)
    if not math.isfinite(threshold):
        return {}
    confusion = confusion_at_threshold(probabilities, labels, threshold)
    return {
        "probability_threshold": float(threshold),
        "sensitivity": confusion["sensitivity"],
        "specificity": confusion["specificity"],
        "youden_j": confusion["sensitivity"] + confusion["specificity"] - 1.0,
    }
