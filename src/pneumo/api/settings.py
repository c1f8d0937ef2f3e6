"""Settings of the REST API, resolved once when the app is created (never at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from pneumo.errors import ConfigError

API_KEY_ENV = "PNEUMO_API_KEY"
TRUSTED_HOSTS_ENV = "PNEUMO_TRUSTED_HOSTS"


def read_api_key_file(path: str | os.PathLike) -> str:
    """The key held in ``path`` (surrounding whitespace and a trailing newline stripped); ConfigError when the
    file cannot be read or is empty. Keep it readable by the server's user only (chmod 600)."""
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the API key file {path}: {getattr(error, 'strerror', None) or error}") from None
    if not key:
        raise ConfigError(f"the API key file {path} is empty")
    return key


@dataclass(frozen=True)
class ApiSettings:
    """What ``create_app`` needs.

    model_dir: checkpoints folder for ``InferenceService`` (None: its default, $PNEUMO_MODEL_DIR or models/).
    labels: RSNA ``stage_2_train_labels.csv``; when given, responses carry ground-truth boxes for known patients.
    max_upload_mb: largest accepted request body, in MiB (checked on Content-Length and while reading).
    api_key: when set, every ``/v1`` request must send it (``X-API-Key`` or ``Authorization: Bearer``).
    workers: inferences run at the same time (threads off the event loop); more requests wait.
    max_queue: requests allowed to wait for a worker before the API answers 503 (back-pressure).
    cache_size / cache_mb: bounds of the in-memory result store (entries and approximate MiB).
    default_model: model used when a request names none.
    backend: ``"auto"``, ``"torch"`` or ``"onnx"``, passed to the service (None: its default, $PNEUMO_BACKEND or auto).
    database: SQLAlchemy URL of the result database (None: $PNEUMO_DATABASE_URL, else SQLite under data_dir).
    data_dir: folder of the SQLite file and the stored images (None: $PNEUMO_DATA_DIR, else ~/.local/share/pneumo).
    request_timeout_s: per-request deadline (queue wait + work) in seconds; past it the request gets 503
      ``deadline_exceeded`` and its work stops at the next stage.
    protect_docs: with an API key set, ``/docs``, ``/redoc`` and ``/openapi.json`` need the key too.
    trusted_hosts: when set, requests whose Host header is not one of these (``*.example.org`` wildcards
      allowed) get 400 (Starlette's TrustedHostMiddleware); None accepts any Host.
    auth_max_failures / auth_window_s: a client with this many failed API-key attempts within the sliding
      window gets 429 until they age out.
    shutdown_timeout_s: longest graceful shutdown of ``pneumo serve`` (then open connections are closed).
    """

    model_dir: Path | None = None
    labels: Path | None = None
    max_upload_mb: float = 64.0
    api_key: str | None = None
    workers: int = 2
    max_queue: int = 16
    cache_size: int = 256
    cache_mb: float = 512.0
    default_model: str = "ensemble"
    backend: str | None = None
    database: str | None = None
    data_dir: Path | None = None
    request_timeout_s: float = 30.0
    protect_docs: bool = True
    trusted_hosts: tuple[str, ...] | None = None
    auth_max_failures: int = 10
    auth_window_s: float = 60.0
    shutdown_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("model_dir", "labels", "data_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.max_upload_mb <= 0:
            raise ConfigError(f"max_upload_mb must be positive, got {self.max_upload_mb}")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.max_queue < 0:
            raise ConfigError(f"max_queue must be 0 or more, got {self.max_queue}")
        if self.trusted_hosts is not None:
            hosts = tuple(h.strip() for h in self.trusted_hosts if h and h.strip())
            if not hosts:
                raise ConfigError("trusted_hosts must name at least one host (or be unset)")
            object.__setattr__(self, "trusted_hosts", hosts)
        if self.auth_max_failures < 1 or not self.auth_window_s > 0 or not self.shutdown_timeout_s > 0:
            raise ConfigError("auth_max_failures, auth_window_s and shutdown_timeout_s must be positive")
        if not self.request_timeout_s > 0:
            raise ConfigError(f"request_timeout_s must be positive, got {self.request_timeout_s}")
        if self.cache_size < 1 or self.cache_mb <= 0:
            raise ConfigError("cache_size and cache_mb must be positive")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key must not be empty; leave it unset to disable authentication")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, api_key_file: str | os.PathLike | None = None,
                 **values: object) -> "ApiSettings":
        """Settings from keyword values; ``api_key`` falls back to the contents of ``api_key_file``, else to
        ``$PNEUMO_API_KEY``; ``trusted_hosts`` to ``$PNEUMO_TRUSTED_HOSTS`` (comma-separated)."""
        environ = os.environ if environ is None else environ
        settings = cls(**{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]
        if settings.api_key is None and api_key_file is not None:
            settings = replace(settings, api_key=read_api_key_file(api_key_file))
        if settings.api_key is None and environ.get(API_KEY_ENV):
            settings = replace(settings, api_key=environ[API_KEY_ENV])
        if settings.trusted_hosts is None and environ.get(TRUSTED_HOSTS_ENV, "").strip():
            settings = replace(settings, trusted_hosts=tuple(environ[TRUSTED_HOSTS_ENV].split(",")))
        return settings
