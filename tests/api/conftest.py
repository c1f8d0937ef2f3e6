"""Fixtures for the REST API tests: one tiny random-init model folder per session, real rsna-mini cases."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from frontend_helpers import make_model_dir


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def rsna_cases(rsna_mini: Path) -> dict[str, object]:
    """A positive patient (with boxes) and a negative one from rsna-mini, and the labels CSV path."""
    positives: dict[str, int] = {}
    negatives: list[str] = []
    with open(rsna_mini / "stage_2_train_labels.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["Target"] == "1":
                positives[row["patientId"]] = positives.get(row["patientId"], 0) + 1
            else:
                negatives.append(row["patientId"])
    positive = sorted(p for p, n in positives.items() if n >= 2)[0]
    images = rsna_mini / "stage_2_train_images"
    return {
        "labels": rsna_mini / "stage_2_train_labels.csv",
        "positive": images / f"{positive}.dcm",
        "negative": images / f"{sorted(negatives)[0]}.dcm",
    }
