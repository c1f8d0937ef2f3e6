"""``unet``: ResNet-encoder U-Net segmenting opacity (the seed's "ResNet" model), with a lung-field prior.

The network predicts an opacity logit map trained on filled box masks (BCE + soft Dice) and an image-level
pneumonia logit from a small head on the bottleneck (BCE on the image label; better calibrated than the map's
maximum). Connected components of the probability map become boxes (``postprocess.mask_to_boxes``).

The seed's model also marked "opacities" outside the lungs (labels, the abdomen, the canvas border). The fix is
a *lung-field prior*: a (64, 64) map of where opacity boxes occur in normalised input coordinates, learned
from the training boxes (``fit_lung_prior``) and stored as a buffer (so it travels in the checkpoint). Config
``lung_prior``:

* ``"off"``    - no prior (the seed's behaviour);
* ``"filter"`` - at inference the probability map is zeroed where ``prior < prior_floor``;
* ``"input"``  - the prior is fed to every decoder stage as an extra channel (CoordConv-like); the map is not
  filtered, so "filter" vs "input" vs "off" are separate ablations.

The trainer must call ``model.set_lung_prior(fit_lung_prior(train_boxes, size))``; until then the prior is all
ones (no effect; ``model.lung_prior_fitted`` is False). ``opacity_outside_prior_fraction`` quantifies how much
predicted box area falls outside the field, for before/after comparisons.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pneumo.decode.unet import UNetConfig, outputs_from_maps
from pneumo.errors import ConfigError, InvalidBoxesError
from pneumo.models.backbones import build_encoder, default_normalisation
from pneumo.models.base import PneumoModel, RawOutput, Target
from pneumo.models.common import (
    box_supervised,
    check_input,
    check_targets,
    eval_mode,
    normalise,
    soft_dice_loss,
    union_masks,
)
from pneumo.models.registry import register_family

PRIOR_GRID = 64
LUNG_PRIOR_MODES = ("off", "filter", "input")


class _DecoderBlock(nn.Module):
    """Upsample x2, concatenate the skip (and prior), two 3x3 conv-BN-ReLU."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch + skip_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.body(torch.cat([x, skip], dim=1))


@register_family("unet", UNetConfig)
class UNetModel(PneumoModel):
    """ResNet/EfficientNet-encoder U-Net: opacity logit map at stride 2 (upsampled to S) + image logit."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if config.lung_prior not in LUNG_PRIOR_MODES:
            raise ConfigError(f"lung_prior must be one of {LUNG_PRIOR_MODES}, got {config.lung_prior!r}")
        if not 2 <= config.encoder_depth <= 5:
            raise ConfigError(f"encoder_depth must be between 2 and 5, got {config.encoder_depth}")
        if len(config.decoder_channels) < config.encoder_depth - 1:
            raise ConfigError(
                f"decoder_channels needs at least {config.encoder_depth - 1} entries for encoder_depth "
                f"{config.encoder_depth}, got {config.decoder_channels}"
            )
        self.config = config
        self.encoder = build_encoder(config.encoder, depth=config.encoder_depth, pretrained=config.pretrained)
        self.mean, self.std = default_normalisation(config.encoder, config.input_mean, config.input_std)
        channels = list(self.encoder.channels)
        prior_ch = 1 if config.lung_prior == "input" else 0
        blocks = []
        in_ch = channels[-1]
        for k, skip_ch in enumerate(reversed(channels[:-1])):
            out_ch = config.decoder_channels[k]
            blocks.append(_DecoderBlock(in_ch + prior_ch, skip_ch, out_ch))
            in_ch = out_ch
        self.decoder = nn.ModuleList(blocks)
        self.seg_head = nn.Conv2d(in_ch, 1, kernel_size=1)
        nn.init.constant_(self.seg_head.bias, -4.0)  # start near "no opacity" (prior ~2 % positive pixels)
        self.cls_head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(2 * channels[-1], 1))
        nn.init.normal_(self.cls_head[1].weight, std=0.01)  # start at p ~ 0.5
        nn.init.zeros_(self.cls_head[1].bias)
        self.register_buffer("lung_prior", torch.ones(1, 1, PRIOR_GRID, PRIOR_GRID))
        self.register_buffer("lung_prior_is_fitted", torch.zeros((), dtype=torch.bool))

    # ---- lung-field prior -------------------------------------------------------------------------------
    def set_lung_prior(self, prior: np.ndarray | torch.Tensor) -> None:
        """Install a (64, 64) prior in [0, 1] (from ``fit_lung_prior``); saved with the state dict."""
        prior_t = torch.as_tensor(np.asarray(prior, dtype=np.float32))
        if prior_t.shape != (PRIOR_GRID, PRIOR_GRID) or not torch.isfinite(prior_t).all():
            raise ConfigError(f"lung prior must be a finite ({PRIOR_GRID}, {PRIOR_GRID}) array, got {tuple(prior_t.shape)}")
        self.lung_prior.copy_(prior_t.clamp(0, 1)[None, None])
        self.lung_prior_is_fitted.fill_(True)

    @property
    def lung_prior_fitted(self) -> bool:
        return bool(self.lung_prior_is_fitted)

    def _prior_at(self, height: int, width: int) -> torch.Tensor:
        return upsample_prior(self.lung_prior, height, width)

    def lung_field_mask(self, size: int) -> torch.Tensor:
        """(size, size) bool: where the prior is at least ``prior_floor`` (all True unless lung_prior "filter")."""
        if self.config.lung_prior != "filter":
            return torch.ones((size, size), dtype=torch.bool, device=self.lung_prior.device)
        return self._prior_at(size, size)[0, 0] >= self.config.prior_floor

    # ---- network ----------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, S, S) in [0, 1] -> (seg logits (B, 1, S, S), image logits (B,))."""
        images = check_input(images)
        features = self.encoder(normalise(images, self.mean, self.std))
        bottleneck = features[-1]
        pooled = torch.cat([bottleneck.mean(dim=(2, 3)), bottleneck.amax(dim=(2, 3))], dim=1)
        image_logit = self.cls_head(pooled)[:, 0]
        x = bottleneck
        for block, skip in zip(self.decoder, reversed(features[:-1])):
            if self.config.lung_prior == "input":
                prior = self._prior_at(x.shape[-2], x.shape[-1]).expand(x.shape[0], -1, -1, -1)
                x = torch.cat([x, prior], dim=1)
            x = block(x, skip)
        seg = self.seg_head(x)
        seg = F.interpolate(seg, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return seg, image_logit

    def compute_loss(self, images: torch.Tensor, targets: list[Target]) -> dict[str, torch.Tensor]:
        """BCE + soft Dice on filled box masks (images with boxes or label 0) + image-level BCE."""
        check_targets(targets, images.shape[0])
        seg, image_logit = self(images)
        labels = torch.tensor([float(t.label) for t in targets], device=seg.device)
        masks = union_masks(targets, seg.shape[-2], seg.shape[-1], seg.device)
        keep = torch.tensor(box_supervised(targets), device=seg.device)
        if keep.any():
            seg_bce = F.binary_cross_entropy_with_logits(seg[keep], masks[keep])
            dice = soft_dice_loss(seg[keep], masks[keep])
        else:
            seg_bce = dice = seg.sum() * 0.0
        pos_weight = None
        if self.config.cls_pos_weight is not None:
            pos_weight = torch.tensor(float(self.config.cls_pos_weight), device=seg.device)
        cls = F.binary_cross_entropy_with_logits(image_logit, labels, pos_weight=pos_weight)
        c = self.config
        total = c.seg_weight * (seg_bce + c.dice_weight * dice) + c.cls_weight * cls
        return {"loss": total, "seg_bce": seg_bce.detach(), "dice": dice.detach(), "cls_bce": cls.detach()}

    @torch.no_grad()
    def probability_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode (B, S, S) opacity probabilities (filtered by the prior with "filter") and (B,) image probs."""
        with eval_mode(self):
            seg, image_logit = self(images)
        prob = torch.sigmoid(seg[:, 0])
        if self.config.lung_prior == "filter":
            prob = prob * self.lung_field_mask(prob.shape[-1]).to(prob.dtype)
        return prob, torch.sigmoid(image_logit)

    @torch.no_grad()
    def infer(self, images: torch.Tensor) -> list[RawOutput]:
        prob_maps, image_probs = self.probability_maps(images)
        return outputs_from_maps(prob_maps.cpu().numpy(), image_probs.cpu().tolist(), self.config)


# ---- prior fitting and measurement ------------------------------------------------------------------------
def upsample_prior(prior: torch.Tensor | np.ndarray, height: int, width: int) -> torch.Tensor:
    """A (64, 64) or (1, 1, 64, 64) prior -> (1, 1, height, width), bilinear (the one resampling used everywhere)."""
    prior_t = torch.as_tensor(prior, dtype=torch.float32)
    if prior_t.ndim == 2:
        prior_t = prior_t[None, None]
    return F.interpolate(prior_t, size=(height, width), mode="bilinear", align_corners=False)


def _as_box_array(boxes: np.ndarray | Sequence, where: str) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4))
    if array.ndim != 2 or array.shape[1] < 4 or not np.isfinite(array[:, :4]).all():
        raise InvalidBoxesError(f"{where}: expected (N, 4+) finite xyxy boxes, got shape {array.shape}")
    return array[:, :4]


def fit_lung_prior(
    boxes_per_image: Sequence[np.ndarray], size: int, grid: int = PRIOR_GRID, blur_sigma: float = 2.0
) -> np.ndarray:
    """Where opacity boxes occur: (grid, grid) float32 in [0, 1] over the normalised input canvas.

    ``boxes_per_image``: one (N, 4+) xyxy array per training image in model-input pixels of a ``size`` px
    canvas (negatives contribute empty arrays). Filled boxes are accumulated on the grid (fractional pixel
    coverage), blurred with a Gaussian of ``blur_sigma`` grid cells and divided by the maximum. With no box at
    all, the prior is all ones (no evidence, so no suppression).
    """
    from scipy import ndimage

    if size <= 0:
        raise ConfigError(f"size must be positive, got {size}")
    counts = np.zeros((grid, grid), dtype=np.float64)
    edges = np.arange(grid + 1, dtype=np.float64)
    scale = grid / float(size)
    for i, boxes in enumerate(boxes_per_image):
        for x1, y1, x2, y2 in _as_box_array(boxes, f"image {i}") * scale:
            cover_x = np.clip(np.minimum(edges[1:], x2) - np.maximum(edges[:-1], x1), 0, 1)
            cover_y = np.clip(np.minimum(edges[1:], y2) - np.maximum(edges[:-1], y1), 0, 1)
            counts += np.outer(cover_y, cover_x)
    if counts.max() <= 0:
        return np.ones((grid, grid), dtype=np.float32)
    if blur_sigma > 0:
        counts = ndimage.gaussian_filter(counts, sigma=blur_sigma, mode="constant")
    return (counts / counts.max()).astype(np.float32)


def opacity_outside_prior_fraction(
    boxes: np.ndarray | Sequence[np.ndarray], prior: np.ndarray, size: int, floor: float = 0.05
) -> float:
    """Fraction of the total box area (model-input pixels, ``size`` px canvas) lying where ``prior < floor``.

    ``boxes``: one (N, 4+) xyxy array, or a list of them (one per image); overlapping boxes count twice.
    Returns 0.0 when there is no box area. The prior is upsampled to the canvas exactly as the model's
    ``"filter"`` does, so boxes the filter produced score 0.
    """
    prior = np.asarray(prior, dtype=np.float32)
    if prior.ndim != 2:
        raise ConfigError(f"prior must be 2-D, got shape {prior.shape}")
    arrays = [boxes] if isinstance(boxes, np.ndarray) else list(boxes)
    outside = (upsample_prior(prior, size, size)[0, 0].numpy() < floor).astype(np.float64)
    integral = np.zeros((size + 1, size + 1))
    integral[1:, 1:] = outside.cumsum(0).cumsum(1)
    total = out = 0.0
    for i, array in enumerate(arrays):
        for x1, y1, x2, y2 in _as_box_array(array, f"image {i}"):
            c1, c2 = (int(np.clip(round(v), 0, size)) for v in (x1, x2))
            r1, r2 = (int(np.clip(round(v), 0, size)) for v in (y1, y2))
            area = (c2 - c1) * (r2 - r1)
            if area <= 0:
                continue
            total += area
            out += integral[r2, c2] - integral[r1, c2] - integral[r2, c1] + integral[r1, c1]
    return float(out / total) if total > 0 else 0.0
