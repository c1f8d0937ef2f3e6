"""DICOMweb client mode (dicomweb-client): find CR/DX series (QIDO-RS), fetch their instances (WADO-RS),
analyse each, and store the SR, secondary capture and presentation state back (STOW-RS).

A ``StateFile`` remembers every instance already handled, so a restart neither redoes nor skips one: an
instance is recorded only after its results were stored (or after it was refused, with the reason), so an
instance whose STOW failed is tried again at the next poll (its result UIDs are deterministic: a resend
replaces, never duplicates). Logs name UIDs, never a patient name or ID.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pneumo.errors import ConfigError, DicomNetworkError, PneumoError
from pneumo.node.analysis import analyse, describe

LOG = logging.getLogger("pneumo.node")
#: series modalities polled for: chest radiographs (RSNA files are secondary captures with Modality CR)
MODALITIES = ("CR", "DX")
STATE_VERSION = 1


def parse_interval(text: str) -> float:
    """``"10s"``, ``"2m"``, ``"500ms"``, ``"1h"`` or plain seconds -> seconds (> 0); ConfigError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(text))
    if not match:
        raise ConfigError(f"poll interval {text!r} must look like 10s, 2m, 500ms or a number of seconds")
    value = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
    if value <= 0:
        raise ConfigError("poll interval must be positive")
    return value


class StateFile:
    """Instances already handled, in a JSON file written atomically after every change:
    ``{"version": 1, "instances": {SOPInstanceUID: {"study": ..., "series": ..., "outcome": "stored" | "refused",
    "detail": ..., "results": [result SOP UIDs]}}}``. A corrupt file is refused (ConfigError), never reset."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.instances: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("version") != STATE_VERSION or not isinstance(data.get("instances"), dict):
                    raise ValueError("unknown layout")
            except (OSError, ValueError, AttributeError) as error:
                raise ConfigError(f"state file {self.path} is unreadable ({error}); move it away to start afresh "
                                  "(every instance on the server would be analysed again)") from None
            self.instances = data["instances"]

    def done(self, sop_uid: str) -> bool:
        return sop_uid in self.instances

    def done_per_series(self) -> Counter:
        """Series Instance UID -> how many of its instances are done."""
        with self._lock:
            return Counter(entry.get("series", "") for entry in self.instances.values())

    def record(self, sop_uid: str, study_uid: str, series_uid: str, outcome: str, detail: str = "",
               results: list[str] | None = None) -> None:
        from pneumo.files import atomic_write

        with self._lock:
            self.instances[sop_uid] = {"study": study_uid, "series": series_uid, "outcome": outcome,
                                       "detail": detail, "results": list(results or [])}
            with atomic_write(self.path) as handle:
                json.dump({"version": STATE_VERSION, "instances": self.instances}, handle, indent=1, sort_keys=True)


@dataclass
class PollReport:
    """What one poll did: instances stored, refused, failed (tried again next time), already done."""

    stored: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: int = 0


def _value(item: dict[str, Any], tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or [""]
    return str(values[0])


class DicomWebPoller:
    """Polls one DICOMweb server. ``client``: a ``dicomweb_client.DICOMwebClient`` (built from ``url`` when None)."""

    def __init__(self, url: str, service: Any, model: str, state: StateFile, *, client: Any = None,
                 timeout_s: float = 60.0) -> None:
        if client is None:
            from dicomweb_client.api import DICOMwebClient

            client = DICOMwebClient(url=url.rstrip("/"), timeout=timeout_s)
        self.url, self.client, self.service, self.model, self.state = url, client, service, model, state

    def find_instances(self) -> tuple[list[tuple[str, str, str]], int]:
        """(study, series, SOP instance) UIDs of the CR/DX instances on the server (QIDO-RS), and how many
        were not listed because their series says (NumberOfSeriesRelatedInstances) that all are done."""
        found, finished = [], 0
        done = self.state.done_per_series()
        for modality in MODALITIES:
            for series in self.client.search_for_series(search_filters={"Modality": modality}, get_remaining=True):
                study_uid, series_uid = _value(series, "0020000D"), _value(series, "0020000E")
                count = _value(series, "00201209")
                if count.isdigit() and 0 < int(count) <= done.get(series_uid, 0):
                    finished += int(count)
                    continue
                for instance in self.client.search_for_instances(study_uid, series_uid, get_remaining=True):
                    found.append((study_uid, series_uid, _value(instance, "00080018")))
        return found, finished

    def poll(self) -> PollReport:
        """One pass: every CR/DX instance not yet in the state is fetched, analysed and answered.
        Raises DicomNetworkError when the server cannot be queried."""
        import requests

        from pneumo.dicom_out import dataset_bytes

        report = PollReport()
        try:
            instances, report.skipped = self.find_instances()
        except requests.RequestException as error:
            raise DicomNetworkError(f"QIDO-RS query to {self.url} failed ({type(error).__name__})") from error
        for study_uid, series_uid, sop_uid in instances:
            if self.state.done(sop_uid):
                report.skipped += 1
                continue
            try:
                dataset = self.client.retrieve_instance(study_uid, series_uid, sop_uid)
                analysed = analyse(dataset_bytes(dataset), self.service, self.model)
            except requests.RequestException as error:
                LOG.warning("cannot fetch instance %s (%s); will retry", sop_uid, type(error).__name__)
                report.failed.append(sop_uid)
                continue
            except PneumoError as error:
                LOG.warning("refused instance %s: %s", sop_uid, describe(error))
                self.state.record(sop_uid, study_uid, series_uid, "refused", describe(error))
                report.refused.append(sop_uid)
                continue
            except Exception as error:  # noqa: BLE001 - a decoder failure on one instance must not stop polling
                LOG.warning("could not analyse instance %s: %s", sop_uid, describe(error))
                self.state.record(sop_uid, study_uid, series_uid, "refused", describe(error))
                report.refused.append(sop_uid)
                continue
            results = list(analysed.results.values())
            try:
                self.client.store_instances(results, study_instance_uid=study_uid)
            except requests.RequestException as error:
                LOG.warning("STOW-RS of the results of %s failed (%s); will retry", sop_uid, type(error).__name__)
                report.failed.append(sop_uid)
                continue
            self.state.record(sop_uid, study_uid, series_uid, "stored", f"{analysed.model} {analysed.version}",
                              [str(ds.SOPInstanceUID) for ds in results])
            report.stored.append(sop_uid)
            LOG.info("instance %s: p = %.3f, %d box(es); %d result(s) stored", sop_uid, analysed.probability,
                     analysed.boxes, len(results))
        return report

    def run(self, interval_s: float, stop: threading.Event) -> None:
        """Poll every ``interval_s`` seconds until ``stop`` is set; an unreachable server is logged and retried."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                report = self.poll()
                if report.stored or report.refused or report.failed:
                    LOG.info("poll: %d stored, %d refused, %d to retry, %d already done", len(report.stored),
                             len(report.refused), len(report.failed), report.skipped)
            except DicomNetworkError as error:
                LOG.warning("%s; next try in %.0f s", error, interval_s)
            stop.wait(max(0.0, interval_s - (time.monotonic() - started)))
