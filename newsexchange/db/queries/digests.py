"""The SQL of the digest step, its console commands and the public archive.

Each function takes a :class:`Session` and plain values and returns ORM rows or plain
values; the callers (``digest/build.py``, ``digest/content.py``, ``digest/step.py``,
``commands/digest.py``, ``web/archive.py``) decide what to do with them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    Select,
    and_,
    case,
    distinct,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from newsexchange.db.tables import Approval, AuditEntry, Digest, DigestItem, Item, Translation

__all__ = [
    "CandidateQuery",
    "add_digest",
    "approvals_of",
    "audit_of",
    "candidate_count",
    "candidate_rows",
    "count_period_items",
    "digest_of_period",
    "digest_state",
    "digests",
    "exchange_digests",
    "included_counts",
    "included_entries",
    "items_by_id",
    "period_items",
    "period_published_count",
    "race_winner",
    "ranked_candidates",
    "rows_by_id",
]


# -- digests ----------------------------------------------------------------------------------


def _of_period(exchange_id: str, period_start: date) -> Select[Digest]:
    return select(Digest).where(
        Digest.exchange_id == exchange_id, Digest.period_start == period_start
    )


def digest_of_period(session: Session, exchange_id: str, period_start: date) -> Digest | None:
    """The digest of one exchange and period, locked for this transaction.

    FOR UPDATE (PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes writers): two
    rebuilds of one digest run one after the other instead of interleaving their rows.
    """
    stmt = _of_period(exchange_id, period_start).with_for_update()
    return session.scalars(stmt).one_or_none()


def add_digest(session: Session, digest: Digest) -> bool:
    """Add a new digest in a savepoint; False when another build of the same period won the
    race (the unique constraint ``uq_digest_period``): then read :func:`race_winner`."""
    try:
        with session.begin_nested():
            session.add(digest)
    except IntegrityError:
        return False
    return True


def race_winner(session: Session, exchange_id: str, period_start: date) -> Digest:
    """The digest another build of the same period wrote (see :func:`add_digest`)."""
    return session.scalars(_of_period(exchange_id, period_start)).one()


def digest_state(session: Session, exchange_id: str, period_start: date) -> str | None:
    """The state of the period's digest, None when it was never built."""
    return session.scalar(
        select(Digest.state).where(
            Digest.exchange_id == exchange_id, Digest.period_start == period_start
        )
    )


def digests(session: Session, exchange_id: str | None = None) -> list[Digest]:
    """Every digest (of one exchange), newest period first."""
    stmt = select(Digest).order_by(Digest.period_start.desc(), Digest.exchange_id)
    if exchange_id:
        stmt = stmt.where(Digest.exchange_id == exchange_id)
    return list(session.scalars(stmt))


def exchange_digests(
    session: Session, exchange_id: str, *, state: str, limit: int | None = None
) -> list[Digest]:
    """One exchange's digests in ``state``, newest period first, at most ``limit``."""
    q = (
        select(Digest)
        .where(Digest.exchange_id == exchange_id, Digest.state == state)
        .order_by(Digest.period_start.desc())
    )
    if limit:
        q = q.limit(limit)
    return list(session.scalars(q))


def included_counts(session: Session) -> dict[int, int]:
    """Digest id → how many of its items are included (digests without any are absent)."""
    rows = session.execute(
        select(DigestItem.digest_id, func.count())
        .where(DigestItem.included.is_(True))
        .group_by(DigestItem.digest_id)
    ).all()
    return {digest_id: count for digest_id, count in rows}


def included_entries(session: Session, digest_id: int) -> list[DigestItem]:
    """A digest's included rows (with their items), by position: what rendering reads,
    without the left-out verdicts beside them."""
    stmt = (
        select(DigestItem)
        .where(DigestItem.digest_id == digest_id, DigestItem.included.is_(True))
        .order_by(DigestItem.position, DigestItem.item_id)
    )
    return list(session.scalars(stmt))


def approvals_of(session: Session, digest_id: int) -> list[Approval]:
    """A digest's approval decisions, oldest first."""
    stmt = select(Approval).where(Approval.digest_id == digest_id).order_by(Approval.created_at)
    return list(session.scalars(stmt))


def audit_of(session: Session, digest_id: int) -> list[AuditEntry]:
    """A digest's audit log, oldest first."""
    stmt = (
        select(AuditEntry)
        .where(AuditEntry.digest_id == digest_id)
        .order_by(AuditEntry.at, AuditEntry.id)
    )
    return list(session.scalars(stmt))


# -- the items of a period --------------------------------------------------------------------


def _in_period(
    regions: Iterable[str],
    starts_at: datetime,
    ends_at: datetime,
    events_until: datetime | None,
    *,
    listable: bool,
    table: Any = Item,
) -> list[ColumnElement[bool]]:
    """The conditions of a period's candidates (see :func:`period_items`); ``listable``
    leaves out the events that started before the digest's date (they can only be left
    out, so they do not make a period worth building). ``table``: Item or an alias of it."""
    t = table
    published = and_(t.published_at >= starts_at, t.published_at < ends_at)
    if events_until is None:
        return [t.region.in_(list(regions)), published]
    undated = and_(published, t.event_start.is_(None))
    # An upcoming event counts whenever it was announced, as long as it was known by the
    # digest's date (one announced later is the next digest's, if it is still ahead then).
    upcoming = and_(
        t.event_start >= ends_at,
        t.event_start < events_until,
        t.published_at < ends_at,
    )
    which: list[ColumnElement[bool]] = [undated, upcoming]
    if not listable:
        which.append(and_(published, t.event_start < ends_at))
    # An event its calendar cancelled (or no longer carries) is nobody's candidate.
    return [t.region.in_(list(regions)), or_(*which), t.cancelled_at.is_(None)]


def period_items(
    session: Session,
    regions: Iterable[str],
    starts_at: datetime,
    ends_at: datetime,
    *,
    events_until: datetime | None = None,
) -> list[Item]:
    """The candidates of a period's digest, by id: the items of ``regions`` published in
    [starts_at, ends_at) that are not events; the events starting in [ends_at, events_until)
    (the digest's date up to the end of the next period) published before ``ends_at``;
    and the events published in the period that started before ``ends_at`` (the selection
    leaves them out, saying why). Without ``events_until``: every item published in the
    period, events or not, as before events had a window."""
    conds = _in_period(regions, starts_at, ends_at, events_until, listable=False)
    stmt = select(Item).where(*conds).order_by(Item.id)
    return list(session.scalars(stmt))


def count_period_items(
    session: Session,
    regions: Iterable[str],
    starts_at: datetime,
    ends_at: datetime,
    *,
    events_until: datetime | None = None,
) -> int:
    """How many of :func:`period_items` a digest could list (an event that started before
    the digest's date is not counted: it can only be left out)."""
    conds = _in_period(regions, starts_at, ends_at, events_until, listable=True)
    stmt = select(func.count()).select_from(Item).where(*conds)
    return session.scalar(stmt) or 0


def items_by_id(session: Session, ids: Collection[int]) -> list[Item]:
    """The items with these ids (in no particular order; unknown ids are left out)."""
    return list(session.scalars(select(Item).where(Item.id.in_(ids))))


# -- candidates as plain rows, for the ranking ------------------------------------------------
# The build ranks plain rows, never ORM objects (loading 20,000 Items with their translations
# was a third of a build's time, issue 16). Every row has the columns of
# ``newsexchange.digest.select.Candidate`` plus ``translated`` (a finished translation into the
# digest's language exists, or the item is in it) and ``story_sources`` (how many sources among
# the period's candidates carry its story; NULL when it has no story group).


@dataclass(frozen=True)
class CandidateQuery:
    """Which candidates a digest ranks (see :func:`period_items`) and how it scores them."""

    regions: Sequence[str]
    starts_at: datetime
    ends_at: datetime
    events_until: datetime | None
    language: str
    include_untranslated: bool = False


def _translated(language: str) -> ColumnElement[bool]:
    """The SQL twin of ``digest.content.item_text``'s ``translated``."""
    done = exists().where(
        Translation.item_id == Item.id,
        Translation.language == language,
        Translation.status == "done",
        Translation.title.is_not(None),
        Translation.title != "",
    )
    return or_(Item.language == language, done)


def _story_sources(q: CandidateQuery, only: ColumnElement[bool] | None = None) -> Any:
    """Story group → how many distinct sources of the period's candidates carry it (only
    the groups ``only`` names, when given: the story_group_id index then finds them)."""
    conds = _in_period(q.regions, q.starts_at, q.ends_at, q.events_until, listable=False)
    stmt = select(
        Item.story_group_id.label("group_id"), func.count(distinct(Item.source_id)).label("n")
    ).where(*conds, Item.story_group_id.is_not(None))
    if only is not None:
        stmt = stmt.where(only)
    return stmt.group_by(Item.story_group_id).subquery("story_sources")


#: An item's columns in a candidate row (then ``translated`` and ``story_sources``).
_ITEM_COLUMNS = (
    Item.id,
    Item.source_id,
    Item.title,
    Item.category,
    Item.published_at,
    Item.event_start,
    Item.story_group_id,
)


def _row_columns(q: CandidateQuery, groups: Any) -> list[Any]:
    return [
        *_ITEM_COLUMNS,
        _translated(q.language).label("translated"),
        groups.c.n.label("story_sources"),
    ]


def candidate_count(session: Session, q: CandidateQuery) -> int:
    """How many candidates :func:`period_items` would return."""
    conds = _in_period(q.regions, q.starts_at, q.ends_at, q.events_until, listable=False)
    return session.scalar(select(func.count()).select_from(Item).where(*conds)) or 0


def candidate_rows(
    session: Session,
    q: CandidateQuery,
    *,
    ids: Collection[int] | None = None,
    story_groups: Collection[int] | None = None,
    eligible_only: bool = False,
    exclude: Collection[int] = (),
) -> list[Row[Any]]:
    """The period's candidates as plain rows (by id): all of them, or those with ``ids``, or
    those of ``story_groups``; ``eligible_only`` keeps the ones that could go in (see
    :func:`_eligible`), ``exclude`` leaves ids out."""
    conds = _in_period(q.regions, q.starts_at, q.ends_at, q.events_until, listable=False)
    only: ColumnElement[bool] | None = None
    if story_groups is not None:
        only = Item.story_group_id.in_(list(story_groups))
    elif ids is not None:
        of_ids = select(Item.story_group_id).where(Item.id.in_(list(ids)))
        only = Item.story_group_id.in_(of_ids.scalar_subquery())
    groups = _story_sources(q, only)
    stmt = (
        select(*_row_columns(q, groups))
        .outerjoin(groups, groups.c.group_id == Item.story_group_id)
        .where(*conds)
        .order_by(Item.id)
    )
    if ids is not None:
        stmt = stmt.where(Item.id.in_(list(ids)))
    if story_groups is not None:
        stmt = stmt.where(Item.story_group_id.in_(list(story_groups)))
    if eligible_only:
        stmt = stmt.where(_eligible(q))
    if exclude:
        stmt = stmt.where(Item.id.not_in(list(exclude)))
    return list(session.execute(stmt).all())


def rows_by_id(session: Session, q: CandidateQuery, ids: Collection[int]) -> list[Row[Any]]:
    """Items by id as candidate rows, wherever their dates are (an editor's pin keeps an item
    whose date was corrected out of the period); ``story_sources`` is NULL (counted by the
    ranking itself over every candidate it is given)."""
    stmt = (
        select(
            *_ITEM_COLUMNS,
            _translated(q.language).label("translated"),
            literal(None).label("story_sources"),
        )
        .where(Item.id.in_(list(ids)))
        .order_by(Item.id)
    )
    result: Any = session.execute(stmt)  # typed by its columns; callers read them by name
    return list(result.all())


def _before_digest(q: CandidateQuery) -> ColumnElement[bool]:
    return and_(Item.event_start.is_not(None), Item.event_start < q.ends_at)


def _eligible(q: CandidateQuery) -> ColumnElement[bool]:
    """A candidate that could go in without an editor: not an event over before the digest's
    date and, unless the exchange takes untranslated items, translated."""
    ok = not_(_before_digest(q))
    if q.include_untranslated:
        return ok
    return and_(ok, _translated(q.language))


def period_published_count(session: Session, q: CandidateQuery) -> int:
    """How many items of the regions were published in the period: read from the index on
    (region, published_at) alone, a cheap measure of a period's size (the candidates are
    those and the upcoming events announced earlier)."""
    stmt = (
        select(func.count())
        .select_from(Item)
        .where(
            Item.region.in_(list(q.regions)),
            Item.published_at >= q.starts_at,
            Item.published_at < q.ends_at,
        )
    )
    return session.scalar(stmt) or 0


ELIGIBLE = "eligible"


def _can_materialize(session: Session) -> bool:
    """Whether ``WITH … AS MATERIALIZED`` is understood: SQLite ≥ 3.35 (the release that
    also brought RETURNING, which SQLAlchemy detects) or PostgreSQL ≥ 12."""
    dialect = session.get_bind().dialect
    if dialect.name == "sqlite":
        return bool(dialect.insert_returning)
    version = dialect.server_version_info or (0,)
    return dialect.name == "postgresql" and version >= (12,)


def ranked_candidates(
    session: Session,
    q: CandidateQuery,
    *,
    per_run: int,
    sample: int,
    exclude: Collection[int],
) -> list[Row[Any]]:
    """In one pass of the database over the period's candidates (``exclude``, the items an
    editor steered, left out: they are read on their own), by ``kind``:

    - ``eligible`` (could go in): the first ``per_run`` + 1 of each *run*, newest first, then
      by id. A run is the candidates of one source and section that share their story's
      source count and are both dated events or both not: inside a run the weight, the
      coverage and the way recency is reckoned are the same, so the score only grows with
      the publication time, and newest first (then by id) is exactly the ranking's own order
      (``digest.select.rank_key``), with no score arithmetic in SQL;
    - ``event_before_digest`` and ``untranslated`` (no ranking lets them in): ``sample`` of
      each, the most covered, then the newest.

    Each row has the candidate columns, ``kind``, ``rn`` (its 1-based place in its run or
    kind) and ``group_n`` (how many candidates its run or kind has in all)."""
    # One read of the candidates' narrow columns, kept (MATERIALIZED) for the story counts
    # and the ranking: every further step works on it, not on the items table, and only the
    # rows kept are read whole at the end. Reading a row of items costs the database far
    # more than anything done with it (tests/test_digest_scale.py, benchmarks/digest.py).
    conds = _in_period(q.regions, q.starts_at, q.ends_at, q.events_until, listable=False)
    base_q = select(
        Item.id,
        Item.source_id,
        Item.category,
        Item.published_at,
        Item.event_start,
        Item.story_group_id,
        _translated(q.language).label("translated"),
        _before_digest(q).label("before"),
    ).where(*conds)
    # How many sources carry each story: asked per grouped row through the story_group_id
    # index (a story has a few members), not by sorting or joining every candidate.
    other = aliased(Item)
    of_story = (
        select(func.count(distinct(other.source_id)))
        .where(
            other.story_group_id == Item.story_group_id,
            *_in_period(
                q.regions, q.starts_at, q.ends_at, q.events_until, listable=False, table=other
            ),
        )
        .scalar_subquery()
    )
    counted = base_q.add_columns(
        case((Item.story_group_id.is_(None), None), else_=of_story).label("n")
    ).cte("counted")
    if _can_materialize(session):
        # Computed once a candidate. Unmaterialized, SQLite copies the columns' expressions
        # into every use below: the translation check ran seven times a row, and the build
        # at 20,000 candidates took a third longer (benchmarks/digest.py --scale).
        counted = counted.prefix_with("MATERIALIZED")
    b = counted
    untranslated = false() if q.include_untranslated else not_(b.c.translated)
    # The steered items count for their story (above) but are read on their own.
    steered = b.c.id.in_(list(exclude)) if exclude else false()
    kind = case(
        (steered, "steered"),
        (b.c.before, "event_before_digest"),
        (untranslated, "untranslated"),
        else_=ELIGIBLE,
    )
    eligible = kind == ELIGIBLE
    stories = func.coalesce(b.c.n, 1)
    section = case(
        (or_(b.c.category == "events", b.c.event_start.is_not(None)), "events"), else_="news"
    )
    part = (
        kind,
        case((eligible, section)),
        case((eligible, b.c.source_id)),
        case((eligible, stories)),
        case((eligible, b.c.event_start.is_(None))),
    )
    order = (case((eligible, 0), else_=stories).desc(), b.c.published_at.desc(), b.c.id)
    ranked = (
        select(
            b.c.id.label("rid"),
            b.c.translated,
            b.c.n.label("story_sources"),
            kind.label("kind"),
            func.row_number().over(partition_by=part, order_by=order).label("rn"),
            func.count().over(partition_by=part).label("group_n"),
        )
        .select_from(b)
        .subquery("ranked")
    )
    keep = case(
        (ranked.c.kind == ELIGIBLE, per_run + 1), (ranked.c.kind == "steered", 0), else_=sample
    )
    stmt = (
        select(
            *_ITEM_COLUMNS,
            ranked.c.translated,
            ranked.c.story_sources,
            ranked.c.kind,
            ranked.c.rn,
            ranked.c.group_n,
        )
        .join(ranked, ranked.c.rid == Item.id)
        .where(ranked.c.rn <= keep)
        .order_by(Item.id)
    )
    return list(session.execute(stmt).all())
