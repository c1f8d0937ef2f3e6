"""Patient-level stratified K-fold assignment (RSNA by patientId, NIH by NIH patient).

Policy: every image of a patient lands in the same fold (no patient leaks between train and
validation). Patients are stratified on (target, class, view): within each stratum the patients are
shuffled with ``numpy.random.default_rng(seed)`` and dealt round-robin with one counter running across
strata, so fold sizes differ by at most one patient and each stratum's count per fold by at most one.
A patient with several images takes target = max over its images and the class / view of its first
(sorted) image with that target.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from pneumo.data.records import ImageRecord


def assign_folds(records: Sequence[ImageRecord], k: int = 5, seed: int = 0) -> dict[str, int]:
    """-> {patient_id: fold in [0, k)}; deterministic for a given (set of records, k, seed)."""
    if not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an int >= 2, got {k!r}")
    groups: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        groups[record.patient_id].append(record)
    if len(groups) < k:
        raise ValueError(f"cannot make {k} folds from {len(groups)} patient(s)")
    strata: dict[tuple[int, str, str], list[str]] = defaultdict(list)
    for patient, items in groups.items():
        strata[_stratum(items)].append(patient)

    rng = np.random.default_rng(seed)
    order = rng.permutation(k)  # which fold receives the first patient: varies with the seed
    folds: dict[str, int] = {}
    counter = 0
    for key in sorted(strata):
        patients = sorted(strata[key])
        for index in rng.permutation(len(patients)):
            folds[patients[index]] = int(order[counter % k])
            counter += 1
    return folds


def split_records(
    records: Sequence[ImageRecord], folds: dict[str, int], val_fold: int
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """(train, validation) records: validation = patients whose fold is ``val_fold``."""
    missing = {r.patient_id for r in records if r.patient_id not in folds}
    if missing:
        raise ValueError(f"{len(missing)} patient(s) have no fold; call assign_folds on these records")
    train = [r for r in records if folds[r.patient_id] != val_fold]
    val = [r for r in records if folds[r.patient_id] == val_fold]
    return train, val


def fold_summary(records: Sequence[ImageRecord], folds: dict[str, int]) -> list[dict[str, float]]:
    """Per fold: patients, images, positive images and the positive rate (for reports and tests)."""
    k = max(folds.values()) + 1 if folds else 0
    rows = [{"fold": f, "patients": 0, "images": 0, "positives": 0} for f in range(k)]
    seen: set[str] = set()
    for record in records:
        row = rows[folds[record.patient_id]]
        row["images"] += 1
        row["positives"] += int(record.target)
        if record.patient_id not in seen:
            seen.add(record.patient_id)
            row["patients"] += 1
    for row in rows:
        row["positive_rate"] = row["positives"] / row["images"] if row["images"] else 0.0
    return rows


def _stratum(items: list[ImageRecord]) -> tuple[int, str, str]:
    target = max(int(r.target) for r in items)
    first = min((r for r in items if int(r.target) == target), key=lambda r: r.image_id)
    return target, first.klass or "", first.view or ""
