"""The node's building blocks without a network: AE-title / destination parsing, the on-disk outbox and its
backoff, and the refusal rules for received objects."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from pneumo.errors import ConfigError
from pneumo.node.analysis import refusal
from pneumo.node.peer import Peer, check_ae_title
from pneumo.node.queue import Outbox


def test_destination_parsing():
    assert Peer.parse("ORTHANC@127.0.0.1:4242") == Peer("ORTHANC", "127.0.0.1", 4242)
    assert str(Peer.parse(" PACS@pacs.local:104 ")) == "PACS@pacs.local:104"
    for text in ("ORTHANC", "ORTHANC@host", "@host:1", "A@h:0", "A@h:70000", "WAY_TOO_LONG_AE_TITLE@h:1", "A\\B@h:1"):
        with pytest.raises(ConfigError):
            Peer.parse(text)
    with pytest.raises(ConfigError):
        check_ae_title("")


def test_outbox_survives_a_restart_and_backs_off_exponentially(tmp_path):
    now = [100.0]
    box = Outbox(tmp_path / "q", backoff_s=1.0, max_backoff_s=5.0, clock=lambda: now[0])
    path = box.put("1.2.3", b"first")
    box.put("1.2.3", b"second")  # same UID: replaced, not duplicated
    assert box.pending() == [path] and path.read_bytes() == b"second" and box.due() == [path]
    assert [box.failed(path) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert box.due() == [] and box.next_due_in() == pytest.approx(5.0)
    now[0] += 5.0
    assert box.due() == [path]
    restarted = Outbox(tmp_path / "q", clock=lambda: now[0])
    assert restarted.due() == [path]  # after a restart everything queued is due at once
    restarted.sent(path)
    assert restarted.pending() == [] and restarted.next_due_in() is None
    with pytest.raises(ConfigError):
        box.put("../escape", b"x")


def test_outbox_quarantines_what_cannot_be_sent(tmp_path):
    box = Outbox(tmp_path / "q")
    moved = box.quarantine(box.put("1.2.4", b"not dicom"))
    assert box.pending() == [] and moved.read_bytes() == b"not dicom"


def _header(**values) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = values.pop("sop", "1.2.840.10008.5.1.4.1.1.1")
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def test_refusal_rules():
    assert refusal(_header(Modality="CR", BodyPartExamined="CHEST")) is None
    assert refusal(_header(sop="1.2.840.10008.5.1.4.1.1.7", Modality="CR")) is None  # RSNA files
    assert "SOP class" in refusal(_header(sop="1.2.840.10008.5.1.4.1.1.2", Modality="CT"))
    assert "KNEE" in refusal(_header(Modality="DX", BodyPartExamined="KNEE"))
    assert "pneumo result" in refusal(_header(sop="1.2.840.10008.5.1.4.1.1.7", Manufacturer="pneumo"))
    assert "PATIENT-ID" not in (refusal(_header(Modality="MR", PatientID="PATIENT-ID")) or "")


def test_a_node_whose_port_is_taken_fails_to_start_and_leaves_nothing_running(tmp_path):
    import socket
    import threading

    from pneumo.node.scp import DicomNode, NodeConfig

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        threads = threading.active_count()
        node = DicomNode(NodeConfig(destination=Peer("PACS", "127.0.0.1", 9), queue_dir=tmp_path, port=port), None)
        with pytest.raises(OSError):
            node.start()
        node.stop()  # safe after a failed start
        assert threading.active_count() == threads
