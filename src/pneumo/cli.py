"""The `pneumo` command line: one sub-command per module in ``pneumo.commands``.

Each command module defines ``register(subparsers) -> None``; the parser it adds sets ``func`` to a callable
``(args) -> int`` (the exit code). Library errors (``PneumoError``) become a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from pneumo import __version__
from pneumo.errors import PneumoError
from pneumo.extras import as_missing_extra

#: command modules under pneumo.commands, in the order `pneumo --help` lists them
COMMAND_MODULES: tuple[str, ...] = (
    "info",
    "data",
    "train",
    "models",
    "predict",
    "evaluate",
    "tune",
    "export",
    "serve",
    "users",
    "audit",
    "reviews",  # export-reviews
    "console",
    "demo",
    "dicom_node",
    "dicomweb",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pneumo",
        description="Pneumonia decision support for chest radiographs (RSNA task). Not a diagnosis.",
    )
    parser.add_argument("--version", action="version", version=f"pneumo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"pneumo.commands.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except PneumoError as error:
        print(f"pneumo: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:  # torch & co. are the optional 'train' extra
        missing = as_missing_extra(error, f"pneumo {args.command}")
        if missing is None:
            raise
        print(f"pneumo: error: {missing}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pneumo: interrupted", file=sys.stderr)
        return 130
