"""``newsexchange …``: parse the arguments, run one step, print the result.

Thin on purpose: the steps live in their packages and the scheduler calls the same ones.
Exit codes: 0 success, 1 the work ran but something failed (the output says what),
2 bad usage or bad configuration.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from newsexchange import __version__
from newsexchange.commands import Context, to_json
from newsexchange.errors import ConfigError, NewsExchangeError

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

    setup_logging(verbosity=args.verbose)
    ctx = Context(args)
    try:
        code: int = args.handler(ctx)
        return code
    except ConfigError as exc:
        _fail(ctx, str(exc), kind="config")
        return 2
    except NewsExchangeError as exc:
        _fail(ctx, str(exc), kind=type(exc).__name__)
        return 1
    except KeyboardInterrupt:
        _fail(ctx, "interrupted", kind="interrupted")
        return 130
    finally:
        ctx.close()


def _fail(ctx: Context, message: str, *, kind: str) -> None:
    logging.getLogger("newsexchange").debug("command failed", exc_info=True)
    if ctx.json:
        sys.stdout.write(to_json({"ok": False, "error": message, "kind": kind}) + "\n")
    sys.stderr.write(f"newsexchange: {message}\n" if kind != "config" else f"{message}\n")


if __name__ == "__main__":
    raise SystemExit(main())
