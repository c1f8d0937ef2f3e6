"""One received DICOM image -> its results queued for sending: decode, predict, build SR + SC + GSPS.

Shared by the Storage SCP and the DICOMweb client. Refusals (not a chest radiograph, unreadable, a pneumo
result coming back) are ``PneumoError``s whose message names no patient identifier.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pneumo.errors import NotChestRadiographError, PneumoError
from pneumo.io.checks import check_chest_radiograph
from pneumo.node.queue import Outbox

LOG = logging.getLogger("pneumo.node")
#: image SOP classes analysed: CR, DX for presentation / for processing, and Secondary Capture (the RSNA
#: challenge files are SC objects with Modality CR); the modality / body part check still applies
IMAGE_SOP_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1": "CR",
    "1.2.840.10008.5.1.4.1.1.1.1": "DX for presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "DX for processing",
    "1.2.840.10008.5.1.4.1.1.7": "secondary capture",
}


@dataclass(frozen=True)
class Analysed:
    """What one analysis produced: the result data sets per kind (``sr``, ``capture``, ``presentation``),
    the probability, the box count, the model name and version."""

    results: dict[str, Any]
    probability: float
    boxes: int
    model: str
    version: str


def refusal(header: Any) -> str | None:
    """Why ``header`` (a pydicom Dataset) is not analysed, or None: an unsupported SOP class, a pneumo
    result (a routing loop), or not a chest radiograph. The text holds no patient identifier."""
    sop_class = str(header.get("SOPClassUID", "") or "")
    if sop_class not in IMAGE_SOP_CLASSES:
        return f"SOP class {sop_class or 'missing'} is not a CR, DX or secondary-capture image"
    if str(header.get("Manufacturer", "")).strip().lower() == "pneumo":
        return "this is a pneumo result, not an image to analyse (check the PACS routing rule)"
    try:
        check_chest_radiograph(str(header.get("Modality", "") or ""), str(header.get("BodyPartExamined", "") or ""))
    except NotChestRadiographError as error:
        return str(error).split(":")[0]
    return None


def analyse(data: bytes, service: Any, model: str) -> Analysed:
    """Decode the DICOM ``data``, predict with ``model`` and build its SR, SC and GSPS.
    Raises PneumoError (typed) for an image that cannot be analysed."""
    from pneumo.dicom_out import build_results, read_source_header
    from pneumo.io import read_xray

    header = read_source_header(data)
    reason = refusal(header)
    if reason:
        raise NotChestRadiographError(reason)
    xray = read_xray(data)
    prediction = service.predict(xray, model, heatmap=False)
    results = build_results(header, xray.pixels, prediction)
    return Analysed(results, prediction.probability, len(prediction.boxes), prediction.model, prediction.model_version)


def queue_results(analysed: Analysed, outbox: Outbox) -> list[str]:
    """Put every result of ``analysed`` in ``outbox`` (atomic files) -> their SOP Instance UIDs."""
    from pneumo.dicom_out import dataset_bytes

    uids = []
    for dataset in analysed.results.values():
        outbox.put(str(dataset.SOPInstanceUID), dataset_bytes(dataset))
        uids.append(str(dataset.SOPInstanceUID))
    return uids


def describe(error: BaseException) -> str:
    """One log line for a failed analysis: the error type and its first line (no identifiers: pneumo's
    messages name attributes, not values)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    kind = getattr(error, "code", None) if isinstance(error, PneumoError) else type(error).__name__
    return f"{kind}: {text}" if text else str(kind)
