"""``newsexchange …``: parse the arguments, run one step, print the result.

Thin on purpose: the steps live in their packages and the scheduler calls the same ones.
Exit codes: 0 success, 1 the work ran but something failed (the output says what),
2 bad usage or bad configuration.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from collections.abc import Sequence

import sqlalchemy.exc

from newsexchange import __version__
from newsexchange.commands import Context, to_json
from newsexchange.errors import ConfigError, DigestNotFound, NewsExchangeError

# Each module registers its own sub-commands (see newsexchange/commands/__init__.py).
COMMAND_MODULES = [
    "newsexchange.commands.core",
    "newsexchange.commands.ingest",
    "newsexchange.commands.translate",
    "newsexchange.commands.delivery",
    "newsexchange.commands.digest",
    "newsexchange.commands.service",
    "newsexchange.commands.approval",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 on bad usage already; keep --json's promise of one JSON object.
        if "--json" in sys.argv:
            sys.stdout.write(to_json({"ok": False, "error": message}) + "\n")
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="newsexchange", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"newsexchange {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from newsexchange.logs import setup_logging

    setup_logging(verbosity=args.verbose, base=getattr(args, "log_base", logging.WARNING))
    ctx = Context(args)
    try:
        code: int = args.handler(ctx)
        return code
    except ConfigError as exc:
        _fail(ctx, str(exc), kind="config")
        return 2
    except DigestNotFound as exc:  # a wrong id is bad usage, as the contract says
        _fail(ctx, str(exc), kind="usage")
        return 2
    except NewsExchangeError as exc:
        _fail(ctx, str(exc), kind=type(exc).__name__)
        return 1
    except sqlalchemy.exc.ArgumentError as exc:  # a database_url SQLAlchemy cannot use
        _fail(ctx, f"database_url: {_one_line(str(exc))}", kind="config")
        return 2
    except sqlalchemy.exc.DBAPIError as exc:
        _fail(ctx, database_problem(exc, _safe_url(ctx)), kind="database")
        return 1
    except OSError as exc:
        _fail(ctx, os_problem(exc), kind="os")
        return 1
    except KeyboardInterrupt:
        _fail(ctx, "interrupted", kind="interrupted")
        return 130
    finally:
        ctx.close()


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _safe_url(ctx: Context) -> str:
    """The database URL without its password, or "" when there is none to tell."""
    from sqlalchemy.engine import make_url

    from newsexchange.config import database_url

    try:
        url = ctx._db.url if ctx._db is not None else database_url(ctx.config)
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unreadable config or URL: say what is wrong without it
        return ""


def database_problem(exc: sqlalchemy.exc.DBAPIError, url: str = "") -> str:
    """One line for a database that cannot be used (SQLAlchemy's text has the statement, its
    parameters and a link on further lines; the driver's own message is the part that says
    what is wrong)."""
    reason = _one_line(str(exc.orig)) if exc.orig is not None else _one_line(str(exc))
    low = reason.lower()
    where = f" ({url})" if url else ""
    if "database is locked" in low or "database table is locked" in low:
        return (
            f"the database{where} is locked: another process kept a write transaction open "
            "longer than database_busy_timeout; run the command again when it is done"
        )
    if "disk is full" in low or "no space left" in low:
        return f"the disk holding the database{where} is full: {reason}"
    if "unable to open database file" in low:
        return f"cannot open the database file{where}: does its folder exist and is it writable?"
    if isinstance(exc, sqlalchemy.exc.OperationalError):
        return f"the database{where} cannot be used: {reason}"
    return f"database error{where}: {reason}"


def os_problem(exc: OSError) -> str:
    """One line for a failure of the machine (full disk, no permission), not of the work."""
    what = exc.strerror or str(exc) or type(exc).__name__
    where = f": {exc.filename}" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device{where}; free some space and run the command again"
    return f"{what}{where}"


def _fail(ctx: Context, message: str, *, kind: str) -> None:
    logging.getLogger("newsexchange").debug("command failed", exc_info=True)
    if ctx.json:
        sys.stdout.write(to_json({"ok": False, "error": message, "kind": kind}) + "\n")
    sys.stderr.write(f"newsexchange: {message}\n" if kind != "config" else f"{message}\n")


if __name__ == "__main__":
    raise SystemExit(main())
