"""The SQL the fetch step runs on ``items`` and ``story_groups`` (and ``newsexchange items``).

The statements are the ones the writer was measured with (``benchmarks/ingest.py``): inserts
and updates are executemany statements, lookups go by ``IN (…)`` in chunks of
:data:`LOOKUP_CHUNK`, never a query per item. Keep them that way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Row, Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsexchange.db.tables import Item, StoryGroup

__all__ = [
    "LOOKUP_CHUNK",
    "chunks",
    "find_stored",
    "fulltext_state",
    "insert_ignoring_conflicts",
    "insert_items",
    "insert_story_group",
    "item_ids",
    "known_hashes",
    "latest_items",
    "recent_fingerprints",
    "set_fulltext",
    "set_story_groups",
    "update_items",
]

#: Bind parameters per IN (...) lookup chunk (SQLite's old default limit is 999).
LOOKUP_CHUNK = 400

T = TypeVar("T")


def chunks(seq: Sequence[T], n: int = LOOKUP_CHUNK) -> list[Sequence[T]]:
    return [seq[i : i + n] for i in range(0, len(seq), n)]


def insert_ignoring_conflicts(s: Session, model: type[Any], keys: list[str]) -> Any:
    """INSERT that skips rows another process stored meanwhile (the service and a console
    ``fetch`` at the same time): the unique key keeps one copy, and ON CONFLICT DO NOTHING
    keeps the late writer's transaction from failing over it."""
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        return sqlite.insert(model).on_conflict_do_nothing(index_elements=keys)
    if dialect == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing(index_elements=keys)
    return insert(model)


# -- the writer -------------------------------------------------------------------------------


def known_hashes(s: Session, source_ids: Sequence[str], since: datetime) -> dict[str, set[str]]:
    """Each source's content hashes of items updated since ``since``."""
    out: dict[str, set[str]] = {}
    for chunk in chunks(source_ids):
        q = select(Item.source_id, Item.content_hash).where(
            Item.source_id.in_(chunk), Item.updated_at >= since
        )
        for row in s.execute(q):
            out.setdefault(row.source_id, set()).add(row.content_hash)
    return out


def find_stored(
    s: Session, source_id: str, identities: set[str], links: set[str]
) -> list[tuple[int, str, str | None, str | None, str, datetime]]:
    """The source's items with one of these identities or links, each once:
    ``(id, identity, guid, link, content_hash, published_at)``."""
    out: list[tuple[int, str, str | None, str | None, str, datetime]] = []
    seen_ids: set[int] = set()
    cols = (Item.id, Item.identity, Item.guid, Item.link, Item.content_hash, Item.published_at)
    keys: list[tuple[Any, list[str]]] = [
        (Item.identity, sorted(identities)),
        (Item.link, sorted(links)),
    ]
    for column, values in keys:
        for chunk in chunks(values):
            q = select(*cols).where(Item.source_id == source_id, column.in_(chunk))
            for row in s.execute(q):
                if row.id not in seen_ids:
                    seen_ids.add(row.id)
                    out.append(
                        (
                            row.id,
                            row.identity,
                            row.guid,
                            row.link,
                            row.content_hash,
                            row.published_at,
                        )
                    )
    return out


def insert_items(s: Session, rows: list[dict[str, Any]]) -> None:
    """New items, one executemany; a row another process stored meanwhile is skipped.

    A plain executemany, then :func:`item_ids` for the ids: RETURNING with
    sort_by_parameter_order degrades to one INSERT per row on SQLite (no sentinel column),
    which was a third of the writer's time."""
    s.execute(insert_ignoring_conflicts(s, Item, ["source_id", "identity"]), rows)


def item_ids(s: Session, source_id: str, identities: Sequence[str]) -> dict[str, int]:
    """Identity → id of the source's items with these identities."""
    id_of: dict[str, int] = {}
    for chunk in chunks(identities):
        ids_q = select(Item.identity, Item.id).where(
            Item.source_id == source_id, Item.identity.in_(chunk)
        )
        id_of.update({row.identity: row.id for row in s.execute(ids_q)})
    return id_of


def fulltext_state(
    s: Session, source_id: str, identities: set[str], links: set[str]
) -> list[tuple[int, str, str | None, bool]]:
    """``fulltext: true`` sources only: the source's items with one of these identities or
    links, each once, as ``(id, identity, link, page tried?)``."""
    out: list[tuple[int, str, str | None, bool]] = []
    seen_ids: set[int] = set()
    cols = (Item.id, Item.identity, Item.link, Item.fulltext_at)
    keys: list[tuple[Any, list[str]]] = [
        (Item.identity, sorted(identities)),
        (Item.link, sorted(links)),
    ]
    for column, values in keys:
        for chunk in chunks(values):
            q = select(*cols).where(Item.source_id == source_id, column.in_(chunk))
            for row in s.execute(q):
                if row.id not in seen_ids:
                    seen_ids.add(row.id)
                    out.append((row.id, row.identity, row.link, row.fulltext_at is not None))
    return out


def set_fulltext(
    s: Session,
    source_id: str,
    texts: list[dict[str, Any]],
    marks: list[dict[str, Any]],
    now: datetime,
) -> None:
    """Article pages read: the source's items with link ``b_link`` whose page was not tried
    yet get the summary ``b_html``/``b_text`` (``texts``) or only the mark (``marks``);
    ``fulltext_at`` = ``now`` on both. Two executemany statements."""
    items = cast(Table, Item.__table__)
    where = (
        (items.c.source_id == source_id)
        & (items.c.link == bindparam("b_link"))
        & items.c.fulltext_at.is_(None)
    )
    conn = s.connection()
    if texts:
        conn.execute(
            items.update()
            .where(where)
            .values(
                summary_html=bindparam("b_html"),
                summary_text=bindparam("b_text"),
                fulltext_at=now,
                updated_at=now,
            ),
            texts,
        )
    if marks:
        conn.execute(items.update().where(where).values(fulltext_at=now), marks)


def update_items(s: Session, rows: list[dict[str, Any]]) -> None:
    """Changed items, by primary key (each row holds ``id`` and the new values)."""
    s.execute(update(Item), rows)


# -- story groups -----------------------------------------------------------------------------


def recent_fingerprints(s: Session, since: datetime) -> Iterator[Row[Any]]:
    """``(id, source_id, region, fingerprint, story_group_id)`` of items published since
    ``since`` that have a fingerprint, oldest id first."""
    q = (
        select(Item.id, Item.source_id, Item.region, Item.fingerprint, Item.story_group_id)
        .where(Item.published_at >= since, Item.fingerprint.is_not(None))
        .order_by(Item.id)
    )
    return iter(s.execute(q))


def insert_story_group(s: Session, fingerprint: str, created_at: datetime) -> int:
    """A new story group's id. Core, one row: lastrowid on SQLite, RETURNING on PostgreSQL
    (the ORM path cost ~1.7 ms a group)."""
    groups = cast(Table, StoryGroup.__table__)
    res = s.connection().execute(
        groups.insert(), {"fingerprint": fingerprint, "created_at": created_at}
    )
    pk = res.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def set_story_groups(s: Session, rows: list[dict[str, Any]]) -> None:
    """Items join groups: rows of ``{"item_id": …, "gid": …}``, one executemany."""
    items = cast(Table, Item.__table__)
    s.connection().execute(
        items.update()
        .where(items.c.id == bindparam("item_id"))
        .values(story_group_id=bindparam("gid")),
        rows,
    )


# -- newsexchange items -----------------------------------------------------------------------


def latest_items(
    s: Session, *, limit: int, source_id: str | None = None, region: str | None = None
) -> list[Item]:
    """Stored items, newest first (by publication, then id)."""
    q = select(Item).order_by(Item.published_at.desc(), Item.id.desc()).limit(limit)
    if source_id:
        q = q.where(Item.source_id == source_id)
    if region:
        q = q.where(Item.region == region)
    return list(s.scalars(q))


def mark_cancelled(
    s: Session,
    source_id: str,
    between: tuple[datetime, datetime],
    present: AbstractSet[str],
    now: datetime,
) -> int:
    """A calendar read whole for event starts in ``between``: its stored events starting
    there whose identity is not ``present`` get ``cancelled_at = now``; a cancelled one that
    is present again is cleared. Returns how many were newly cancelled. One select of the
    source's events in the window (a calendar holds at most a few thousand), two updates."""
    start, end = between
    rows = s.execute(
        select(Item.id, Item.identity, Item.cancelled_at).where(
            Item.source_id == source_id,
            or_(
                and_(Item.event_start >= start, Item.event_start <= end),
                Item.cancelled_at.is_not(None),
            ),
        )
    ).all()
    gone = [r.id for r in rows if r.cancelled_at is None and r.identity not in present]
    back = [r.id for r in rows if r.cancelled_at is not None and r.identity in present]
    for ids, value in ((gone, now), (back, None)):
        for chunk in chunks(ids):
            s.execute(update(Item).where(Item.id.in_(chunk)).values(cancelled_at=value))
    return len(gone)


def cancelled_items(s: Session, ids: Sequence[int]) -> dict[int, datetime]:
    """Of the items ``ids``, those whose calendar cancelled them: id → when noticed."""
    found: dict[int, datetime] = {}
    for chunk in chunks(sorted(set(ids))):
        q = select(Item.id, Item.cancelled_at).where(
            Item.id.in_(chunk), Item.cancelled_at.is_not(None)
        )
        found.update({row.id: row.cancelled_at for row in s.execute(q)})
    return found
