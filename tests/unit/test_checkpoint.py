"""The checkpoint format: round trips for every family, fp16 shipping, integrity and family checks, atomicity."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import pneumo
from pneumo.errors import CheckpointError
from pneumo.models import create_model, list_models
from pneumo.models.checkpoint import (
    FORMAT_VERSION,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
    state_dict_sha256,
)

SIZE = 128
SMALL_CONFIGS: dict[str, dict] = {"maskrcnn": {"image_size": SIZE}}



def _model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return create_model(name, SMALL_CONFIGS.get(name)).eval()


def _images(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand((2, 1, SIZE, SIZE), generator=gen) * 0.4 + 0.2
    images[0, 0, 30:90, 20:60] += 0.3
    return images


def _save(path: Path, model, **overrides) -> Path:
    kwargs = dict(
        config=model.config,
        preprocess={"size": SIZE},
        thresholds={"box_confidence": 0.3, "image_gate": 0.5, "calibration": {"a": 1.5, "b": -0.2}},
        metrics={"val_map": np.float32(0.125), "auc": 0.75, "curve": np.array([0.1, 0.2])},
        data_fingerprint="rsna-mini:abc123",
        extra={"epochs": 3},
    )
    kwargs.update(overrides)
    return save_checkpoint(path, model, **kwargs)


@pytest.mark.slow  # > 5 s on 2 shared cores: outside make test-fast, still in make test
@pytest.mark.parametrize("name", list_models())
def test_round_trip_gives_identical_outputs(tmp_path, name):
    model = _model(name)
    images = _images()
    before = model.infer(images)
    path = _save(tmp_path / f"{name}.pt", model)
    loaded = load_checkpoint(path, expected_family=name)
    assert loaded.family == name and loaded.model.family == name
    assert not loaded.model.training
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    assert loaded.config == model.config
    assert loaded.preprocess == {"size": SIZE}
    assert loaded.thresholds["calibration"] == {"a": 1.5, "b": -0.2}
    assert loaded.metrics["val_map"] == pytest.approx(0.125) and loaded.metrics["curve"] == [0.1, 0.2]
    assert loaded.meta["data_fingerprint"] == "rsna-mini:abc123"
    after = loaded.model.infer(images)
    for a, b in zip(before, after):
        assert a.probability == b.probability
        np.testing.assert_array_equal(a.boxes, b.boxes)
        if a.heatmap is not None:
            np.testing.assert_array_equal(a.heatmap, b.heatmap)
    restored = loaded.model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, restored[key]), key


@pytest.mark.slow  # > 5 s on 2 shared cores: outside make test-fast, still in make test
@pytest.mark.parametrize("name", list_models())
def test_half_checkpoint_is_smaller_and_close(tmp_path, name):
    model = _model(name)
    images = _images()
    full = _save(tmp_path / "full.pt", model)
    half = _save(tmp_path / "half.pt", model, half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    raw = torch.load(half, weights_only=True)
    assert raw["dtype"] == "float16"
    assert all(t.dtype != torch.float32 for t in raw["state_dict"].values())
    loaded = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    restored = loaded.model.state_dict()
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(restored[key], value, rtol=2e-3, atol=1e-4)
    before, after = model.infer(images), loaded.model.infer(images)
    for a, b in zip(before, after):
        assert abs(a.probability - b.probability) < 0.02


def test_metadata_is_recorded_and_readable_without_the_model(tmp_path):
    model = _model("unet")
    path = _save(tmp_path / "m.pt", model)
    meta = read_checkpoint_meta(path)
    assert "state_dict" not in meta
    assert meta["family"] == "unet" and meta["format_version"] == FORMAT_VERSION
    assert meta["config"]["encoder"] == model.config.encoder
    assert meta["code_version"]["pneumo"] == pneumo.__version__
    assert "git" in meta["code_version"]
    assert meta["state_dict_sha256"] == state_dict_sha256(model.state_dict())
    assert len(meta["state_dict_sha256"]) == 64
    assert meta["extra"] == {"epochs": 3} and meta["dtype"] == "float32"
    assert meta["created_utc"].endswith("+00:00")


def test_wrong_family_is_refused(tmp_path):
    path = _save(tmp_path / "unet.pt", _model("unet"))
    with pytest.raises(CheckpointError, match=r"'unet'.*'chexnet'"):
        load_checkpoint(path, expected_family="chexnet")


def test_missing_and_corrupt_files_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(garbage)
    good = _save(tmp_path / "good.pt", _model("unet"))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError):
        read_checkpoint_meta(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a pneumo checkpoint"):
        load_checkpoint(foreign)


def test_tampered_weights_fail_the_integrity_check(tmp_path):
    path = _save(tmp_path / "m.pt", _model("unet"))
    payload = torch.load(path, weights_only=True)
    key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    payload["state_dict"][key] = payload["state_dict"][key].clone()
    payload["state_dict"][key].view(-1)[0] += 1.0
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="integrity"):
        load_checkpoint(path)


def test_newer_format_and_unknown_family_are_refused(tmp_path):
    path = _save(tmp_path / "m.pt", _model("unet"))
    payload = torch.load(path, weights_only=True)
    torch.save({**payload, "format_version": FORMAT_VERSION + 1}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="upgrade pneumo"):
        load_checkpoint(tmp_path / "future.pt")
    torch.save({**payload, "family": "vit-from-the-future"}, tmp_path / "alien.pt")
    with pytest.raises(CheckpointError, match="does not know"):
        load_checkpoint(tmp_path / "alien.pt")


def test_save_is_atomic(tmp_path, monkeypatch):
    model = _model("unet")
    path = _save(tmp_path / "m.pt", model)
    original = path.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        _save(path, model, data_fingerprint="other")
    assert path.read_bytes() == original, "a failed save must leave the old checkpoint intact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"], "no temporary file may be left behind"
    monkeypatch.undo()
    _save(path, model, data_fingerprint="other")
    assert read_checkpoint_meta(path)["data_fingerprint"] == "other"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_unplain_metadata_is_refused_at_save(tmp_path):
    with pytest.raises(CheckpointError, match="plain values"):
        _save(tmp_path / "m.pt", _model("unet"), metrics={"fn": object()})
    assert not (tmp_path / "m.pt").exists()


def test_unet_lung_prior_travels_in_the_checkpoint(tmp_path):
    model = _model("unet")
    prior = np.zeros((64, 64), dtype=np.float32)
    prior[10:50, 8:56] = 1.0
    model.set_lung_prior(prior)
    loaded = load_checkpoint(_save(tmp_path / "m.pt", model))
    assert loaded.model.lung_prior_fitted
    np.testing.assert_array_equal(loaded.model.lung_prior[0, 0].numpy(), prior)


def test_pretrained_config_loads_without_reading_imagenet_weights(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = create_model("chexnet", {"backbone": "efficientnet-lite0", "pretrained": True}).eval()
    path = _save(tmp_path / "m.pt", model)
    from pneumo.models import backbones

    def no_weights():
        raise AssertionError("loading a checkpoint must not read ImageNet weights")

    monkeypatch.setattr(backbones, "efficientnet_lite0_weights_path", no_weights)
    loaded = load_checkpoint(path, expected_family="chexnet")
    assert loaded.config.pretrained is True  # the saved config is returned unchanged
    images = _images()
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(images), model(images), rtol=0, atol=0)
    assert dataclasses.asdict(loaded.config) == dataclasses.asdict(model.config)


def test_shipping_the_same_model_again_is_recognised_and_a_changed_one_is_not(tmp_path, monkeypatch):
    """``pipeline.shipping.same_checkpoint``: a re-ship of equal weights and settings keeps the shipped bytes
    (and so its sha256, calibration sidecar and ONNX export); other weights or thresholds do not."""
    import time

    from pneumo.pipeline.shipping import same_checkpoint

    model = _model("chexnet")
    first = _save(tmp_path / "a.pt", model, half=True)
    assert not same_checkpoint(first, tmp_path / "missing.pt")
    time.sleep(1.1)  # another created_utc second
    again = _save(tmp_path / "b.pt", model, half=True)
    assert read_checkpoint_meta(first)["created_utc"] != read_checkpoint_meta(again)["created_utc"]
    assert same_checkpoint(again, first)
    assert not same_checkpoint(_save(tmp_path / "c.pt", model, half=True, thresholds={"box_confidence": 0.4}), first)
    assert not same_checkpoint(_save(tmp_path / "d.pt", _model("chexnet", seed=1), half=True), first)
