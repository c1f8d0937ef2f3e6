"""Between the API's in-memory ``StoredResult`` and the database row: what is stored per analysis, and how a
result is rebuilt from the row and its files after a restart (so every PNG/CSV renders exactly as before)."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np
from PIL import Image

from pneumo.api.render import png_bytes
from pneumo.api.store import StoredResult
from pneumo.store import audit
from pneumo.store.analyses import get_analysis, save_analysis
from pneumo.store.db import Database
from pneumo.store.schema import Analysis
from pneumo.files import to_jsonable
from pneumo.types import Box, Prediction, XRay


def save(db: Database, result: StoredResult, xray: XRay, data: bytes, user: str) -> None:
    """Store ``result`` (image and heatmap files first, then the row with its audit event in one transaction)."""
    prediction = result.prediction
    payload = result.payload
    extra = dict(_json_extra(prediction.extra))
    fields: dict[str, Any] = {
        "id": result.id,
        "created_at": audit.utcnow(),
        "requested_by": user,
        "source_format": xray.source_format,
        "file_sha256": hashlib.sha256(data).hexdigest(),
        "study_uid": xray.study_uid,
        "series_uid": xray.series_uid,
        "sop_uid": xray.sop_uid,
        "submission_id": result.submission_id,
        "model": prediction.model,
        "model_version": prediction.model_version,
        "thresholds": dict(extra.get("thresholds") or {"probability_threshold": payload["threshold"]}),
        "probability": float(prediction.probability),
        "positive": payload["positive"],
        "flagged": bool(payload["positive"]),
        "boxes": [[b.x1, b.y1, b.x2, b.y2, b.confidence] for b in prediction.boxes],
        "timings": payload["timing_ms"],
        "warnings": payload["warnings"],
        "ground_truth": None if result.ground_truth is None else np.asarray(result.ground_truth).tolist(),
        "extra": extra,
        "payload": payload,
        "image_height": int(prediction.image_size[0]),  # original pixels (the boxes' frame), not the display copy
        "image_width": int(prediction.image_size[1]),
    }
    save_analysis(db, fields, png_bytes(result.image_u8), prediction.heatmap, user)


def load(db: Database, result_id: str) -> StoredResult:
    """Rebuild a stored result (``RecordNotFoundError`` for an unknown id, ``StoreError`` for a lost file)."""
    row = get_analysis(db, result_id)
    image = np.asarray(Image.open(io.BytesIO(db.blobs.get(row.image_sha256, ".png"))), dtype=np.uint8)
    heatmap = None if row.heatmap_sha256 is None else db.blobs.get_array(row.heatmap_sha256)
    prediction = Prediction(
        probability=row.probability,
        boxes=tuple(Box(*map(float, b)) for b in row.boxes),
        model=row.model,
        model_version=row.model_version,
        image_size=(row.image_height, row.image_width),
        heatmap=heatmap,
        timing_ms=dict(row.timings),
        extra=dict(row.extra),
    )
    truth = None if row.ground_truth is None else np.asarray(row.ground_truth, dtype=np.float32).reshape(-1, 4)
    return StoredResult(row.id, prediction, image, truth, row.submission_id, dict(row.payload))


def worklist_item(row: Analysis) -> dict[str, Any]:
    """A worklist entry (no images)."""
    return {
        "id": row.id,
        "created_at": audit.as_utc(row.created_at).isoformat(),
        "requested_by": row.requested_by,
        "model": row.model,
        "model_version": row.model_version,
        "probability": row.probability,
        "positive": row.positive,
        "flagged": row.flagged,
        "boxes": len(row.boxes),
        "review_status": row.review_status,
        "filename": row.payload.get("filename"),
        "links": row.payload.get("links", {}),
    }


def _json_extra(extra: Any) -> dict[str, Any]:
    return to_jsonable(dict(extra or {}))
