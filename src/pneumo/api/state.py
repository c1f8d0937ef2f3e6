"""What the app holds while it runs: the one InferenceService, labels, the database with the in-memory result
cache in front of it, and the worker pool; and the blocking work of one prediction (decode + predict + store),
which runs in a worker thread."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np

from pneumo import DISCLAIMER
from pneumo.api.errors import ApiError
from pneumo.api.render import to_uint8
from pneumo.api.settings import ApiSettings
from pneumo.api.store import ResultStore, StoredResult
from pneumo.api.uploads import Upload
from pneumo.files import to_jsonable
from pneumo.store import audit
from pneumo.store.db import Database
from pneumo.types import Box

log = logging.getLogger("pneumo.api")
T = TypeVar("T")


class InferencePool:
    """Runs blocking inference off the event loop: at most ``workers`` at once (an anyio capacity limiter
    over worker threads) and at most ``max_queue`` more waiting; beyond that requests get 503 + Retry-After."""

    def __init__(self, workers: int, max_queue: int) -> None:
        self.limiter = anyio.CapacityLimiter(workers)
        self.max_pending = workers + max_queue
        self.pending = 0  # touched only on the event loop thread

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        if self.pending >= self.max_pending:
            raise ApiError(503, "busy", "the server is busy with other images; retry shortly", {"Retry-After": "1"})
        self.pending += 1
        try:
            return await anyio.to_thread.run_sync(func, *args, limiter=self.limiter)
        finally:
            self.pending -= 1


@dataclass
class ApiState:
    settings: ApiSettings
    service: Any  # pneumo.service.InferenceService (duck-typed so the API imports no torch at import time)
    store: ResultStore  # in-memory cache in front of the database
    pool: InferencePool
    labels: Mapping[str, np.ndarray] | None  # patientId -> float32 (N, 4) xyxy; empty array = negative
    db: Database
    verified_keys: dict[str, str] = field(default_factory=dict)  # key id -> sha256(key) checked by scrypt

    def fetch(self, result_id: str, actor: str, kind: str) -> StoredResult:
        """A result from the cache, else from the database (``RecordNotFoundError`` -> 404); records a
        ``view`` audit event (blocking: call in a worker thread)."""
        from pneumo.api import persist

        result = self.store.get(result_id)
        if result is None:
            result = persist.load(self.db, result_id)
            self.store.put(result)
        audit.append(self.db, actor, "view", result_id, {"kind": kind})
        return result

    def model_infos(self) -> list[Any]:
        return list(self.service.available_models())

    def model_names(self) -> list[str]:
        return [info.name for info in self.model_infos()]

    def resolve_model(self, requested: str | None) -> str:
        """A model name served by this server (never a path: a client must not choose files)."""
        names = self.model_names()
        if requested is None:
            if self.settings.default_model in names:
                return self.settings.default_model
            if names:
                return names[0]
            raise ApiError(503, "no_models", "no models are available on this server")
        if requested not in names:
            known = ", ".join(names) or "none"
            raise ApiError(404, "unknown_model", f"unknown model {requested!r}; available: {known}")
        return requested

    def ground_truth(self, keys: list[str | None]) -> tuple[str | None, np.ndarray | None]:
        """(matched key, boxes) for the first key found in the labels; (None, None) if none is."""
        if self.labels is None:
            return None, None
        for key in keys:
            if key and key in self.labels:
                return key, np.asarray(self.labels[key], dtype=np.float32).reshape(-1, 4)
        return None, None


def analyse(state: ApiState, upload: Upload, model: str, request_id: str, user: str = "anonymous") -> StoredResult:
    """Decode, predict and store the result, requested by ``user`` (blocking: call through ``InferencePool.run``).
    The result is in the database before this returns."""
    from pneumo.api import persist
    from pneumo.io import read_xray

    start = time.perf_counter()
    xray = read_xray(upload.data)
    decoded = time.perf_counter()
    prediction = state.service.predict(xray, model, heatmap=True)
    predicted = time.perf_counter()

    result_id = uuid.uuid4().hex
    matched, truth = state.ground_truth([xray.patient_id, upload.stem])
    submission_id = matched or xray.patient_id or upload.stem or result_id
    timing = {k: round(float(v), 2) for k, v in dict(prediction.timing_ms or {}).items()}
    timing.update(decode=round((decoded - start) * 1000, 2), predict=round((predicted - decoded) * 1000, 2))
    threshold = _finite(dict(prediction.extra or {}).get("threshold"))
    payload: dict[str, Any] = {
        "id": result_id,
        "probability": float(prediction.probability),
        "threshold": threshold,
        "positive": None if threshold is None else bool(prediction.probability >= threshold),
        "boxes": [b.to_xywh() for b in prediction.boxes],
        "model": prediction.model,
        "model_version": prediction.model_version,
        "image_width": xray.width,
        "image_height": xray.height,
        "source_format": xray.source_format,
        "timing_ms": timing,
        "disclaimer": DISCLAIMER,
        "warnings": list(xray.warnings),
        "ground_truth": None if truth is None else {
            "positive": bool(len(truth)),
            "boxes": [Box(*map(float, row)).to_xywh() for row in truth],
        },
        "member_probabilities": to_jsonable(dict(prediction.extra or {}).get("member_probabilities")),
        "heatmap_available": prediction.heatmap is not None,
        "filename": upload.filename,
        "links": links(result_id, prediction.heatmap is not None),
        "review_status": "unreviewed",
        "review": None,
    }
    result = StoredResult(result_id, prediction, to_uint8(xray.pixels), truth, submission_id, payload)
    persist.save(state.db, result, xray, upload.data, user)
    state.store.put(result)
    log.info(
        "request %s: result %s model=%s size=%dx%d decode=%.0fms predict=%.0fms",
        request_id, result_id, model, xray.width, xray.height, timing["decode"], timing["predict"],
    )
    return result


def links(result_id: str, has_heatmap: bool) -> dict[str, str]:
    base = f"/v1/predictions/{result_id}"
    out = {
        "self": base,
        "image": f"{base}/image.png",
        "overlay": f"{base}/overlay.png",
        "submission": f"{base}/submission.csv",
    }
    if has_heatmap:
        out["heatmap"] = f"{base}/heatmap.png"
    return out


def model_summary(info: Any, default: str) -> dict[str, Any]:
    """A ``ModelInfo`` (dataclass or object) -> the ``ModelOut`` fields (JSON-safe, no server paths)."""
    raw = dataclasses.asdict(info) if dataclasses.is_dataclass(info) else dict(vars(info))
    card = raw.get("card") or raw.get("card_path")
    return {
        "name": str(raw.get("name")),
        "family": str(raw.get("family") or ""),
        "version": str(raw.get("version") or ""),
        "metrics": to_jsonable(raw.get("metrics") or {}),
        "thresholds": to_jsonable(getattr(info, "thresholds", None) or raw.get("thresholds") or {}),  # stored names
        "card": str(card).replace("\\", "/").rsplit("/", 1)[-1] if card else None,
        "members": [str(m) for m in (raw.get("members") or [])],
        "default": raw.get("name") == default,
    }


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
