"""Shared fixtures: where the real data lives (../shared/data beside the repo, or $PNEUMO_SHARED_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PNEUMO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _at_most_two_torch_threads():
    """Tests share a 2-core machine: never let one test oversubscribe it (restored afterwards)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, 2))
    yield
    torch.set_num_threads(previous)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set PNEUMO_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def rsna_mini() -> Path:
    """Kaggle-layout folder with 210 real RSNA patients."""
    return _require(SHARED_DATA / "rsna-mini")


@pytest.fixture(scope="session")
def nih_weak() -> Path:
    return _require(SHARED_DATA / "nih-weak")


@pytest.fixture(scope="session")
def dicom_samples() -> Path:
    return _require(SHARED_DATA / "dicom-samples")


@pytest.fixture(autouse=True, scope="session")
def _private_data_dir(tmp_path_factory: pytest.TempPathFactory):
    """Servers and commands started by tests keep their database and images in a temporary folder, never in
    the user's ~/.local/share/pneumo (a test that needs its own sets PNEUMO_DATA_DIR or passes data_dir)."""
    from pneumo.store.db import DATA_DIR_ENV, DATABASE_ENV

    previous = {name: os.environ.pop(name, None) for name in (DATA_DIR_ENV, DATABASE_ENV)}
    os.environ[DATA_DIR_ENV] = str(tmp_path_factory.mktemp("pneumo-data"))
    yield
    for name, value in previous.items():
        os.environ.pop(name, None)
        if value is not None:
            os.environ[name] = value
