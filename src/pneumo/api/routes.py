"""The HTTP endpoints. Every model call goes through ``pneumo.service.InferenceService`` (via ``ApiState``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from pneumo import __version__
from pneumo.api import render
from pneumo.api.auth import authenticate, client_address
from pneumo.api.errors import ApiError, not_found
from pneumo.api.schemas import ErrorOut, HealthOut, ModelsOut, PredictionOut, ReadyOut
from pneumo.api.state import ApiState, Cancellation, analyse, model_summary
from pneumo.api.store import StoredResult
from pneumo.api.uploads import FIELD, read_upload

NO_STORE = {"Cache-Control": "no-store"}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in {
        400: "unreadable or corrupt image, malformed request",
        401: "missing or wrong API key (when the server has one or has users)",
        429: "too many failed API-key attempts from this client",
        404: "unknown model or result id",
        413: "upload or image dimensions above the limit",
        415: "unsupported file type (send DICOM, PNG or JPEG)",
        422: "not a chest radiograph (e.g. CT or MR)",
        503: "busy (queue full, or past the request deadline), the model cannot be loaded, or the database is unavailable",
    }.items()
}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {FIELD: {"type": "string", "format": "binary", "description": "DICOM, PNG or JPEG"}},
                }
            },
            "application/dicom": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def get_state(request: Request) -> ApiState:
    return request.app.state.pneumo


health = APIRouter(tags=["health"])
v1 = APIRouter(prefix="/v1", dependencies=[Depends(authenticate)], responses=ERRORS)


@health.get("/healthz", response_model=HealthOut)
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok", "version": __version__}


@health.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
async def readyz(request: Request) -> JSONResponse:
    """Readiness: at least one model is available and the default model loads, and the inference queue has
    room (503 ``busy`` with the reason while every worker is busy and the queue is full)."""
    state = get_state(request)
    if state.pool.saturated:
        detail = f"inference queue full: {state.pool.describe()}"
        return JSONResponse({"status": "busy", "models": [], "detail": detail}, 503, headers={"Retry-After": "1"})
    try:
        names = await run_in_threadpool(state.model_names)
        if not names:
            return JSONResponse({"status": "unavailable", "models": [], "detail": "no models found"}, 503)
        default = await run_in_threadpool(state.resolve_model, None)
        await run_in_threadpool(state.service.load, default)
    except Exception as error:  # noqa: BLE001 - readiness reports any failure as "not ready"
        detail = error.message if isinstance(error, ApiError) else f"{type(error).__name__}: {error}"
        return JSONResponse({"status": "unavailable", "models": [], "detail": detail}, 503)
    return JSONResponse({"status": "ready", "models": names, "detail": None})


@v1.get("/models", response_model=ModelsOut)
async def list_models(request: Request) -> dict[str, Any]:
    """Served models: name, family, version, metrics and thresholds from their checkpoints / model cards."""
    state = get_state(request)
    infos = await run_in_threadpool(state.model_infos)
    try:
        default = await run_in_threadpool(state.resolve_model, None)
    except ApiError:
        default = state.settings.default_model
    return {"default": default, "models": [model_summary(info, default) for info in infos]}


@v1.post("/predictions", response_model=PredictionOut, openapi_extra=UPLOAD_BODY)
async def create_prediction(
    request: Request,
    model: str | None = Query(None, description="model name from /v1/models (default: ensemble when served)"),
    heatmap: bool = Query(False, description="embed the heatmap PNG as a data: URL"),
    overlay: bool = Query(False, description="embed the overlay PNG as a data: URL"),
) -> JSONResponse:
    """Analyse one chest radiograph (multipart field ``file``, or the raw file as the body).

    Decision support, not a diagnosis."""
    state = get_state(request)
    name = await run_in_threadpool(state.resolve_model, model)  # before the body: an unknown model costs no upload
    token = Cancellation(state.settings.request_timeout_s)
    upload = await read_upload(request, state.settings.max_upload_bytes)
    result = await state.pool.run(analyse, state, upload, name, request.state.request_id, request.state.principal.name,
                                  token, token=token, disconnected=request.is_disconnected)
    body = dict(result.payload)
    if heatmap and result.prediction.heatmap is not None:
        body["heatmap_png"] = render.data_url(await _render(state, result, "heatmap", token))
    if overlay:
        body["overlay_png"] = render.data_url(await _render(state, result, "overlay", token))
    return JSONResponse(body, headers={**NO_STORE, "Location": result.payload["links"]["self"]})


async def _result(request: Request, result_id: str, kind: str) -> StoredResult:
    """The result from the cache or the database (404 when unknown); the view goes into the audit trail."""
    return await run_in_threadpool(get_state(request).fetch, result_id, request.state.principal.name, kind)


async def _render(state: ApiState, result: StoredResult, kind: str, token: Cancellation | None = None) -> bytes:
    cached = result.renders.get(kind)
    if cached is not None:
        return cached
    makers = {
        "image": render.image_png,
        "heatmap": render.heatmap_png,
        "overlay": render.overlay_png,
        "overlay+heatmap": lambda r: render.overlay_png(r, with_heatmap=True),
    }
    # renders share the bounded inference pool (they were unbounded threads: 5 in parallel took +4.7 GiB)
    token = token or Cancellation(state.settings.request_timeout_s)
    png = await state.pool.run(makers[kind], result, token=token)
    if png is None:
        raise not_found("this model gives no heatmap")
    state.store.add_render(result, kind, png)
    return png


@v1.get("/predictions/{result_id}", response_model=PredictionOut)
async def get_prediction(request: Request, result_id: str) -> JSONResponse:
    """A stored result (as first returned), with its current review."""
    from pneumo.store.analyses import get_analysis, latest_review, review_json

    state = get_state(request)
    result = await _result(request, result_id, "json")
    row = await run_in_threadpool(get_analysis, state.db, result_id)
    review = await run_in_threadpool(latest_review, state.db, row.seq)
    body = {**result.payload, "review_status": row.review_status, "review": review_json(review)}
    return JSONResponse(body, headers=NO_STORE)


def _png(png: bytes) -> Response:
    return Response(png, media_type="image/png", headers=NO_STORE)


@v1.get("/predictions/{result_id}/image.png", response_class=Response, responses={200: {"content": {"image/png": {}}}})
async def get_image(request: Request, result_id: str) -> Response:
    """The decoded radiograph as an 8-bit grayscale PNG (MONOCHROME2, original size), for the viewer."""
    return _png(await _render(get_state(request), await _result(request, result_id, "image"), "image"))


@v1.get("/predictions/{result_id}/heatmap.png", response_class=Response, responses={200: {"content": {"image/png": {}}}})
async def get_heatmap(request: Request, result_id: str) -> Response:
    """The heatmap as a colour PNG with transparency (any resolution: scale it to the image)."""
    return _png(await _render(get_state(request), await _result(request, result_id, "heatmap"), "heatmap"))


@v1.get("/predictions/{result_id}/overlay.png", response_class=Response, responses={200: {"content": {"image/png": {}}}})
async def get_overlay(
    request: Request, result_id: str, heatmap: bool = Query(False, description="blend the heatmap in")
) -> Response:
    """The radiograph with predicted boxes (orange), ground truth (green) and the decision-support caption."""
    state = get_state(request)
    result = await _result(request, result_id, "overlay")
    return _png(await _render(state, result, "overlay+heatmap" if heatmap and result.prediction.heatmap is not None else "overlay"))


@v1.get("/predictions/{result_id}/submission.csv", response_class=Response,
        responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "one CSV row"}})
async def get_submission(request: Request, result_id: str) -> PlainTextResponse:
    """The Kaggle RSNA submission row (with its header) for this image."""
    result = await _result(request, result_id, "submission")
    return PlainTextResponse(
        render.submission_csv(result),
        media_type="text/csv",
        headers={**NO_STORE, "Content-Disposition": f'attachment; filename="pneumo-{result.id[:8]}.csv"'},
    )
