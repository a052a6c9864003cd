"""Which items make a digest, in which order, and why: pure ranking over plain data.

No database and no clock here (the build step in ``digest/build.py`` reads the items and
passes ``now``), so every rule below is tested with plain values.

The score is a product of parts an editor can read and steer::

    score = weight × coverage × recency

- ``weight``: the source's ``weight`` in feeds.yaml × the exchange's ``source_weights``
  entry for it (default 1 × 1). Editors raise or lower a source here.
- ``coverage``: ``1 + 0.5 × (other sources carrying the same story)``: a story that three
  outlets reported weighs twice a story only one did. Story groups come from ingestion
  (near-identical title+text fingerprints); only the best item of a group goes in, the others
  are listed as ``duplicate_story`` with the item they duplicate.
- ``recency``: from 0.8 (published at the period's start) to 1.0 (at its end), so late news
  is not pushed out by older news of the same weight, but weight and coverage still decide.
  A dated event is 1.0 whenever it was announced: every event handed in starts within the
  digest's window, and a calendar publishes its events weeks ahead.

Then, in order: an editor's ``pin`` puts an item in whatever its score (pins are ranked first
and ignore caps); an editor's ``drop`` takes it out; at most ``max_per_source`` items of one
source in each section (a city's calendar fills the events with up to that many events and
still has room for its news) and ``max_items`` in all. An item with no finished translation into the digest's
language is left out (``untranslated``) unless the exchange sets ``include_untranslated: true``;
then it is carried in its original language and marked.

Sections: "news" first, then "events". An item is an event when its category is
``events`` or when it has a start (``event_start``): a news source's item that announces a
dated event — a concert in a paper's culture pages — is read by a reader planning ahead
like any other event, so it is listed, and placed, as one.

Events are for a reader planning ahead. The digest goes out when its period ends
(``period_end``, the digest's date); the build hands in the events starting from then up to
the end of the next period (:func:`newsexchange.digest.periods.event_window`), whenever they
were announced, and those published in the period that started before the digest's date:
these are left out (``event_before_digest``: over by the time readers get the mail) unless
an editor pins one. An event without a start (a category ``events`` item with no date) is
taken as being about the period it was published in, like news. Events are ordered by their
start, then the undated ones (by score), then any pinned one that had started already.
The order depends on the digest's date, never on when it is built: a rebuild a day later,
or the test suite run a year ahead, gives the same digest.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SECTIONS: tuple[str, ...] = ("news", "events")
LEFT_OUT_REASONS: tuple[str, ...] = (
    "untranslated",
    "duplicate_story",
    "over_cap",
    "over_source_cap",
    "dropped",
    "event_before_digest",
)
#: Why an item was left out, in words (``why`` beside the code in ``--json``).
LEFT_OUT_TEXT: dict[str, str] = {
    "untranslated": "no finished translation into the digest's language",
    "duplicate_story": "another source's item of the same story is in",
    "over_cap": "over the digest's max_items",
    "over_source_cap": "over the exchange's max_per_source for its source",
    "dropped": "dropped by an editor",
    "event_before_digest": "event before the digest goes out",
}
COVERAGE_PER_SOURCE = 0.5
RECENCY_FLOOR = 0.8


@dataclass(frozen=True)
class Candidate:
    """An item of the period, as the ranking sees it."""

    item_id: int
    source_id: str
    title: str
    category: str  # news | events
    published_at: datetime
    translated: bool  # a finished translation into the digest's language exists (or same language)
    weight: float = 1.0  # source weight × exchange source_weights
    story_group: int | None = None
    event_start: datetime | None = None
    # How many sources of the period's candidates carry its story, when the caller counted
    # them (the build asks the database, which sees every candidate); None: counted here
    # over the candidates given.
    story_sources: int | None = None


@dataclass(frozen=True)
class Steering:
    """What editors said about a digest; kept across rebuilds."""

    pins: Collection[int] = ()
    drops: Collection[int] = ()
    ranks: Mapping[int, int] = field(default_factory=dict)  # item id → editor's place (1-based)


@dataclass(frozen=True)
class Policy:
    max_items: int = 20
    max_per_source: int = 5
    include_untranslated: bool = False


@dataclass
class Choice:
    """The verdict on one candidate: included at ``position`` in ``section``, or left out."""

    candidate: Candidate
    included: bool
    section: str
    score: float
    reason: dict[str, Any]
    position: int = 0  # 1-based across sections when included; 0 when left out
    left_out: str | None = None  # one of LEFT_OUT_REASONS

    @property
    def item_id(self) -> int:
        return self.candidate.item_id


@dataclass
class Selection:
    """The included choices in order and the left-out ones (by reason, then score).

    ``left_out`` may be only some of the left-out candidates (the build ranks only those that
    could matter, see :func:`cut_is_safe`); ``counts`` then has how many were left out for
    each reason in all."""

    included: list[Choice]
    left_out: list[Choice]
    counts: dict[str, int] | None = None

    def section_counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.included if c.section == s) for s in SECTIONS}

    def left_out_counts(self) -> dict[str, int]:
        """How many candidates were left out for each reason (reasons with none omitted)."""
        if self.counts is not None:
            return {r: self.counts[r] for r in LEFT_OUT_REASONS if self.counts.get(r)}
        out: dict[str, int] = {}
        for ch in self.left_out:
            code = ch.left_out or "over_cap"
            out[code] = out.get(code, 0) + 1
        return {r: out[r] for r in LEFT_OUT_REASONS if r in out}

    @property
    def left_out_count(self) -> int:
        return sum(self.left_out_counts().values())


def left_out_text(code: str | None) -> str:
    """:data:`LEFT_OUT_TEXT` of a left-out code (the code itself when unknown)."""
    return LEFT_OUT_TEXT.get(code or "", code or "")


def section_of(category: str, event_start: datetime | None = None) -> str:
    """The section of an item: "events" for an events item or any item with a start."""
    return "events" if category == "events" or event_start is not None else "news"


def _before_digest(c: Candidate, digest_date: datetime) -> bool:
    return c.event_start is not None and c.event_start < digest_date


def _recency(c: Candidate, start: datetime, end: datetime) -> float:
    if c.event_start is not None:
        return 1.0
    span = (end - start).total_seconds()
    if span <= 0:
        return 1.0
    frac = (c.published_at - start).total_seconds() / span
    frac = min(1.0, max(0.0, frac))
    return RECENCY_FLOOR + (1.0 - RECENCY_FLOOR) * frac


def score_parts(
    c: Candidate, *, sources_in_story: int, period_start: datetime, period_end: datetime
) -> dict[str, Any]:
    """The parts of an item's score, as shown to editors (``reason`` in ``--json``)."""
    coverage = 1.0 + COVERAGE_PER_SOURCE * max(0, sources_in_story - 1)
    recency = _recency(c, period_start, period_end)
    score = c.weight * coverage * recency
    return {
        "weight": round(c.weight, 3),
        "sources": sources_in_story,
        "coverage": round(coverage, 3),
        "recency": round(recency, 3),
        "score": round(score, 3),
    }


def _event_key(ch: Choice) -> tuple[int, float, float, int]:
    """Upcoming events by start, then undated ones by score, then (pinned) ones that had
    started before the digest's date, latest first. Whether an event had started is the
    selection's verdict kept on its reason (``before_digest``), not a comparison with the
    clock, so an editor's reordering later renumbers the digest the same way."""
    at = ch.candidate.event_start
    if at is None:
        return (1, 0.0, -ch.score, ch.item_id)
    if ch.reason.get("before_digest"):
        return (2, -at.timestamp(), 0.0, ch.item_id)
    return (0, at.timestamp(), 0.0, ch.item_id)


def _scored(
    candidates: Sequence[Candidate],
    *,
    steering: Steering,
    period_start: datetime,
    period_end: datetime,
) -> list[Choice]:
    """Every candidate as a (not yet included) choice with its score and reason, best first:
    pinned, then score, then newer, then id (a stable, total order). An event that started
    before the digest's date (``period_end``) is marked ``before_digest``."""
    pins = set(steering.pins)
    # How many distinct sources carried each story (counting every member of the group).
    group_sources: dict[int, set[str]] = {}
    for c in candidates:
        if c.story_group is not None:
            group_sources.setdefault(c.story_group, set()).add(c.source_id)

    choices: list[Choice] = []
    for c in candidates:
        if c.story_sources is not None:
            n = c.story_sources
        else:
            n = len(group_sources[c.story_group]) if c.story_group is not None else 1
        parts = score_parts(c, sources_in_story=n, period_start=period_start, period_end=period_end)
        reason: dict[str, Any] = dict(parts)
        if c.item_id in pins:
            reason["pinned"] = True
        if c.item_id in steering.ranks:
            reason["editor_rank"] = steering.ranks[c.item_id]
        if not c.translated:
            reason["untranslated"] = True
        if _before_digest(c, period_end):
            reason["before_digest"] = True
        choices.append(
            Choice(
                c,
                included=False,
                section=section_of(c.category, c.event_start),
                score=parts["score"],
                reason=reason,
            )
        )
    choices.sort(key=lambda ch: rank_key(ch, pins))
    return choices


def _cap_key(c: Candidate) -> str:
    """What ``max_per_source`` counts: a source's items per section."""
    return f"{section_of(c.category, c.event_start)}:{c.source_id}"


def _left_out_why(
    c: Candidate,
    *,
    policy: Policy,
    pins: AbstractSet[int],
    drops: AbstractSet[int],
    group_rep: Mapping[int, int],
    per_source: Mapping[str, int],
    total: int,
    before_digest: bool = False,
) -> str | None:
    """Why ``c`` stays out, given what is in so far; None when it goes in."""
    pinned = c.item_id in pins
    if c.item_id in drops:
        return "dropped"
    if not pinned and before_digest:
        return "event_before_digest"
    if not c.translated and not policy.include_untranslated:
        return "untranslated"
    if not pinned and c.story_group is not None and c.story_group in group_rep:
        return "duplicate_story"
    if not pinned and per_source.get(_cap_key(c), 0) >= policy.max_per_source:
        return "over_source_cap"
    if not pinned and total >= policy.max_items:
        return "over_cap"
    return None


def _decide(
    choices: Sequence[Choice], *, policy: Policy, steering: Steering
) -> tuple[list[Choice], list[Choice]]:
    """Go through ``choices`` best first, letting each in or out (see the module docstring):
    (included, left out), each choice marked."""
    pins, drops = set(steering.pins), set(steering.drops)
    # A story an editor dropped stays out: its other members do not take its place (an editor
    # who wants another source's version pins that one).
    group_rep: dict[int, int] = {
        ch.candidate.story_group: ch.item_id
        for ch in choices
        if ch.item_id in drops and ch.candidate.story_group is not None
    }
    per_source: dict[str, int] = {}  # by _cap_key
    included: list[Choice] = []
    left_out: list[Choice] = []
    for ch in choices:
        c = ch.candidate
        why = _left_out_why(
            c,
            policy=policy,
            pins=pins,
            drops=drops,
            group_rep=group_rep,
            per_source=per_source,
            total=len(included),
            before_digest=bool(ch.reason.get("before_digest")),
        )
        if why is not None:
            if why == "duplicate_story" and c.story_group is not None:
                ch.reason["duplicate_of"] = group_rep[c.story_group]
            ch.left_out = why
            ch.reason["left_out"] = why
            left_out.append(ch)
            continue
        ch.included = True
        if c.story_group is not None:
            group_rep.setdefault(c.story_group, c.item_id)
        per_source[_cap_key(c)] = per_source.get(_cap_key(c), 0) + 1
        included.append(ch)
    return included, left_out


def select(
    candidates: Sequence[Candidate],
    *,
    policy: Policy,
    period_start: datetime,
    period_end: datetime,
    now: datetime,
    steering: Steering | None = None,
) -> Selection:
    """Rank the period's candidates and decide which go in (see the module docstring).

    ``period_end`` is also the digest's date, from which events are upcoming. ``now`` is
    when the build runs; no verdict depends on it (see the module docstring)."""
    steering = steering or Steering()
    choices = _scored(
        candidates, steering=steering, period_start=period_start, period_end=period_end
    )
    included, left_out = _decide(choices, policy=policy, steering=steering)

    # Duplicates of an included story point at it; record on the representative what it stands
    # for, so the reader can see "also reported by".
    by_id = {ch.item_id: ch for ch in included}
    for ch in left_out:
        rep = ch.reason.get("duplicate_of")
        if rep in by_id:
            by_id[rep].reason.setdefault("duplicates", []).append(ch.item_id)

    ordered = arrange(included, steering=steering)
    left_out.sort(
        key=lambda ch: (LEFT_OUT_REASONS.index(ch.left_out or "over_cap"), -ch.score, ch.item_id)
    )
    return Selection(included=ordered, left_out=left_out)


def arrange(included: Sequence[Choice], *, steering: Steering) -> list[Choice]:
    """Order included items and number them 1.. across sections (news, then events).

    Within a section: the editor's order first; then news pinned-first by score (newer first
    on ties), events by start (:func:`_event_key`). Used by :func:`select` and again after an
    editor's change, so a rebuild with the same steering gives the same order.
    """
    pins = set(steering.pins)

    def editor_first(ch: Choice) -> int:
        r = steering.ranks.get(ch.item_id)
        return r if r is not None else 1_000_000

    def news_key(ch: Choice) -> tuple[Any, ...]:
        return (
            editor_first(ch),
            ch.item_id not in pins,
            -ch.score,
            -ch.candidate.published_at.timestamp(),
            ch.item_id,
        )

    news = sorted((ch for ch in included if ch.section == "news"), key=news_key)
    events = sorted(
        (ch for ch in included if ch.section == "events"),
        key=lambda ch: (editor_first(ch), *_event_key(ch)),
    )
    ordered = news + events
    for i, ch in enumerate(ordered, start=1):
        ch.position = i
    return ordered


# -- ranking only what can matter ------------------------------------------------------------
# Scoring 20,000 candidates in Python to keep 20 was the whole cost of a large build (issue
# 16). The build lets the database hand in only the first ``K + 1`` candidates of each *run*:
# the candidates of one source and section that share their story's source count and are
# both dated events or both not. Inside a run the weight, the coverage and the way recency is
# reckoned are the same, so the score can only grow with the publication time, and "newest
# first, then by id" — what the database sorts by — is exactly :func:`rank_key`'s order. The
# last candidate handed in (the run's *sentinel*) is therefore ahead of every one left behind.
#
# Why that is enough: :func:`_decide` walks the candidates best first, and a candidate that
# stays out changes nothing for those after it. So ranking any subset that holds every
# candidate the full ranking would include gives the same digest. :func:`cut_is_safe` checks
# that for each run cut short, ``max_per_source`` included items of its source and section,
# or ``max_items`` included items in all, rank ahead of its sentinel: then when the walk
# would reach a candidate left behind, its section (or the digest) is already full.


def rank_key(ch: Choice, pins: AbstractSet[int]) -> tuple[bool, float, float, int]:
    """The ranking's order, best first: pinned, then score, then newer, then id (a stable,
    total order)."""
    return (ch.item_id not in pins, -ch.score, -ch.candidate.published_at.timestamp(), ch.item_id)


def cut_is_safe(
    selection: Selection, sentinels: Collection[int], *, policy: Policy, steering: Steering
) -> bool:
    """Whether ``selection``, ranked over the candidates handed in, is the selection of all
    of them: for each run cut short (named by its ``sentinels``' item ids, see the comment
    above) its source's section or the digest was full before the sentinel. False asks the
    caller to hand in more."""
    pins = set(steering.pins)
    by_id = {ch.item_id: ch for ch in [*selection.included, *selection.left_out]}
    included = [(rank_key(ch, pins), ch) for ch in selection.included]
    for item_id in sentinels:
        sentinel = by_id[item_id]
        key, cap = rank_key(sentinel, pins), _cap_key(sentinel.candidate)
        ahead = [ch for k, ch in included if k < key]
        in_section = sum(1 for ch in ahead if _cap_key(ch.candidate) == cap)
        if in_section < policy.max_per_source and len(ahead) < policy.max_items:
            return False
    return True


def left_behind_reason(
    selection: Selection, section: str, source_id: str, *, policy: Policy
) -> str:
    """Why candidates left behind by a cut that :func:`cut_is_safe` accepted (and of no
    included or dropped story) stayed out: ``over_source_cap`` when their source's section
    is full, else ``over_cap``. Their section was full, or the digest was, before them (and
    once the digest is full nothing more goes in), so its final count decides."""
    n = sum(
        1
        for ch in selection.included
        if ch.section == section and ch.candidate.source_id == source_id
    )
    return "over_source_cap" if n >= policy.max_per_source else "over_cap"
