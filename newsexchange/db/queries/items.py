"""The SQL the fetch step runs on ``items`` and ``story_groups`` (and ``newsexchange items``).

The statements are the ones the writer was measured with (``benchmarks/ingest.py``): inserts
and updates are executemany statements, lookups go by ``IN (…)`` in chunks of
:data:`LOOKUP_CHUNK`, never a query per item. Keep them that way.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Dialect, Row, Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.schema import ColumnDefault

from newsexchange.db.tables import Item, StoryGroup

__all__ = [
    "LOOKUP_CHUNK",
    "chunks",
    "find_stored",
    "fulltext_state",
    "insert_ignoring_conflicts",
    "insert_items",
    "insert_story_groups",
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


#: One item's stored keys: ``(identities, links)`` to look its source's items up by.
Keys = tuple[AbstractSet[str], AbstractSet[str]]
#: What :func:`find_stored` gives per item: ``(id, identity, guid, link, content_hash,
#: published_at)``.
StoredRow = tuple[int, str, str | None, str | None, str, datetime]


def _lookup(
    s: Session, cols: Sequence[Any], wanted: Mapping[str, Keys]
) -> dict[str, list[Row[Any]]]:
    """Each source's items (``cols``) with one of its identities or links, each row once, by
    source id: by identity, then by link, every source of ``wanted`` in the same statements
    (``source_id IN (…) AND identity IN (…)``, the pair checked here)."""
    out: dict[str, list[Row[Any]]] = {sid: [] for sid in wanted}
    sources = sorted(wanted)
    if not sources:
        return out
    seen: set[int] = set()
    for n, column in enumerate((Item.identity, Item.link)):
        pairs = {(sid, value) for sid, keys in wanted.items() for value in keys[n]}
        values = sorted({value for _sid, value in pairs})
        for source_chunk in chunks(sources, LOOKUP_CHUNK // 4):
            for chunk in chunks(values, LOOKUP_CHUNK - len(source_chunk)):
                q = select(Item.id, Item.source_id, column.label("key_"), *cols).where(
                    Item.source_id.in_(source_chunk), column.in_(chunk)
                )
                for row in s.execute(q):
                    if row.id not in seen and (row.source_id, row.key_) in pairs:
                        seen.add(row.id)
                        out[row.source_id].append(row)
    return out


def find_stored(s: Session, wanted: Mapping[str, Keys]) -> dict[str, list[StoredRow]]:
    """Each source's items with one of its identities or links (``wanted``: source id →
    ``(identities, links)``), each once, by source id: ``(id, identity, guid, link,
    content_hash, published_at)``. The writer asks once for a whole batch of sources."""
    cols = (Item.identity, Item.guid, Item.link, Item.content_hash, Item.published_at)
    return {
        sid: [(r.id, r.identity, r.guid, r.link, r.content_hash, r.published_at) for r in rows]
        for sid, rows in _lookup(s, cols, wanted).items()
    }


def fulltext_state(
    s: Session, source_id: str, identities: set[str], links: set[str]
) -> list[tuple[int, str, str | None, bool]]:
    """``fulltext: true`` sources only: the source's items with one of these identities or
    links, each once, as ``(id, identity, link, page tried?)``."""
    cols = (Item.identity, Item.link, Item.fulltext_at)
    rows = _lookup(s, cols, {source_id: (identities, links)})[source_id]
    return [(r.id, r.identity, r.link, r.fulltext_at is not None) for r in rows]


#: Rows per multi-row INSERT (27 columns: well under SQLite's 32,766 and PostgreSQL's
#: 65,535 bind parameters).
INSERT_ROWS = 500


def insert_items(s: Session, rows: list[dict[str, Any]]) -> dict[str, int]:
    """New items of one source, identity → id (also of a row another process stored
    meanwhile: skipped by ON CONFLICT DO NOTHING, its id looked up).

    On SQLite ≥ 3.35 and PostgreSQL: one multi-row ``INSERT … ON CONFLICT DO NOTHING
    RETURNING identity, id`` on the driver (:func:`_insert_returning`). That is a third of
    the cost of the ORM's bulk insert plus a select for the ids (the ORM's RETURNING with
    sort_by_parameter_order is one INSERT per row on SQLite; here the order does not
    matter, the identity says which id is whose). Elsewhere: an executemany, then
    :func:`item_ids`."""
    if not rows:
        return {}
    source_id = rows[0]["source_id"]
    if not _returns_many(s):
        s.execute(insert_ignoring_conflicts(s, Item, ["source_id", "identity"]), rows)
        return item_ids(s, source_id, [r["identity"] for r in rows])
    table = cast(Table, Item.__table__)
    returned = _insert_returning(s, table, rows, ("identity", "id"), ("source_id", "identity"))
    id_of: dict[str, int] = dict(returned)
    missing = [r["identity"] for r in rows if r["identity"] not in id_of]
    if missing:  # stored meanwhile by another run
        id_of.update(item_ids(s, source_id, missing))
    return id_of


def _returns_many(s: Session) -> bool:
    """Whether :func:`_insert_returning` works here: SQLite ≥ 3.35 or PostgreSQL."""
    dialect = s.get_bind().dialect
    return dialect.name in ("sqlite", "postgresql") and bool(dialect.insert_returning)


def _insert_returning(
    s: Session,
    table: Table,
    rows: list[dict[str, Any]],
    returning: tuple[str, ...],
    on_conflict: tuple[str, ...] | None = None,
) -> list[tuple[Any, ...]]:
    """Multi-row ``INSERT … [ON CONFLICT (on_conflict) DO NOTHING] RETURNING …`` on the
    driver, :data:`INSERT_ROWS` rows a statement (every row with the same keys); the values
    go through the columns' own bind processors (a value repeated across rows, such as
    ``first_seen_at``, converted once) and the columns' Python-side defaults fill what the
    rows leave out, as Core would. The returned rows come in no promised order."""
    conn = s.connection()
    dialect = conn.dialect
    names = list(rows[0])
    defaults = {
        c.name: c.default.arg if c.default.is_scalar else c.default.arg(None)
        for c in table.columns
        if c.name not in rows[0] and isinstance(c.default, ColumnDefault)
    }
    if defaults:
        rows = [{**r, **defaults} for r in rows]
        names += list(defaults)
    procs = [table.c[name].type.bind_processor(dialect) for name in names]
    out: list[tuple[Any, ...]] = []
    for chunk in chunks(rows, INSERT_ROWS):
        params: list[Any] = []
        for name, proc in zip(names, procs, strict=True):
            if proc is None:
                params.append([r[name] for r in chunk])
                continue
            done: dict[Any, Any] = {}
            column: list[Any] = []
            for r in chunk:
                v = r[name]
                if v is None:
                    column.append(None)
                    continue
                value = done.get(v, done)
                if value is done:
                    value = done[v] = proc(v)
                column.append(value)
            params.append(column)
        flat = tuple(v for values in zip(*params, strict=True) for v in values)
        sql = _insert_sql(dialect, table.name, tuple(names), len(chunk), returning, on_conflict)
        out.extend(tuple(row) for row in conn.exec_driver_sql(sql, flat))
    return out


@functools.lru_cache(maxsize=64)
def _insert_sql(
    dialect: Dialect,
    table: str,
    names: tuple[str, ...],
    n_rows: int,
    returning: tuple[str, ...],
    on_conflict: tuple[str, ...] | None,
) -> str:
    """The statement of :func:`_insert_returning`, in the driver's parameter style."""
    quote = dialect.identifier_preparer.quote
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    one = "(" + ", ".join([mark] * len(names)) + ")"
    conflict = (
        f"ON CONFLICT ({', '.join(quote(n) for n in on_conflict)}) DO NOTHING "
        if on_conflict
        else ""
    )
    return (
        f"INSERT INTO {quote(table)} ({', '.join(quote(n) for n in names)}) "
        f"VALUES {', '.join([one] * n_rows)} {conflict}"
        f"RETURNING {', '.join(quote(n) for n in returning)}"
    )


def item_ids(s: Session, source_id: str, identities: Sequence[str]) -> dict[str, int]:
    """Identity → id of the source's items with these identities."""
    id_of: dict[str, int] = {}
    for chunk in chunks(identities):
        ids_q = select(Item.identity, Item.id).where(
            Item.source_id == source_id, Item.identity.in_(chunk)
        )
        id_of.update({row.identity: row.id for row in s.execute(ids_q)})
    return id_of


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


def insert_story_groups(s: Session, rows: list[dict[str, Any]]) -> list[int]:
    """New story groups (rows of ``fingerprint``, ``created_at``), their ids in the rows'
    order. On SQLite ≥ 3.35 and PostgreSQL one multi-row INSERT … RETURNING id, fingerprint
    on the driver: the fingerprint says which id is whose (groups of one fingerprint, in
    practice never two in one statement, take their ids in ascending order, the order the
    rows were inserted in). Elsewhere SQLAlchemy's RETURNING with sort_by_parameter_order
    (one INSERT a row on SQLite: ~0.1 ms a group)."""
    if not rows:
        return []
    groups = cast(Table, StoryGroup.__table__)
    if not _returns_many(s):
        stmt = groups.insert().returning(groups.c.id, sort_by_parameter_order=True)
        return [int(row.id) for row in s.connection().execute(stmt, rows)]
    ids_of: dict[str, list[int]] = {}
    for group_id, fp in sorted(_insert_returning(s, groups, rows, ("id", "fingerprint"))):
        ids_of.setdefault(fp, []).append(int(group_id))
    return [ids_of[r["fingerprint"]].pop(0) for r in rows]


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
