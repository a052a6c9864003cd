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
    Candidate,
    Choice,
    Policy,
    Selection,
    Steering,
    arrange,
    left_out_text,
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
    left_out: list[dict[str, Any]] = field(default_factory=list)
    sections: dict[str, int] = field(default_factory=dict)

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
            "left_out": len(selection.left_out),
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
            "left_out": len(report.left_out),
            "version": report.version,
            "changed": report.changed,
        },
    )


def _candidate(item: Item, config: Config, exchange: ExchangeSettings) -> Candidate:
    return Candidate(
        item_id=item.id,
        source_id=item.source_id,
        title=item.title,
        category=item.category,
        published_at=item.published_at,
        translated=item_text(item, exchange.language)[3],
        weight=_source_weight(config, exchange, item.source_id),
        story_group=item.story_group_id,
        event_start=item.event_start,
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


def _select_for(
    session: Session,
    config: Config,
    exchange: ExchangeSettings,
    period: Period,
    digest: Digest,
    now: datetime,
) -> tuple[Selection, dict[int, Item]]:
    _, events_until = event_window(exchange, config, period)
    found = queries.period_items(
        session, exchange.from_, period.starts_at, period.ends_at, events_until=events_until
    )
    items = {it.id: it for it in found}
    # Items an editor pinned stay candidates even if their date was corrected out of the period.
    pinned_ids = {e.item_id for e in digest.entries if e.pinned} - set(items)
    if pinned_ids:
        for it in queries.items_by_id(session, pinned_ids):
            items[it.id] = it
    candidates = [_candidate(it, config, exchange) for it in items.values()]
    selection = rank(
        candidates,
        policy=Policy(
            max_items=exchange.max_items,
            max_per_source=exchange.max_per_source,
            include_untranslated=exchange.include_untranslated,
        ),
        period_start=period.starts_at,
        period_end=period.ends_at,
        now=now,
        steering=_steering(digest.entries),
    )
    return selection, items


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
