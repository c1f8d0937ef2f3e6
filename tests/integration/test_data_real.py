"""The data layer on the real shared data: rsna-mini (210 patients) and nih-weak (610 images)."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict

import numpy as np
import pytest

from pneumo.data.cache import build_cache
from pneumo.data.datasets import ImageDataset
from pneumo.data.folds import assign_folds, fold_summary, split_records
from pneumo.data.nih import read_nih
from pneumo.data.rsna import LABELS_CSV, check_layout, read_rsna, read_rsna_labels
from pneumo.io import read_xray
from pneumo.preprocess import Preprocessor


@pytest.fixture(scope="module")
def rsna_records(rsna_mini):
    return read_rsna(rsna_mini)


def test_all_rsna_mini_records_parse(rsna_mini, rsna_records):
    assert len(rsna_records) == 210
    assert sum(r.target for r in rsna_records) == 79
    assert sum(r.num_boxes for r in rsna_records) == 128
    assert check_layout(rsna_mini).consistent
    assert [r.patient_id for r in rsna_records] == sorted(r.patient_id for r in rsna_records)
    assert all(r.path.is_file() and r.path.stem == r.patient_id for r in rsna_records)
    assert Counter(r.view for r in rsna_records) == {"AP": 105, "PA": 105}
    assert all(r.sex in ("M", "F") and r.age is not None for r in rsna_records)
    assert Counter(r.klass for r in rsna_records)["Lung Opacity"] == 79


def test_rsna_boxes_match_the_csv(rsna_mini, rsna_records):
    expected = defaultdict(list)
    with (rsna_mini / LABELS_CSV).open() as handle:
        for row in csv.DictReader(handle):
            if row["Target"] == "1":
                x, y, w, h = (float(row[k]) for k in ("x", "y", "width", "height"))
                expected[row["patientId"]].append([x, y, x + w, y + h])
    for record in rsna_records:
        np.testing.assert_array_equal(record.boxes, np.array(expected[record.patient_id], np.float32).reshape(-1, 4))
        assert record.boxes[:, 2:].max(initial=0) <= 1024
    labels = read_rsna_labels(rsna_mini / LABELS_CSV)
    assert len(labels) == 210 and sum(len(b) for b in labels.values()) == 128


def test_rsna_folds_are_patient_disjoint_stratified_and_seeded(rsna_records):
    folds = assign_folds(rsna_records, k=5, seed=0)
    overall = 79 / 210
    for row in fold_summary(rsna_records, folds):
        assert row["patients"] == 42
        assert abs(row["positive_rate"] - overall) < 0.03
    for fold in range(5):
        train, val = split_records(rsna_records, folds, fold)
        assert not {r.patient_id for r in train} & {r.patient_id for r in val}
        views = Counter(r.view for r in val)
        assert abs(views["AP"] - views["PA"]) <= 2
    assert assign_folds(rsna_records, k=5, seed=0) == folds
    assert assign_folds(rsna_records, k=5, seed=1) != folds


def test_nih_weak_reads_and_splits_by_patient(nih_weak):
    records = read_nih(nih_weak)
    assert len(records) == 610
    assert sum(r.target for r in records) == 182
    assert sum(1 for r in records if r.num_boxes) == 16
    assert all(r.patient_id == r.image_id[:8] for r in records)
    assert all(r.boxes[:, 2:].max(initial=0) <= 512 for r in records)
    folds = assign_folds(records, k=5, seed=0)
    assert len(folds) == len({r.patient_id for r in records}) < 610  # several images per patient
    for fold in range(5):
        train, val = split_records(records, folds, fold)
        assert not {r.patient_id for r in train} & {r.patient_id for r in val}


@pytest.mark.slow
def test_rsna_mini_cache_matches_direct_preprocessing(rsna_mini, rsna_records, tmp_path):
    cache = build_cache(rsna_records, 64, data_dir=rsna_mini, cache_dir=tmp_path, progress=False)
    assert len(cache) == 210
    for record in rsna_records[::30]:
        direct, geometry = Preprocessor(64)(read_xray(record.path).pixels)
        i = cache.index_of(record.image_id)
        assert np.abs(cache.get_image(i) - direct).max() <= 1 / 255 + 1e-6 and cache.geometry(i) == geometry
    dataset = ImageDataset(rsna_records, cache)
    positive = next(i for i, r in enumerate(rsna_records) if r.num_boxes)
    image, target = dataset[positive]
    assert image.shape == (1, 64, 64) and target.label == 1
    np.testing.assert_allclose(target.boxes.numpy(), rsna_records[positive].boxes / 16, atol=1e-4)
