"""ImageDataset items, seeded per-epoch augmentation, collate and class-balanced sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from pneumo.data.augment import AugmentConfig
from pneumo.data.cache import build_cache
from pneumo.data.datasets import ImageDataset, balanced_sampler_weights, collate
from pneumo.data.records import ImageRecord, frozen_boxes
from pneumo.errors import DataLayoutError
from pneumo.models.base import Target
from pneumo.preprocess import check_model_input

S = 64


def load_npy(path: Path) -> np.ndarray:
    return np.load(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """6 synthetic (100, 200) images with a bright block exactly where each positive's box is."""
    folder = tmp_path_factory.mktemp("images")
    records = []
    for i in range(6):
        image = np.full((100, 200), 0.2, dtype=np.float32)
        boxes = np.zeros((0, 4), np.float32)
        if i % 2 == 0:
            x1, y1 = 20 + 10 * i, 20
            image[y1 : y1 + 40, x1 : x1 + 60] = 1.0
            boxes = np.array([[x1, y1, x1 + 60, y1 + 40]], np.float32)
        path = folder / f"img{i}.npy"
        np.save(path, image)
        records.append(ImageRecord(f"img{i}", f"pat{i // 2}", path, frozen_boxes(boxes), target=int(i % 2 == 0)))
    cache = build_cache(records, S, data_dir=folder, cache_dir=folder / "cache", progress=False, decode=load_npy)
    return records, cache


def test_items_have_the_model_input_contract_and_boxes_on_the_block(data):
    records, cache = data
    dataset = ImageDataset(records, cache)
    assert len(dataset) == 6
    image, target = dataset[0]
    assert image.shape == (1, S, S) and image.dtype == torch.float32
    check_model_input(image[None])
    assert isinstance(target, Target) and target.label == 1 and target.boxes.dtype == torch.float32
    # (100, 200) letterboxed to 64: scale 0.32, 16 px padding above; box (20, 20, 80, 60) -> input pixels
    np.testing.assert_allclose(target.boxes.numpy(), [[6.4, 22.4, 25.6, 35.2]], atol=1e-4)
    x1, y1, x2, y2 = target.boxes[0].round().int().tolist()
    assert image[0, y1 + 1 : y2 - 1, x1 + 1 : x2 - 1].min() > 0.95
    assert image[0, :15].max() == 0  # letterbox padding
    negative_image, negative = dataset[1]
    assert negative.label == 0 and negative.boxes.shape == (0, 4)
    assert dataset.geometry(0).pad_y == 16 and dataset[-1][1].label == 0
    with pytest.raises(IndexError):
        dataset[6]


def test_augmentation_is_a_function_of_seed_epoch_and_index(data):
    records, cache = data
    dataset = ImageDataset(records, cache, augment=AugmentConfig(), seed=3)
    first = [dataset[i][0] for i in range(6)]
    assert all(torch.equal(a, dataset[i][0]) for i, a in enumerate(first))  # same epoch: same items
    dataset.set_epoch(1)
    assert not all(torch.equal(a, dataset[i][0]) for i, a in enumerate(first))
    dataset.set_epoch(0)
    assert torch.equal(first[2], dataset[2][0])
    other_seed = ImageDataset(records, cache, augment=AugmentConfig(), seed=4)
    assert not torch.equal(first[0], other_seed[0][0])
    plain = ImageDataset(records, cache)
    assert not torch.equal(first[0], plain[0][0])
    with pytest.raises(ValueError):
        dataset.set_epoch(-1)


def test_augmented_boxes_still_cover_the_block(data):
    records, cache = data
    dataset = ImageDataset(records, cache, augment=AugmentConfig(intensity_p=0.0), seed=0)
    for epoch in range(5):
        dataset.set_epoch(epoch)
        for i in (0, 2, 4):
            image, target = dataset[i]
            assert target.boxes.shape == (1, 4)
            x1, y1, x2, y2 = target.boxes[0].tolist()
            bright = image[0] > 0.6
            ys, xs = torch.nonzero(bright, as_tuple=True)
            assert xs.min() >= x1 - 1 and xs.max() + 1 <= x2 + 1
            assert ys.min() >= y1 - 1 and ys.max() + 1 <= y2 + 1


def test_dataloader_workers_do_not_change_the_batches(data):
    records, cache = data
    dataset = ImageDataset(records, cache, augment=AugmentConfig(), seed=1)
    dataset.set_epoch(2)
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=4, shuffle=False, num_workers=workers, collate_fn=collate)
        batches[workers] = list(loader)
    for (a_images, a_targets), (b_images, b_targets) in zip(batches[0], batches[2]):
        assert torch.equal(a_images, b_images)
        assert all(torch.equal(a.boxes, b.boxes) and a.label == b.label for a, b in zip(a_targets, b_targets))
    images, targets = batches[0][0]
    assert images.shape == (4, 1, S, S) and len(targets) == 4


def test_balanced_weights_draw_positives_and_negatives_equally():
    records = [ImageRecord(f"i{i}", f"p{i}", Path("x"), target=int(i < 10)) for i in range(100)]
    weights = balanced_sampler_weights(records)
    assert weights.dtype == torch.float64 and weights.shape == (100,)
    assert weights[:10].sum().item() == pytest.approx(0.5) and weights[10:].sum().item() == pytest.approx(0.5)
    drawn = list(WeightedRandomSampler(weights, 4000, generator=torch.Generator().manual_seed(0)))
    assert abs(np.mean([i < 10 for i in drawn]) - 0.5) < 0.05
    uniform = balanced_sampler_weights(records[10:])
    assert torch.allclose(uniform, torch.full((90,), 1 / 90, dtype=torch.float64))
    with pytest.raises(ValueError):
        balanced_sampler_weights([])


def test_records_missing_from_the_cache_are_refused(data):
    records, cache = data
    stranger = ImageRecord("other", "other", Path("other.npy"))
    with pytest.raises(DataLayoutError, match="not in this cache"):
        ImageDataset([*records, stranger], cache)
    with pytest.raises(ValueError):
        ImageDataset(records, cache, seed=-1)
