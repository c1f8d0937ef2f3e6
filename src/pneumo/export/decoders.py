"""Per family, torch-free: the exported graph's output names and how its ONNX outputs become ``RawOutput``s.

The decode functions are the family's own (``pneumo.decode``), the same ones the torch models call, so the
two backends share one copy of the post-processing. The graphs themselves (torch modules) are in
``pneumo.export.families``; this module is what serving needs, and it never imports torch.

* ``chexnet``: ``probability`` (B,) and Grad-CAM ``heatmap`` (B, S, S) in [0, 1].
* ``unet``: ``probability`` (B,) and ``prob_map`` (B, S, S) (lung-prior filter applied).
* ``maskrcnn``: ``boxes`` (N, 4) xyxy input px, ``scores`` (N,), ``masks`` (N, M, M) on each box's RoI grid,
  for ONE image (graph layout 2; layout 1, masks pasted in the graph as (N, S, S), is refused: re-export).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pneumo.decode.chexnet import CheXNetConfig, outputs_from_cams
from pneumo.decode.maskrcnn import MaskRCNNConfig, output_from_detections
from pneumo.decode.unet import UNetConfig, outputs_from_maps
from pneumo.errors import ConfigError
from pneumo.types import RawOutput

INPUT_NAME = "images"
#: (B, 1, S, S) float32 images -> the graph's outputs, in the order of ``Decoder.outputs``
Runner = Callable[[np.ndarray], list[np.ndarray]]


def _chexnet_outputs(run: Runner, images: np.ndarray, config: Any) -> list[RawOutput]:
    probs, heatmaps = run(images)
    return outputs_from_cams(probs.astype(np.float64).tolist(), heatmaps, config)


def _unet_outputs(run: Runner, images: np.ndarray, config: Any) -> list[RawOutput]:
    probs, prob_maps = run(images)
    return outputs_from_maps(prob_maps, probs.astype(np.float64).tolist(), config)


def _maskrcnn_outputs(run: Runner, images: np.ndarray, config: Any) -> list[RawOutput]:
    size = (int(images.shape[-2]), int(images.shape[-1]))
    outputs = []
    for i in range(images.shape[0]):
        boxes, scores, masks = run(images[i : i + 1])
        outputs.append(output_from_detections(boxes, scores, masks, size, config))
    return outputs


@dataclass(frozen=True)
class Decoder:
    """How one family's export is read.

    config: the family's config dataclass; outputs: the graph's output names; dynamic_batch: whether the batch
    axis is dynamic (else the graph takes one image); decode: (session runner, (B, 1, S, S) float32 images,
    family config) -> one RawOutput per image; heatmap: where the heatmap is computed; layout: version of the
    graph's outputs, written into each export (``pneumo.graph``): an export of another layout is refused.
    """

    config: type
    outputs: tuple[str, ...]
    dynamic_batch: bool
    decode: Callable[[Runner, np.ndarray, Any], list[RawOutput]]
    heatmap: str = "onnx"
    layout: int = 1


DECODERS: dict[str, Decoder] = {
    "chexnet": Decoder(CheXNetConfig, ("probability", "heatmap"), True, _chexnet_outputs),
    "unet": Decoder(UNetConfig, ("probability", "prob_map"), True, _unet_outputs),
    "maskrcnn": Decoder(MaskRCNNConfig, ("boxes", "scores", "masks"), False, _maskrcnn_outputs, layout=2),
}


def decoder(family: str) -> Decoder:
    """The decoder of ``family`` (``ConfigError`` for a family with no ONNX export)."""
    try:
        return DECODERS[family]
    except KeyError:
        raise ConfigError(
            f"model family {family!r} has no ONNX export; exportable: {', '.join(sorted(DECODERS))}"
        ) from None

