"""`pneumo audit`: the audit trail (who did what to which result, when), newest first."""

from __future__ import annotations

import argparse
import json

from pneumo.commands.dbopts import add_database_arguments, open_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from pneumo.audit_actions import ACTIONS

    parser = subparsers.add_parser("audit", help="show the audit trail")
    parser.add_argument("--limit", type=int, default=50, help="events to show (default: 50)")
    parser.add_argument("--action", choices=ACTIONS, default=None)
    parser.add_argument("--actor", default=None, help="only this user")
    parser.add_argument("--result", default=None, help="only this result id")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    add_database_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pneumo.errors import ConfigError
    from pneumo.store.audit import events

    if args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    db = open_from_args(args)
    try:
        found = events(db, args.limit, None, args.action, args.actor, args.result)
    finally:
        db.close()
    for event in found:
        if args.json:
            print(json.dumps(event.to_json(), sort_keys=True))
        else:
            detail = "" if not event.detail else " " + json.dumps(event.detail, sort_keys=True)
            print(f"{event.at:%Y-%m-%d %H:%M:%S} {event.actor:<16} {event.action:<12} {event.result_id or '-'}{detail}")
    return 0
