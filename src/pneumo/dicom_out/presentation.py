"""Grayscale Softcopy Presentation State of one prediction (highdicom): the boxes as closed POLYLINE graphic
objects (PIXEL units, xyxy corners unchanged) with their confidence as text, and a caption (probability,
model name and version, "decision support, not a diagnosis") in DISPLAY units, on a "PNEUMO" layer that
references the original image (a MONOCHROME1 source gets the INVERSE presentation LUT). BodyPartExamined is copied (dciodvfy wants it for Laterality, Type 2C).
"""

from __future__ import annotations

from typing import Any

from pneumo.dicom_out.common import (
    MANUFACTURER,
    derived_uid,
    evidence_dataset,
    operating_threshold,
    restore_name,
    unnamed,
    result_identity,
)
from pneumo.dicom_out.sr import box_polyline
from pneumo.types import Prediction

LAYER = "PNEUMO"


def caption(prediction: Prediction) -> str:
    """One line: probability, threshold, model, version, and the decision-support statement (<= 1024 chars)."""
    return (f"pneumo {prediction.model} {prediction.model_version}: pneumonia p = {prediction.probability:.2f} "
            f"(threshold {operating_threshold(prediction):.2f}) - decision support, not a diagnosis")[:1024]


def build_presentation(source: Any, prediction: Prediction) -> Any:
    """The GSPS (highdicom ``GrayscaleSoftcopyPresentationState``) drawing ``prediction`` over ``source``
    (its pydicom header). Raises DicomOutputError when the source lacks the UIDs to reference."""
    import highdicom as hd

    evidence = evidence_dataset(source)
    identity = result_identity(evidence, prediction, "presentation")
    # MONOCHROME1 (white = air): the presentation LUT inverts, so the image looks as without the state
    monochrome1 = str(evidence.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"
    layer = hd.pr.GraphicLayer(layer_name=LAYER, order=1, description="pneumo opacity boxes (decision support)")
    graphics = [hd.pr.GraphicObject(graphic_type="POLYLINE", graphic_data=box_polyline(box), units="PIXEL",
                                    tracking_id=f"opacity {i}",
                                    tracking_uid=derived_uid("pneumo-tracking", identity.sop_uid, "box", str(i)))
                for i, box in enumerate(prediction.boxes, start=1)]
    texts = [hd.pr.TextObject(text_value=f"opacity {box.confidence:.2f}", units="PIXEL",
                              anchor_point=(float(box.x1), float(box.y1)), anchor_point_visible=False)
             for box in prediction.boxes]
    texts.append(hd.pr.TextObject(text_value=caption(prediction), units="DISPLAY",
                                  bounding_box=(0.01, 0.93, 0.99, 0.99), text_justification="LEFT"))
    reference = unnamed(evidence)
    annotation = hd.pr.GraphicAnnotation(referenced_images=[reference], graphic_layer=layer,
                                         graphic_objects=graphics or None, text_objects=texts)
    state = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[reference], series_instance_uid=identity.series_uid,
        series_number=identity.series_number, sop_instance_uid=identity.sop_uid,
        instance_number=identity.instance_number, manufacturer=MANUFACTURER,
        manufacturer_model_name=prediction.model[:64], software_versions=prediction.model_version[:64],
        device_serial_number="", content_label=LAYER,
        content_description=f"pneumo {prediction.model} {prediction.model_version} boxes: decision support"[:64],
        graphic_annotations=[annotation], graphic_layers=[layer],
        presentation_lut_transformation=hd.PresentationLUTTransformation(
            presentation_lut_shape="INVERSE" if monochrome1 else "IDENTITY"),
        series_description=identity.series_description,
    )
    restore_name(state, evidence)
    for keyword in ("BodyPartExamined", "PatientAge", "StudyDescription"):
        if keyword in evidence and keyword not in state:
            setattr(state, keyword, evidence[keyword].value)
    return state
