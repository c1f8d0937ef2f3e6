"""``maskrcnn`` without torch: its config and the decoding of one image's detections into a ``RawOutput``.

Shared by the torch model (``pneumo.models.maskrcnn``) and the ONNX backend, so both post-process alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pneumo.decode.common import finish_boxes
from pneumo.types import RawOutput

#: anchor sizes (sqrt of area, px) at 1024 px input, one per FPN level P2..P6; scaled by S / 1024
RSNA_ANCHOR_SIZES_1024 = (64, 112, 192, 320, 512)
#: anchor aspect ratios as height / width (torchvision's convention)
RSNA_ASPECT_RATIOS = (0.7, 1.1, 1.6, 2.5)


@dataclass
class MaskRCNNConfig:
    """Settings of the ``maskrcnn`` family (pixels are model-input pixels)."""

    backbone: str = "resnet18"  # "resnet18" | "resnet34" | "resnet50" | "efficientnet-lite0"
    pretrained: bool = False  # ImageNet init (efficientnet-lite0 only)
    image_size: int = 512  # S the anchors are scaled for (S / 1024 x RSNA sizes)
    input_mean: float | None = None  # None: the backbone's default (backbones.default_normalisation)
    input_std: float | None = None
    fpn_channels: int = 256  # FPN width (efficientnet-lite0; the ResNet FPN is torchvision's, 256)
    anchor_sizes_1024: tuple[int, ...] = RSNA_ANCHOR_SIZES_1024
    aspect_ratios: tuple[float, ...] = RSNA_ASPECT_RATIOS
    rpn_pre_nms_top_n_train: int = 1000
    rpn_post_nms_top_n_train: int = 500
    rpn_pre_nms_top_n_test: int = 500
    rpn_post_nms_top_n_test: int = 300
    rpn_batch_size_per_image: int = 128
    box_batch_size_per_image: int = 128
    box_score_thresh: float = 0.01  # keep low: the checkpoint's box_confidence threshold decides later
    box_nms_thresh: float = 0.4
    detections_per_image: int = 10
    box_head_dim: int = 512  # TwoMLPHead width (torchvision: 1024)
    mask_head_channels: tuple[int, ...] = (128, 128)  # mask head convs (torchvision: 4 x 256; masks are filled boxes)
    image_score: str = "max"  # "max" | "noisy_or"
    min_box_side: float = 0.02  # fraction of S below which a box's score is tapered (size_taper); 0 turns it off


def image_probability(scores: np.ndarray, image_score: str = "max") -> float:
    """Image-level probability from the (N,) box scores: their max, or noisy-or 1 - prod(1 - s); 0 without boxes."""
    scores = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), 0.0, 1.0)
    if scores.size == 0:
        return 0.0
    if image_score == "max":
        return float(scores.max())
    return float(1.0 - np.prod(1.0 - scores))


def size_taper(boxes: np.ndarray, min_side: float) -> np.ndarray:
    """(N, 4+) xyxy boxes -> (N,) factors in [0, 1]: min(1, width / min_side) x min(1, height / min_side).

    Continuous in the coordinates and 0 for an empty box, so multiplying scores by it makes a box that thins
    to nothing (and is then dropped) fade out instead of vanishing at full score. ``min_side`` in the boxes'
    pixels; <= 0 gives all ones.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, np.shape(boxes)[-1] if np.size(boxes) else 4)
    if min_side <= 0:
        return np.ones(len(boxes), dtype=np.float64)
    width = np.clip(boxes[:, 2] - boxes[:, 0], 0.0, None)
    height = np.clip(boxes[:, 3] - boxes[:, 1], 0.0, None)
    return np.minimum(1.0, width / min_side) * np.minimum(1.0, height / min_side)


def _bilinear_taps(out_len: int, in_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lo, hi) and weight of hi for resizing ``in_len`` -> ``out_len`` samples, as torch's
    ``F.interpolate(mode="bilinear", align_corners=False)``: source = (dst + 0.5) x in / out - 0.5, floored at 0."""
    source = np.maximum((np.arange(out_len, dtype=np.float64) + 0.5) * (in_len / out_len) - 0.5, 0.0)
    lo = np.minimum(source.astype(np.int64), in_len - 1)
    hi = np.minimum(lo + 1, in_len - 1)
    return lo, hi, (source - lo).astype(np.float32)


def paste_masks(masks: np.ndarray, boxes: np.ndarray, size: tuple[int, int], padding: int = 1) -> np.ndarray:
    """(N, M, M) mask probabilities on each box's RoI grid -> (N, H, W) on the image (``size`` = (H, W)).

    torchvision's ``paste_masks_in_image`` in numpy (what its eager ``postprocess`` does): the M x M mask is
    zero-padded by ``padding`` cells, its box (N, 4) xyxy px widened by (M + 2 padding) / M about its centre
    and truncated to integers, the mask resized bilinearly to the box's (h + 1) x (w + 1) px and written into a
    zero image, clipped at the edges. Outside the graph, so the exported detector has no per-box loop.
    """
    masks = np.asarray(masks, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    height, width = int(size[0]), int(size[1])
    out = np.zeros((len(boxes), height, width), dtype=np.float32)
    if not len(boxes):
        return out
    side = masks.shape[-1]
    padded = np.pad(masks.reshape(-1, side, side), ((0, 0), (padding, padding), (padding, padding)))
    scale = np.float32((side + 2 * padding) / side)
    half_w, half_h = (boxes[:, 2] - boxes[:, 0]) * np.float32(0.5) * scale, (boxes[:, 3] - boxes[:, 1]) * np.float32(0.5) * scale
    centre_x, centre_y = (boxes[:, 2] + boxes[:, 0]) * np.float32(0.5), (boxes[:, 3] + boxes[:, 1]) * np.float32(0.5)
    widened = np.stack([centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h], axis=1)
    widened = np.trunc(widened).astype(np.int64)  # torch's .to(int64) truncates towards 0
    for i, (x0, y0, x1, y1) in enumerate(widened):
        box_w, box_h = max(int(x1 - x0 + 1), 1), max(int(y1 - y0 + 1), 1)
        ylo, yhi, wy = _bilinear_taps(box_h, padded.shape[1])
        xlo, xhi, wx = _bilinear_taps(box_w, padded.shape[2])
        grid = padded[i]
        rows = grid[ylo] * (1 - wy)[:, None] + grid[yhi] * wy[:, None]  # (box_h, M + 2p)
        resized = rows[:, xlo] * (1 - wx)[None, :] + rows[:, xhi] * wx[None, :]  # (box_h, box_w)
        left, right = max(int(x0), 0), min(int(x1) + 1, width)
        top, bottom = max(int(y0), 0), min(int(y1) + 1, height)
        if right > left and bottom > top:
            out[i, top:bottom, left:right] = resized[top - y0 : bottom - y0, left - x0 : right - x0]
    return out


def output_from_detections(
    boxes: np.ndarray, scores: np.ndarray, masks: np.ndarray, size: tuple[int, int], config: MaskRCNNConfig
) -> RawOutput:
    """Post-processing shared by the torch model and the ONNX backend, for one image: (N, 4) xyxy boxes in
    input pixels, (N,) scores, (N, M, M) mask probabilities on each box's RoI grid (torchvision's M = 28, not
    yet pasted: ``paste_masks``) -> RawOutput (heatmap = per-pixel max of score x pasted mask, (S, S);
    ``size`` = (S, S)). Scores are tapered first (``size_taper`` with ``config.min_box_side`` x S)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    taper = size_taper(boxes, float(getattr(config, "min_box_side", 0.0)) * float(max(size)))
    scores = (np.asarray(scores, dtype=np.float64).reshape(-1) * taper).astype(np.float32)
    boxes5 = np.concatenate([boxes, scores[:, None]], axis=1)
    heatmap = np.zeros(size, dtype=np.float32)
    if scores.size:
        pasted = paste_masks(masks, boxes, size)
        heatmap = np.clip((pasted * scores[:, None, None]).max(axis=0), 0.0, 1.0)
    return RawOutput(
        probability=image_probability(scores, config.image_score),
        boxes=finish_boxes(boxes5, config.detections_per_image),
        heatmap=heatmap.astype(np.float32, copy=False),
    )
