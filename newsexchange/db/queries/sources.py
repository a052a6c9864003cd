"""The SQL the fetch step runs on ``sources`` (and ``newsexchange items`` for the titles)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from newsexchange.db.queries.items import chunks, insert_ignoring_conflicts
from newsexchange.db.tables import Source

__all__ = ["claim_source", "insert_sources", "load_sources", "source_titles", "update_sources"]


def load_sources(s: Session, ids: Sequence[str]) -> dict[str, Source]:
    """The ``sources`` rows with these ids, by id (ids without a row are left out)."""
    rows: dict[str, Source] = {}
    for chunk in chunks(ids):
        q = select(Source).where(Source.id.in_(chunk))
        rows.update({r.id: r for r in s.scalars(q)})
    return rows


def insert_sources(s: Session, rows: list[dict[str, Any]]) -> None:
    """New ``sources`` rows, one executemany. Two runs starting at once (the service and a
    console fetch) both see a row missing; the conflict-free insert lets both go on with the
    one row."""
    s.execute(insert_ignoring_conflicts(s, Source, ["id"]), rows)


def update_sources(s: Session, updates: list[tuple[str, dict[str, Any]]]) -> None:
    """Each ``(source id, column values)``: one Core executemany per distinct set of columns
    (the ORM's bulk update by primary key did the same at about twice the cost per row, felt
    on all-304 refreshes)."""
    table = cast(Table, Source.__table__)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for sid, values in updates:
        row = {f"v_{k}": v for k, v in values.items()}
        row["k_id"] = sid
        groups.setdefault(tuple(sorted(values)), []).append(row)
    conn = s.connection()
    for columns, rows in groups.items():
        stmt = (
            table.update()
            .where(table.c.id == bindparam("k_id"))
            .values({c: bindparam(f"v_{c}", type_=table.c[c].type) for c in columns})
        )
        conn.execute(stmt, rows)


def claim_source(s: Session, source_id: str, *, seen: datetime | None, now: datetime) -> bool:
    """Stamp ``last_fetched_at = now`` if it still is ``seen`` (compare-and-set): True when
    this session claimed the source, False when another run stamped it first."""
    stmt = (
        update(Source)
        .where(Source.id == source_id, Source.last_fetched_at.is_not_distinct_from(seen))
        .values(last_fetched_at=now)
    )
    return s.connection().execute(stmt).rowcount == 1


def source_titles(s: Session) -> dict[str, str | None]:
    """Every source's title as its feed gives it, by id."""
    return {row.id: row.title for row in s.execute(select(Source.id, Source.title))}
