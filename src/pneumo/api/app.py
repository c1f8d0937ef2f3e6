"""``create_app(settings)``: the FastAPI application (REST API + the web page at ``/``).

The lifespan builds the one ``InferenceService`` and reads the labels when the server starts, from the
settings given here (nothing is read at import). OpenAPI docs at ``/docs`` are served offline.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pneumo import __version__
from pneumo.api.auth import DOCS_PATHS, FailureLimiter, check_api_key, client_address
from pneumo.api.errors import ApiError, error_response, install_error_handlers
from pneumo.api.routes import health, v1
from pneumo.api.settings import ApiSettings
from pneumo.api.state import ApiState, InferencePool
from pneumo.api.store import ResultStore
from pneumo.api.worklist import worklist

log = logging.getLogger("pneumo.api")
STATIC_DIR = Path(__file__).resolve().parents[1] / "web" / "static"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
MAX_LOGGED_PATH = 200
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

ServiceFactory = Callable[[ApiSettings], Any]


def default_service_factory(settings: ApiSettings) -> Any:
    from pneumo.service import InferenceService

    return InferenceService(model_dir=settings.model_dir, backend=settings.backend)


def create_app(settings: ApiSettings | None = None, service_factory: ServiceFactory | None = None) -> FastAPI:
    """The application. ``service_factory(settings)`` builds the inference service at start-up (default:
    ``pneumo.service.InferenceService(model_dir, backend)``)."""
    settings = settings or ApiSettings.from_env()
    factory = service_factory or default_service_factory

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        labels = None
        if settings.labels is not None:
            from pneumo.data.rsna import read_rsna_labels

            labels = read_rsna_labels(settings.labels)
        from pneumo.store import open_database

        db = await anyio.to_thread.run_sync(open_database, settings.database, settings.data_dir)
        service = await anyio.to_thread.run_sync(factory, settings)
        try:  # load the models now, so the first request is fast and /readyz tells the truth
            names = [info.name for info in await anyio.to_thread.run_sync(service.available_models)]
        except Exception as error:  # noqa: BLE001 - a broken model must not stop the server; /readyz reports it
            names = []
            log.warning("loading models failed: %s: %s", type(error).__name__, error)
        app.state.pneumo = ApiState(
            settings=settings,
            service=service,
            store=ResultStore(settings.cache_size, int(settings.cache_mb * 1024 * 1024)),
            pool=InferencePool(settings.workers, settings.max_queue),
            labels=labels,
            db=db,
            auth_failures=FailureLimiter(settings.auth_max_failures, settings.auth_window_s),
        )
        log.info(
            "pneumo API %s ready: models=%s, workers=%d, upload limit %.0f MiB, labels %s, api key %s, database %s",
            __version__, ",".join(names) or "none", settings.workers, settings.max_upload_mb,
            "loaded" if labels is not None else "none", "required" if settings.api_key else "off",
            db.engine.dialect.name,
        )
        try:
            yield
        finally:
            close = getattr(service, "close", None)
            if callable(close):
                close()
            db.close()

    app = FastAPIOffline(
        title="pneumo",
        version=__version__,
        description=(
            "Pneumonia decision support for chest radiographs (RSNA task): image-level probability, opacity "
            "boxes and heatmaps. **Decision support, not a diagnosis.** Errors are "
            '`{"error": {"code", "message"}}`.'
        ),
        lifespan=lifespan,
        static_url="/docs-assets",
    )
    if settings.api_key is not None and settings.protect_docs:
        app.add_middleware(DocsAuthMiddleware)
    if settings.trusted_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(settings.trusted_hosts))
    app.add_middleware(RequestContextMiddleware)  # outermost: every response gets an id and a log line
    install_error_handlers(app)
    app.include_router(health)
    app.include_router(v1)
    app.include_router(worklist)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def log_safe(text: object, limit: int = MAX_LOGGED_PATH) -> str:
    """``text`` for one log line: control characters (CR, LF, ESC, ...) escaped as ``\\xNN``, cut at ``limit``."""
    value = _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
    return value if len(value) <= limit else value[: limit - 3] + "..."


class DocsAuthMiddleware:
    """With an API key set, the OpenAPI schema and the docs pages need it too (same rate-limited check)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path in DOCS_PATHS or any(path.startswith(p + "/") for p in DOCS_PATHS):
            state: ApiState | None = getattr(scope.get("app").state, "pneumo", None) if scope.get("app") else None
            if state is not None:
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
                try:
                    check_api_key(headers, client_address(scope), state.settings.api_key, state.auth_failures)
                except ApiError as error:
                    await error_response(error.status, error.code, error.message, error.headers)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class RequestContextMiddleware:
    """Gives each request an id (the client's ``X-Request-ID`` when well-formed, else a new one), returns it
    in ``X-Request-ID``, adds ``X-Content-Type-Options: nosniff``, and logs method, path, status and time.
    Query strings, file names and patient identifiers are never logged; the path is escaped (``log_safe``),
    so a ``%0a`` in a URL cannot write a forged log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                headers["X-Content-Type-Options"] = "nosniff"
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            log.info(
                "%s %s %s %d %.1fms", request_id, log_safe(scope.get("method"), 16), log_safe(scope.get("path")),
                status,
                (time.perf_counter() - start) * 1000,
            )
