"""An on-disk outbox of DICOM objects waiting to be sent, so that a PACS outage or a restart loses nothing.

Layout: ``DIR/<SOPInstanceUID>.dcm``, each written atomically (``pneumo.files.atomic_write``); an entry is
deleted only after the destination confirmed it. Result UIDs are deterministic, so re-queuing the same result
replaces its entry instead of duplicating it. Retry timing (exponential backoff) lives in memory: after a
restart every queued entry is due at once.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pneumo.errors import ConfigError

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class Outbox:
    """Files waiting to be sent, with per-entry exponential backoff.

    backoff_s: delay after the first failure (doubled after each further failure of that entry, at most
    ``max_backoff_s``). clock: seconds, monotonic (injectable for tests).
    """

    def __init__(self, folder: str | os.PathLike, *, backoff_s: float = 1.0, max_backoff_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if backoff_s <= 0 or max_backoff_s < backoff_s:
            raise ConfigError("backoff must be positive and max_backoff_s >= backoff_s")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.backoff_s, self.max_backoff_s, self.clock = backoff_s, max_backoff_s, clock
        self._failures: dict[str, int] = {}
        self._next_try: dict[str, float] = {}
        self._lock = threading.Lock()
        self.changed = threading.Event()  # set whenever an entry is added

    def put(self, sop_uid: str, data: bytes) -> Path:
        """Queue the Part 10 bytes of the object ``sop_uid`` (atomic; replaces an entry of the same UID)."""
        from pneumo.files import atomic_write

        if not _UID.match(sop_uid or ""):
            raise ConfigError(f"not a UID: {sop_uid!r}")
        path = self.folder / f"{sop_uid}.dcm"
        with atomic_write(path, "wb") as handle:
            handle.write(data)
        with self._lock:
            self._failures.pop(sop_uid, None)
            self._next_try.pop(sop_uid, None)
        self.changed.set()
        return path

    def pending(self) -> list[Path]:
        """Every queued file, oldest first (temporary files of unfinished writes are not entries)."""
        files = [p for p in self.folder.glob("*.dcm") if not p.name.startswith(".")]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))

    def due(self) -> list[Path]:
        """Queued files whose backoff has expired."""
        now = self.clock()
        with self._lock:
            return [p for p in self.pending() if self._next_try.get(p.stem, 0.0) <= now]

    def next_due_in(self) -> float | None:
        """Seconds until the next entry is due (0 if one is due now), None when the queue is empty."""
        pending = self.pending()
        if not pending:
            return None
        now = self.clock()
        with self._lock:
            return max(0.0, min(self._next_try.get(p.stem, 0.0) - now for p in pending))

    def sent(self, path: Path) -> None:
        """The destination confirmed ``path``: remove it."""
        path.unlink(missing_ok=True)
        with self._lock:
            self._failures.pop(path.stem, None)
            self._next_try.pop(path.stem, None)

    def failed(self, path: Path) -> float:
        """Sending ``path`` failed: schedule the next try; -> the delay in seconds."""
        with self._lock:
            count = self._failures.get(path.stem, 0) + 1
            self._failures[path.stem] = count
            delay = min(self.max_backoff_s, self.backoff_s * 2 ** (count - 1))
            self._next_try[path.stem] = self.clock() + delay
        return delay

    def quarantine(self, path: Path) -> Path:
        """Move an entry that can never be sent (unreadable) to ``DIR/rejected/``, out of the queue."""
        target = self.folder / "rejected" / path.name
        target.parent.mkdir(exist_ok=True)
        os.replace(path, target)
        return target

    def failures(self, path: Path) -> int:
        """How many times sending ``path`` has failed since it was queued (or since the start)."""
        with self._lock:
            return self._failures.get(path.stem, 0)
