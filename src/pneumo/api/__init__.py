"""REST API (FastAPI): ``create_app(ApiSettings(...))``; run with ``pneumo serve``."""

from pneumo.api.app import create_app
from pneumo.api.settings import ApiSettings

__all__ = ["ApiSettings", "create_app"]
