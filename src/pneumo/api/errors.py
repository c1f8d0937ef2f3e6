"""The ONE place where errors become HTTP responses: ``{"error": {"code": str, "message": str}}``.

pneumo's typed library errors map to statuses by class (most specific first); ``ApiError`` carries statuses
that only the HTTP layer knows about (authentication, unknown id, upload limit, back-pressure).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from pneumo import errors as pe

log = logging.getLogger("pneumo.api")

#: library error class -> HTTP status; looked up along the exception's MRO, so subclasses inherit
STATUS_BY_ERROR: dict[type[pe.PneumoError], int] = {
    pe.InvalidImageError: 400,  # unreadable, empty, truncated, corrupt, no pixel data
    pe.UnsupportedImageError: 415,  # readable but unsupported (photometric, transfer syntax, ...)
    pe.NotChestRadiographError: 422,  # CT / MR / not a chest
    pe.ImageTooLargeError: 413,  # dimensions beyond the decompression-bomb guard
    pe.CheckpointError: 503,  # the model cannot be loaded: the server is not ready for it
    pe.UnknownModelError: 404,
    pe.ConfigError: 500,  # a server-side setting (e.g. a malformed ensemble spec), not the client's fault
    pe.InvalidReviewError: 400,  # a review or worklist filter the client got wrong
    pe.RecordNotFoundError: 404,
    pe.ConflictError: 409,
    pe.StoreError: 503,  # the database or the image folder cannot be used right now
    pe.AuthenticationError: 401,
    pe.PermissionDeniedError: 403,
}


class ApiError(Exception):
    """An error only the HTTP layer knows: carries its status and machine-readable code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def status_for(error: pe.PneumoError) -> int:
    """HTTP status of a library error (500 for a PneumoError without a mapping)."""
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 409: "conflict",
    413: "upload_too_large", 415: "unsupported_media_type", 503: "unavailable",
}


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into the JSON error body."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(error.status, error.code, error.message, error.headers)

    @app.exception_handler(pe.PneumoError)
    async def _pneumo_error(request: Request, error: pe.PneumoError) -> JSONResponse:
        status = status_for(error)
        if status >= 500:
            log.warning("request %s: %s", _request_id(request), type(error).__name__)
        return error_response(status, error.code, str(error))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(error.status_code, "http_error")
        return error_response(error.status_code, code, str(error.detail), dict(error.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        # 400, not FastAPI's 422: in this API 422 means "not a chest radiograph"
        parts = []
        for item in error.errors():
            where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("query", "path", "body"))
            parts.append(f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg", "invalid")))
        return error_response(400, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("request %s: unexpected %s", _request_id(request), type(error).__name__)
        return error_response(500, "internal_error", "internal server error; the request was logged")


def _request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "-")
