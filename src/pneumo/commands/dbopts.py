"""Options every command that opens the result database shares (``--database``, ``--data-dir``)."""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", default=None, metavar="URL",
                        help="result database, e.g. postgresql+psycopg://user@host/db "
                             "(default: $PNEUMO_DATABASE_URL, else SQLite in the data folder)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder of the SQLite file and stored images (default: $PNEUMO_DATA_DIR or ~/.local/share/pneumo)")


def open_from_args(args: argparse.Namespace):  # -> pneumo.store.Database
    from pneumo.store import open_database

    return open_database(args.database, args.data_dir)


def cli_actor() -> str:
    """Who ran a command, for the audit trail: ``cli:<login>``."""
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except (KeyError, OSError):
        return "cli"
