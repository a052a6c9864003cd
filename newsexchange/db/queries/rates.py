"""The SQL of the shared rate limits: one ``rate_limits`` row per limit (a GCRA slot).

A reservation moves the row's ``next_free`` forward by the reserved budget in one
``UPDATE … RETURNING`` (PostgreSQL, SQLite ≥ 3.35): the row lock (PostgreSQL) or the write
lock (SQLite) makes two senders' reservations follow each other, never overlap.

The clock: on PostgreSQL the database's ``clock_timestamp()`` (the time at that statement,
not the transaction's start), so senders on hosts whose clocks disagree still see one
timeline. On SQLite every sender is on the one host that has the file, so the caller's clock
is used (which also lets tests drive it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

__all__ = ["reserve"]

_PG_INSERT = text(
    "INSERT INTO rate_limits (name, next_free) "
    "VALUES (:name, clock_timestamp() AT TIME ZONE 'UTC') ON CONFLICT (name) DO NOTHING"
)
# One clock reading for both the comparison and the answer (clock_timestamp() moves
# within a statement).
_PG_RESERVE = text(
    "WITH c AS (SELECT clock_timestamp() AT TIME ZONE 'UTC' AS now) "
    "UPDATE rate_limits SET next_free = GREATEST(rate_limits.next_free, c.now) "
    "+ make_interval(secs => CAST(:seconds AS double precision)) "
    "FROM c WHERE rate_limits.name = :name RETURNING rate_limits.next_free, c.now"
)
_SQLITE_INSERT = text(
    "INSERT INTO rate_limits (name, next_free) VALUES (:name, :now) ON CONFLICT (name) DO NOTHING"
)
# Stored like SQLAlchemy stores a DateTime on SQLite ("YYYY-MM-DD HH:MM:SS.ffffff");
# strftime's %f has milliseconds, padded back to six digits.
_SQLITE_RESERVE = text(
    "UPDATE rate_limits SET next_free = strftime('%Y-%m-%d %H:%M:%f', "
    "max(julianday(next_free), julianday(:now)) + :seconds / 86400.0) || '000' "
    "WHERE name = :name RETURNING next_free"
)


def _sqlite_time(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def reserve(session: Session, name: str, seconds: float, *, now: datetime | None = None) -> float:
    """Book ``seconds`` of the limit ``name`` (creating its row if missing); return how many
    seconds from now the booked budget starts (0 when the limit is idle: idle time is not
    saved up, so there is never a burst to catch up). ``now`` is used on SQLite only (the
    process clock when None); PostgreSQL always uses its own clock. Caller commits."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_PG_INSERT, {"name": name})
        row = session.execute(_PG_RESERVE, {"name": name, "seconds": seconds}).one()
        next_free: datetime = row[0]
        db_now: datetime = row[1]
        start = next_free - timedelta(seconds=seconds)
        return max(0.0, (start - db_now).total_seconds())
    moment = _sqlite_time(now or datetime.now(UTC))
    session.execute(_SQLITE_INSERT, {"name": name, "now": moment})
    stored = session.execute(
        _SQLITE_RESERVE, {"name": name, "now": moment, "seconds": seconds}
    ).scalar_one()
    start = datetime.fromisoformat(str(stored)) - timedelta(seconds=seconds)
    return max(0.0, (start - datetime.fromisoformat(moment)).total_seconds())
