"""DICOM results (pneumo.dicom_out) on real sources: rsna-mini DICOMs and the dicom-samples (CR MONOCHROME1
uncompressed / JPEG 2000, SIIM JPEG Baseline). Validated by dciodvfy, rendered by dsrdump, read back by highdicom."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_tools import dciodvfy_errors, dsrdump
from pneumo import DISCLAIMER
from pneumo.dicom_out import build_results, read_source_header, read_sr, write_results
from pneumo.dicom_out.common import evidence_dataset, normalised_age
from pneumo.errors import DicomOutputError
from pneumo.io import read_xray
from pneumo.outputs import PREDICTION_COLOUR
from pneumo.types import Box, Prediction


def _sources(rsna_mini: Path, dicom_samples: Path) -> list[Path]:
    return sorted((rsna_mini / "stage_2_train_images").glob("*.dcm"))[:2] + sorted(dicom_samples.glob("*.dcm"))


def _prediction(height: int, width: int, version: str = "1.0+test", n_boxes: int = 2) -> Prediction:
    """Boxes at fractions of the image, with non-integer corners (they must survive unchanged)."""
    boxes = [Box(0.10 * width + 0.25, 0.20 * height, 0.40 * width, 0.65 * height + 0.5, 0.83),
             Box(0.55 * width, 0.15 * height + 0.75, 0.90 * width - 0.5, 0.50 * height, 0.41)][:n_boxes]
    return Prediction(probability=0.7125, boxes=tuple(boxes), model="chexnet", model_version=version,
                      image_size=(height, width), extra={"threshold": 0.375})


@pytest.fixture(scope="module")
def written(tmp_path_factory, rsna_mini, dicom_samples):
    """source path -> (prediction, {kind: path}) for every real source."""
    out = {}
    for index, path in enumerate(_sources(rsna_mini, dicom_samples)):
        xray = read_xray(path)
        prediction = _prediction(*xray.original_size, n_boxes=index % 3)  # 0, 1 and 2 boxes
        folder = tmp_path_factory.mktemp(f"out{index}")
        out[path] = (prediction, write_results(folder, build_results(read_source_header(path), xray.pixels, prediction)))
    return out


def test_every_object_passes_dciodvfy(written):
    for source, (_, paths) in written.items():
        assert set(paths) == {"sr", "capture", "presentation"}
        for kind, path in paths.items():
            assert dciodvfy_errors(path) == [], f"{kind} of {source.name}"


def test_files_are_named_by_their_sop_instance_uid_and_nothing_half_written(written):
    for _, paths in written.values():
        for path in paths.values():
            assert path.name == f"{pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID}.dcm"
            assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_sr_reads_back_the_same_boxes_probability_threshold_and_model(written):
    for source, (prediction, paths) in written.items():
        findings = read_sr(pydicom.dcmread(paths["sr"]))
        assert findings.probability == pytest.approx(prediction.probability, abs=1e-9)
        assert findings.threshold == pytest.approx(0.375, abs=1e-9)
        assert findings.version == prediction.model_version and "chexnet" in findings.algorithm
        assert findings.source_sop_uid == str(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID)
        assert findings.statement == DISCLAIMER
        assert len(findings.boxes) == len(prediction.boxes)
        for got, want in zip(findings.boxes, prediction.boxes):
            assert (got.x1, got.y1, got.x2, got.y2) == pytest.approx((want.x1, want.y1, want.x2, want.y2), abs=1e-3)
            assert got.confidence == pytest.approx(want.confidence, abs=1e-9)


def test_dsrdump_shows_the_finding_boxes_and_statement(written):
    for prediction, paths in written.values():
        text = dsrdump(paths["sr"])
        assert '(233604007,SCT,"Pneumonia")' in text
        assert "Imaging Measurement Report" in text and "not a diagnosis" in text
        polylines = re.findall(r"SCOORD:\(,,\"Image Region\"\)=\(POLYLINE,([-0-9.e/,]+)\)", text)
        assert len(polylines) == len(prediction.boxes)
        for line, box in zip(polylines, prediction.boxes):  # the corners dsrdump prints are the box's
            points = np.array([[float(v) for v in pair.split("/")] for pair in line.split(",")])
            assert points.shape == (5, 2)
            assert points.min(0) == pytest.approx((box.x1, box.y1), abs=1e-3)
            assert points.max(0) == pytest.approx((box.x2, box.y2), abs=1e-3)
        assert f'"Certainty of Finding")="{prediction.probability * 100:g}"' in text


def test_results_share_the_source_study_and_copy_patient_attributes(written):
    for source, (_, paths) in written.items():
        src = pydicom.dcmread(source, stop_before_pixels=True)
        series = set()
        for kind, path in paths.items():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            assert ds.StudyInstanceUID == src.StudyInstanceUID
            assert ds.PatientID == src.PatientID and str(ds.PatientName) == str(src.PatientName)
            assert ds.SOPInstanceUID != src.SOPInstanceUID and ds.SeriesInstanceUID != src.SeriesInstanceUID
            series.add(ds.SeriesInstanceUID)
            if "PatientAge" in ds:
                assert re.fullmatch(r"\d{3}[DWMY]", ds.PatientAge)
        assert len(series) == 3


def test_uids_are_deterministic_per_source_model_version_and_kind(rsna_mini):
    path = sorted((rsna_mini / "stage_2_train_images").glob("*.dcm"))[0]
    xray, header = read_xray(path), read_source_header(path)
    first = build_results(header, xray.pixels, _prediction(*xray.original_size))
    again = build_results(header, xray.pixels, _prediction(*xray.original_size))
    other = build_results(header, xray.pixels, _prediction(*xray.original_size, version="2.0"))
    for kind in first:
        assert first[kind].SOPInstanceUID == again[kind].SOPInstanceUID
        assert first[kind].SeriesInstanceUID == again[kind].SeriesInstanceUID
        assert first[kind].SOPInstanceUID != other[kind].SOPInstanceUID
    assert len({ds.SOPInstanceUID for ds in first.values()}) == 3


def test_capture_has_the_boxes_burned_in_at_their_pixels(written):
    for _, (prediction, paths) in written.items():
        ds = pydicom.dcmread(paths["capture"])
        rgb = ds.pixel_array
        assert rgb.shape == (*prediction.image_size, 3) and ds.BurnedInAnnotation == "YES"
        for box in prediction.boxes:  # the middle of the top edge is the prediction colour
            x, y = int((box.x1 + box.x2) / 2), int(box.y1)
            assert tuple(int(v) for v in rgb[y, x]) == PREDICTION_COLOUR
        if not prediction.boxes:
            assert not np.all(rgb == np.array(PREDICTION_COLOUR), axis=-1).any()


def test_presentation_state_draws_each_box_on_the_source(written):
    for source, (prediction, paths) in written.items():
        src = pydicom.dcmread(source, stop_before_pixels=True)
        ds = pydicom.dcmread(paths["presentation"])
        annotation = ds.GraphicAnnotationSequence[0]
        assert annotation.ReferencedImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        graphics = annotation.get("GraphicObjectSequence", [])
        assert len(graphics) == len(prediction.boxes)
        for graphic, box in zip(graphics, prediction.boxes):
            points = np.asarray(graphic.GraphicData, dtype=np.float64).reshape(-1, 2)
            assert graphic.GraphicAnnotationUnits == "PIXEL" and graphic.GraphicType == "POLYLINE"
            assert points.min(0) == pytest.approx((box.x1, box.y1), abs=1e-3)
            assert points.max(0) == pytest.approx((box.x2, box.y2), abs=1e-3)
        captions = [t.UnformattedTextValue for t in annotation.TextObjectSequence]
        assert any("not a diagnosis" in c and prediction.model_version in c for c in captions)


def test_age_normalisation():
    assert normalised_age("38") == "038Y" and normalised_age("049Y") == "049Y"
    assert normalised_age("abc") is None and normalised_age("") is None and normalised_age("1000") is None


def test_source_without_uids_is_refused_with_a_typed_error(rsna_mini):
    path = sorted((rsna_mini / "stage_2_train_images").glob("*.dcm"))[0]
    header = read_source_header(path)
    del header.SOPInstanceUID
    with pytest.raises(DicomOutputError, match="SOPInstanceUID"):
        evidence_dataset(header)
    xray = read_xray(path)
    with pytest.raises(DicomOutputError):
        build_results(header, xray.pixels, _prediction(*xray.original_size))


def test_capture_refuses_pixels_of_another_size(rsna_mini):
    path = sorted((rsna_mini / "stage_2_train_images").glob("*.dcm"))[0]
    with pytest.raises(DicomOutputError, match="do not match"):
        build_results(read_source_header(path), np.zeros((10, 10), np.float32), _prediction(1024, 1024))


def test_building_results_leaves_the_source_header_untouched(rsna_mini):
    path = sorted((rsna_mini / "stage_2_train_images").glob("*.dcm"))[0]
    header, xray = read_source_header(path), read_xray(path)
    before = header.to_json_dict()
    build_results(header, xray.pixels, _prediction(*xray.original_size))
    assert header.to_json_dict() == before


def test_presentation_lut_keeps_a_monochrome1_source_looking_as_it_does(written):
    for source, (_, paths) in written.items():
        photometric = pydicom.dcmread(source, stop_before_pixels=True).PhotometricInterpretation
        shape = pydicom.dcmread(paths["presentation"]).PresentationLUTShape
        assert shape == ("INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"), source.name
    assert any(pydicom.dcmread(s, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1" for s in written)


def test_invalid_type2_source_values_are_emptied_and_the_results_still_validate(rsna_mini, tmp_path):
    path = sorted((rsna_mini / "stage_2_train_images").glob("*.dcm"))[0]
    header, xray = read_source_header(path), read_xray(path)
    with pytest.warns(UserWarning, match="Invalid value"):  # pydicom warns as we set them
        header.PatientSex, header.StudyDate, header.StudyTime, header.PatientAge = "Female", "not-a-date", "xx", "?"
    results = build_results(header, xray.pixels, _prediction(*xray.original_size))
    for kind, file in write_results(tmp_path, results).items():
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        assert not ds.get("PatientSex") and not ds.get("StudyDate") and "PatientAge" not in ds, kind
        assert dciodvfy_errors(file) == [], kind


def test_a_source_value_highdicom_refuses_becomes_a_typed_error(rsna_mini, monkeypatch):
    import pneumo.dicom_out as dicom_out

    def refuse(*_args):
        raise ValueError("value refused")

    monkeypatch.setattr(dicom_out, "build_presentation", refuse)
    path = sorted((rsna_mini / "stage_2_train_images").glob("*.dcm"))[0]
    xray = read_xray(path)
    with pytest.raises(DicomOutputError, match="presentation object .*value refused"):
        build_results(read_source_header(path), xray.pixels, _prediction(*xray.original_size))


def test_a_dx_source_with_12_bits_gives_valid_results(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1.1", generate_uid()  # DX for presentation
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID = "Doe^Jane", "ID1"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition, ds.Laterality = "DX", "CHEST", "PA", ""
    ds.Rows = ds.Columns = 256
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.tile(np.linspace(0, 4095, 256), (256, 1)).astype(np.uint16).tobytes()
    path = tmp_path / "dx.dcm"
    ds.save_as(path, enforce_file_format=True)
    xray = read_xray(path)
    paths = write_results(tmp_path / "out", build_results(read_source_header(path), xray.pixels,
                                                          _prediction(*xray.original_size)))
    for kind, file in paths.items():
        assert dciodvfy_errors(file) == [], kind
    assert read_sr(pydicom.dcmread(paths["sr"])).boxes[0].x1 == pytest.approx(0.10 * 256 + 0.25, abs=1e-3)
