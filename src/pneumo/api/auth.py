"""Who is calling: the shared ``--api-key`` (acts as an admin), a per-user key (``pneumo users add``), or, on
a server with neither, an anonymous local admin. Keys come in ``X-API-Key`` or ``Authorization: Bearer``.

Roles: ``reader`` analyses, views and reviews; ``admin`` also manages users and reads the audit trail.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from pneumo.api.errors import ApiError
from pneumo.errors import AuthenticationError
from pneumo.store import users


@dataclass(frozen=True)
class Principal:
    name: str  # user name, "api-key" (shared key) or "anonymous" (no authentication configured)
    role: str  # "reader" | "admin"


SHARED_KEY = Principal("api-key", "admin")
ANONYMOUS = Principal("anonymous", "admin")


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


def presented_key(request: Request) -> str | None:
    given = request.headers.get("x-api-key")
    if given is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    return given or None


async def authenticate(request: Request) -> Principal:
    """The caller (also kept in ``request.state.principal``), or 401."""
    state = request.app.state.pneumo
    given = presented_key(request)
    expected = state.settings.api_key
    if given is not None and users.looks_like_user_key(given):
        try:
            info = await run_in_threadpool(users.authenticate, state.db, given, state.verified_keys)
        except AuthenticationError as error:
            raise unauthorized(str(error)) from None
        principal = Principal(info.name, info.role)
    elif expected is not None:
        if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
            raise unauthorized("missing or wrong API key")
        principal = SHARED_KEY
    elif await run_in_threadpool(users.any_active_user, state.db):
        raise unauthorized("this server has users: send your API key")
    else:
        principal = ANONYMOUS
    request.state.principal = principal
    return principal


async def require_admin(principal: Principal = Depends(authenticate)) -> Principal:
    if principal.role != "admin":
        raise ApiError(403, "forbidden", "this needs an admin's API key")
    return principal
