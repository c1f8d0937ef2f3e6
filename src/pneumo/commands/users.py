"""`pneumo users add|list|disable`: per-user API keys with a role (reader or admin)."""

from __future__ import annotations

import argparse

from pneumo.commands.dbopts import add_database_arguments, cli_actor, open_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("users", help="manage users and their API keys")
    commands = parser.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = commands.add_parser("add", help="add a user and print their API key (shown once)")
    add.add_argument("name")
    add.add_argument("--role", choices=("reader", "admin"), default="reader",
                     help="reader: analyse, view, review; admin: also users and the audit log (default: reader)")
    add_database_arguments(add)
    add.set_defaults(func=run_add)
    listing = commands.add_parser("list", help="list users (never their keys)")
    add_database_arguments(listing)
    listing.set_defaults(func=run_list)
    disable = commands.add_parser("disable", help="disable a user: their key stops working at once")
    disable.add_argument("name")
    add_database_arguments(disable)
    disable.set_defaults(func=run_disable)


def run_add(args: argparse.Namespace) -> int:
    from pneumo.store.users import add_user

    db = open_from_args(args)
    try:
        info, key = add_user(db, args.name, args.role, cli_actor())
    finally:
        db.close()
    print(f"user {info.name} ({info.role}) added. API key (shown only now; store it safely):")
    print(key)
    return 0


def run_list(args: argparse.Namespace) -> int:
    from pneumo.store.users import list_users

    db = open_from_args(args)
    try:
        users = list_users(db)
    finally:
        db.close()
    print(f"{'name':<24} {'role':<7} {'key id':<13} {'created (UTC)':<20} status")
    for user in users:
        print(f"{user.name:<24} {user.role:<7} {user.key_id:<13} {user.created_at:%Y-%m-%d %H:%M:%S}  "
              f"{'disabled' if user.disabled else 'active'}")
    return 0


def run_disable(args: argparse.Namespace) -> int:
    from pneumo.store.users import disable_user

    db = open_from_args(args)
    try:
        info = disable_user(db, args.name, cli_actor())
    finally:
        db.close()
    print(f"user {info.name} disabled")
    return 0
