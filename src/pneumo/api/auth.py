"""API-key checks with failed-attempt rate limiting, for ``/v1`` routes and (when a key is set) the docs.

A client (by address) that sends a wrong or missing key more than ``max_failures`` times in a sliding
``window_s`` gets 429 + Retry-After, without the key being compared, until old failures leave the window.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import deque
from collections.abc import Mapping

from pneumo.api.errors import ApiError

#: paths of the interactive API docs, protected by the key when ``ApiSettings.protect_docs`` is on
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json", "/docs-assets")


class FailureLimiter:
    """Sliding-window count of failed authentications per client; thread-safe, bounded in memory."""

    def __init__(self, max_failures: int = 10, window_s: float = 60.0, max_clients: int = 10_000) -> None:
        self.max_failures, self.window_s, self.max_clients = max_failures, window_s, max_clients
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client)
        if times is None:
            return deque()
        while times and now - times[0] > self.window_s:
            times.popleft()
        if not times:
            del self._failures[client]
        return times

    def retry_after(self, client: str, now: float | None = None) -> float | None:
        """Seconds until ``client`` may try again, or None when it is not blocked."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(client, now)
            if len(times) < self.max_failures:
                return None
            return max(0.0, self.window_s - (now - times[-self.max_failures]))

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            if client not in self._failures and len(self._failures) >= self.max_clients:
                self._failures.pop(next(iter(self._failures)))  # forget the oldest client
            self._failures.setdefault(client, deque()).append(now)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key of ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``, else None."""
    given = headers.get("x-api-key")
    if given is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    return given


def check_api_key(headers: Mapping[str, str], client: str, expected: str | None, limiter: FailureLimiter) -> None:
    """Raise ApiError 429 (too many failures from ``client``) or 401 (missing / wrong key); no-op without a key."""
    if expected is None:
        return
    wait = limiter.retry_after(client)
    if wait is not None:
        raise ApiError(429, "too_many_failed_attempts",
                       f"too many failed API-key attempts from this client; retry in {wait:.0f} s",
                       {"Retry-After": str(max(1, round(wait)))})
    given = presented_key(headers)
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        limiter.failed(client)
        raise ApiError(401, "unauthorized", "missing or wrong API key", {"WWW-Authenticate": "Bearer"})
