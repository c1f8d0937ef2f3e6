"""Comprehensive 3D SR with a TID 1500 Measurement Report of one prediction (highdicom), and its reader.

Content (codes checked against dciodvfy): one image-level measurement group with the finding
(233604007, SCT, "Pneumonia"), the probability as (111012, DCM, "Certainty of Finding") in %, the operating
threshold as (122411, DCM, "Threshold Value") in %, and a Yes/No qualitative evaluation (probability >=
threshold); one planar ROI group per box: (112033, DCM, "Abnormal opacity") at (39607008, SCT, "Lung"), the
box as a closed SCOORD POLYLINE of 5 points in source-image pixels (xyxy corners unchanged: 0,0 = top-left
corner of the top-left pixel) referencing the source SOP instance, and its confidence in %. Every group names
the algorithm (model name and version); a Qualitative Evaluations container holds the decision-support statement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pneumo import DISCLAIMER
from pneumo.dicom_out.common import (
    MANUFACTURER,
    algorithm_name,
    derived_uid,
    evidence_dataset,
    operating_threshold,
    restore_name,
    unnamed,
    result_identity,
)
from pneumo.errors import DicomOutputError
from pneumo.types import Box, Prediction


def _codes() -> dict[str, Any]:
    from pydicom.sr.coding import Code

    return {
        "pneumonia": Code("233604007", "SCT", "Pneumonia"),
        "opacity": Code("112033", "DCM", "Abnormal opacity"),
        "lung": Code("39607008", "SCT", "Lung"),
        "certainty": Code("111012", "DCM", "Certainty of Finding"),
        "threshold": Code("122411", "DCM", "Threshold Value"),
        "procedure": Code("363679005", "SCT", "Imaging procedure"),
        "percent": Code("%", "UCUM", "percent"),
        "yes": Code("373066001", "SCT", "Yes"),
        "no": Code("373067005", "SCT", "No"),
        "qualitative": Code("C0034375", "UMLS", "Qualitative Evaluations"),
        "comment": Code("121106", "DCM", "Comment"),
    }


def box_polyline(box: Box) -> np.ndarray:
    """xyxy box -> (5, 2) float32 closed polyline (column, row) in image pixels, clockwise from top-left."""
    return np.array([[box.x1, box.y1], [box.x2, box.y1], [box.x2, box.y2], [box.x1, box.y2], [box.x1, box.y1]],
                    dtype=np.float32)


def build_sr(source: Any, prediction: Prediction) -> Any:
    """The TID 1500 Comprehensive 3D SR (a highdicom ``Comprehensive3DSR``) of ``prediction`` on ``source``
    (its pydicom header). Raises DicomOutputError when the source lacks the UIDs to reference."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    evidence = evidence_dataset(source)
    code = _codes()
    identity = result_identity(evidence, prediction, "sr")
    threshold = operating_threshold(prediction)
    algorithm = hd.sr.AlgorithmIdentification(name=algorithm_name(prediction), version=prediction.model_version)

    def tracking(label: str, *key: str) -> Any:
        return hd.sr.TrackingIdentifier(identifier=label, uid=derived_uid("pneumo-tracking", identity.sop_uid, *key))

    def percent(name: Any, value: float) -> Any:
        return hd.sr.Measurement(name=name, value=round(100.0 * float(value), 6), unit=code["percent"])

    image_group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking("pneumonia (image level)", "image"),
        finding_type=code["pneumonia"],
        algorithm_id=algorithm,
        measurements=[percent(code["certainty"], prediction.probability), percent(code["threshold"], threshold)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(
            code["pneumonia"], code["yes"] if prediction.probability >= threshold else code["no"])],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(evidence)],
    )
    groups: list[Any] = [image_group]
    region_source = hd.sr.SourceImageForRegion.from_source_image(evidence)
    for index, box in enumerate(prediction.boxes, start=1):
        region = hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=box_polyline(box),
                                   source_image=region_source)
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking(f"opacity {index}", "box", str(index)),
            referenced_region=region,
            finding_type=code["opacity"],
            finding_sites=[hd.sr.FindingSite(code["lung"])],
            algorithm_id=algorithm,
            measurements=[percent(code["certainty"], box.confidence)],
        ))
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derived_uid("pneumo-device", prediction.model, prediction.model_version),
        name=algorithm_name(prediction)[:64], manufacturer_name=MANUFACTURER,
        model_name=f"{prediction.model} {prediction.model_version}"[:64],
    )
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=code["procedure"], imaging_measurements=groups,
        title=codes.cid7021.ImagingMeasurementReport,
    )
    statement = hd.sr.ContainerContentItem(name=code["qualitative"], relationship_type="CONTAINS")
    statement.ContentSequence = hd.sr.ContentSequence([hd.sr.TextContentItem(
        name=code["comment"], value=DISCLAIMER, relationship_type="CONTAINS")])
    report[0].ContentSequence.append(statement)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[unnamed(evidence)], content=report[0], series_instance_uid=identity.series_uid,
        series_number=identity.series_number, sop_instance_uid=identity.sop_uid,
        instance_number=identity.instance_number, manufacturer=MANUFACTURER, is_complete=True,
        series_description=identity.series_description,
    )
    restore_name(sr, evidence)
    sr.ManufacturerModelName = prediction.model[:64]
    sr.SoftwareVersions = prediction.model_version[:64]
    return sr


@dataclass(frozen=True)
class SrFindings:
    """What an SR written by ``build_sr`` says: probability and threshold in [0, 1], boxes (xyxy, original px,
    with confidence in [0, 1]), the algorithm name and version, the referenced source SOP instance."""

    probability: float
    threshold: float
    boxes: tuple[Box, ...]
    algorithm: str
    version: str
    source_sop_uid: str
    statement: str


def read_sr(dataset: Any) -> SrFindings:
    """Read back an SR written by ``build_sr`` (a pydicom Dataset or highdicom SR) with highdicom.
    Raises DicomOutputError when it is not such a report."""
    import io

    import highdicom as hd
    import pydicom

    from pneumo.dicom_out.common import dataset_bytes

    code = _codes()
    try:  # through bytes: highdicom parses the content tree only when it reads a stored SR
        sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(dataset_bytes(dataset))))
        content = sr.content
        image_groups = content.get_image_measurement_groups(finding_type=code["pneumonia"])
        roi_groups = content.get_planar_roi_measurement_groups(finding_type=code["opacity"])
    except Exception as error:  # highdicom raises ValueError/AttributeError/TypeError on foreign content
        raise DicomOutputError(f"not a pneumo measurement report ({type(error).__name__}: {error})") from error
    if len(image_groups) != 1:
        raise DicomOutputError(f"expected one image-level pneumonia group, found {len(image_groups)}")
    group = image_groups[0]
    values = {m.name.value: float(m.value) / 100.0 for m in group.get_measurements()}
    boxes = []
    for roi in roi_groups:
        points = np.asarray(roi.roi.value, dtype=np.float64)
        confidence = [float(m.value) / 100.0 for m in roi.get_measurements(name=code["certainty"])]
        boxes.append(Box(float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()),
                         float(points[:, 1].max()), confidence[0] if confidence else 1.0))
    boxes.sort(key=lambda b: -b.confidence)
    texts = {item.ConceptNameCodeSequence[0].CodeMeaning: str(item.get("TextValue", ""))
             for item in group[0].ContentSequence if item.get("ValueType") == "TEXT"}
    source = group.source_images[0].referenced_sop_instance_uid if group.source_images else ""
    statement = ""
    for item in sr.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue == code["qualitative"].value:
            statement = " ".join(str(child.get("TextValue", "")) for child in item.ContentSequence)
    return SrFindings(
        probability=values.get(code["certainty"].value, float("nan")),
        threshold=values.get(code["threshold"].value, float("nan")),
        boxes=tuple(boxes),
        algorithm=texts.get("Algorithm Name", ""),
        version=texts.get("Algorithm Version", ""),
        source_sop_uid=str(source),
        statement=statement,
    )
