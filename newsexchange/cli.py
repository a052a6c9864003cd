"""``newsexchange …``: parse the arguments, run one step, print the result.

Thin on purpose: the steps live in their packages and the scheduler calls the same ones.
Exit codes: 0 success, 1 the work ran but something failed (the output says what),
2 bad usage or bad configuration.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from newsexchange import __version__
from newsexchange.commands import (
    Context,
    approval,
    core,
    database_failure,
    delivery,
    digest,
    impact,
    ingest,
    service,
    to_json,
    translate,
)
from newsexchange.errors import ConfigError, DigestNotFound, NewsExchangeError
from newsexchange.logs import setup_logging

__all__ = ["COMMANDS", "build_parser", "main", "os_problem"]

Register = Callable[["argparse._SubParsersAction[Any]"], None]

DESCRIPTION = (
    "A cross-border regional news exchange: collect news from regional feeds, translate it, "
    "build a digest per direction, have the editors approve it, and mail it to the media lists."
)

#: Every command module, in ``--help`` order; each ``register`` adds its sub-commands.
COMMANDS: tuple[Register, ...] = (
    core.register,
    ingest.register,
    translate.register,
    delivery.register,
    digest.register,
    service.register,
    approval.register,
    impact.register,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits 2 on bad usage already; keep --json's promise of one JSON object.
        if "--json" in sys.argv:
            sys.stdout.write(to_json({"ok": False, "error": message}) + "\n")
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="newsexchange", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"newsexchange {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
    except OSError as exc:
        _fail(ctx, os_problem(exc), kind="os")
        return 1
    except Exception as exc:
        # A database_url SQLAlchemy cannot use (exit 2), or a database that cannot be used
        # (exit 1); anything else is a bug and keeps its traceback.
        failure = database_failure(exc, lambda: _safe_url(ctx))
        if failure is None:
            raise
        message, kind, code = failure
        _fail(ctx, message, kind=kind)
        return code
    except KeyboardInterrupt:
        _fail(ctx, "interrupted", kind="interrupted")
        return 130
    finally:
        ctx.close()


def _safe_url(ctx: Context) -> str:
    """The database URL without its password, or "" when there is none to tell."""
    try:
        return ctx.safe_database_url()
    except Exception:  # an unreadable config or URL: say what is wrong without it
        return ""


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
