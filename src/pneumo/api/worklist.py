"""Worklist, review, users and audit endpoints (all on the database; see ``pneumo.store``).

Readers list, open and review results; admins also manage users and read the audit trail.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pneumo.api import persist
from pneumo.api.auth import Principal, authenticate, require_admin
from pneumo.api.routes import ERRORS, NO_STORE, get_state
from pneumo.api.schemas import ErrorOut
from pneumo.api.worklist_schemas import (
    AuditOut,
    MeOut,
    NewUserOut,
    ReviewIn,
    ReviewOut,
    UserIn,
    UserOut,
    UsersOut,
    WorklistOut,
)
from pneumo.store import audit, users
from pneumo.store.analyses import ReviewInput, add_review, list_analyses, review_json

worklist = APIRouter(prefix="/v1", dependencies=[Depends(authenticate)], responses=ERRORS, tags=["worklist"])
ADMIN_ONLY: dict[int | str, dict[str, Any]] = {403: {"model": ErrorOut, "description": "the key is not an admin's"}}
Status = Literal["unreviewed", "reviewed", "agree", "disagree", "corrected"]


@worklist.get("/me", response_model=MeOut)
async def me(principal: Principal = Depends(authenticate)) -> dict[str, str]:
    """Who the key belongs to and their role."""
    return {"name": principal.name, "role": principal.role}


@worklist.get("/predictions", response_model=WorklistOut)
async def list_predictions(
    request: Request,
    status: Status | None = Query(None, description="review status; 'reviewed' = any decision"),
    flagged: bool | None = Query(None, description="only results at (true) or below (false) the model's threshold"),
    limit: int = Query(50, ge=1, le=200),
    cursor: int | None = Query(None, ge=1, le=2**62, description="next_cursor of the previous page"),
) -> JSONResponse:
    """Stored results, newest first, one page at a time."""
    state = get_state(request)
    rows, next_cursor = await run_in_threadpool(list_analyses, state.db, status, flagged, limit, cursor)
    return JSONResponse({"items": [persist.worklist_item(r) for r in rows], "next_cursor": next_cursor},
                        headers=NO_STORE)


@worklist.post("/predictions/{result_id}/review", response_model=ReviewOut, status_code=201)
async def review_prediction(request: Request, body: ReviewIn, result_id: str = Path(max_length=64)) -> JSONResponse:
    """Record the reader's verdict on a result (the latest review counts; earlier ones are kept)."""
    state = get_state(request)
    boxes = None if body.boxes is None else [[b.x, b.y, b.x + b.width, b.y + b.height] for b in body.boxes]
    entry = await run_in_threadpool(add_review, state.db, result_id, ReviewInput(body.decision, boxes, body.comment),
                                    request.state.principal.name)
    return JSONResponse(review_json(entry), status_code=201, headers=NO_STORE)


@worklist.get("/audit", response_model=AuditOut, responses=ADMIN_ONLY)
async def read_audit(
    request: Request,
    _: Principal = Depends(require_admin),
    action: Literal[audit.ACTIONS] | None = Query(None),  # type: ignore[valid-type]
    actor: str | None = Query(None, max_length=64),
    result_id: str | None = Query(None, max_length=64),
    limit: int = Query(100, ge=1, le=1000),
    cursor: int | None = Query(None, ge=1, le=2**62),
) -> JSONResponse:
    """The audit trail, newest first (admins only)."""
    state = get_state(request)
    events = await run_in_threadpool(audit.events, state.db, limit + 1, cursor, action, actor, result_id)
    page = events[:limit]
    next_cursor = page[-1].seq if len(events) > limit and page else None
    return JSONResponse({"events": [e.to_json() for e in page], "next_cursor": next_cursor}, headers=NO_STORE)


@worklist.get("/users", response_model=UsersOut, responses=ADMIN_ONLY)
async def get_users(request: Request, _: Principal = Depends(require_admin)) -> dict[str, Any]:
    """Every user (admins only); keys are never shown again."""
    return {"users": [u.to_json() for u in await run_in_threadpool(users.list_users, get_state(request).db)]}


@worklist.post("/users", response_model=NewUserOut, status_code=201, responses=ADMIN_ONLY)
async def create_user(request: Request, body: UserIn, principal: Principal = Depends(require_admin)) -> JSONResponse:
    """Add a user; the response holds their API key, shown this once."""
    info, key = await run_in_threadpool(users.add_user, get_state(request).db, body.name, body.role, principal.name)
    return JSONResponse({**info.to_json(), "api_key": key}, status_code=201, headers=NO_STORE)


@worklist.post("/users/{name}/disable", response_model=UserOut, responses=ADMIN_ONLY)
async def disable(request: Request, name: str = Path(max_length=64),
                  principal: Principal = Depends(require_admin)) -> dict[str, Any]:
    """Disable a user: their key stops working at once."""
    return (await run_in_threadpool(users.disable_user, get_state(request).db, name, principal.name)).to_json()
