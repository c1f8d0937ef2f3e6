"""Three real RSNA chest radiographs shipped with pneumo, so a fresh machine can try every command.

``sample_dir()/`` holds ``<patientId>.dcm`` (1024x1024 8-bit MONOCHROME2, JPEG Baseline: two positive
patients with two boxes each, one negative) and ``labels.csv`` with their rows in the Kaggle
``stage_2_train_labels.csv`` format (``patientId,x,y,width,height,Target``). Licences: LICENSE-NOTES.md.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pneumo.errors import DataLayoutError


def sample_dir() -> Path:
    """Folder of the shipped sample DICOMs and their ``labels.csv`` (a real path inside the installed package)."""
    path = Path(str(resources.files(__name__)))
    if not (path / "labels.csv").is_file():  # e.g. imported from a zip: refuse rather than return a bad path
        raise DataLayoutError(f"pneumo sample files not found under {path}; reinstall pneumo")
    return path


def sample_files() -> list[Path]:
    """The sample DICOM files, sorted by name."""
    return sorted(sample_dir().glob("*.dcm"))


__all__ = ["sample_dir", "sample_files"]
