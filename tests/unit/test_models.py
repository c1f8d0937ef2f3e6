"""Every registered model family against the PneumoModel contract (parametrised over ``list_models()``).

A family registered tomorrow is tested here on the day it registers: shapes and ranges of ``infer`` at 128 px,
finite losses with gradients, the input contract, and (slow) overfitting 8 real RSNA images.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pneumo.errors import ConfigError, DuplicateNameError
from pneumo.models import create_model, list_models
from pneumo.models.base import PneumoModel, Target
from pneumo.models.registry import config_class, register_family, unregister_family

SIZE = 128

#: per-family settings for 128 px tests (families not listed use their defaults)
SMALL_CONFIGS: dict[str, dict] = {"maskrcnn": {"image_size": SIZE}}


def small_model(name: str, seed: int = 0) -> PneumoModel:
    torch.manual_seed(seed)
    return create_model(name, SMALL_CONFIGS.get(name))



def batch(seed: int = 0) -> tuple[torch.Tensor, list[Target]]:
    """Two 128 px images: a positive with two boxes (a bright blob under one) and a negative."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand((2, 1, SIZE, SIZE), generator=gen) * 0.3 + 0.2
    images[0, 0, 30:90, 20:60] += 0.4
    targets = [
        Target(boxes=torch.tensor([[20.0, 30.0, 60.0, 90.0], [75.0, 40.0, 110.0, 100.0]]), label=1),
        Target(boxes=torch.zeros((0, 4)), label=0),
    ]
    return images.clamp(0, 1), targets


# ---- registry -----------------------------------------------------------------------------------------


def test_builtin_families_are_registered():
    assert {"unet", "maskrcnn", "chexnet"} <= set(list_models())
    assert list_models() == sorted(list_models())


def test_duplicate_registration_is_refused():
    @dataclasses.dataclass
    class TinyConfig:
        width: int = 2

    class Tiny(PneumoModel):
        def __init__(self, config: TinyConfig) -> None:
            super().__init__()
            self.config = config

    name = "test-tiny-family"
    try:
        register_family(name, TinyConfig)(Tiny)
        assert name in list_models() and Tiny.family == name
        assert isinstance(create_model(name, {"width": "5"}), Tiny)
        assert create_model(name, {"width": "5"}).config.width == 5
        with pytest.raises(DuplicateNameError, match=name):
            register_family(name, TinyConfig)(Tiny)
    finally:
        unregister_family(name)
    assert name not in list_models()
    with pytest.raises(DuplicateNameError, match="unet"):
        register_family("unet", TinyConfig)(Tiny)


def test_unknown_family_and_bad_config_are_config_errors():
    with pytest.raises(ConfigError, match="registered families"):
        create_model("resnet-original")
    with pytest.raises(ConfigError, match="unknown config key"):
        create_model("unet", {"no_such_key": 1})
    with pytest.raises(ConfigError):
        create_model("unet", {"lung_prior": "sometimes"})
    with pytest.raises(ConfigError):
        create_model("chexnet", 42)


@pytest.mark.parametrize("name", list_models())
def test_config_class_defaults_build(name):
    config = config_class(name)()
    assert dataclasses.is_dataclass(config)
    model = small_model(name)
    assert model.family == name


# ---- contract, per family ------------------------------------------------------------------------------


@pytest.mark.slow  # > 5 s on 2 shared cores: outside make test-fast, still in make test
@pytest.mark.parametrize("name", list_models())
def test_infer_shapes_ranges_mode_and_determinism(name):
    model = small_model(name)
    model.train()
    images, _ = batch()
    outputs = model.infer(images)
    assert model.training, "infer must restore the previous mode"
    assert all(p.grad is None for p in model.parameters()), "infer must not leave gradients behind"
    assert len(outputs) == 2
    for out in outputs:
        assert 0.0 <= out.probability <= 1.0 and np.isfinite(out.probability)
        boxes = out.boxes
        assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 5
        assert np.isfinite(boxes).all()
        if len(boxes):
            assert (boxes[:, :4] >= -1e-3).all() and (boxes[:, :4] <= SIZE + 1e-3).all()
            assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
            assert (boxes[:, 4] >= 0).all() and (boxes[:, 4] <= 1).all()
            assert (np.diff(boxes[:, 4]) <= 1e-7).all(), "boxes must be sorted by descending confidence"
        if out.heatmap is not None:
            assert out.heatmap.shape == (SIZE, SIZE) and out.heatmap.dtype == np.float32
            assert np.isfinite(out.heatmap).all()
            assert out.heatmap.min() >= 0.0 and out.heatmap.max() <= 1.0
    # eval mode gives the same answer (infer switches to eval itself) and is deterministic
    again = model.eval().infer(images)
    assert [o.probability for o in again] == [o.probability for o in outputs]
    for a, b in zip(outputs, again):
        np.testing.assert_array_equal(a.boxes, b.boxes)


@pytest.mark.slow  # > 5 s on 2 shared cores: outside make test-fast, still in make test
@pytest.mark.parametrize("name", list_models())
def test_constant_images_give_finite_outputs(name):
    model = small_model(name)
    images = torch.stack([torch.zeros((1, SIZE, SIZE)), torch.ones((1, SIZE, SIZE))])
    for out in model.infer(images):
        assert np.isfinite(out.probability) and np.isfinite(out.boxes).all()
        assert out.heatmap is None or np.isfinite(out.heatmap).all()


@pytest.mark.slow  # > 5 s on 2 shared cores: outside make test-fast, still in make test
@pytest.mark.parametrize("name", list_models())
def test_compute_loss_is_finite_scalar_with_gradients(name):
    model = small_model(name).train()
    images, targets = batch()
    losses = model.compute_loss(images, targets)
    loss = losses["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    assert all(torch.isfinite(v).all() for v in losses.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


@pytest.mark.slow  # > 5 s on 2 shared cores: outside make test-fast, still in make test
@pytest.mark.parametrize("name", list_models())
def test_negative_only_batch_trains(name):
    model = small_model(name).train()
    images, _ = batch()
    targets = [Target(boxes=torch.zeros((0, 4)), label=0)] * 2
    loss = model.compute_loss(images, targets)["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_input_contract_is_enforced(name):
    model = small_model(name)
    images, targets = batch()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.infer(images * 255.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model.train().compute_loss(images * 255.0, targets)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        model.infer(images.repeat(1, 3, 1, 1))
    with pytest.raises(ValueError):
        model.infer(images[0])


@pytest.mark.parametrize("name", list_models())
def test_targets_are_validated(name):
    from pneumo.errors import InvalidBoxesError

    model = small_model(name).train()
    images, targets = batch()
    with pytest.raises(InvalidBoxesError):
        model.compute_loss(images, targets[:1])
    with pytest.raises(InvalidBoxesError):
        model.compute_loss(images, [Target(torch.tensor([[50.0, 50.0, 10.0, 10.0]]), 1), targets[1]])


# ---- slow: each family overfits 8 real RSNA images -----------------------------------------------------


def _real_batch(rsna_mini, size: int = SIZE) -> tuple[torch.Tensor, list[Target]]:
    from pneumo.data.rsna import read_rsna
    from pneumo.io import read_xray
    from pneumo.preprocess import Preprocessor

    records = read_rsna(rsna_mini, read_headers=False)
    positives = [r for r in records if r.target == 1][:4]
    negatives = [r for r in records if r.target == 0][:4]
    pre = Preprocessor(size=size)
    images, targets = [], []
    for record in positives + negatives:
        pixels, geometry = pre(read_xray(record.path).pixels)
        images.append(torch.from_numpy(pixels)[None])
        boxes = geometry.to_input(np.asarray(record.boxes, dtype=np.float32).reshape(-1, 4))
        targets.append(Target(boxes=torch.from_numpy(boxes), label=int(record.target)))
    return torch.stack(images), targets


#: (max steps, Adam learning rate) per family; the loss must halve within the steps
OVERFIT = {"unet": (40, 3e-3), "chexnet": (30, 1e-3), "maskrcnn": (40, 3e-4)}


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_overfits_eight_real_images(name, rsna_mini):
    images, targets = _real_batch(rsna_mini)
    assert images.shape == (8, 1, SIZE, SIZE) and 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    steps, lr = OVERFIT.get(name, (60, 1e-3))
    model = small_model(name, seed=1).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    history: list[float] = []
    for _ in range(steps):
        optimiser.zero_grad()
        loss = model.compute_loss(images, targets)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimiser.step()
        history.append(float(loss.detach()))
        # the loss before any update is the reference; the last 3 steps (not one lucky step) must halve it
        if len(history) >= 4 and np.mean(history[-3:]) <= 0.5 * history[0]:
            break
    assert np.isfinite(history).all()
    start, end = history[0], float(np.mean(history[-3:]))
    assert end <= 0.5 * start, f"{name}: loss {start:.3f} -> {end:.3f} in {len(history)} steps (history {history})"
