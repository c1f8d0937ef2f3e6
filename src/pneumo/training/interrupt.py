"""Graceful stop on Ctrl-C (SIGINT) and SIGTERM: the training loop finishes its current step, writes a
resumable state and returns. A second Ctrl-C aborts at once (``KeyboardInterrupt``) without saving."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator


class StopRequest:
    """Set by the signal handler; polled by the loop between steps."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name: str | None = None

    def request(self, name: str = "request") -> None:
        self.requested = True
        self.signal_name = name


@contextlib.contextmanager
def stop_on_signals(stop: StopRequest, announce: bool = True) -> Iterator[StopRequest]:
    """Route SIGINT/SIGTERM to ``stop`` for the block (main thread only; elsewhere a no-op); the previous
    handlers are restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    signals = [signal.SIGINT, signal.SIGTERM]
    previous = {sig: signal.getsignal(sig) for sig in signals}
    owner = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() != owner:  # a forked DataLoader worker: behave as it would without this handler
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        name = signal.Signals(signum).name
        if stop.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.request(name)
        if announce:
            print(
                f"\npneumo: {name} received: stopping after the current step and saving a resumable state "
                "(Ctrl-C again aborts without saving)",
                file=sys.stderr,
                flush=True,
            )

    for sig in signals:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
