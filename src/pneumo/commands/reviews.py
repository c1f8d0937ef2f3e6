"""`pneumo export-reviews --output labels.csv`: reviewed cases as RSNA training labels."""

from __future__ import annotations

import argparse
from pathlib import Path

from pneumo.commands.dbopts import add_database_arguments, cli_actor, open_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export-reviews", help="write reviewed cases as RSNA labels (patientId,x,y,width,height,Target)")
    parser.add_argument("--output", type=Path, required=True, help="labels CSV to write (atomically)")
    add_database_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumo.store.export import export_reviews

    db = open_from_args(args)
    try:
        summary = export_reviews(db, args.output, cli_actor())
    finally:
        db.close()
    print(f"wrote {args.output}: {summary.patients} patients, {summary.boxes} boxes"
          + (f"; {summary.skipped} reviewed cases skipped (disagree with no box to label)" if summary.skipped else ""))
    return 0
