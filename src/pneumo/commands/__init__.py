"""CLI sub-commands; each module exposes ``register(subparsers)``. Listed in ``pneumo.cli.COMMAND_MODULES``."""
