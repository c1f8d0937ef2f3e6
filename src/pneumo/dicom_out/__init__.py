"""DICOM results of one prediction, built with highdicom: a TID 1500 Comprehensive 3D SR (``sr``), a Secondary
Capture with the boxes burned in (``capture``) and a Grayscale Softcopy Presentation State (``presentation``).

All three sit in the source's study, in new series whose UIDs derive from the source, the model name and
version and the kind (``common.result_identity``). Boxes are xyxy in source pixels throughout.
Decision support, not a diagnosis: every object says so and names the model and version.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.dicom_out.capture import build_capture
from pneumo.dicom_out.common import KINDS, dataset_bytes, read_source_header, write_dataset
from pneumo.dicom_out.presentation import build_presentation
from pneumo.dicom_out.sr import SrFindings, build_sr, read_sr
from pneumo.errors import DicomOutputError
from pneumo.types import Prediction

__all__ = ["KINDS", "build_results", "write_results", "read_source_header", "read_sr", "SrFindings",
           "build_sr", "build_capture", "build_presentation", "dataset_bytes"]


def build_results(source: Any, pixels: np.ndarray, prediction: Prediction) -> dict[str, Any]:
    """``{"sr": ..., "capture": ..., "presentation": ...}`` pydicom Datasets for ``prediction`` on ``source``
    (the source's pydicom header; ``pixels`` its decoded (H, W) image in [0, 1]). DicomOutputError if the
    source lacks what a result must reference."""
    builders = {
        "sr": lambda: build_sr(source, prediction),
        "capture": lambda: build_capture(source, pixels, prediction),
        "presentation": lambda: build_presentation(source, prediction),
    }
    results = {}
    for kind, build in builders.items():
        try:
            results[kind] = build()
        except (ValueError, TypeError, AttributeError, KeyError) as error:  # highdicom refusing a source value
            raise DicomOutputError(f"cannot build the {kind} object from this source ({type(error).__name__}: "
                                   f"{str(error).splitlines()[0][:200] if str(error) else ''})") from error
    return results


def write_results(folder: str | os.PathLike, results: dict[str, Any]) -> dict[str, Path]:
    """Write each result atomically as ``folder/<SOPInstanceUID>.dcm``; -> kind -> path."""
    return {kind: write_dataset(folder, dataset) for kind, dataset in results.items()}
