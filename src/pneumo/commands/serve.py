"""`pneumo serve`: the REST API and the web page (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pneumo.commands.backendopts import add_backend_arguments


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``serve`` and ``demo``."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="checkpoints folder (default: $PNEUMO_MODEL_DIR or the repository's models/)")
    parser.add_argument("--labels", type=Path, default=None,
                        help="RSNA stage_2_train_labels.csv: show ground truth for known patients")
    parser.add_argument("--max-upload-mb", type=float, default=64.0, help="largest upload in MiB (default: 64)")
    parser.add_argument("--api-key-file", type=Path, default=None, metavar="FILE",
                        help="require the key held in FILE on /v1 requests and the docs (default: $PNEUMO_API_KEY); "
                        "keep the file readable by the server's user only")
    parser.add_argument("--api-key", default=None, help=argparse.SUPPRESS)  # refused: argv is world-readable
    parser.add_argument("--trusted-host", action="append", default=None, metavar="HOST",
                        help="accept only requests whose Host header is HOST (repeatable; '*.example.org' allowed; "
                        "default: $PNEUMO_TRUSTED_HOSTS, else any)")
    parser.add_argument("--public-docs", action="store_true",
                        help="serve /docs and /openapi.json without the API key (default: behind it when one is set)")
    parser.add_argument("--request-timeout", type=float, default=30.0, metavar="S",
                        help="per-request deadline in seconds, queue wait included (default: 30)")
    parser.add_argument("--shutdown-timeout", type=float, default=10.0, metavar="S",
                        help="longest graceful shutdown in seconds before open requests are dropped (default: 10)")
    parser.add_argument("--workers", type=int, default=2,
                        help="inferences run at the same time, in worker threads (default: 2)")
    add_backend_arguments(parser)
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    from pneumo.commands.dbopts import add_database_arguments

    add_database_arguments(parser)


def settings_from_args(args: argparse.Namespace):  # -> ApiSettings
    from pneumo.api.settings import API_KEY_ENV, ApiSettings
    from pneumo.errors import ConfigError

    if args.api_key is not None:
        raise ConfigError(
            "--api-key is no longer accepted: a key on the command line is visible to every user in the process "
            f"list; put it in ${API_KEY_ENV} or in a file passed with --api-key-file"
        )
    return ApiSettings.from_env(
        api_key_file=args.api_key_file,
        model_dir=args.model_dir, labels=args.labels, max_upload_mb=args.max_upload_mb,
        workers=args.workers, backend=args.backend, database=args.database, data_dir=args.data_dir,
        trusted_hosts=tuple(args.trusted_host) if args.trusted_host else None,
        protect_docs=not args.public_docs, request_timeout_s=args.request_timeout,
        shutdown_timeout_s=args.shutdown_timeout,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the REST API and web page")
    add_server_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumo.api.server import run_server

    run_server(settings_from_args(args), host=args.host, port=args.port, log_level=args.log_level)
    return 0
