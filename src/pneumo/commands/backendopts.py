"""The option every command that runs models shares: ``--backend``."""

from __future__ import annotations

import argparse
from typing import Any

from pneumo.export import BACKENDS


def add_backend_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """``--backend`` (torch or the ONNX exports) on ``parser`` (a parser or an argument group); default None:
    the service's own default ($PNEUMO_BACKEND, else auto)."""
    parser.add_argument("--backend", default=None, choices=BACKENDS,
                        help="inference backend (default: $PNEUMO_BACKEND, else auto: the ONNX export where an "
                             "up-to-date one exists, else torch)")
