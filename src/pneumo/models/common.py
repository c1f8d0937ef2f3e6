"""Small helpers shared by the model families: input checks, intensity normalisation, box masks, outputs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from pneumo.errors import InvalidBoxesError
from pneumo.models.base import Target
from pneumo.preprocess import check_model_input


def check_input(images: torch.Tensor) -> torch.Tensor:
    """Enforce the model-input contract (float (B, 1, S, S) in [0, 1]); returns the images as float32."""
    check_model_input(images)
    return images.float()


def check_targets(targets: Sequence[Target], batch: int) -> None:
    """Raise ``InvalidBoxesError`` unless there is one ``Target`` per image with (N, 4) boxes and a 0/1 label."""
    if len(targets) != batch:
        raise InvalidBoxesError(f"got {len(targets)} targets for a batch of {batch} images")
    for i, target in enumerate(targets):
        boxes = target.boxes
        if not isinstance(boxes, torch.Tensor) or boxes.ndim != 2 or boxes.shape[1] != 4:
            raise InvalidBoxesError(f"target {i}: boxes must be a (N, 4) xyxy tensor, got {getattr(boxes, 'shape', type(boxes))}")
        if boxes.numel() and (not torch.isfinite(boxes).all() or (boxes[:, 2:] < boxes[:, :2]).any()):
            raise InvalidBoxesError(f"target {i}: boxes must be finite xyxy with x2 >= x1 and y2 >= y1")
        if int(target.label) not in (0, 1):
            raise InvalidBoxesError(f"target {i}: label must be 0 or 1, got {target.label!r}")


def normalise(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """(x - mean) / std on a (B, 1, S, S) tensor in [0, 1]."""
    return (images - mean) / std


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Filled masks of (N, 4) xyxy boxes -> uint8 (N, height, width); a pixel is in a box if its centre is.

    Boxes too thin to contain a pixel centre still mark the pixel holding their centre, so no box is lost.
    """
    device = boxes.device
    if boxes.numel() == 0:
        return torch.zeros((0, height, width), dtype=torch.uint8, device=device)
    boxes = boxes.float()
    xs = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    ys = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    in_x = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] < boxes[:, 2:3])  # (N, W)
    in_y = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] < boxes[:, 3:4])  # (N, H)
    cx = ((boxes[:, 0] + boxes[:, 2]) / 2).floor().long().clamp(0, width - 1)
    cy = ((boxes[:, 1] + boxes[:, 3]) / 2).floor().long().clamp(0, height - 1)
    rows = torch.arange(boxes.shape[0], device=device)
    in_x[rows, cx] = True
    in_y[rows, cy] = True
    return (in_y[:, :, None] & in_x[:, None, :]).to(torch.uint8)


def union_masks(targets: Sequence[Target], height: int, width: int, device: torch.device) -> torch.Tensor:
    """Per image, the union of its filled boxes -> float32 (B, 1, height, width) in {0, 1}."""
    out = torch.zeros((len(targets), 1, height, width), dtype=torch.float32, device=device)
    for i, target in enumerate(targets):
        if target.boxes.numel():
            out[i, 0] = box_masks(target.boxes.to(device), height, width).amax(dim=0).float()
    return out


def box_supervised(targets: Sequence[Target]) -> list[bool]:
    """Whether each image's boxes can supervise localisation: it has boxes, or it is a negative (label 0).

    A positive without boxes (e.g. an NIH weak label) says nothing about where the opacity is.
    """
    return [bool(t.boxes.numel()) or int(t.label) == 0 for t in targets]


def soft_dice_loss(logits: torch.Tensor, masks: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch (so images without opacity still contribute false positives)."""
    probs = torch.sigmoid(logits)
    intersection = (probs * masks).sum()
    return 1.0 - (2.0 * intersection + eps) / (probs.sum() + masks.sum() + eps)


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` in eval mode for the block and restore its previous mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def replace_first_conv(conv: nn.Conv2d, in_channels: int = 1) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs, weights summed over the old input channels.

    Summing keeps the response to a grey image replicated over RGB, so ImageNet weights stay meaningful.
    """
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=1,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True).repeat(1, in_channels, 1, 1) / in_channels)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new
