"""Mask R-CNN's masks leave the exported graph on their RoI grids and are pasted in numpy (torchvision's pasting
exported as a per-box ONNX ``Loop``); an export of an older graph layout is refused with the command to re-export.

The shipped detector's torch/ONNX parity on real images is in tests/integration/test_onnx_parity.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import pneumo.export.decoders as decoders
from pneumo.decode.maskrcnn import paste_masks
from pneumo.errors import CheckpointError
from pneumo.export.exporter import export_checkpoint, onnx_path_for
from pneumo.export.runtime import OnnxModel
from tests.unit.test_onnx_export import save_unet


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("layout")
    checkpoint = save_unet(folder / "unet.pt")
    export_checkpoint(checkpoint)
    return checkpoint, onnx_path_for(checkpoint)


# ---- mask pasting -------------------------------------------------------------------------------------------


def test_paste_masks_matches_torchvision_eager_pasting():
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(60):
        n = int(rng.integers(1, 8))
        masks = rng.random((n, 28, 28)).astype(np.float32)
        corner = rng.uniform(0, 1, (n, 2)) * (188, 252)
        # boxes as the detector returns them: clipped to the (256 x 192) image, some thinner than a pixel
        boxes = np.concatenate([corner, corner + rng.uniform(0.2, 180, (n, 2))], 1)
        boxes = np.minimum(boxes, (192, 256, 192, 256)).astype(np.float32)
        expected = paste_masks_in_image(torch.from_numpy(masks)[:, None], torch.from_numpy(boxes), (256, 192))[:, 0]
        got = paste_masks(masks, boxes, (256, 192))
        assert got.shape == (n, 256, 192) and got.dtype == np.float32
        worst = max(worst, float(np.abs(got - expected.numpy()).max()))
    assert worst < 1e-5


def test_paste_masks_puts_a_mask_inside_its_box_only():
    pasted = paste_masks(np.ones((1, 28, 28), np.float32), np.array([[40, 60, 100, 90]], np.float32), (128, 128))[0]
    inside = pasted[62:89, 42:99]
    assert inside.min() > 0.5  # the filled mask covers its box (the 1-cell zero padding fades only at the rim)
    assert pasted[:55].max() == 0 and pasted[96:].max() == 0 and pasted[:, :35].max() == 0 and pasted[:, 106:].max() == 0
    assert paste_masks(np.zeros((0, 28, 28), np.float32), np.zeros((0, 4), np.float32), (64, 32)).shape == (0, 64, 32)


# ---- graph layout --------------------------------------------------------------------------------------------


def test_an_export_of_another_graph_layout_is_refused(exported, monkeypatch):
    checkpoint, onnx_file = exported
    monkeypatch.setitem(decoders.DECODERS, "unet", dataclasses.replace(decoders.DECODERS["unet"], layout=2))
    with pytest.raises(CheckpointError, match="graph layout 1.*re-export"):
        OnnxModel(onnx_file, checkpoint=checkpoint, num_threads=1)
