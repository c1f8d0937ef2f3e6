"""What the app holds while it runs: the one InferenceService, labels, the database with the in-memory result
cache in front of it, and the worker pool; and the blocking work of one prediction (decode + predict + store),
which runs in a worker thread."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np

from pneumo import DISCLAIMER
from pneumo.api.auth import FailureLimiter
from pneumo.api.errors import ApiError
from pneumo.api.settings import ApiSettings
from pneumo.api.store import ResultStore, StoredResult
from pneumo.api.uploads import Upload
from pneumo.files import to_jsonable
from pneumo.store import audit
from pneumo.store.db import Database
from pneumo.types import Box

log = logging.getLogger("pneumo.api")
T = TypeVar("T")


class Cancellation:
    """A request's deadline and cancel flag, checked by the worker between stages (decode, predict, store):
    a thread cannot be killed, so work stops at the next ``check`` once the client has gone or time is up."""

    def __init__(self, timeout_s: float | None = None) -> None:
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def check(self) -> None:
        """Raise ApiError when the client disconnected (499) or the deadline passed (503)."""
        if self._event.is_set():
            raise ApiError(499, "client_closed_request", "the client closed the connection; the work was dropped")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise deadline_exceeded(self.timeout_s)


def deadline_exceeded(timeout_s: float | None) -> ApiError:
    within = f"within its {timeout_s:g} s deadline" if timeout_s is not None else "in time"
    return ApiError(503, "deadline_exceeded", f"the request did not finish {within} (server busy); retry shortly",
                    {"Retry-After": "2"})


class InferencePool:
    """Runs blocking work (inference and renders) off the event loop: at most ``workers`` at once (an anyio
    capacity limiter over worker threads) and at most ``max_queue`` more waiting; beyond that requests get
    503 + Retry-After. A request that waits past its deadline, or whose client disconnects while it waits,
    leaves the queue without running; one already running stops at its next ``Cancellation.check``."""

    def __init__(self, workers: int, max_queue: int, poll_s: float = 0.25) -> None:
        self.limiter = anyio.CapacityLimiter(workers)
        self.workers = workers
        self.max_pending = workers + max_queue
        self.pending = 0  # touched only on the event loop thread
        self.poll_s = poll_s

    @property
    def saturated(self) -> bool:
        """Every worker busy and the queue full: a new request would be refused."""
        return self.pending >= self.max_pending

    def describe(self) -> str:
        running = min(self.pending, self.workers)
        return f"{running} of {self.workers} workers busy, {self.pending - running} request(s) queued"

    async def run(self, func: Callable[..., T], *args: Any, token: Cancellation | None = None,
                  disconnected: Callable[[], Awaitable[bool]] | None = None) -> T:
        if self.saturated:
            raise ApiError(503, "busy", "the server is busy with other images; retry shortly", {"Retry-After": "1"})
        token = token or Cancellation(None)
        outcome: dict[str, Any] = {}
        self.pending += 1
        try:
            async with anyio.create_task_group() as group:
                if disconnected is not None:
                    group.start_soon(self._watch, disconnected, token, group.cancel_scope)
                with anyio.move_on_after(token.remaining() if token.deadline is not None else math.inf):
                    try:
                        outcome["value"] = await anyio.to_thread.run_sync(func, *args, limiter=self.limiter)
                    except Exception as error:  # re-raised below, outside the task group (no ExceptionGroup)
                        outcome["error"] = error
                group.cancel_scope.cancel()  # stop the watcher
        finally:
            self.pending -= 1
        if "error" in outcome:
            raise outcome["error"]
        if "value" in outcome:
            return outcome["value"]
        token.check()  # here only when cancelled: disconnected (499) or past the deadline (503)
        raise deadline_exceeded(token.timeout_s)

    async def _watch(self, disconnected: Callable[[], Awaitable[bool]], token: Cancellation,
                     scope: anyio.CancelScope) -> None:
        while not token.cancelled:
            await anyio.sleep(self.poll_s)
            if await disconnected():
                token.cancel()
                scope.cancel()


@dataclass
class ApiState:
    settings: ApiSettings
    service: Any  # pneumo.service.InferenceService (duck-typed so the API imports no torch at import time)
    store: ResultStore  # in-memory cache in front of the database
    pool: InferencePool
    labels: Mapping[str, np.ndarray] | None  # patientId -> float32 (N, 4) xyxy; empty array = negative
    db: Database
    verified_keys: dict[str, str] = field(default_factory=dict)  # key id -> sha256(key) checked by scrypt
    auth_failures: FailureLimiter = field(default_factory=FailureLimiter)

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




def analyse(state: ApiState, upload: Upload, model: str, request_id: str, user: str = "anonymous",
            token: Cancellation | None = None) -> StoredResult:
    """Decode (with the chest-radiograph content check), predict and store the result, requested by ``user``
    (blocking: call through ``InferencePool.run``); ``token`` is checked between the stages. Only a bounded
    display copy of the image is kept (``pneumo.display``). The result is in the database before this returns."""
    from pneumo.api import persist
    from pneumo.display import display_copy

    token = token or Cancellation(None)
    token.check()
    start = time.perf_counter()
    xray = state.service.read(upload.data)
    decoded = time.perf_counter()
    token.check()
    prediction = state.service.predict(xray, model, heatmap=True)
    predicted = time.perf_counter()
    token.check()
    height, width = (int(v) for v in prediction.image_size)

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
        "image_width": width,
        "image_height": height,
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
    result = StoredResult(result_id, prediction, display_copy(xray.pixels), truth, submission_id, payload)
    persist.save(state.db, result, xray, upload.data, user)
    state.store.put(result)
    log.info(
        "request %s: result %s model=%s size=%dx%d decode=%.0fms predict=%.0fms",
        request_id, result_id, model, width, height, timing["decode"], timing["predict"],
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
