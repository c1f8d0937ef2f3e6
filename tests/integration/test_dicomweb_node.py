"""DICOMweb client mode against a real Orthanc (DICOMweb plugin): QIDO-RS finds the CR images, WADO-RS fetches
them, STOW-RS stores the SR, secondary capture and presentation state in the same study; the state file makes
a restart neither redo nor skip an instance. The model is the fast prior-box ``baseline``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from orthanc_server import OrthancServer, require_orthanc
from pneumo.cli import main
from pneumo.errors import ConfigError
from pneumo.node.dicomweb import DicomWebPoller, StateFile, parse_interval
from pneumo.service import InferenceService

pytestmark = pytest.mark.slow
RESULT_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.11.1"}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    require_orthanc(dicomweb=True)
    server = OrthancServer(tmp_path_factory.mktemp("orthanc-web")).start()
    yield server
    server.stop()


def _knee(tmp_path: Path) -> Path:
    """A DX of a knee: on the server, found by QIDO (DX), refused by the node."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1.1", generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality, ds.BodyPartExamined = "Knee^Test", "KNEE-1", "DX", "KNEE"
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.zeros((64, 64), np.uint8).tobytes()
    path = tmp_path / "knee.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _study_results(orthanc: OrthancServer, study_id: str, source: Path) -> dict[str, dict]:
    source_uid = str(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID)
    return {i["SOPClassUID"]: i for i in orthanc.study_instances(study_id) if i["SOPInstanceUID"] != source_uid}


def test_poll_stores_results_in_the_same_study_and_a_restart_neither_redoes_nor_skips(orthanc, rsna_mini, tmp_path,
                                                                                       caplog):
    caplog.set_level(logging.INFO, logger="pneumo.node")
    images = sorted((rsna_mini / "stage_2_train_images").glob("*.dcm"))
    first, second = images[10], images[11]
    uploaded = orthanc.upload(first)
    knee = orthanc.upload(_knee(tmp_path))
    service, state_path = InferenceService(), tmp_path / "state.json"
    poller = DicomWebPoller(f"{orthanc.url}/dicom-web", service, "baseline", StateFile(state_path))

    report = poller.poll()
    first_uid = str(pydicom.dcmread(first, stop_before_pixels=True).SOPInstanceUID)
    assert report.stored == [first_uid] and len(report.refused) == 1 and report.failed == []
    results = _study_results(orthanc, uploaded["ParentStudy"], first)
    assert set(results) == RESULT_CLASSES
    state = json.loads(state_path.read_text())["instances"]
    assert state[first_uid]["outcome"] == "stored"
    assert sorted(state[first_uid]["results"]) == sorted(r["SOPInstanceUID"] for r in results.values())
    assert len(orthanc.rest("GET", f"/studies/{knee['ParentStudy']}/instances")) == 1  # nothing for the knee

    # a restart (new poller, same state file) redoes nothing; a new image is picked up, and only it
    restarted = DicomWebPoller(f"{orthanc.url}/dicom-web", service, "baseline", StateFile(state_path))
    listed = []
    search = restarted.client.search_for_instances
    restarted.client.search_for_instances = lambda *a, **k: listed.append(a) or search(*a, **k)
    again = restarted.poll()
    assert again.stored == [] and again.refused == [] and again.skipped == 2
    assert listed == []  # finished series are not even listed (their instance count says all are done)
    added = orthanc.upload(second)
    third = DicomWebPoller(f"{orthanc.url}/dicom-web", service, "baseline", StateFile(state_path)).poll()
    assert third.stored == [str(pydicom.dcmread(second, stop_before_pixels=True).SOPInstanceUID)]
    assert set(_study_results(orthanc, added["ParentStudy"], second)) == RESULT_CLASSES
    assert len(orthanc.rest("GET", f"/studies/{uploaded['ParentStudy']}/instances")) == 4  # no duplicates
    assert "KNEE" in caplog.text and "stored" in caplog.text
    for path in (first, second):
        assert str(pydicom.dcmread(path, stop_before_pixels=True).PatientID) not in caplog.text
    assert "KNEE-1" not in caplog.text and "Knee^Test" not in caplog.text


def test_cli_once_and_an_unreachable_server(orthanc, rsna_mini, tmp_path, capsys):
    source = sorted((rsna_mini / "stage_2_train_images").glob("*.dcm"))[12]
    uploaded = orthanc.upload(source)
    state = tmp_path / "cli-state.json"
    code = main(["dicomweb", "--url", f"{orthanc.url}/dicom-web", "--once", "--model", "baseline",
                 "--state-file", str(state), "--log-level", "warning"])
    assert code == 0, capsys.readouterr().err
    assert set(_study_results(orthanc, uploaded["ParentStudy"], source)) == RESULT_CLASSES
    assert "stored" in capsys.readouterr().err
    code = main(["dicomweb", "--url", "http://127.0.0.1:9/dicom-web", "--once", "--model", "baseline",
                 "--state-file", str(tmp_path / "other.json"), "--log-level", "warning"])
    assert code == 2 and "QIDO-RS query" in capsys.readouterr().err


def test_state_file_and_interval_errors(tmp_path):
    bad = tmp_path / "state.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        StateFile(bad)
    assert bad.read_text() == "{not json"  # never reset
    assert parse_interval("10s") == 10 and parse_interval("2m") == 120 and parse_interval("500ms") == 0.5
    for text in ("", "soon", "0s", "-1"):
        with pytest.raises(ConfigError):
            parse_interval(text)
