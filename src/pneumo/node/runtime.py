"""What the long-running node commands share: logging set-up and waiting for SIGINT / SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path


def configure_logging(level: str) -> None:
    """pneumo's node log at ``level`` on stderr; pynetdicom's at WARNING (its debug output dumps data sets,
    patient names included)."""
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, getattr(logging, level.upper())))


def default_queue_dir(name: str) -> Path:
    """``$PNEUMO_NODE_DIR/<name>``, else ``~/.cache/pneumo/<name>``: where unsent results wait."""
    base = os.environ.get("PNEUMO_NODE_DIR", "").strip()
    return Path(base).expanduser() / name if base else Path.home() / ".cache" / "pneumo" / name


def wait_for_stop_signal(stop: threading.Event | None = None) -> None:
    """Block until SIGINT or SIGTERM (or ``stop`` is set); the previous handlers are restored."""
    stop = stop or threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
