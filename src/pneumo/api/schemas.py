"""Response bodies of the REST API (documented in the OpenAPI schema at ``/docs``).

Boxes are RSNA-style ``{x, y, width, height, confidence}`` in pixels of the original image (``Box.to_xywh``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from pneumo.api.worklist_schemas import ReviewOut


class BoxOut(BaseModel):
    x: float = Field(description="left edge, original-image pixels")
    y: float = Field(description="top edge, original-image pixels")
    width: float
    height: float
    confidence: float = Field(ge=0.0, le=1.0)


class GroundTruthOut(BaseModel):
    """The server's labels for this image (from ``--labels``), matched on DICOM PatientID or file stem."""

    positive: bool
    boxes: list[BoxOut]


class PredictionOut(BaseModel):
    id: str = Field(description="result id for the follow-up GET endpoints (stored in the database)")
    probability: float = Field(ge=0.0, le=1.0, description="image-level probability of pneumonia opacity")
    threshold: float | None = Field(None, description="the model's operating threshold, when it has one")
    positive: bool | None = Field(None, description="probability >= threshold (None without a threshold)")
    boxes: list[BoxOut]
    model: str
    model_version: str
    image_width: int
    image_height: int
    source_format: str
    timing_ms: dict[str, float]
    disclaimer: str
    warnings: list[str] = Field(description="what the image reader wants the user to know")
    ground_truth: GroundTruthOut | None = None
    member_probabilities: dict[str, float] | None = Field(None, description="ensemble: each member's probability")
    heatmap_available: bool
    filename: str | None = None
    links: dict[str, str]
    heatmap_png: str | None = Field(None, description="data: URL of the heatmap PNG, when ?heatmap=true")
    overlay_png: str | None = Field(None, description="data: URL of the overlay PNG, when ?overlay=true")
    review_status: str = Field("unreviewed", description="unreviewed, agree, disagree or corrected (the latest review)")
    review: ReviewOut | None = Field(None, description="the latest review, if any")


class ModelOut(BaseModel):
    name: str
    family: str
    version: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    thresholds: dict[str, Any] = Field(default_factory=dict)
    card: str | None = Field(None, description="file name of the model card, when one is shipped")
    members: list[str] = Field(default_factory=list, description="ensemble members")
    default: bool = False


class ModelsOut(BaseModel):
    default: str
    models: list[ModelOut]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


class HealthOut(BaseModel):
    status: str
    version: str


class ReadyOut(BaseModel):
    status: str
    models: list[str]
    detail: str | None = None
