"""One home per setting: the typed ``Thresholds`` (and its backward-compatible stored form) and the input size,
which lives only in the preprocessor saved with the weights (a checkpoint without it is refused)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pneumo.errors import CheckpointError, ConfigError
from pneumo.models import create_model
from pneumo.models.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from pneumo.preprocess import Preprocessor
from pneumo.types import Thresholds

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_thresholds_validate_and_round_trip():
    t = Thresholds(box=0.3, gate=0.2, probability=0.7)
    assert Thresholds.from_dict(t.to_dict()) == t
    assert t.to_dict() == {"box_threshold": 0.3, "gate_threshold": 0.2, "probability_threshold": 0.7}
    assert Thresholds() == Thresholds(box=0.0, gate=0.0, probability=0.5)  # neutral: every box, no gate
    for bad in ({"box": 1.5}, {"gate": -0.1}, {"probability": float("nan")}, {"box": "0.3"}, {"gate": True}):
        with pytest.raises(ConfigError, match="in \\[0, 1\\]"):
            Thresholds(**bad)
    with pytest.raises(AttributeError):
        t.box = 0.9  # frozen


def test_thresholds_read_old_names_and_ignore_other_entries():
    stored = {"box_confidence": 0.4, "image_gate": 0.1, "probability_threshold": float("nan"),
              "calibration": {"a": 1.0}, "map": 0.2}
    assert Thresholds.from_dict(stored) == Thresholds(box=0.4, gate=0.1, probability=0.5)
    assert Thresholds.from_dict(None, default=Thresholds(box=0.5)) == Thresholds(box=0.5)


@pytest.mark.parametrize("name", ["unet", "maskrcnn", "chexnet"])
def test_shipped_checkpoints_stored_dicts_read_unchanged(name):
    stored = read_checkpoint_meta(MODELS / f"{name}.pt")["thresholds"]
    t = Thresholds.from_dict(stored)
    assert t.to_dict() == {k: pytest.approx(float(stored[k])) for k in t.to_dict()}


def test_apply_gates_thresholds_clips_and_sorts():
    boxes = np.array([[0, 0, 10, 10, 0.2], [5, 5, 300, 20, 0.9], [-5, 0, 5, 5, 0.5], [200, 200, 210, 210, 0.6]],
                     dtype=np.float32)
    t = Thresholds(box=0.5, gate=0.3)
    out = t.apply(0.31, boxes, (100, 100))  # (height, width)
    np.testing.assert_allclose(out, [[5, 5, 100, 20, 0.9], [0, 0, 5, 5, 0.5]])  # the 200-px box is outside
    assert t.apply(0.29, boxes, (100, 100)).shape == (0, 5)  # gated: no boxes at all


def test_preprocessor_has_no_default_size():
    with pytest.raises(TypeError):
        Preprocessor()  # type: ignore[call-arg]
    for bad in ({}, None, {"size": "256"}, {"size": 2}, {"size": 256, "mean": 0.5}):
        with pytest.raises(ConfigError):
            Preprocessor.from_dict(bad)
    assert Preprocessor.from_dict({"size": 224}) == Preprocessor(224)


def _tiny_unet():
    return create_model("unet", {"encoder": "resnet18", "pretrained": False})


def test_checkpoint_without_input_size_is_refused_on_save_and_on_load(tmp_path):
    model = _tiny_unet()
    with pytest.raises(CheckpointError, match="input size"):
        save_checkpoint(tmp_path / "no_size.pt", model, config=model.config, preprocess={}, thresholds=Thresholds(),
                        metrics={}, data_fingerprint="t")
    assert not (tmp_path / "no_size.pt").exists()
    path = save_checkpoint(tmp_path / "ok.pt", model, config=model.config, preprocess=Preprocessor(64),
                           thresholds=Thresholds(box=0.4), metrics={}, data_fingerprint="t")
    assert load_checkpoint(path).preprocess == {"size": 64}
    assert load_checkpoint(path).thresholds == {"box_threshold": 0.4, "gate_threshold": 0.0, "probability_threshold": 0.5}
    payload = torch.load(path, weights_only=True)  # an old-style file: the preprocess entry lost
    payload["preprocess"] = {}
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="no longer guesses a size"):
        load_checkpoint(tmp_path / "old.pt")


def test_a_family_config_that_disagrees_with_the_saved_input_size_is_refused(tmp_path):
    model = create_model("maskrcnn", {"backbone": "resnet18", "pretrained": False, "image_size": 64})
    path = save_checkpoint(tmp_path / "m.pt", model, config=model.config, preprocess=Preprocessor(64),
                           thresholds=Thresholds(), metrics={}, data_fingerprint="t")
    assert load_checkpoint(path).config.image_size == 64
    payload = torch.load(path, weights_only=True)
    payload["preprocess"] = {"size": 128}
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="image_size 64 .* says 128"):
        load_checkpoint(tmp_path / "bad.pt")
