"""`pneumo serve`: the REST API and the web page (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``serve`` and ``demo``."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="checkpoints folder (default: $PNEUMO_MODEL_DIR or the repository's models/)")
    parser.add_argument("--labels", type=Path, default=None,
                        help="RSNA stage_2_train_labels.csv: show ground truth for known patients")
    parser.add_argument("--max-upload-mb", type=float, default=64.0, help="largest upload in MiB (default: 64)")
    parser.add_argument("--api-key", default=None, help="require this key on /v1 requests (default: $PNEUMO_API_KEY)")
    parser.add_argument("--workers", type=int, default=2,
                        help="inferences run at the same time, in worker threads (default: 2)")
    parser.add_argument("--backend", choices=("auto", "torch", "onnx"), default=None,
                        help="inference backend (default: $PNEUMO_BACKEND, else auto: ONNX where an up-to-date export is faster)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    from pneumo.commands.dbopts import add_database_arguments

    add_database_arguments(parser)


def settings_from_args(args: argparse.Namespace):  # -> ApiSettings
    from pneumo.api.settings import ApiSettings

    return ApiSettings.from_env(
        model_dir=args.model_dir, labels=args.labels, max_upload_mb=args.max_upload_mb, api_key=args.api_key,
        workers=args.workers, backend=args.backend, database=args.database, data_dir=args.data_dir,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the REST API and web page")
    add_server_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumo.api.server import run_server

    run_server(settings_from_args(args), host=args.host, port=args.port, log_level=args.log_level)
    return 0
