"""Patient-level stratified folds: disjoint, balanced, stratified, seeded."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pneumo.data.folds import assign_folds, fold_summary, split_records
from pneumo.data.records import ImageRecord


def _records(n: int = 500, images_per_patient: int = 1, seed: int = 1) -> list[ImageRecord]:
    rng = np.random.default_rng(seed)
    records = []
    for p in range(n):
        target = int(rng.random() < 0.3)
        klass = "Lung Opacity" if target else ("Normal" if rng.random() < 0.4 else "Not Normal")
        view = "AP" if rng.random() < (0.7 if target else 0.4) else "PA"
        for k in range(images_per_patient):
            records.append(ImageRecord(f"img{p:04d}_{k}", f"pat{p:04d}", Path(f"/x/{p}_{k}.png"),
                                       target=target, klass=klass, view=view))
    return records


def test_every_patient_gets_one_fold_and_sizes_balance():
    records = _records()
    folds = assign_folds(records, k=5, seed=0)
    assert set(folds) == {r.patient_id for r in records}
    assert set(folds.values()) == set(range(5))
    sizes = Counter(folds.values())
    assert max(sizes.values()) - min(sizes.values()) <= 1


def test_folds_are_stratified_on_target_class_and_view():
    records = _records()
    folds = assign_folds(records, k=5, seed=3)
    overall = np.mean([r.target for r in records])
    for row in fold_summary(records, folds):
        assert abs(row["positive_rate"] - overall) < 0.02
    for key in ({(r.klass, r.view) for r in records}):
        per_fold = Counter(folds[r.patient_id] for r in records if (r.klass, r.view) == key)
        assert max(per_fold.values()) - min(per_fold.get(f, 0) for f in range(5)) <= 1


def test_same_seed_same_folds_other_seed_other_folds_order_irrelevant():
    records = _records()
    a = assign_folds(records, 5, seed=0)
    assert assign_folds(list(reversed(records)), 5, seed=0) == a
    b = assign_folds(records, 5, seed=1)
    assert b != a
    assert sum(a[p] != b[p] for p in a) > len(a) / 2


def test_images_of_one_patient_stay_together_and_splits_are_disjoint():
    records = _records(n=120, images_per_patient=3)
    folds = assign_folds(records, k=4, seed=0)
    for fold in range(4):
        train, val = split_records(records, folds, fold)
        assert len(train) + len(val) == len(records)
        assert not {r.patient_id for r in train} & {r.patient_id for r in val}
        assert all(len([r for r in val if r.patient_id == p]) == 3 for p in {r.patient_id for r in val})


def test_mixed_target_patient_is_stratified_as_positive():
    records = [
        ImageRecord("a1", "a", Path("a1"), target=0),
        ImageRecord("a2", "a", Path("a2"), target=1, klass="Pneumonia"),
        *[ImageRecord(f"n{i}", f"n{i}", Path(f"n{i}"), target=i % 2) for i in range(9)],
    ]
    folds = assign_folds(records, k=2, seed=0)
    rows = fold_summary(records, folds)
    assert sum(row["patients"] for row in rows) == 10 and sum(row["images"] for row in rows) == 11


def test_bad_arguments():
    records = _records(n=3)
    with pytest.raises(ValueError, match="k must be"):
        assign_folds(records, k=1)
    with pytest.raises(ValueError, match="3 patient"):
        assign_folds(records, k=5)
    with pytest.raises(ValueError, match="no fold"):
        split_records(records, {}, 0)
