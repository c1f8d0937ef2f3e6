"""Shared by the DICOM result writers: the source header, the evidence copy, deterministic UIDs, codes, writes.

Nothing is invented: Patient/Study attributes come from the analysed source; Type 2 attributes the source
lacks (RSNA files have no PatientBirthDate, StudyDate, StudyTime, ReferringPhysicianName, ...) are present
and empty. New Series/SOP Instance UIDs are derived from the source UIDs, the model name and version and the
output kind, so re-analysing the same image with the same model replaces (not duplicates) its results.
"""

from __future__ import annotations

import copy
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumo.errors import DicomOutputError, InvalidImageError
from pneumo.types import Prediction

MANUFACTURER = "pneumo"
#: output kinds -> (series number, short series description)
KINDS: dict[str, tuple[int, str]] = {
    "sr": (9901, "SR"),
    "capture": (9902, "secondary capture"),
    "presentation": (9903, "presentation state"),
}
#: Type 2 attributes highdicom and the IODs need present (empty is fine) on the evidence dataset
TYPE2_ATTRIBUTES = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)
REQUIRED_UIDS = ("SOPInstanceUID", "StudyInstanceUID", "SOPClassUID")
_AGE = re.compile(r"^\d{3}[DWMY]$")
#: Type 2 date / time attributes: a value that is not a valid DA / TM is emptied (highdicom refuses it)
_DATE_TIME = {
    "PatientBirthDate": re.compile(r"^\d{8}$"),
    "StudyDate": re.compile(r"^\d{8}$"),
    "StudyTime": re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$"),
}


def read_source_header(source: str | os.PathLike | bytes) -> Any:
    """The pydicom Dataset (header only, no pixel data) of a DICOM path or bytes; InvalidImageError if unreadable."""
    import pydicom

    try:
        handle = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
        return pydicom.dcmread(handle, force=True, stop_before_pixels=True)
    except Exception as error:  # pydicom raises many types on corrupt headers
        raise InvalidImageError(f"cannot read the DICOM header for the result objects ({type(error).__name__})") from error


def normalised_age(value: Any) -> str | None:
    """A DICOM AS value (``nnnY``) from ``value``: ``"038Y"`` stays, ``"38"`` -> ``"038Y"``, else None (dropped)."""
    text = str(value or "").strip().upper()
    if _AGE.match(text):
        return text
    if text.isdigit() and 0 <= int(text) <= 999:
        return f"{int(text):03d}Y"
    return None


def evidence_dataset(source: Any) -> Any:
    """A copy of the source header that highdicom and dciodvfy accept as evidence: the required UIDs checked,
    missing Type 2 Patient/Study attributes present and empty, PatientAge as a valid AS value or absent,
    a PatientSex other than M/F/O and an invalid PatientBirthDate / StudyDate / StudyTime emptied.
    Raises DicomOutputError when a UID the results must reference is missing."""
    missing = [name for name in REQUIRED_UIDS if not str(source.get(name, "") or "").strip()]
    if missing:
        raise DicomOutputError(f"the source DICOM lacks {', '.join(missing)}: a DICOM result must reference it")
    ds = copy.deepcopy(source)  # pydicom copy() shares the elements: edits would reach the source
    if "PixelData" in ds:
        del ds.PixelData
    for keyword in TYPE2_ATTRIBUTES:
        if keyword not in ds or ds[keyword].value is None:
            setattr(ds, keyword, "")
    if "SeriesInstanceUID" not in ds or not str(ds.SeriesInstanceUID).strip():
        raise DicomOutputError("the source DICOM lacks SeriesInstanceUID: a DICOM result must reference it")
    for keyword, pattern in _DATE_TIME.items():
        if not pattern.match(str(ds[keyword].value or "").strip()):
            setattr(ds, keyword, "")
    if str(ds.PatientSex).strip().upper() not in ("M", "F", "O", ""):
        ds.PatientSex = ""  # Type 2: an unknown value is left empty, not guessed
    if "PatientAge" in ds:
        age = normalised_age(ds.PatientAge)
        if age is None:
            del ds.PatientAge
        else:
            ds.PatientAge = age
    return ds


def derived_uid(*parts: str) -> str:
    """A UID that is a pure function of ``parts`` (pydicom's prefix + a hash of them)."""
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[str(p) for p in parts]))


@dataclass(frozen=True)
class ResultIdentity:
    """Where one result object sits: its series and instance (UIDs and numbers)."""

    series_uid: str
    sop_uid: str
    series_number: int
    instance_number: int
    series_description: str


def result_identity(source: Any, prediction: Prediction, kind: str) -> ResultIdentity:
    """Deterministic identity of the ``kind`` result (``sr``, ``capture``, ``presentation``) of ``source``."""
    if kind not in KINDS:
        raise DicomOutputError(f"unknown DICOM output kind {kind!r}; expected one of {', '.join(KINDS)}")
    number, label = KINDS[kind]
    model = (prediction.model, prediction.model_version)
    series = derived_uid("pneumo-series", str(source.SeriesInstanceUID), *model, kind)
    sop = derived_uid("pneumo-instance", str(source.SOPInstanceUID), *model, kind)
    try:
        instance = max(1, int(source.get("InstanceNumber") or 1))
    except (TypeError, ValueError):
        instance = 1
    description = f"pneumo {prediction.model} {label} - decision support"  # the version: SoftwareVersions
    if len(description) > 64:
        description = f"pneumo {label} - decision support"
    return ResultIdentity(series, sop, number, instance, description)


def algorithm_name(prediction: Prediction) -> str:
    """``"pneumo <model>"``: the algorithm identification recorded in every result."""
    return f"pneumo {prediction.model}"


def operating_threshold(prediction: Prediction) -> float:
    """The probability threshold the prediction was made at (``extra['threshold']``), in [0, 1]."""
    value = (prediction.extra or {}).get("threshold")
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise DicomOutputError("the prediction carries no operating threshold in [0, 1] (extra['threshold'])")
    return float(value)


#: person-name attributes highdicom checks (its warning quotes the name: identifiers must not reach logs)
NAME_ATTRIBUTES = ("PatientName", "ReferringPhysicianName")


def unnamed(evidence: Any) -> Any:
    """A copy of ``evidence`` with empty person names, to hand to highdicom, which warns about
    single-component names with the name quoted in the message; ``restore_name`` puts the source's back."""
    ds = copy.deepcopy(evidence)
    for keyword in NAME_ATTRIBUTES:
        setattr(ds, keyword, "")
    return ds


def restore_name(result: Any, evidence: Any) -> Any:
    """Copy the evidence's person names (unchanged from the source) onto ``result``; returns ``result``."""
    for keyword in NAME_ATTRIBUTES:
        if keyword in result or keyword == "PatientName":
            setattr(result, keyword, evidence.get(keyword, ""))
    return result


def dataset_bytes(dataset: Any) -> bytes:
    """A pydicom Dataset as DICOM Part 10 bytes (preamble + file meta)."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_dataset(folder: str | os.PathLike, dataset: Any) -> Path:
    """Write ``dataset`` atomically to ``folder/<SOPInstanceUID>.dcm`` and return the path."""
    from pneumo.files import atomic_write

    path = Path(folder) / f"{dataset.SOPInstanceUID}.dcm"
    data = dataset_bytes(dataset)
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return path
