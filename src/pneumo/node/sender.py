"""C-STORE DICOM objects (files) to one destination with pynetdicom, and a thread that drains an ``Outbox``.

Each result SOP class is proposed with Explicit and Implicit VR Little Endian in one context (the results are
written Explicit VR Little Endian); a file of another transfer syntax gets its own context with exactly that
syntax (a JPEG context shared with uncompressed ones may be accepted for one syntax only).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from pneumo.errors import DicomNetworkError
from pneumo.node.peer import Peer
from pneumo.node.queue import Outbox

LOG = logging.getLogger("pneumo.node")
#: SOP classes pneumo sends: Comprehensive 3D SR, Secondary Capture, Grayscale Softcopy Presentation State
RESULT_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.11.1")


def store_files(paths: Sequence[Path], destination: Peer, ae_title: str, *, timeout_s: float = 30.0) -> dict[Path, str]:
    """C-STORE ``paths`` over one association -> path -> "" (stored) or the reason it was not.

    Raises DicomNetworkError when no association can be made (destination down, AE title refused).
    """
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE

    datasets = {}
    results: dict[Path, str] = {}
    for path in paths:
        try:
            datasets[path] = pydicom.dcmread(path)
        except Exception as error:  # a damaged queue file: reported, never sent
            results[path] = f"unreadable queued file ({type(error).__name__})"
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    contexts = set()
    for ds in datasets.values():
        syntax = str(ds.file_meta.TransferSyntaxUID)
        if syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            contexts.add((str(ds.SOPClassUID), (ExplicitVRLittleEndian, ImplicitVRLittleEndian)))
        else:
            contexts.add((str(ds.SOPClassUID), (syntax,)))
    for sop_class, syntaxes in sorted(contexts):
        ae.add_requested_context(sop_class, list(syntaxes))
    if not datasets:
        return results
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise DicomNetworkError(f"cannot associate with {destination} (down, or it refused AE title {ae_title!r})")
    try:
        for path, ds in datasets.items():
            try:
                status = assoc.send_c_store(ds)
            except Exception as error:  # pynetdicom raises ValueError/RuntimeError for unaccepted contexts
                results[path] = f"not sent ({type(error).__name__}: {error})"
                continue
            code = int(getattr(status, "Status", -1)) if status else -1
            if code in (0x0000, 0xB000, 0xB006, 0xB007):  # success, or stored with a warning
                results[path] = ""
            else:
                results[path] = "no response (association lost)" if code == -1 else f"status 0x{code:04X}"
            if not assoc.is_established:
                break
        for path in datasets:
            results.setdefault(path, "association lost")
    finally:
        if assoc.is_established:
            assoc.release()
    return results


class OutboxSender:
    """A thread that C-STOREs what an ``Outbox`` holds to ``destination``, retrying with backoff until each
    object is confirmed; a restart resends whatever is still queued."""

    def __init__(self, outbox: Outbox, destination: Peer, ae_title: str, *, batch: int = 8) -> None:
        self.outbox, self.destination, self.ae_title, self.batch = outbox, destination, ae_title, batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pneumo-sender", daemon=True)
        self.sent_count = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self.outbox.changed.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            due = self.outbox.due()[: self.batch]
            if due:
                self.send(due)
                continue
            wait = self.outbox.next_due_in()
            self.outbox.changed.wait(timeout=1.0 if wait is None else min(max(wait, 0.05), 1.0))
            self.outbox.changed.clear()

    def send(self, paths: Sequence[Path]) -> None:
        """One attempt at sending ``paths``; failures are rescheduled and logged (no patient identifiers)."""
        try:
            results = store_files(paths, self.destination, self.ae_title)
        except DicomNetworkError as error:
            delay = max(self.outbox.failed(p) for p in paths)
            LOG.warning("send to %s failed for %d queued object(s): %s; retrying in %.0f s", self.destination,
                        len(paths), error, delay)
            return
        except Exception as error:  # pynetdicom socket errors: never let the sender thread die
            delay = max(self.outbox.failed(p) for p in paths)
            LOG.warning("send to %s failed (%s); retrying in %.0f s", self.destination, type(error).__name__, delay)
            return
        for path, reason in results.items():
            if reason.startswith("unreadable"):
                LOG.error("%s cannot be sent (%s): moved to %s", path.name, reason, self.outbox.quarantine(path))
            elif reason:
                delay = self.outbox.failed(path)
                LOG.warning("%s not stored by %s: %s; retrying in %.0f s", path.name, self.destination, reason, delay)
            else:
                self.outbox.sent(path)
                self.sent_count += 1
                LOG.info("sent %s to %s", path.name, self.destination)
