"""Running the app with uvicorn (used by ``pneumo serve`` and ``pneumo demo``)."""

from __future__ import annotations

import ipaddress
import logging
import sys

from pneumo.api.settings import ApiSettings


def url_for(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_server(settings: ApiSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``create_app(settings)`` until interrupted (results are kept in the database of ``settings``); a
    shutdown waits at most ``settings.shutdown_timeout_s`` for open requests."""
    import uvicorn

    from pneumo.api.app import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not is_loopback(host) and settings.api_key is None:
        print(
            f"pneumo: warning: serving on {host} without an API key; set $PNEUMO_API_KEY or --api-key-file",
            file=sys.stderr,
        )
    print(f"pneumo: web page {url_for(host, port)}  API docs {url_for(host, port)}docs  (Ctrl-C stops)", flush=True)
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=settings.shutdown_timeout_s)
