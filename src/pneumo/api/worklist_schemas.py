"""Bodies of the worklist, review, user and audit endpoints (documented at ``/docs``).

Review boxes are RSNA-style ``{x, y, width, height}`` in original-image pixels.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ReviewBox(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: float = Field(ge=0, le=1e5, description="left edge, original-image pixels")
    y: float = Field(ge=0, le=1e5, description="top edge, original-image pixels")
    width: float = Field(gt=0, le=1e5)
    height: float = Field(gt=0, le=1e5)


class ReviewIn(BaseModel):
    """A reader's verdict: ``agree`` / ``disagree`` with the model, or ``corrected`` with the right boxes
    (an empty list: no opacity)."""

    model_config = ConfigDict(extra="forbid")

    decision: Literal["agree", "disagree", "corrected"]
    boxes: list[ReviewBox] | None = Field(None, max_length=32, description="required for corrected")
    comment: str | None = Field(None, max_length=4000)


class ReviewOut(BaseModel):
    decision: str
    boxes: list[ReviewBox] | None = None
    comment: str | None = None
    reviewer: str
    created_at: str = Field(description="ISO 8601, UTC")


class WorklistItem(BaseModel):
    id: str
    created_at: str = Field(description="ISO 8601, UTC")
    requested_by: str
    model: str
    model_version: str
    probability: float
    positive: bool | None = None
    flagged: bool = Field(description="at or above the model's operating threshold")
    boxes: int = Field(description="number of predicted boxes")
    review_status: Literal["unreviewed", "agree", "disagree", "corrected"]
    filename: str | None = None
    links: dict[str, str]


class WorklistOut(BaseModel):
    items: list[WorklistItem]
    next_cursor: int | None = Field(None, description="pass as ?cursor= for the next (older) page")


class AuditEventOut(BaseModel):
    seq: int
    at: str
    actor: str
    action: str
    result_id: str | None = None
    detail: dict[str, Any] | None = None


class AuditOut(BaseModel):
    events: list[AuditEventOut]
    next_cursor: int | None = None


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    role: Literal["reader", "admin"] = "reader"


class UserOut(BaseModel):
    name: str
    role: str
    key_id: str
    created_at: str
    disabled: bool


class NewUserOut(UserOut):
    api_key: str = Field(description="shown once; only a salted hash is stored")


class UsersOut(BaseModel):
    users: list[UserOut]


class MeOut(BaseModel):
    name: str
    role: str
