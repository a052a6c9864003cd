"""Command handlers. Each module has ``register(subparsers)`` adding its commands; a handler
takes a :class:`Context` and returns the exit code (0 ok, 1 work failed, 2 usage). The modules
are listed, in ``--help`` order, in ``newsexchange/cli.py`` (``COMMANDS``).

The contract (ARCHITECTURE.md): every command takes ``--config``; every reporting command
takes ``--json`` and then prints exactly one JSON object on stdout and nothing else there.
"""

from newsexchange.commands.context import (
    Context,
    Handler,
    add_common,
    database_failure,
    db_int,
    to_json,
)

__all__ = ["Context", "Handler", "add_common", "database_failure", "db_int", "to_json"]
