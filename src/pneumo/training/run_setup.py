"""What a training run sets up before its first step: the device, the optimiser's parameter groups, class
balance in the loss, the initial weights (``init_from`` fine-tuning) and family statistics of the training set."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pneumo.data.records import ImageRecord
from pneumo.errors import CheckpointError, ConfigError
from pneumo.models.base import PneumoModel
from pneumo.training import distributed
from pneumo.training.config import TrainConfig
from pneumo.training.data_setup import SplitData


def pick_device(name: str, info: distributed.DistInfo) -> torch.device:
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available; use device=cpu")
    if name.startswith("cuda:"):
        return torch.device(name)
    return torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices/kernels only (not on biases and normalisation parameters)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def apply_balance(family: str, config: TrainConfig, train: Sequence[ImageRecord]) -> TrainConfig:
    """``balance="pos_weight"``: set the family's BCE pos_weight to n_neg / n_pos (if not set explicitly)."""
    if config.balance != "pos_weight":
        return config
    names = [f.name for f in dataclasses.fields(config.model) if f.name in ("cls_pos_weight", "pos_weight")]
    if not names:
        raise ConfigError(f"family {family!r} has no pos_weight setting; use balance=sampler or balance=none")
    n_pos = sum(int(r.target) for r in train)
    if getattr(config.model, names[0]) is not None or n_pos == 0:
        return config
    weight = (len(train) - n_pos) / n_pos
    return dataclasses.replace(config, model=dataclasses.replace(config.model, **{names[0]: float(weight)}))


def init_weights_from(model: PneumoModel, family: str, path: Path) -> tuple[int, int]:
    """Copy every tensor of checkpoint ``path`` (same family) whose name and shape match ``model``'s into it.

    Returns (tensors loaded, tensors in the model). ``CheckpointError`` for another family, a damaged file, or a
    checkpoint matching less than half of the model's weight values (another backbone or width: a mistake, not a
    fine-tuning start).
    """
    from pneumo.models.checkpoint import load_checkpoint

    source = load_checkpoint(path, expected_family=family).model.state_dict()
    target = model.state_dict()
    matching = {k: v.to(target[k].dtype) for k, v in source.items() if k in target and target[k].shape == v.shape}
    matched = sum(v.numel() for v in matching.values())
    total = sum(v.numel() for v in target.values())
    if matched < 0.5 * total:
        raise CheckpointError(
            f"{path} matches only {matched / total:.0%} of this {family} model's weights (another backbone or width?); "
            "use a checkpoint of the same architecture, or drop init_from"
        )
    model.load_state_dict(matching, strict=False)
    return len(matching), len(target)


def fit_family_priors(model: PneumoModel, data: SplitData) -> None:
    """Family-specific statistics of the training set (the ``unet`` lung-field prior) before training."""
    if hasattr(model, "set_lung_prior"):
        from pneumo.models.unet import fit_lung_prior

        cache = data.cache
        boxes = [cache.geometry(cache.index_of(r.image_id)).to_input(r.boxes) for r in data.train if r.boxes_known]
        model.set_lung_prior(fit_lung_prior(boxes, cache.size))
