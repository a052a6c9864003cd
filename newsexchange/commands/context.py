"""What every command handler is given (:class:`Context`) and shares: ``--config`` and
``--json`` (:func:`add_common`), one JSON object on stdout (:meth:`Context.emit`,
:func:`to_json`), database ids as arguments (:func:`db_int`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from newsexchange.clock import SYSTEM_CLOCK

if TYPE_CHECKING:
    from newsexchange.config import Config
    from newsexchange.db import Database

# The configuration (pydantic) and the database layer (SQLAlchemy) are imported where they
# are first needed, not here: every command module imports this one, and ``--help`` needs
# neither (issue 16: SQLAlchemy alone took 279 ms of a 0.78 s ``--help``).

__all__ = ["Context", "Handler", "add_common", "database_failure", "db_int", "to_json"]

Handler = Callable[["Context"], int]


def _default(o: Any) -> Any:
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, set | frozenset | tuple):
        return list(o)
    return str(o)


def to_json(data: Any) -> str:
    return json.dumps(data, default=_default, ensure_ascii=False)


@dataclass
class Context:
    args: argparse.Namespace
    _db: Database | None = field(default=None, repr=False)

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @cached_property
    def config(self) -> Config:
        from newsexchange.config import load_config

        return load_config(self.args.config)

    @property
    def db(self) -> Database:
        if self._db is None:
            from newsexchange.config import database_url
            from newsexchange.db import Database

            self._db = Database(
                database_url(self.config), busy_timeout=self.config.database_busy_timeout
            )
        return self._db

    def now(self) -> datetime:
        return SYSTEM_CLOCK.now()

    @property
    def interactive(self) -> bool:
        """A person is watching: progress bars and colour are welcome."""
        return not self.json and sys.stderr.isatty()

    def emit(self, data: dict[str, Any], text: str | Callable[[], str] | None = None) -> None:
        """One JSON object with --json; otherwise the human text (or a plain rendering)."""
        if self.json:
            sys.stdout.write(to_json(data) + "\n")
            return
        if callable(text):
            text = text()
        if text is None:
            text = "\n".join(f"{k}: {v}" for k, v in data.items())
        sys.stdout.write(text.rstrip("\n") + "\n")

    def safe_database_url(self) -> str:
        """The database URL without its password (raises when the config or URL is unusable)."""
        from newsexchange.config import database_url
        from newsexchange.db.problems import safe_url

        return safe_url(self._db.url if self._db is not None else database_url(self.config))

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()


def database_failure(exc: Exception, url: Callable[[], str]) -> tuple[str, str, int] | None:
    """What the command line says of a SQLAlchemy error: ``(message, kind, exit code)`` for a
    ``database_url`` SQLAlchemy cannot use (``config``, 2) or a database that cannot be used
    (``database``, 1); None for any other exception. ``url`` gives the URL to name, without
    its password, and is asked only for a database failure.

    SQLAlchemy is looked at only once something has imported it: before that, ``exc`` cannot
    be one of its errors, and ``check`` or ``--help`` need not pay for the import."""
    if "sqlalchemy" not in sys.modules:
        return None
    from newsexchange.db.problems import (
        BadDatabaseUrl,
        DatabaseFailure,
        database_problem,
        one_line,
    )

    if isinstance(exc, BadDatabaseUrl):
        return f"database_url: {one_line(str(exc))}", "config", 2
    if isinstance(exc, DatabaseFailure):
        return database_problem(exc, url()), "database", 1
    return None


def db_int(text: str) -> int:
    """An argparse ``type`` for ids and counts: a whole number the database can hold, so
    ``send 99999999999999999999`` is a usage error (exit 2), not an OverflowError."""
    from newsexchange.db import MAX_ID

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= MAX_ID:
        raise argparse.ArgumentTypeError(f"out of range: {text} (0 to {MAX_ID})")
    return value


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        default="feeds.yaml",
        metavar="PATH",
        help="the exchange's configuration (default: ./feeds.yaml)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
