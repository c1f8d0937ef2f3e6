"""The ensemble: spec parsing, the fusion recipe, flip TTA end to end, and tuning on validation outputs.

Fusion logic is tested on hand-made member outputs and, for TTA, with a box-predicting fake family (a blob
finder) registered for this module only and saved as a real checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from pneumo.errors import ConfigError
from pneumo.inference.common import flip_boxes_horizontally
from pneumo.types import ImageOutput
from pneumo.models.base import PneumoModel, RawOutput
from pneumo.models.checkpoint import save_checkpoint
from pneumo.ensemble import EnsembleMember, EnsembleSpec, FusionParams, fuse
from pneumo.models.registry import register_family, unregister_family
from pneumo.postprocess import mask_to_boxes
from pneumo.preprocess import Preprocessor
from pneumo.service import InferenceService
from pneumo.training.ensemble_tuning import evaluate_spec, tune_ensemble
from pneumo.types import XRay, boxes_to_array

SIZE = (100, 100)


def out(probability: float, *views, heatmap=None, size=SIZE) -> ImageOutput:
    """A member's output; no views given = one view without boxes (what a real predictor returns)."""
    arrays = tuple(np.asarray(v, dtype=np.float32).reshape(-1, 5) for v in views)
    return ImageOutput(probability, arrays or (np.zeros((0, 5), np.float32),), heatmap, size)


def spec(**fusion) -> EnsembleSpec:
    defaults = dict(shrink=1.0, gate_threshold=0.0, box_threshold=0.0, skip_thr=0.0, wbf_iou_thr=0.5)
    return EnsembleSpec(
        members=(EnsembleMember("a", 1.0), EnsembleMember("b", 3.0)),
        classifier=EnsembleMember("cls"),
        fusion=FusionParams(**{**defaults, **fusion}),
    )


# ------------------------------------------------------------------------------------------------ spec


def test_spec_round_trip_and_hash(tmp_path):
    original = spec(shrink=0.875, tta_flip=True)
    path = original.save(tmp_path / "ensemble.json")
    loaded = EnsembleSpec.load(path)
    assert loaded == original and loaded.base_dir == tmp_path.resolve()
    assert json.loads(path.read_text())["type"] == "ensemble"
    assert loaded.sha256 == original.sha256
    assert original.with_fusion(shrink=0.9).sha256 != original.sha256
    assert loaded.model_keys == ["a", "b", "cls"]


@pytest.mark.parametrize("data, match", [
    ({"members": [{"model": "a", "weight": -1}]}, "weight must be a positive"),
    ({"members": ["a"], "fusion": {"shrinkage": 0.9}}, "fusion' keys"),
    ({"members": ["a"], "fusion": {"box_score": "max"}}, "box_score"),
    ({"members": ["a"], "fusion": {"gate_threshold": 1.5}}, r"gate_threshold must be a number in \[0, 1\]"),
    ({"members": [], "classifier": None}, "at least one member"),
    ({"members": ["a"], "colour": "red"}, "unknown ensemble spec key"),
    ({"type": "baseline", "members": ["a"]}, "not an ensemble spec"),
])
def test_invalid_specs_are_config_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        EnsembleSpec.from_dict(data)


# ------------------------------------------------------------------------------------------------ fusion


def test_probability_is_classifier_dominated_weighted_mean():
    outputs = {"a": out(0.2), "b": out(0.6), "cls": out(0.9)}
    fused = fuse(spec(classifier_weight=0.75), outputs)
    detector = (1 * 0.2 + 3 * 0.6) / 4  # member weights 1 and 3
    assert fused.probability == pytest.approx(0.75 * 0.9 + 0.25 * detector)
    assert fuse(spec(classifier_weight=1.0), outputs).probability == pytest.approx(0.9)
    no_classifier = EnsembleSpec(members=(EnsembleMember("a"), EnsembleMember("b", 3.0)))
    assert fuse(no_classifier, outputs).probability == pytest.approx(detector)


def test_member_boxes_are_fused_by_wbf_and_scored_with_the_probability():
    outputs = {
        "a": out(0.5, [[10, 10, 30, 30, 0.8], [60, 60, 80, 80, 0.6]]),
        "b": out(0.5, [[12, 10, 32, 30, 0.8]]),
        "cls": out(0.5),
    }
    fused = fuse(spec(classifier_weight=0.5), outputs)  # probability 0.5
    assert len(fused.boxes) == 2
    top = fused.boxes[0]
    # confidence-weighted mean of (10, 30) with weight 0.8 x 1 and (12, 32) with weight 0.8 x 3 -> 11.5, 31.5
    np.testing.assert_allclose(top[:4], [11.5, 10, 31.5, 30], atol=1e-4)
    # WBF "avg": mean weighted conf (0.8 + 2.4) / 2 x min(2, 2) / (1 + 3) = 0.8; then x probability 0.5
    assert top[4] == pytest.approx(0.8 * 0.5, abs=1e-6)
    lonely = fused.boxes[1]  # found by the light member only: 0.6 x 1 x 1 / 4, x 0.5
    assert lonely[4] == pytest.approx(0.6 / 4 * 0.5, abs=1e-6)
    detector_only = fuse(spec(classifier_weight=0.5, box_score="detector"), outputs)
    assert detector_only.boxes[0, 4] == pytest.approx(0.8, abs=1e-6)


def test_gate_drops_every_box_and_box_threshold_drops_weak_ones():
    outputs = {"a": out(0.3, [[10, 10, 30, 30, 0.9], [50, 50, 70, 70, 0.2]]), "b": out(0.3), "cls": out(0.3)}
    assert len(fuse(spec(gate_threshold=0.31), outputs).boxes) == 0
    kept = fuse(spec(gate_threshold=0.3, box_score="detector", box_threshold=0.06), outputs).boxes
    # member "a" has weight 1 of 4: confidences 0.9 / 4 and 0.2 / 4 = 0.05; only the first clears 0.06
    assert len(kept) == 1 and kept[0, 4] == pytest.approx(0.9 / 4, abs=1e-6)


def test_shrink_keeps_the_centre_and_scales_width_and_height():
    outputs = {"a": out(0.9, [[20, 40, 60, 80, 0.9]]), "b": out(0.9, [[20, 40, 60, 80, 0.9]]), "cls": out(0.9)}
    box = fuse(spec(shrink=0.875), outputs).boxes[0]
    np.testing.assert_allclose(box[:4], [22.5, 42.5, 57.5, 77.5], atol=1e-4)  # 40 x 40 -> 35 x 35 about (40, 60)
    edge = {k: out(0.9, [[90, 0, 100, 10, 0.9]]) for k in ("a", "b")} | {"cls": out(0.9)}
    grown = fuse(spec(shrink=1.2), edge).boxes[0]
    assert grown[2] <= 100 and grown[1] >= 0, "boxes stay inside the image"


def test_heatmaps_are_averaged_and_members_must_agree_on_image_size():
    heat_a = np.zeros((10, 10), np.float32)
    heat_cls = np.ones((20, 20), np.float32)
    outputs = {"a": out(0.5, heatmap=heat_a), "b": out(0.5), "cls": out(0.5, heatmap=heat_cls)}
    fused = fuse(spec(classifier_weight=0.75), outputs)
    assert fused.heatmap.shape == (20, 20)
    # shares: cls 0.75, a 0.25 x 1/4 (b has no heatmap) -> 0.75 / (0.75 + 0.0625)
    assert fused.heatmap.mean() == pytest.approx(0.75 / 0.8125, abs=1e-5)
    with pytest.raises(ConfigError, match="different image sizes"):
        fuse(spec(), {"a": out(0.5), "b": out(0.5, size=(50, 50)), "cls": out(0.5)})


# ------------------------------------------------------------------------------------------------ TTA end to end


@dataclass
class BlobConfig:
    threshold: float = 0.5


class BlobFinder(PneumoModel):
    """Fake detector: one box per bright connected region of its input, in input pixels."""

    def __init__(self, config: BlobConfig) -> None:
        super().__init__()
        self.config = config
        self.anchor = nn.Parameter(torch.zeros(1))  # something to save

    @torch.no_grad()
    def infer(self, images: torch.Tensor) -> list[RawOutput]:
        outputs = []
        for image in images[:, 0].cpu().numpy():
            boxes = mask_to_boxes(image, threshold=self.config.threshold)
            outputs.append(RawOutput(float(image.max()), boxes, image.copy()))
        return outputs


@pytest.fixture
def blob_family():
    register_family("test-blobfinder", BlobConfig)(BlobFinder)
    yield "test-blobfinder"
    unregister_family("test-blobfinder")


def test_flip_tta_unflips_boxes_and_heatmaps_into_original_pixels(tmp_path, blob_family):
    model = BlobFinder(BlobConfig())
    save_checkpoint(tmp_path / "blob.pt", model, config=model.config, preprocess=Preprocessor(64).to_dict(),
                    thresholds={}, metrics={}, data_fingerprint="test")
    EnsembleSpec(members=(EnsembleMember("blob.pt"),), fusion=FusionParams(
        shrink=1.0, gate_threshold=0.0, box_threshold=0.0, box_score="detector", tta_flip=True,
    )).save(tmp_path / "ensemble.json")
    pixels = np.zeros((120, 192), np.float32)  # 192 -> 64 px: scale 1/3, 11 px of padding above and below
    pixels[30:66, 30:60] = 1.0  # a blob on the image's left side: x 30-60, y 30-66
    service = InferenceService(tmp_path, num_threads=1)
    image = XRay(pixels=pixels, source_format="png")

    raw = service.outputs([image], str(tmp_path / "blob.pt"), tta=True)[0]
    assert len(raw.views) == 2
    for view in raw.views:  # both views land on the blob; a missing un-flip would put one at x 132-162
        np.testing.assert_allclose(view[:, :4], [[30, 30, 60, 66]], atol=1e-4)

    prediction = service.predict(image, "ensemble")
    assert prediction.extra["tta"] is True
    np.testing.assert_allclose(boxes_to_array(list(prediction.boxes)), [[30, 30, 60, 66]], atol=1e-4)
    assert prediction.heatmap.shape == (40, 64)
    heat_left, heat_right = prediction.heatmap[:, :32].sum(), prediction.heatmap[:, 32:].sum()
    assert heat_left > 0 and heat_right == 0, "the flipped heatmap is flipped back"
    assert flip_boxes_horizontally(np.array([[30, 30, 60, 66]]), 192).tolist() == [[132, 30, 162, 66]]


# ------------------------------------------------------------------------------------------------ tuning


def _validation_set(shrink_truth: float = 0.7):
    """6 images: 3 positives whose detector box is the truth grown by 1/shrink_truth, 3 negatives with a false
    box; the classifier separates them (0.9 vs 0.1)."""
    member_outputs: dict[str, list[ImageOutput]] = {"a": [], "b": [], "cls": []}
    gts = []
    for i in range(6):
        positive = i < 3
        cx, cy = 30 + 5 * i, 50
        half = 10.0
        gt = np.array([[cx - half * shrink_truth, cy - half * shrink_truth,
                        cx + half * shrink_truth, cy + half * shrink_truth]], np.float32)
        predicted = [[cx - half, cy - half, cx + half, cy + half, 0.9]]
        member_outputs["a"].append(out(0.5, predicted))
        member_outputs["b"].append(out(0.5, predicted))
        member_outputs["cls"].append(out(0.9 if positive else 0.1))
        gts.append(gt if positive else np.zeros((0, 4), np.float32))
    return member_outputs, gts


def test_tune_ensemble_finds_the_shrink_and_gate_that_maximise_map():
    member_outputs, gts = _validation_set(shrink_truth=0.7)
    start = spec(shrink=1.0, gate_threshold=0.0, box_threshold=0.3)
    before = evaluate_spec(start, member_outputs, gts)
    tuned = tune_ensemble(start, member_outputs, gts, shrink_grid=(1.0, 0.85, 0.7), context={"fold": 0})
    assert tuned.fusion.shrink == 0.7
    # probabilities: positives 0.75 x 0.9 + 0.25 x 0.5 = 0.8, negatives 0.2: the gate must sit in (0.2, 0.8]
    assert 0.2 < tuned.fusion.gate_threshold <= 0.8
    assert tuned.tuning["map"] == pytest.approx(1.0)
    assert tuned.tuning["map_before"] == pytest.approx(before) and before < 0.5
    assert tuned.tuning["fold"] == 0 and tuned.tuning["n_images"] == 6 and tuned.tuning["n_positive"] == 3
    assert evaluate_spec(tuned, member_outputs, gts) == pytest.approx(tuned.tuning["map"])
    assert 0.2 < tuned.fusion.probability_threshold <= 0.8
    assert tuned.members == start.members and tuned.classifier == start.classifier


def test_tune_ensemble_down_weights_a_member_that_adds_false_boxes():
    member_outputs, gts = _validation_set(shrink_truth=1.0)
    for i in range(len(gts)):  # b misses every true box and adds one confident false box
        member_outputs["b"][i] = out(0.5, [[70, 5, 90, 25, 0.9]])
    start = dataclasses.replace(spec(shrink=1.0), members=(EnsembleMember("a", 1.0), EnsembleMember("b", 1.0)))
    equal = tune_ensemble(start, member_outputs, gts, member_weight_grid=(1.0,), shrink_grid=(1.0,))
    tuned = tune_ensemble(start, member_outputs, gts, member_weight_grid=(1.0, 0.5, 2.0), shrink_grid=(1.0,))
    # WBF scales a box found by one member by that member's share of the weights: with equal weights a's true
    # boxes and b's false ones tie (0.45 each) and no threshold separates them; b at 0.5 makes them 0.6 vs 0.3
    assert equal.tuning["map"] < 0.9 and tuned.tuning["map"] == pytest.approx(1.0)
    assert [m.weight for m in tuned.members] == [1.0, 0.5]
    assert tuned.tuning["member_weights"] == {"a": 1.0, "b": 0.5}
    assert evaluate_spec(tuned, member_outputs, gts) == pytest.approx(tuned.tuning["map"])


def test_tune_ensemble_rejects_missing_or_misaligned_outputs():
    member_outputs, gts = _validation_set()
    with pytest.raises(ConfigError, match="no validation outputs for ensemble member 'cls'"):
        tune_ensemble(spec(), {"a": member_outputs["a"], "b": member_outputs["b"]}, gts)
    with pytest.raises(ConfigError, match="has 5 outputs for 6 images"):
        tune_ensemble(spec(), {**member_outputs, "a": member_outputs["a"][:5]}, gts)
