"""The SQL of the translate step: translations, the translation memory and provider usage.

Each function takes a :class:`Session` and plain values and returns rows, ORM objects or plain
values; the decisions stay in ``newsexchange.translate``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from newsexchange.db.tables import Item, ProviderUsage, Translation, TranslationMemory

__all__ = [
    "add_usage",
    "count_unfinished",
    "insert_memory",
    "insert_translations",
    "insert_usage_row",
    "items_to_look_at",
    "last_usage_before",
    "memory_rows",
    "translations_of",
    "usage_of_day",
    "usage_rows",
]

#: Ids per ``IN (…)`` list.
CHUNK = 500


# -- items and their translations ---------------------------------------------------------------


def items_to_look_at(
    session: Session,
    *,
    after_id: int,
    limit: int,
    languages_of_region: dict[str, int],
    changed_since: datetime,
    up_to_id: int | None = None,
) -> list[Item]:
    """The next page of items (by id, after ``after_id``, and up to ``up_to_id`` inclusive if
    given) that may need a translation: those changed since ``changed_since``, and those
    without a current done translation for each of the languages their region wants
    (``languages_of_region``; 1 for a region not listed)."""
    cond = and_(Item.id > after_id, _maybe_due(languages_of_region, changed_since))
    if up_to_id is not None:
        cond = and_(cond, Item.id <= up_to_id)
    return list(session.scalars(select(Item).where(cond).order_by(Item.id).limit(limit)))


def _maybe_due(wanted: dict[str, int], changed_since: datetime) -> ColumnElement[bool]:
    """A SQL filter that leaves out items certainly done: every wanted language has a done
    translation written after the item's last change, and the item has not changed lately.
    Without it, every run would load every item ever stored; the pure decision
    (``translate.plan.decide``) still judges each item that passes."""
    need: Any = case(wanted, value=Item.region, else_=1) if wanted else 1
    # Only item_id in the WHERE: with the status there too, SQLite's planner picks the
    # (status, next_attempt_at) index and scans every done row for every item (minutes for
    # 10,000 items); the conditions go into the count instead.
    # A done row with a blank title for an item with one is not current (blank answers were
    # once stored as done; ``translate.jobs.lost`` judges them exactly).
    blank_title = and_(
        func.trim(func.coalesce(Translation.title, "")) == "", func.trim(Item.title) != ""
    )
    current = and_(
        Translation.status == "done",
        Translation.updated_at >= Item.updated_at,
        ~blank_title,
    )
    done_current = (
        select(func.count(case((current, 1))))
        .where(Translation.item_id == Item.id)
        .correlate(Item)
        .scalar_subquery()
    )
    return or_(Item.updated_at >= changed_since, done_current < need)


def translations_of(session: Session, item_ids: Sequence[int]) -> list[Translation]:
    """Every translation row of these items."""
    out: list[Translation] = []
    for i in range(0, len(item_ids), CHUNK):
        out.extend(
            session.scalars(
                select(Translation).where(Translation.item_id.in_(item_ids[i : i + CHUNK]))
            )
        )
    return out


def insert_translations(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert new translation rows as one executemany (the ORM's unit of work costs more than
    the rest of the page's writing). Two runs at once (the service and a console command) can
    both translate the same new item; the first to commit wins and the other's identical row
    is dropped instead of failing the page."""
    if not rows:
        return
    session.flush()
    dialect = session.get_bind().dialect.name
    stmt: Any
    if dialect in ("sqlite", "postgresql"):
        ins: Any = sqlite.insert if dialect == "sqlite" else postgresql.insert
        stmt = ins(Translation).on_conflict_do_nothing(index_elements=["item_id", "language"])
    else:
        stmt = insert(Translation)
    session.connection().execute(stmt, rows)


def count_unfinished(session: Session) -> int:
    """Translations pending or failed. Counted in SQL: every translation job of a queue ends
    with this count, and loading each id made it cost as much as the backlog is long."""
    q = select(func.count()).where(Translation.status.in_(("pending", "failed")))
    return int(session.scalar(q) or 0)


# -- provider usage ----------------------------------------------------------------------------


def usage_of_day(session: Session, provider: str, day: date) -> ProviderUsage | None:
    return session.scalars(
        select(ProviderUsage).where(ProviderUsage.provider == provider, ProviderUsage.day == day)
    ).first()


def last_usage_before(session: Session, provider: str, day: date) -> ProviderUsage | None:
    return session.scalars(
        select(ProviderUsage)
        .where(ProviderUsage.provider == provider, ProviderUsage.day < day)
        .order_by(ProviderUsage.day.desc())
    ).first()


def insert_usage_row(
    session: Session,
    provider: str,
    day: date,
    *,
    down_since: datetime | None,
    last_error: str | None,
) -> None:
    """A provider's zeroed row for the day; nothing if another run created it meanwhile (the
    unique (provider, day) keeps one, and the late run adds to it)."""
    session.flush()
    stmt = _insert_ignoring_conflicts(session, ProviderUsage, ["provider", "day"])
    session.connection().execute(
        stmt,
        [
            {
                "provider": provider,
                "day": day,
                "requests": 0,
                "characters": 0,
                "failures": 0,
                "down_since": down_since,
                "last_error": last_error,
            }
        ],
    )


def add_usage(
    session: Session,
    provider: str,
    day: date,
    *,
    requests: int,
    characters: int,
    failures: int,
    down: bool | None,
    last_error: str | None,
    now: datetime,
) -> None:
    """Add to the day's counts in one UPDATE (atomic: concurrent runs each add theirs).
    ``down``: True marks the provider down since ``now`` unless it already was, False marks
    it up, None leaves it; ``last_error`` replaces the stored one unless None."""
    values: dict[str, Any] = {
        "requests": func.coalesce(ProviderUsage.requests, 0) + requests,
        "characters": func.coalesce(ProviderUsage.characters, 0) + characters,
        "failures": func.coalesce(ProviderUsage.failures, 0) + failures,
    }
    if down is True:
        values["down_since"] = func.coalesce(ProviderUsage.down_since, now)
    elif down is False:
        values["down_since"] = None
    if last_error is not None:
        values["last_error"] = last_error
    session.execute(
        update(ProviderUsage)
        .where(ProviderUsage.provider == provider, ProviderUsage.day == day)
        .values(values)
        .execution_options(synchronize_session=False)
    )


def _insert_ignoring_conflicts(session: Session, model: type[Any], keys: list[str]) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        ins: Any = sqlite.insert if dialect == "sqlite" else postgresql.insert
        return ins(model).on_conflict_do_nothing(index_elements=keys)
    return insert(model)


def usage_rows(session: Session) -> list[ProviderUsage]:
    """Every provider_usage row, oldest day first."""
    return list(session.scalars(select(ProviderUsage).order_by(ProviderUsage.day)))


# -- the translation memory --------------------------------------------------------------------


def memory_rows(
    session: Session, source: str, target: str, hashes: Sequence[str]
) -> Iterable[tuple[str, str, str, str]]:
    """``(source_hash, source_text, target_text, origin)`` of the entries with these keys."""
    for i in range(0, len(hashes), CHUNK):
        chunk = hashes[i : i + CHUNK]
        rows = session.execute(
            select(
                TranslationMemory.source_hash,
                TranslationMemory.source_text,
                TranslationMemory.target_text,
                TranslationMemory.origin,
            ).where(
                TranslationMemory.source_lang == source,
                TranslationMemory.target_lang == target,
                TranslationMemory.source_hash.in_(chunk),
            )
        )
        yield from rows


def insert_memory(session: Session, rows: list[dict[str, Any]], *, overwrite: bool) -> None:
    """Insert rows; on a key already present keep it (provider answers) or replace it (editor
    entries). Two processes translating at once both insert; the unique key settles it."""
    if not rows:
        return
    # In key order: two runs inserting overlapping keys (the same sentence in two ranges)
    # then wait for each other in one order, never in a cycle (a deadlock on PostgreSQL).
    rows = sorted(rows, key=lambda r: (r["source_lang"], r["target_lang"], r["source_hash"]))
    dialect = session.get_bind().dialect.name
    index = ["source_lang", "target_lang", "source_hash"]
    if dialect in ("sqlite", "postgresql"):
        insert_: Any = sqlite.insert if dialect == "sqlite" else postgresql.insert
        # One statement executed with many parameter sets ("insertmanyvalues"): compiled once
        # and cached, where a VALUES list of 500 rows was compiled afresh every time.
        stmt = insert_(TranslationMemory)
        if overwrite:
            stmt = stmt.on_conflict_do_update(
                index_elements=index,
                set_={
                    "target_text": stmt.excluded.target_text,
                    "origin": stmt.excluded.origin,
                    "updated_at": stmt.excluded.updated_at,
                },
            )
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=index)
        session.connection().execute(stmt, rows)
        return
    for row in rows:  # other databases: one at a time
        existing = session.scalars(
            select(TranslationMemory).where(
                TranslationMemory.source_lang == row["source_lang"],
                TranslationMemory.target_lang == row["target_lang"],
                TranslationMemory.source_hash == row["source_hash"],
            )
        ).first()
        if existing is None:
            session.add(TranslationMemory(**row))
        elif overwrite:
            existing.target_text = row["target_text"]
            existing.origin = row["origin"]
            existing.updated_at = row["updated_at"]
