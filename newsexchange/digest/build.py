"""Building one exchange's digest for one period, and an editor's changes to it.

``build_digest`` reads the period's items of the exchange's source regions, hands plain data
to the pure ranking in :mod:`newsexchange.digest.select`, and writes the verdict as
``digest_items`` rows (included ones with their position, left-out ones with the reason), so
``--json``, the approval page and the mail all show the same thing.

Rules (the invariants this module keeps):

- One digest per (exchange, period): the unique constraint ``uq_digest_period`` makes
  building twice, or two builds racing, end with the same row.
- Rebuilding is allowed while the digest is ``draft``, ``awaiting_approval``, ``held`` or
  ``revising`` (not approved yet: :data:`states.EDITABLE`). An approved, sending, sent or
  rejected digest is never changed: rebuilding or editing it raises :class:`DigestError`
  saying why.
- Editor pins, drops and ordering live on the ``digest_items`` rows and are read back on a
  rebuild, so new items arriving never undo an editor's choice.
- ``version`` grows whenever what a reader would see changes (which items, their order, or
  their text — a translation that finished since the last build counts). Approvals name the
  version they approved, so a changed digest needs approving again: a rebuild that changes
  a digest awaiting approval (or held) returns it to ``draft`` (the ``rebuild`` event), and
  the approval step sends fresh requests. ``edit_digest`` leaves the state to its caller
  (the approval step mails the editors itself after an edit).
- Builds that create or change a digest are written to ``audit_log`` (actor
  ``newsexchange``, action ``built``/``rebuilt``).

The SQL is in :mod:`newsexchange.db.queries.digests`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from newsexchange.config import Config, ExchangeSettings
from newsexchange.db import AuditEntry, Database, Digest, DigestItem, Item, Session
from newsexchange.db.queries import digests as queries
from newsexchange.digest.content import item_text, text_hash
from newsexchange.digest.periods import Period, due_periods, event_window, period_starting
from newsexchange.digest.render import subject_for
from newsexchange.digest.select import (
    LEFT_OUT_REASONS,
    Candidate,
    Choice,
    Policy,
    Selection,
    Steering,
    arrange,
    cut_is_safe,
    left_behind_reason,
    left_out_text,
    section_of,
)
from newsexchange.digest.select import select as rank
from newsexchange.digest.states import EDITABLE, DigestState, move
from newsexchange.errors import ConfigError, DigestError

__all__ = ["BuildReport", "build_digest", "edit_digest"]

log = logging.getLogger("newsexchange.digest")  # the name the build's log lines always had


@dataclass
class BuildReport:
    id: int
    exchange: str
    period: Period
    language: str
    state: str
    version: int
    created: bool
    changed: bool
    items: list[dict[str, Any]] = field(default_factory=list)
    # The left-out verdicts kept (KEEP_LEFT_OUT per reason); left_out_counts has them all.
    left_out: list[dict[str, Any]] = field(default_factory=list)
    sections: dict[str, int] = field(default_factory=dict)
    left_out_counts: dict[str, int] = field(default_factory=dict)

    @property
    def left_out_count(self) -> int:
        return sum(self.left_out_counts.values())

    @property
    def item_count(self) -> int:
        return len(self.items)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "id": self.id,
            "exchange": self.exchange,
            "period": {"start": self.period.start.isoformat(), "end": self.period.end.isoformat()},
            "timezone": self.period.timezone,
            "language": self.language,
            "state": self.state,
            "version": self.version,
            "created": self.created,
            "changed": self.changed,
            "item_count": self.item_count,
            "sections": self.sections,
            "items": self.items,
            "left_out": self.left_out,
            "left_out_count": self.left_out_count,
            "left_out_counts": self.left_out_counts,
        }


def _signature(entries: Sequence[DigestItem]) -> list[tuple[Any, ...]]:
    """What a reader would see, for deciding whether a rebuild changed the digest."""
    return sorted(
        (e.position, e.item_id, e.section, str(e.reason.get("text", "")))
        for e in entries
        if e.included
    )


# -- the step --------------------------------------------------------------------------------


def _source_weight(config: Config, exchange: ExchangeSettings, source_id: str) -> float:
    try:
        base = config.source(source_id).weight
    except ConfigError:  # a source removed from feeds.yaml keeps its old items, at weight 1
        base = 1.0
    return base * exchange.source_weights.get(source_id, 1.0)


def _source_name(config: Config, source_id: str) -> str:
    try:
        return config.source(source_id).display_name
    except ConfigError:
        return source_id


def _steering(entries: Sequence[DigestItem]) -> Steering:
    ranks: dict[int, int] = {}
    for e in entries:
        r = e.reason.get("editor_rank") if isinstance(e.reason, dict) else None
        if isinstance(r, int):
            ranks[e.item_id] = r
    return Steering(
        pins={e.item_id for e in entries if e.pinned},
        drops={e.item_id for e in entries if e.dropped},
        ranks=ranks,
    )


def _get_or_create(
    session: Session, exchange: ExchangeSettings, period: Period, now: datetime
) -> tuple[Digest, bool]:
    digest = queries.digest_of_period(session, exchange.id, period.start)
    if digest is not None:
        return digest, False
    digest = Digest(
        exchange_id=exchange.id,
        period_start=period.start,
        period_end=period.end,
        language=exchange.language,
        state=DigestState.DRAFT.value,
        version=1,
        token=secrets.token_hex(16),
        created_at=now,
        built_at=now,
    )
    if not queries.add_digest(session, digest):
        # Another build of the same period won the race: use its row.
        return queries.race_winner(session, exchange.id, period.start), False
    return digest, True


def _refuse_frozen(digest: Digest, action: str) -> None:
    if digest.state not in EDITABLE:
        raise DigestError(
            f"digest {digest.id} ({digest.exchange_id}, period {digest.period_start}) is "
            f"{digest.state}; its content is frozen and cannot be {action} (only a draft, a "
            "digest awaiting approval or a held one can change)"
        )


def _period(
    exchange: ExchangeSettings, config: Config, period_start: date | None, now: datetime
) -> Period:
    if period_start is None:
        return due_periods(exchange, config, now)[0]
    return period_starting(exchange, config, period_start)


def _new_version(digest: Digest, *, created: bool, changed: bool) -> None:
    """A rebuild that changed what readers see makes a new version."""
    if not changed or created:
        return
    if digest.state == DigestState.REVISING:
        return  # a draft of a version nobody has seen yet: it stays with the editors
    digest.version += 1
    # The editors were asked about content that no longer exists: back to draft, so the
    # approval step asks again about this version.
    move(digest, "rebuild")


def _audit_build(
    digest: Digest,
    selection: Selection,
    *,
    created: bool,
    old_version: int,
    old_state: str,
    now: datetime,
) -> AuditEntry:
    return AuditEntry(
        at=now,
        digest_id=digest.id,
        actor="newsexchange",
        action="built" if created else "rebuilt",
        channel="system",
        detail={
            "version": digest.version,
            "from_version": None if created else old_version,
            "from_state": None if created else old_state,
            "items": len(selection.included),
            "left_out": selection.left_out_count,
        },
    )


def build_digest(
    db: Database,
    config: Config,
    exchange_id: str,
    *,
    period_start: date | None = None,
    now: datetime,
) -> BuildReport:
    """Build (or rebuild, while it may still change) the digest of one exchange and period.

    Without ``period_start``, the latest completed period whose build time has passed
    (:func:`~newsexchange.digest.periods.due_periods`). Raises :class:`DigestError` when the
    period start is not a period's first day or when the digest is already approved (or
    later).
    """
    exchange = config.exchange(exchange_id)
    period = _period(exchange, config, period_start, now)

    with db.session() as session:
        digest, created = _get_or_create(session, exchange, period, now)
        _refuse_frozen(digest, "rebuilt")
        selection, items = _select_for(session, config, exchange, period, digest, now)
        changed = _write_selection(session, digest, selection, items, exchange.language)
        old_version, old_state = digest.version, digest.state
        _new_version(digest, created=created, changed=changed)
        if created or changed:
            session.add(
                _audit_build(
                    digest,
                    selection,
                    created=created,
                    old_version=old_version,
                    old_state=old_state,
                    now=now,
                )
            )
        digest.built_at = now
        digest.period_end = period.end
        digest.subject = subject_for(config, exchange, period.start, period.end)
        session.flush()
        report = _report(config, digest, period, selection, items, created, changed)
    _log_built(report)
    return report


def _log_built(report: BuildReport) -> None:
    log.info(
        "digest built",
        extra={
            "digest": report.id,
            "exchange": report.exchange,
            "period": report.period.start.isoformat(),
            "items": report.item_count,
            "left_out": report.left_out_count,
            "version": report.version,
            "changed": report.changed,
        },
    )


def _renumber(digest: Digest) -> None:
    steering = _steering(digest.entries)
    entries = {e.item_id: e for e in digest.entries if e.included}
    choices = [
        Choice(
            candidate=Candidate(
                item_id=e.item_id,
                source_id=e.item.source_id,
                title=e.item.title,
                category=e.item.category,
                published_at=e.item.published_at,
                translated=not e.untranslated,
                event_start=e.item.event_start,
            ),
            included=True,
            section=e.section,
            score=e.score,
            reason=e.reason,
        )
        for e in entries.values()
    ]
    for ch in arrange(choices, steering=steering):
        entries[ch.item_id].position = ch.position


#: Up to this many items published in the period the build ranks every candidate; above, the database hands in only the
#: best of each source's section (:func:`_select_top`). Either gives the same digest (tests/
#: test_digest_scale.py); the bound only keeps a small period's verdicts all listed.
RANK_ALL_UP_TO = 1000
#: Left-out verdicts kept per reason (the best by score) beside the included and the dropped
#: ones; all of them when the digest has fewer than ``min_items`` (the editors' "nothing to
#: send" notice counts them). docs/digests.md, "Which verdicts are kept".
KEEP_LEFT_OUT = 50


def _select_for(
    session: Session,
    config: Config,
    exchange: ExchangeSettings,
    period: Period,
    digest: Digest,
    now: datetime,
) -> tuple[Selection, dict[int, Item]]:
    """The selection, with only the left-out verdicts kept (:data:`KEEP_LEFT_OUT`), and the
    items of every verdict kept."""
    _, events_until = event_window(exchange, config, period)
    q = queries.CandidateQuery(
        regions=list(exchange.from_),
        starts_at=period.starts_at,
        ends_at=period.ends_at,
        events_until=events_until,
        language=exchange.language,
        include_untranslated=exchange.include_untranslated,
    )
    ranker = _Ranker(config, exchange, period, _steering(digest.entries), now)
    selection: Selection | None = None
    if queries.period_published_count(session, q) > RANK_ALL_UP_TO:
        selection = _select_top(session, q, ranker)
    if selection is None or len(selection.included) < exchange.min_items:
        selection = _select_all(session, q, ranker)
    keep = _retained(selection.left_out, keep_all=len(selection.included) < exchange.min_items)
    ids = {ch.item_id for ch in [*selection.included, *keep]}
    items = {it.id: it for it in queries.items_by_id(session, ids)} if ids else {}
    return Selection(selection.included, keep, counts=selection.left_out_counts()), items


class _Ranker:
    """Candidate rows → :class:`Candidate` → the pure ranking, with one build's settings."""

    def __init__(
        self,
        config: Config,
        exchange: ExchangeSettings,
        period: Period,
        steering: Steering,
        now: datetime,
    ) -> None:
        self.config, self.exchange, self.period = config, exchange, period
        self.steering, self.now = steering, now
        self.policy = Policy(
            max_items=exchange.max_items,
            max_per_source=exchange.max_per_source,
            include_untranslated=exchange.include_untranslated,
        )
        self._weights: dict[str, float] = {}

    def weight(self, source_id: str) -> float:
        if source_id not in self._weights:
            self._weights[source_id] = _source_weight(self.config, self.exchange, source_id)
        return self._weights[source_id]

    def candidate(self, row: Any, *, counted: bool) -> Candidate:
        """``counted``: take the row's ``story_sources`` (the database counted the story's
        sources over every candidate) instead of counting over the rows ranked."""
        return Candidate(
            item_id=row.id,
            source_id=row.source_id,
            title=row.title,
            category=row.category,
            published_at=row.published_at,
            translated=bool(row.translated),
            weight=self.weight(row.source_id),
            story_group=row.story_group_id,
            event_start=row.event_start,
            story_sources=row.story_sources if counted else None,
        )

    def rank(
        self, rows: Collection[Any], *, counted: bool, steering: Steering | None = None
    ) -> Selection:
        return rank(
            [self.candidate(r, counted=counted) for r in rows],
            policy=self.policy,
            period_start=self.period.starts_at,
            period_end=self.period.ends_at,
            now=self.now,
            steering=self.steering if steering is None else steering,
        )


def _select_all(session: Session, q: queries.CandidateQuery, ranker: _Ranker) -> Selection:
    """Every candidate ranked in Python (and the items an editor pinned whose date was
    corrected out of the period: they stay candidates)."""
    rows = queries.candidate_rows(session, q)
    outside = set(ranker.steering.pins) - {r.id for r in rows}
    if outside:
        rows += queries.rows_by_id(session, q, outside)
    return ranker.rank(rows, counted=False)


def _select_top(session: Session, q: queries.CandidateQuery, ranker: _Ranker) -> Selection | None:
    """The selection of every candidate, ranking only the first ``K + 1`` of each run
    (``queries.top_candidates``: the database's window functions pick them), the items
    editors steered and the
    other members of each included or dropped story; the rest are counted, not ranked
    (:func:`~newsexchange.digest.select.cut_is_safe` proves they could not go in). None when
    that cannot be done (a pinned item outside the period) or proved after asking for more
    twice: then rank them all."""
    steering, policy = ranker.steering, ranker.policy
    steered = set(steering.pins) | set(steering.drops)
    steered_rows = queries.candidate_rows(session, q, ids=steered) if steered else []
    if set(steering.pins) - {r.id for r in steered_rows}:
        return None  # a pinned item outside the period counts for its story's coverage
    k = max(2 * policy.max_per_source, policy.max_per_source + 5)
    for _ in range(3):
        found = queries.ranked_candidates(
            session, q, per_run=k, sample=KEEP_LEFT_OUT, exclude=steered
        )
        top = [r for r in found if r.kind == queries.ELIGIBLE]
        rows = {r.id: r for r in [*top, *steered_rows]}
        selection = ranker.rank(rows.values(), counted=True)
        sentinels = [r.id for r in top if r.rn == k + 1 and r.group_n > k + 1]
        if cut_is_safe(selection, sentinels, policy=policy, steering=steering):
            break
        k *= 4
    else:
        return None
    # The other members of an included (or dropped) story are its duplicates, listed on it
    # ("also in"): rank them too, so they are named as ranking every candidate names them.
    stories: set[int] = {
        ch.candidate.story_group for ch in selection.included if ch.candidate.story_group
    } | {r.story_group_id for r in steered_rows if r.id in steering.drops and r.story_group_id}
    members = (
        queries.candidate_rows(
            session, q, story_groups=stories, eligible_only=True, exclude=set(rows)
        )
        if stories
        else []
    )
    if members:
        rows.update((r.id, r) for r in members)
        selection = ranker.rank(rows.values(), counted=True)

    counts: dict[str, int] = {}
    for ch in selection.left_out:
        counts[ch.left_out or "over_cap"] = counts.get(ch.left_out or "over_cap", 0) + 1
    # What each run left behind the cut: over its source's cap, or over the digest's.
    ranked: dict[tuple[Any, ...], int] = {}
    for r in rows.values():
        if r.id not in steered:
            ranked[_run(r)] = ranked.get(_run(r), 0) + 1
    sizes = {_run(r): r.group_n for r in top}
    for run, size in sizes.items():
        behind = size - ranked.get(run, 0)
        if behind > 0:
            why = left_behind_reason(selection, run[0], run[1], policy=policy)
            counts[why] = counts.get(why, 0) + behind
    # Those no ranking lets in (events over before the digest, untranslated items): counted,
    # and the best of each kept for the editors to see.
    sample = [r for r in found if r.kind != queries.ELIGIBLE]
    kinds = {r.kind: r.group_n for r in sample}
    for kind, n in kinds.items():
        counts[kind] = counts.get(kind, 0) + n
    left_out = list(selection.left_out)
    if sample:
        left_out += ranker.rank(sample, counted=True, steering=Steering()).left_out
    left_out.sort(key=_left_out_order)
    return Selection(selection.included, left_out, counts=counts)


def _run(row: Any) -> tuple[str, str, int, bool]:
    """A candidate row's run (``queries.top_candidates``): section, source, its story's
    source count, not a dated event."""
    return (
        section_of(row.category, row.event_start),
        row.source_id,
        row.story_sources or 1,
        row.event_start is None,
    )


def _left_out_order(ch: Choice) -> tuple[int, float, int]:
    return (LEFT_OUT_REASONS.index(ch.left_out or "over_cap"), -ch.score, ch.item_id)


def _retained(left_out: Sequence[Choice], *, keep_all: bool) -> list[Choice]:
    """The left-out verdicts a build stores (see :data:`KEEP_LEFT_OUT`): every dropped one
    (an editor's choice, kept across rebuilds) and the best of each other reason."""
    if keep_all:
        return list(left_out)
    kept: list[Choice] = []
    per_reason: dict[str, int] = {}
    for ch in left_out:  # by reason, then best first
        code = ch.left_out or "over_cap"
        if code != "dropped" and per_reason.get(code, 0) >= KEEP_LEFT_OUT:
            continue
        per_reason[code] = per_reason.get(code, 0) + 1
        kept.append(ch)
    return kept


def _write_selection(
    session: Session,
    digest: Digest,
    selection: Selection,
    items: dict[int, Item],
    language: str,
) -> bool:
    """Make ``digest.entries`` match the selection; True when what readers see changed."""
    before = _signature(digest.entries)
    existing = {e.item_id: e for e in digest.entries}
    seen: set[int] = set()
    for ch in [*selection.included, *selection.left_out]:
        item = items[ch.item_id]
        reason = dict(ch.reason)
        reason["text"] = text_hash(item, language)
        entry = existing.get(ch.item_id)
        if entry is None:
            entry = DigestItem(item_id=ch.item_id, pinned=False, dropped=False)
            digest.entries.append(entry)
        entry.section = ch.section
        entry.position = ch.position
        entry.included = ch.included
        entry.score = ch.score
        entry.reason = reason
        entry.untranslated = not ch.candidate.translated
        entry.pinned = bool(reason.get("pinned"))
        entry.dropped = ch.left_out == "dropped"
        seen.add(ch.item_id)
    for item_id, entry in existing.items():
        if item_id not in seen:  # no longer in the period (its date was corrected)
            digest.entries.remove(entry)
    session.flush()
    return _signature(digest.entries) != before


def _entry_json(config: Config, e: DigestItem, item: Item, language: str) -> dict[str, Any]:
    title = item_text(item, language)[0]
    reason = {k: v for k, v in e.reason.items() if k != "text"}
    out: dict[str, Any] = {
        "position": e.position,
        "section": e.section,
        "item_id": e.item_id,
        "title": title,
        "source": item.source_id,
        "source_name": _source_name(config, item.source_id),
        "score": round(e.score, 3),
        "reason": reason,
    }
    if item.event_start is not None:
        out["event_start"] = item.event_start.astimezone(UTC).isoformat()
    return out


def _report(
    config: Config,
    digest: Digest,
    period: Period,
    selection: Selection,
    items: dict[int, Item],
    created: bool,
    changed: bool,
) -> BuildReport:
    by_item = {e.item_id: e for e in digest.entries}
    return BuildReport(
        id=digest.id,
        exchange=digest.exchange_id,
        period=period,
        language=digest.language,
        state=digest.state,
        version=digest.version,
        created=created,
        changed=changed,
        items=[
            _entry_json(config, by_item[ch.item_id], items[ch.item_id], digest.language)
            for ch in selection.included
        ],
        left_out=[_left_out_json(ch, items[ch.item_id]) for ch in selection.left_out],
        sections=selection.section_counts(),
        left_out_counts=selection.left_out_counts(),
    )


def _left_out_json(ch: Choice, item: Item) -> dict[str, Any]:
    out: dict[str, Any] = {
        "item_id": ch.item_id,
        "title": item.title,
        "source": item.source_id,
        "reason": ch.left_out,
        "why": left_out_text(ch.left_out),
        "score": round(ch.score, 3),
    }
    if item.event_start is not None:
        out["event_start"] = item.event_start.astimezone(UTC).isoformat()
    if ch.left_out == "duplicate_story":
        out["duplicate_of"] = ch.reason.get("duplicate_of")
    return out


# -- editor changes --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Edit:
    """An editor's change, resolved from positions (and item ids) to the digest's rows."""

    drop: list[DigestItem]
    pin: list[DigestItem]
    unpin: list[DigestItem]
    order: list[DigestItem]
    restore: list[DigestItem]


def _resolve_edit(
    digest: Digest,
    *,
    drop: Collection[int],
    pin: Collection[int],
    order: Sequence[int] | None,
    restore: Collection[int],
    unpin: Collection[int],
) -> _Edit:
    """The rows the positions name; :class:`DigestError` for a position the digest does not
    have, a position ordered twice, an item never considered, or one pinned and dropped."""
    included = sorted((e for e in digest.entries if e.included), key=lambda e: e.position)
    by_pos = {e.position: e for e in included}
    by_item = {e.item_id: e for e in digest.entries}

    def at(pos: int) -> DigestItem:
        if pos not in by_pos:
            span = f"1–{len(included)}" if included else "none"
            raise DigestError(
                f"position {pos} is not in digest {digest.id} (its items are at positions {span})"
            )
        return by_pos[pos]

    edit = _Edit(
        drop=[at(p) for p in drop],
        pin=[at(p) for p in pin],
        unpin=[at(p) for p in unpin],
        order=[at(p) for p in (order or ())],
        restore=[],
    )
    if len({e.item_id for e in edit.order}) != len(edit.order):
        raise DigestError("order names a position twice (expected each position at most once)")
    for item_id in restore:
        if item_id not in by_item:
            raise DigestError(f"item {item_id} was never considered for digest {digest.id}")
        edit.restore.append(by_item[item_id])
    for e in edit.drop:
        if e in edit.pin:
            raise DigestError(f"position {e.position} is both pinned and dropped")
    return edit


def _apply_edit(digest: Digest, edit: _Edit) -> None:
    """Set the rows' flags and reasons as the editor asked (positions are renumbered after)."""
    for e in edit.drop:
        e.dropped, e.pinned, e.included = True, False, False
        e.reason = {**e.reason, "left_out": "dropped", "pinned": False}
    for e in [*edit.pin, *edit.restore]:
        e.pinned, e.dropped, e.included = True, False, True
        reason = {k: v for k, v in e.reason.items() if k not in ("left_out", "duplicate_of")}
        e.reason = {**reason, "pinned": True}
    for e in edit.unpin:
        e.pinned = False
        e.reason = {**e.reason, "pinned": False}
    if edit.order:
        for e in digest.entries:
            if "editor_rank" in e.reason:
                e.reason = {k: v for k, v in e.reason.items() if k != "editor_rank"}
        for rank_, e in enumerate(edit.order, start=1):
            e.reason = {**e.reason, "editor_rank": rank_}


def edit_digest(
    session: Session,
    digest: Digest,
    *,
    drop: Collection[int] = (),
    pin: Collection[int] = (),
    order: Sequence[int] | None = None,
    restore: Collection[int] = (),
    unpin: Collection[int] = (),
    bump: bool = True,
    now: datetime,
) -> bool:
    """Apply an editor's changes, by item *position* as shown to editors (1-based).

    - ``drop``: take these items out (kept out across rebuilds).
    - ``pin``: keep these items in whatever new items arrive (ignoring the caps).
    - ``order``: positions in the order the editor wants them (e.g. ``[3, 1]`` puts today's
      item 3 first, then item 1, the rest after in their order); kept across rebuilds.
    - ``restore``: *item ids* (positions do not exist for left-out items) to bring back in:
      undoes a drop, or includes a left-out item, pinned.
    - ``unpin``: positions whose pin is taken back (the item stays, ranked as a build would).

    All positions refer to the digest as it was before this call. Bumps ``version`` when
    anything changed (so earlier approvals no longer count) unless ``bump`` is false (a draft
    of a version nobody has seen yet, ``revising``). Returns whether anything changed. Raises
    :class:`DigestError` for a digest that can no longer change or a position it does not
    have.
    """
    _refuse_frozen(digest, "edited")
    edit = _resolve_edit(digest, drop=drop, pin=pin, order=order, restore=restore, unpin=unpin)

    before = _signature(digest.entries)
    flags_before = {(e.item_id, e.pinned, e.dropped) for e in digest.entries}
    _apply_edit(digest, edit)
    # Renumber with the same rules as a build, so rebuilding changes nothing.
    _renumber(digest)
    for e in digest.entries:
        if not e.included:
            e.position = 0
    changed = _signature(digest.entries) != before
    flags_changed = {(e.item_id, e.pinned, e.dropped) for e in digest.entries} != flags_before
    if (changed or flags_changed) and bump:
        digest.version += 1
    session.flush()
    log.info(
        "digest edited",
        extra={"digest": digest.id, "version": digest.version, "at": now.isoformat()},
    )
    return changed or flags_changed
