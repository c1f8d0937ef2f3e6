"""Secondary Capture of one prediction (highdicom ``SCImage``): the analysed image with the boxes, their
confidences and the caption (probability, threshold, model name and version, "decision support, not a
diagnosis") burned in by ``pneumo.outputs.render_overlay``, for viewers that ignore SR and presentation states.

Pixels: RGB, 8 bits, the source's Rows x Columns (the boxes stay in source pixels), uncompressed. Same study
as the source; BurnedInAnnotation YES; BodyPartExamined, PatientOrientation and PixelSpacing copied when the
source has them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pneumo.dicom_out.common import (
    MANUFACTURER,
    evidence_dataset,
    operating_threshold,
    restore_name,
    result_identity,
)
from pneumo.errors import DicomOutputError
from pneumo.types import Prediction


def caption_title(prediction: Prediction) -> str:
    """The top-left line burned into the capture: probability and operating threshold."""
    return f"pneumonia p = {prediction.probability:.2f} (threshold {operating_threshold(prediction):.2f})"


def render_capture(pixels: np.ndarray, prediction: Prediction) -> np.ndarray:
    """(H, W) float pixels in [0, 1] (MONOCHROME2, as ``XRay.pixels``) -> uint8 (H, W, 3) RGB with the boxes
    (xyxy, the same pixels) and the caption burned in."""
    from pneumo.outputs import boxes_from_prediction, render_overlay

    return render_overlay(pixels, pred_boxes=boxes_from_prediction(prediction), title=caption_title(prediction),
                          model_name=f"{prediction.model} {prediction.model_version}")


def _orientation(source: Any) -> tuple[str, str] | None:
    value = source.get("PatientOrientation")
    if value is None or isinstance(value, str) or len(value) != 2:
        return None
    allowed = set("AFHLPR")
    parts = tuple(str(v).strip().upper() for v in value)
    return parts if all(p and set(p) <= allowed for p in parts) else None  # type: ignore[return-value]


def _spacing(source: Any) -> tuple[float, float] | None:
    """The source's PixelSpacing (mm) when it holds two positive numbers, else None (not copied)."""
    try:
        row, column = (float(v) for v in source.get("PixelSpacing"))
    except (TypeError, ValueError):
        return None
    return (row, column) if row > 0 and column > 0 else None


def build_capture(source: Any, pixels: np.ndarray, prediction: Prediction) -> Any:
    """The Secondary Capture (highdicom ``SCImage``) of ``prediction`` drawn on ``pixels`` (the decoded source,
    (H, W) in [0, 1], H x W = the source's Rows x Columns). Raises DicomOutputError on a size mismatch or a
    source without the UIDs to reference."""
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian

    evidence = evidence_dataset(source)
    rows, columns = int(evidence.get("Rows") or 0), int(evidence.get("Columns") or 0)
    if np.shape(pixels) != (rows, columns):
        raise DicomOutputError(f"pixels {np.shape(pixels)} do not match the source's {rows}x{columns} image")
    rgb = render_capture(pixels, prediction)
    identity = result_identity(evidence, prediction, "capture")
    orientation = _orientation(evidence)
    spacing = _spacing(evidence)
    capture = hd.sc.SCImage(
        pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8, coordinate_system="PATIENT",
        study_instance_uid=str(evidence.StudyInstanceUID), series_instance_uid=identity.series_uid,
        series_number=identity.series_number, sop_instance_uid=identity.sop_uid,
        instance_number=identity.instance_number, manufacturer=MANUFACTURER,
        patient_id=str(evidence.PatientID), patient_name="",
        patient_birth_date=str(evidence.PatientBirthDate), patient_sex=str(evidence.PatientSex) or None,
        accession_number=str(evidence.AccessionNumber), study_id=str(evidence.StudyID),
        study_date=str(evidence.StudyDate) or None, study_time=str(evidence.StudyTime) or None,
        referring_physician_name="",
        pixel_spacing=spacing,
        patient_orientation=orientation or ("L", "F"),  # placeholder; emptied below when the source has none
        transfer_syntax_uid=ExplicitVRLittleEndian,
        series_description=identity.series_description,
    )
    restore_name(capture, evidence)
    if orientation is None:
        capture.PatientOrientation = ""  # Type 2C: unknown stays empty, never guessed
    for keyword in ("PatientAge", "BodyPartExamined", "StudyDescription", "ViewPosition"):
        if keyword in evidence and keyword not in capture:
            setattr(capture, keyword, evidence[keyword].value)
    capture.BurnedInAnnotation = "YES"
    capture.ConversionType = "WSD"
    capture.ImageType = ["DERIVED", "SECONDARY"]
    capture.DerivationDescription = f"pneumo {prediction.model} {prediction.model_version}: boxes and caption burned in"[:1024]
    capture.ManufacturerModelName = prediction.model[:64]
    capture.SoftwareVersions = prediction.model_version[:64]
    reference = Dataset()
    reference.ReferencedSOPClassUID = evidence.SOPClassUID
    reference.ReferencedSOPInstanceUID = evidence.SOPInstanceUID
    capture.SourceImageSequence = [reference]
    return capture
