"""Who is calling, with failed-attempt rate limiting: the shared API key (``$PNEUMO_API_KEY`` or
``--api-key-file``; acts as an admin), a per-user key (``pneumo users add``), or, on a server with neither, an
anonymous local admin. Keys come in ``X-API-Key`` or ``Authorization: Bearer``.

Roles: ``reader`` analyses, views and reviews; ``admin`` also manages users and reads the audit trail.

A client (by address) that sends a wrong or missing key more than ``max_failures`` times in a sliding
``window_s`` gets 429 + Retry-After, without the key being checked, until old failures leave the window.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from pneumo.api.errors import ApiError
from pneumo.errors import AuthenticationError
from pneumo.store import users

#: paths of the interactive API docs, protected by the key when ``ApiSettings.protect_docs`` is on
DOCS_PATHS = ("/docs", "/redoc", "/openapi.json", "/docs-assets")


@dataclass(frozen=True)
class Principal:
    name: str  # user name, "api-key" (shared key) or "anonymous" (no authentication configured)
    role: str  # "reader" | "admin"


SHARED_KEY = Principal("api-key", "admin")
ANONYMOUS = Principal("anonymous", "admin")


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


def client_address(scope: Mapping[str, Any]) -> str:
    """The peer address of an ASGI scope (the rate-limit key), or ``"-"``."""
    client = scope.get("client")
    return str(client[0]) if client else "-"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key of ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``, else None."""
    given = headers.get("x-api-key")
    if given is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    return given or None


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


def refuse_if_blocked(client: str, limiter: FailureLimiter) -> None:
    """ApiError 429 while ``client`` has too many recent failures."""
    wait = limiter.retry_after(client)
    if wait is not None:
        raise ApiError(429, "too_many_failed_attempts",
                       f"too many failed API-key attempts from this client; retry in {wait:.0f} s",
                       {"Retry-After": str(max(1, round(wait)))})


def check_api_key(headers: Mapping[str, str], client: str, expected: str | None, limiter: FailureLimiter) -> None:
    """The shared key only (the docs pages): raise 429 (too many failures from ``client``) or 401 (missing /
    wrong key); no-op without a key."""
    if expected is None:
        return
    refuse_if_blocked(client, limiter)
    given = presented_key(headers)
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        limiter.failed(client)
        raise unauthorized("missing or wrong API key")


async def authenticate(request: Request) -> Principal:
    """The caller (also kept in ``request.state.principal``), or 401 / 429."""
    state = request.app.state.pneumo
    client = client_address(request.scope)
    refuse_if_blocked(client, state.auth_failures)
    try:
        principal = await _principal(state, presented_key(request.headers))
    except ApiError:
        state.auth_failures.failed(client)
        raise
    request.state.principal = principal
    return principal


async def _principal(state: Any, given: str | None) -> Principal:
    expected = state.settings.api_key
    if given is not None and users.looks_like_user_key(given):
        try:
            info = await run_in_threadpool(users.authenticate, state.db, given, state.verified_keys)
        except AuthenticationError as error:
            raise unauthorized(str(error)) from None
        return Principal(info.name, info.role)
    if expected is not None:
        if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise unauthorized("missing or wrong API key")
        return SHARED_KEY
    if await run_in_threadpool(users.any_active_user, state.db):
        raise unauthorized("this server has users: send your API key")
    return ANONYMOUS


async def require_admin(principal: Principal = Depends(authenticate)) -> Principal:
    if principal.role != "admin":
        raise ApiError(403, "forbidden", "this needs an admin's API key")
    return principal
