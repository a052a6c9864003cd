"""The pick-up step: which items of the receiving side's media retell a story of a sent digest.

:func:`find_pickups` reads the sent digests still in their window, hands their stories to one
:class:`~newsexchange.impact.match.Matcher` (built once per run over every story in scope, so
the cost grows as stories + candidates, not stories × candidates), streams the receiving
side's items published since through it, and writes each new match as a ``suggested`` row of
``pickups``. Editors then :func:`confirm` or :func:`reject` a suggestion (the impact page
calls these); only confirmed ones count in reports (docs/impact.md).

Decisions (the issue is silent on them):

- **The receiving region** of an exchange is its ``to``; an exchange without ``to`` receives
  in every region not in its ``from`` that speaks the digest's language (its readers'), or, if
  none does, every region not in ``from``.
- **The window**: items published from ``sent_at`` to ``sent_at + impact.pickup_days``. A
  digest stays in scope :data:`MARGIN` longer, so an item published inside the window but
  fetched late (a source that was down) is still compared.
- **Idempotent**: a (digest, story, item) already in ``pickups`` — whatever its status — is
  never written again, so a rejected suggestion does not come back and a confirmed one is not
  touched. A suggestion's score is not updated by a later run either: what the editor saw is
  what stays.
- The matcher's ``StoryText.key`` is an index into this run's story list (not the item id):
  one item can be a story of two digests (two exchanges, or two lists), and each digest has
  its own window and its own rows.
- The matcher is built lazily, when the first candidate arrives: a run with nothing to
  compare costs no index.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from newsexchange.approval.audit import audit
from newsexchange.config import Config, ExchangeSettings
from newsexchange.db import Database, Digest, Item, Pickup, Session
from newsexchange.db.queries import impact as queries
from newsexchange.db.queries.impact import CandidateRow
from newsexchange.digest.content import shown_content
from newsexchange.errors import DigestNotFound, NewsExchangeError
from newsexchange.impact.match import CandidateText, Match, Matcher, StoryText

__all__ = [
    "MARGIN",
    "MatcherFactory",
    "PickupNotFound",
    "PickupReport",
    "confirm",
    "find_pickups",
    "receiving_regions",
    "reject",
    "stories_of",
]

#: How much longer than ``pickup_days`` a sent digest stays in scope (late-fetched items).
MARGIN = timedelta(days=2)

#: What :func:`find_pickups` builds its one matcher with (tests pass a small one of theirs).
MatcherFactory = Callable[..., Matcher]

STATUSES = ("suggested", "confirmed", "rejected")


class PickupNotFound(NewsExchangeError):
    """No pick-up has this id."""

    def __init__(self, pickup_id: int) -> None:
        self.pickup_id = pickup_id
        super().__init__(f"no pick-up with id {pickup_id}")


@dataclass
class PickupReport:
    """What a run compared and found."""

    digests: list[int] = field(default_factory=list)
    stories: int = 0
    candidates: int = 0
    suggested: int = 0  # new rows written
    skipped: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "digests": self.digests,
            "stories": self.stories,
            "candidates": self.candidates,
            "suggested": self.suggested,
        }
        if self.skipped:
            data["skipped"] = self.skipped
        return data


def receiving_regions(config: Config, exchange: ExchangeSettings) -> list[str]:
    """The regions whose media an exchange's digests are for (see the module doc)."""
    if exchange.to:
        return [exchange.to]
    others = [r for r in config.regions if r not in exchange.from_]
    speaking = [r for r in others if config.regions[r].language == exchange.language]
    return speaking or others


@dataclass(frozen=True)
class _Scope:
    """One digest in this run: its window and where its readers are."""

    digest_id: int
    start: datetime
    end: datetime
    regions: frozenset[str]
    min_score: float


def stories_of(
    content: Mapping[str, Any], originals: Mapping[int, Item], language: str
) -> list[StoryText]:
    """The stories of a digest's (frozen) content, keyed by item id: the text the digest
    carried in ``language`` and the original item's own text (pure)."""
    out: list[StoryText] = []
    for entry in content.get("items", []):
        item_id = int(entry["item_id"])
        item = originals.get(item_id)
        published = entry.get("published_at")
        out.append(
            StoryText(
                key=item_id,
                language=language,
                title=str(entry.get("title") or ""),
                summary=str(entry.get("summary_text") or ""),
                original_language=item.language
                if item
                else str(entry.get("original_language") or ""),
                original_title=item.title if item else str(entry.get("original_title") or ""),
                original_summary=item.summary_text if item else "",
                published_at=datetime.fromisoformat(published) if published else None,
            )
        )
    return out


def _in_scope(
    session: Session, config: Config, *, now: datetime, digest_id: int | None
) -> tuple[list[Digest], str | None]:
    if digest_id is not None:
        digest = queries.digest_by_id(session, digest_id)
        if digest is None:
            raise DigestNotFound(digest_id)
        if digest.state != "sent" or digest.sent_at is None:
            return [], f"digest {digest_id} is {digest.state}, not sent"
        return [digest], None
    if not config.exchanges:
        return [], "no exchanges"
    longest = max(ex.impact.pickup_days for ex in config.exchanges)
    digests = queries.sent_digests(session, since=now - timedelta(days=longest) - MARGIN)
    known = {ex.id: ex for ex in config.exchanges}
    kept = []
    for d in digests:
        ex = known.get(d.exchange_id)
        if ex is None or d.sent_at is None:
            continue  # an exchange no longer configured: nobody to report to
        if d.sent_at >= now - timedelta(days=ex.impact.pickup_days) - MARGIN:
            kept.append(d)
    return kept, None


def find_pickups(
    db: Database,
    config: Config,
    *,
    now: datetime,
    digest_id: int | None = None,
    matcher_factory: MatcherFactory = Matcher,
) -> PickupReport:
    """Compare the stories of every sent digest in its window (or of ``digest_id`` only)
    with the receiving side's items published since, and write the new matches as
    ``suggested`` pick-ups. Safe to run again: nothing already there is written or changed.

    Raises :class:`~newsexchange.errors.DigestNotFound` for an unknown ``digest_id``."""
    report = PickupReport()
    with db.session() as s:
        digests, skipped = _in_scope(s, config, now=now, digest_id=digest_id)
        if not digests:
            report.skipped = skipped or "no sent digest in its pick-up window"
            return report
        report.digests = [d.id for d in digests]
        stories: list[StoryText] = []
        owners: list[tuple[_Scope, int]] = []  # per story key: its digest's scope, its item id
        for d in digests:
            assert d.sent_at is not None
            ex = config.exchange(d.exchange_id)
            scope = _Scope(
                d.id,
                d.sent_at,
                d.sent_at + timedelta(days=ex.impact.pickup_days),
                frozenset(receiving_regions(config, ex)),
                ex.impact.pickup_min_score,
            )
            content = shown_content(s, config, d)
            ids = [int(e["item_id"]) for e in content.get("items", [])]
            originals = queries.items_by_id(s, ids)
            for story in stories_of(content, originals, d.language):
                owners.append((scope, story.key))
                stories.append(dataclasses.replace(story, key=len(stories)))
        report.stories = len(stories)
        if not stories:
            report.skipped = "the digests in scope have no stories"
            return report
        judged = queries.existing_pickups(s, report.digests)
        regions = set().union(*(sc.regions for sc, _ in owners))
        start = min(sc.start for sc, _ in owners)
        end = min(max(sc.end for sc, _ in owners), now + timedelta(seconds=1))
        min_score = min(sc.min_score for sc, _ in owners)
        matcher: Matcher | None = None
        story_items = {item_id for _, item_id in owners}
        for page in queries.candidates(s, regions, start=start, end=end):
            if matcher is None:
                matcher = matcher_factory(stories, min_score=min_score)
            rows: list[dict[str, Any]] = []
            for item in page:
                if item.id in story_items:
                    continue  # a story is not its own pick-up
                report.candidates += 1
                for m in matcher.matches(_candidate(item)):
                    row = _row(m, item, owners, judged, now=now)
                    if row is not None:
                        judged.add((row["digest_id"], row["story_item_id"], row["item_id"]))
                        rows.append(row)
            queries.insert_pickups(s, rows)
            report.suggested += len(rows)
    return report


def _candidate(item: CandidateRow) -> CandidateText:
    return CandidateText(
        key=item.id,
        language=item.language,
        title=item.title,
        summary=item.summary_text,
        published_at=item.published_at,
    )


def _row(
    m: Match,
    item: CandidateRow,
    owners: Sequence[tuple[_Scope, int]],
    judged: set[tuple[int, int, int]],
    *,
    now: datetime,
) -> dict[str, Any] | None:
    """The ``pickups`` row of one match, or None when it is outside its digest's window or
    region, under its exchange's threshold, or already there."""
    if not 0 <= m.story < len(owners):
        return None
    scope, story_item = owners[m.story]
    published = item.published_at.astimezone(UTC)
    if not (scope.start <= published < scope.end) or item.region not in scope.regions:
        return None
    if m.score < scope.min_score:
        return None
    if (scope.digest_id, story_item, item.id) in judged:
        return None
    return {
        "digest_id": scope.digest_id,
        "story_item_id": story_item,
        "item_id": item.id,
        "score": round(max(0.0, min(1.0, float(m.score))), 4),
        # JSON-able whatever the matcher put in (dates, sets): stored as the page shows it
        "evidence": json.loads(json.dumps(m.evidence, default=_jsonable, ensure_ascii=False)),
        "status": "suggested",
        "found_at": now,
    }


def _jsonable(o: Any) -> Any:
    if isinstance(o, datetime):
        return o.isoformat()
    if isinstance(o, set | frozenset | tuple):
        return sorted(o, key=str)
    return str(o)


# -- the editors' word -------------------------------------------------------------------------


def confirm(
    session: Session, pickup_id: int, editor: str, now: datetime, *, channel: str = "web"
) -> Pickup:
    """An editor confirms a pick-up: it counts in reports from now on (audited)."""
    return _decide(session, pickup_id, "confirmed", editor, now, channel)


def reject(
    session: Session, pickup_id: int, editor: str, now: datetime, *, channel: str = "web"
) -> Pickup:
    """An editor rejects a pick-up: it never counts and is never suggested again (audited)."""
    return _decide(session, pickup_id, "rejected", editor, now, channel)


def _decide(
    session: Session, pickup_id: int, status: str, editor: str, now: datetime, channel: str
) -> Pickup:
    """Set the decision; an editor may change their mind (each change is audited), the same
    decision twice changes nothing and is not logged again."""
    pickup = queries.pickup_by_id(session, pickup_id)
    if pickup is None:
        raise PickupNotFound(pickup_id)
    if pickup.status == status:
        return pickup
    previous = pickup.status
    pickup.status = status
    pickup.decided_at = now
    pickup.decided_by = editor[:320]
    audit(
        session,
        digest_id=pickup.digest_id,
        actor=editor,
        action=f"pickup_{status}",
        channel=channel,
        address=None,
        now=now,
        pickup=pickup.id,
        story_item=pickup.story_item_id,
        item=pickup.item_id,
        score=pickup.score,
        previous=previous,
    )
    return pickup
