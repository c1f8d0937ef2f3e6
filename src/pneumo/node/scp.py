"""``DicomNode``: a pynetdicom Storage SCP (C-ECHO, C-STORE of CR / DX / SC images) that analyses each received
image in a bounded worker pool and C-STOREs the SR, secondary capture and presentation state to a destination.

Durability: a received image is written atomically to ``QUEUE/inbox/`` before the C-STORE is answered
"success", and removed once its results are in ``QUEUE/outbox/`` (``pneumo.node.queue.Outbox``), from where
``OutboxSender`` sends them with backoff. A restart analyses what is in the inbox and resends the outbox, so
neither a crash nor a PACS outage loses a result. A full pool answers 0xA700 (out of resources: the sender
retries later); what is not a chest radiograph is refused with a logged reason (0xC000), never a crash.
Logs name SOP classes and UIDs, never a patient name or ID.
"""

from __future__ import annotations

import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pneumo.errors import ConfigError
from pneumo.node.analysis import IMAGE_SOP_CLASSES, analyse, describe, queue_results, refusal
from pneumo.node.peer import Peer, check_ae_title
from pneumo.node.queue import Outbox
from pneumo.node.sender import OutboxSender

LOG = logging.getLogger("pneumo.node")
UID = re.compile(r"[0-9]+(\.[0-9]+)*")
STATUS_SUCCESS, STATUS_OUT_OF_RESOURCES, STATUS_CANNOT_UNDERSTAND, STATUS_REFUSED = 0x0000, 0xA700, 0xC210, 0xC000


@dataclass(frozen=True)
class NodeConfig:
    """Settings of one node. ``port`` 0 picks a free port (see ``DicomNode.port``); ``workers`` analyses at
    once; ``max_pending`` images received but not yet analysed before C-STOREs are answered 0xA700."""

    destination: Peer
    queue_dir: Path
    ae_title: str = "PNEUMO"
    host: str = "127.0.0.1"
    port: int = 11112
    model: str = "ensemble"
    workers: int = 1
    max_pending: int = 16
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0

    def __post_init__(self) -> None:
        check_ae_title(self.ae_title)
        if not 0 <= self.port <= 65535 or self.workers < 1 or self.max_pending < 1:
            raise ConfigError("port must be 0..65535, workers and max_pending at least 1")


class DicomNode:
    """The running node: ``start()``, then ``stop()``; ``service`` is a ``pneumo.service.InferenceService``."""

    def __init__(self, config: NodeConfig, service: Any) -> None:
        self.config, self.service = config, service
        self.inbox = Path(config.queue_dir) / "inbox"
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(Path(config.queue_dir) / "outbox", backoff_s=config.backoff_s,
                             max_backoff_s=config.max_backoff_s)
        self.sender = OutboxSender(self.outbox, config.destination, config.ae_title)
        self._slots = threading.BoundedSemaphore(config.max_pending)
        self._pool: ThreadPoolExecutor | None = None
        self._server: Any = None
        self.analysed = 0
        self.refused = 0

    # ----------------------------------------------------------------------------------------- lifecycle
    @property
    def port(self) -> int:
        """The TCP port the node listens on (the one picked when configured with 0)."""
        return int(self._server.server_address[1]) if self._server else self.config.port

    def start(self) -> None:
        """Listen, resume the inbox (images received before a stop) and start sending the outbox."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
        from pynetdicom.sop_class import Verification

        self._pool = ThreadPoolExecutor(max_workers=self.config.workers, thread_name_prefix="pneumo-analyse")
        for path in sorted(self.inbox.glob("*.dcm")):
            if self._slots.acquire(blocking=False):
                self._pool.submit(self._work, path)
        ae = AE(ae_title=self.config.ae_title)
        ae.add_supported_context(Verification)
        for sop_class in IMAGE_SOP_CLASSES:
            ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, lambda event: STATUS_SUCCESS)]
        try:
            self._server = ae.start_server((self.config.host, self.config.port), block=False, evt_handlers=handlers)
        except Exception:  # e.g. the port is taken: leave no worker behind
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            raise
        self.sender.start()
        LOG.info("AE %s listening on %s:%d; results to %s", self.config.ae_title, self.config.host, self.port,
                 self.config.destination)

    def stop(self) -> None:
        """Stop listening, finish the analyses in progress (queued ones stay in the inbox), stop the sender."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.sender.stop()

    # ---------------------------------------------------------------------------------------- handlers
    def _on_store(self, event: Any) -> Any:
        from pydicom.dataset import Dataset

        def status(code: int, comment: str) -> Any:
            ds = Dataset()
            ds.Status = code
            ds.ErrorComment = comment[:64]
            return ds

        try:
            header = event.dataset
            header.file_meta = event.file_meta
            sop_uid = str(header.SOPInstanceUID)
            if not UID.fullmatch(sop_uid):  # it names a file: never a path
                raise ValueError("SOPInstanceUID is not a UID")
            reason = refusal(header)
        except Exception as error:  # a data set pydicom cannot decode, or one without a SOP Instance UID
            self.refused += 1
            LOG.warning("refused a received object that cannot be decoded (%s)", type(error).__name__)
            return status(STATUS_CANNOT_UNDERSTAND, "cannot decode the data set")
        if reason:
            self.refused += 1
            LOG.warning("refused image %s: %s", sop_uid, reason)
            return status(STATUS_REFUSED, reason)
        if not self._slots.acquire(blocking=False):
            LOG.warning("busy: %d images waiting; image %s not accepted (the sender should retry)",
                        self.config.max_pending, sop_uid)
            return status(STATUS_OUT_OF_RESOURCES, "busy: retry later")
        try:
            from pneumo.files import atomic_write

            path = self.inbox / f"{sop_uid}.dcm"
            with atomic_write(path, "wb") as handle:
                handle.write(event.encoded_dataset())
            self._pool.submit(self._work, path)  # type: ignore[union-attr]
        except Exception as error:
            self._slots.release()
            LOG.error("cannot keep image %s (%s)", sop_uid, type(error).__name__)
            return status(STATUS_OUT_OF_RESOURCES, "cannot store the image")
        return STATUS_SUCCESS

    def _work(self, path: Path) -> None:
        """Analyse one inbox file; its results go to the outbox; the file is removed either way."""
        try:
            result = analyse(path.read_bytes(), self.service, self.config.model)
            queued = queue_results(result, self.outbox)
            self.analysed += 1
            self.outbox.changed.set()
            LOG.info("analysed image %s with %s %s: p = %.3f, %d box(es); %d result(s) queued", path.stem,
                     result.model, result.version, result.probability, result.boxes, len(queued))
        except Exception as error:  # noqa: BLE001 - one bad image must never stop the node
            self.refused += 1
            LOG.warning("could not analyse image %s: %s", path.stem, describe(error))
        finally:
            path.unlink(missing_ok=True)
            self._slots.release()
