"""What a database failure means to the person at the console: the driver's errors as one
line that says what is wrong, and the database URL without its password.

The command line catches :data:`BadDatabaseUrl` (a ``database_url`` SQLAlchemy cannot use:
bad usage, exit 2) and :data:`DatabaseFailure` (the database could not be used: exit 1) from
here, so nothing outside ``db/`` imports SQLAlchemy's exceptions.
"""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

__all__ = ["BadDatabaseUrl", "DatabaseFailure", "database_problem", "one_line", "safe_url"]

#: A ``database_url`` SQLAlchemy cannot use.
BadDatabaseUrl = ArgumentError
#: Any failure the database driver reported.
DatabaseFailure = DBAPIError


def one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def safe_url(url: str) -> str:
    """``url`` with its password hidden (``***``); raises when it is no URL at all."""
    return make_url(url).render_as_string(hide_password=True)


def database_problem(exc: DBAPIError, url: str = "") -> str:
    """One line for a database that cannot be used (SQLAlchemy's text has the statement, its
    parameters and a link on further lines; the driver's own message is the part that says
    what is wrong)."""
    reason = one_line(str(exc.orig)) if exc.orig is not None else one_line(str(exc))
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
    if isinstance(exc, OperationalError):
        return f"the database{where} cannot be used: {reason}"
    return f"database error{where}: {reason}"
