"""The DICOM node against a real Orthanc: Orthanc C-STOREs an rsna-mini image to the node, the SR, secondary
capture and presentation state come back into the same study; foreign or broken objects never stop the node; a
PACS outage and a node restart lose no result. The model is the fast prior-box ``baseline``."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from orthanc_server import AE_TITLE, OrthancServer, free_port, require_orthanc
from pneumo.dicom_out import read_sr
from pneumo.node.peer import Peer
from pneumo.node.scp import DicomNode, NodeConfig
from pneumo.service import InferenceService

pytestmark = pytest.mark.slow
RESULT_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.11.1"}
DX = "1.2.840.10008.5.1.4.1.1.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    require_orthanc()
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def service():
    return InferenceService()


@pytest.fixture()
def node_factory(tmp_path, service, orthanc):
    nodes = []

    def make(destination: Peer | None = None, queue: Path | None = None, **kwargs) -> DicomNode:
        destination = destination or Peer(AE_TITLE, "127.0.0.1", orthanc.dicom_port)
        config = NodeConfig(destination=destination, queue_dir=queue or tmp_path / "queue", port=free_port(),
                            model="baseline", backoff_s=0.2, max_backoff_s=1.0, **kwargs)
        node = DicomNode(config, service)
        node.start()
        nodes.append(node)
        orthanc.add_modality("pneumo", config.ae_title, node.port)
        return node

    yield make
    for node in nodes:
        node.stop()


def _rsna(rsna_mini: Path, index: int) -> Path:
    return sorted((rsna_mini / "stage_2_train_images").glob("*.dcm"))[index]


def _results(instances: list[dict], source: Path) -> dict[str, dict]:
    """SOP class -> instance, for the instances of a study that are not the source (RSNA sources are SC too)."""
    source_uid = str(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID)
    results = [i for i in instances if i["SOPInstanceUID"] != source_uid]
    assert len(results) == len(instances) - 1, "the source is in the study"
    assert len({i["SOPClassUID"] for i in results}) == len(results), "one result per kind"
    return {i["SOPClassUID"]: i for i in results}


def _c_store(port: int, dataset: Dataset, syntax: str = ExplicitVRLittleEndian) -> int | None:
    """C-STORE from the test (an SCU named TESTSCU) -> the status code, None when nothing was accepted."""
    from pynetdicom import AE

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(dataset.SOPClassUID, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="PNEUMO")
    if not assoc.is_established:  # e.g. the only proposed context (a CT class) was rejected
        return None
    try:
        status = assoc.send_c_store(dataset)
        return int(status.Status) if status else None
    except (ValueError, RuntimeError):  # no accepted presentation context for this SOP class
        return None
    finally:
        assoc.release()


def _c_echo(port: int) -> int:
    from pynetdicom import AE

    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="PNEUMO")
    try:
        return int(assoc.send_c_echo().Status)
    finally:
        assoc.release()


def _dx(body_part: str = "CHEST", modality: str = "DX", sop_class: str = DX, truncated: bool = False) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID = "Secret^Patient", "SECRET-ID-42"
    ds.Modality, ds.BodyPartExamined = modality, body_part
    ds.Rows = ds.Columns = 256
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    pixels = np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))
    ds.PixelData = pixels.tobytes()[: 1000 if truncated else None]
    return ds


def test_orthanc_store_to_node_brings_sr_capture_and_gsps_into_the_same_study(orthanc, node_factory, rsna_mini):
    source = _rsna(rsna_mini, 0)
    uploaded = orthanc.upload(source)
    node = node_factory()
    assert _c_echo(node.port) == 0
    orthanc.rest("POST", "/modalities/pneumo/store", json={"Resources": [uploaded["ID"]], "Synchronous": True})
    instances = orthanc.wait_for_instances(uploaded["ParentStudy"], 4)
    results = _results(instances, source)
    assert set(results) == RESULT_CLASSES, f"results in Orthanc: {[i['SOPClassUID'] for i in instances]}"
    src = pydicom.dcmread(source, stop_before_pixels=True)
    for item in results.values():
        assert item["StudyInstanceUID"] == src.StudyInstanceUID
    sr_bytes = orthanc.rest_bytes(f"/instances/{results['1.2.840.10008.5.1.4.1.1.88.34']['ID']}/file")
    findings = read_sr(pydicom.dcmread(pydicom.filebase.DicomBytesIO(sr_bytes)))
    assert findings.source_sop_uid == src.SOPInstanceUID and 0.0 <= findings.probability <= 1.0
    assert list(node.outbox.pending()) == [] and list(node.inbox.glob("*.dcm")) == []


def test_foreign_and_broken_objects_never_stop_the_node(orthanc, node_factory, rsna_mini, caplog):
    caplog.set_level(logging.INFO, logger="pneumo.node")
    node = node_factory()
    assert _c_store(node.port, _dx(sop_class=CT, modality="CT")) is None  # CT: no presentation context
    assert _c_store(node.port, _dx(body_part="KNEE")) == 0xC000  # refused, with a reason
    assert _c_store(node.port, _dx(truncated=True)) == 0  # accepted; analysis fails, logged
    deadline = time.monotonic() + 30
    while node.refused < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert node.refused == 2 and _c_echo(node.port) == 0
    # ... and the next good image is still analysed and sent
    source = _rsna(rsna_mini, 1)
    good = pydicom.dcmread(source)
    uploaded = orthanc.upload(source)
    assert _c_store(node.port, good, JPEGBaseline8Bit) == 0
    assert set(_results(orthanc.wait_for_instances(uploaded["ParentStudy"], 4), source)) == RESULT_CLASSES
    assert "KNEE" in caplog.text and "could not analyse" in caplog.text
    for secret in ("SECRET-ID-42", "Secret", str(good.PatientID)):
        assert secret not in caplog.text


def test_outage_of_the_destination_is_survived_and_a_restart_resends_the_queue(orthanc, node_factory, rsna_mini,
                                                                              tmp_path):
    down = Peer(AE_TITLE, "127.0.0.1", free_port())  # nothing listens there
    queue = tmp_path / "outage-queue"
    first = node_factory(destination=down, queue=queue)
    source = _rsna(rsna_mini, 2)
    assert _c_store(first.port, pydicom.dcmread(source), JPEGBaseline8Bit) == 0
    deadline = time.monotonic() + 30
    while (len(first.outbox.pending()) < 3 or not all(first.outbox.failures(p) for p in first.outbox.pending())) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    queued = first.outbox.pending()
    assert len(queued) == 3 and all(first.outbox.failures(p) >= 1 for p in queued)
    first.stop()
    assert len(first.outbox.pending()) == 3  # kept on disk across the stop

    uploaded = orthanc.upload(source)
    second = node_factory(queue=queue)  # restart, now with a reachable PACS
    results = _results(orthanc.wait_for_instances(uploaded["ParentStudy"], 4), source)
    assert set(results) == RESULT_CLASSES
    assert {r["SOPInstanceUID"] for r in results.values()} == {p.stem for p in queued}
    deadline = time.monotonic() + 10
    while second.outbox.pending() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert second.outbox.pending() == []


def test_a_pacs_that_comes_back_gets_the_queued_results(orthanc, node_factory, rsna_mini):
    node = node_factory()
    source = _rsna(rsna_mini, 3)
    uploaded = orthanc.upload(source)
    orthanc.stop()
    try:
        assert _c_store(node.port, pydicom.dcmread(source), JPEGBaseline8Bit) == 0
        deadline = time.monotonic() + 30
        while not (node.outbox.pending() and node.outbox.failures(node.outbox.pending()[0])) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert node.outbox.pending() and node.outbox.failures(node.outbox.pending()[0]) >= 1
    finally:
        orthanc.start()
    assert set(_results(orthanc.wait_for_instances(uploaded["ParentStudy"], 4), source)) == RESULT_CLASSES


def test_the_command_answers_c_echo_and_stops_cleanly_on_sigterm(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-m", "pneumo", "dicom-node", "--port", str(port), "--destination", "PACS@127.0.0.1:9",
         "--model", "baseline", "--queue-dir", str(tmp_path / "q")],
        stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stderr.readline()
        while line and "pneumo dicom-node: AE PNEUMO" not in line:
            line = process.stderr.readline()
        assert f"127.0.0.1:{port}" in line and "baseline" in line
        assert _c_echo(port) == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        process.stderr.close()


class _BlockingService:
    """Stands in for the InferenceService to hold the single worker busy until ``release`` is set."""

    def __init__(self) -> None:
        import threading

        self.started, self.release = threading.Event(), threading.Event()

    def predict(self, xray, model, heatmap=False):
        from pneumo.types import Box, Prediction

        self.started.set()
        self.release.wait(30)
        return Prediction(probability=0.5, boxes=(Box(10, 10, 50, 60, 0.7),), model="blocking", model_version="0",
                          image_size=xray.original_size, extra={"threshold": 0.5})


def test_a_full_pool_answers_out_of_resources_and_loses_nothing(tmp_path, rsna_mini):
    service = _BlockingService()
    config = NodeConfig(destination=Peer(AE_TITLE, "127.0.0.1", free_port()), queue_dir=tmp_path / "q",
                        port=free_port(), model="blocking", workers=1, max_pending=1, backoff_s=5.0)
    node = DicomNode(config, service)
    node.start()
    try:
        first, second = (pydicom.dcmread(_rsna(rsna_mini, i)) for i in (4, 5))
        assert _c_store(node.port, first, JPEGBaseline8Bit) == 0
        assert service.started.wait(30)
        assert _c_store(node.port, second, JPEGBaseline8Bit) == 0xA700  # busy: the sender must retry
        assert [p.stem for p in node.inbox.glob("*.dcm")] == [first.SOPInstanceUID]
        service.release.set()
        deadline = time.monotonic() + 30
        while len(node.outbox.pending()) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(node.outbox.pending()) == 3 and list(node.inbox.glob("*.dcm")) == []
        assert _c_store(node.port, second, JPEGBaseline8Bit) == 0  # room again
    finally:
        service.release.set()
        node.stop()
