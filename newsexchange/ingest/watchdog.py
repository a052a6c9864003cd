"""The source watchdog: is each source publishing what feeds.yaml says it publishes?

Judged from what a source actually published (its stored items), three findings (issue 15 —
``yle-pohjois-karjala`` read South Karelia's topic for months and nothing said so):

- **off-region**: none of its recent items names a place of its region. The places are the
  region's ``places`` in feeds.yaml and the glossary's terms of which any form is one of them,
  with all their forms ("Petroskoi" names Петрозаводск too), matched with case endings
  (:class:`~newsexchange.ingest.places.PlaceMatcher`). The evidence names the places its
  items do mention, from every region and the whole glossary — "Lappeenranta 12×" is what
  gives a wrong topic away — or, when it names no known place at all, its most frequent
  capitalised words.
- **stale**: no new item (``first_seen_at``) for the source's ``stale_days`` (default 30),
  judged only once it has been watched that long (since its first successful fetch): a
  source added yesterday is not stale, one that never produced an item in ``stale_days`` of
  successful fetches is. A *failing* source is reported as failing instead: the operators'
  "source failing" alert (``alerts.py``) covers it, and the watchdog does not alert twice.
- **language**: for more than half of its recent items with a detected language, the
  detection differs from the language the source declares.

"Recent" is the newest :data:`RECENT_ITEMS` items first seen in the last :data:`RECENT_DAYS`
days, and off-region and language are judged only on at least :data:`MIN_ITEMS` of them
(ten teasers with no town in them are not yet evidence; after a URL is fixed in feeds.yaml the
old items leave the window after 50 new ones or 60 days). Only the title and the start of the
summary are read, in the original language (translations would name the places anyway).

:func:`find_findings` decides over plain rows; :func:`watch_sources` reads them (two grouped
queries for all sources, ``db/queries/watchdog.py``) and is what ``check --sources``,
``/readyz`` and the alerts job call.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from newsexchange.config import Config
from newsexchange.db import Database
from newsexchange.db.queries import watchdog as queries
from newsexchange.ingest.places import PlaceMatcher
from newsexchange.translate.glossary import Glossary, load_glossary

__all__ = [
    "LANGUAGE_SHARE",
    "MIN_ITEMS",
    "RECENT_DAYS",
    "RECENT_ITEMS",
    "Finding",
    "Places",
    "RecentItem",
    "WatchReport",
    "WatchedSource",
    "find_findings",
    "places_of",
    "watch_sources",
]

#: How many of a source's newest items are "recent" …
RECENT_ITEMS = 50
#: … of those first seen in this many days.
RECENT_DAYS = 60
#: Off-region and language are judged on at least this many recent items.
MIN_ITEMS = 10
#: A source is flagged for language when more than this share of its detections differ.
LANGUAGE_SHARE = 0.5
#: How many places (or words) the evidence names.
EVIDENCE_NAMES = 5

#: The findings that are mailed (a failing source is alerted by alerts.py already).
ALERTED = ("off-region", "stale", "language")

_SENTENCE_START = re.compile(r"(?:^|[.!?:«\"“]\s*)([^\W\d_][\w-]*)", re.MULTILINE)
_CAPITALISED = re.compile(r"\b[A-ZÄÖÅÜА-ЯЁ][\w-]{3,}")


@dataclass(frozen=True)
class Finding:
    """One thing wrong with one source, with the evidence a person can check."""

    source_id: str
    kind: str  # off-region | stale | language | failing
    message: str  # one line, starting with the source's id
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The alert key: one per source and finding (alerts.py mails it once)."""
        return f"watchdog:{self.kind}:{self.source_id}"

    @property
    def alerted(self) -> bool:
        return self.kind in ALERTED

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source_id,
            "finding": self.kind,
            "message": self.message,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class RecentItem:
    text: str  # title and the start of the summary, original language
    detected_language: str | None
    language_mismatch: bool


@dataclass(frozen=True)
class WatchedSource:
    """What the watchdog knows of one enabled source (plain values from feeds.yaml and the
    ``sources`` and ``items`` tables). ``items``: its recent items, newest first."""

    id: str
    region: str
    language: str
    stale_days: int
    watched_since: datetime | None
    failing_since: datetime | None
    last_new_at: datetime | None
    items: tuple[RecentItem, ...] = ()


@dataclass(frozen=True)
class Places:
    """Each region's places, and every place any region or the glossary knows (for evidence,
    each form shown as its term's name in the source's language)."""

    regions: Mapping[str, PlaceMatcher]
    known: PlaceMatcher
    display: Mapping[str, Mapping[str, str]]  # form → {language: name}

    def name(self, form: str, language: str) -> str:
        names = self.display.get(form)
        return names.get(language, form) if names else form


def places_of(
    regions: Mapping[str, Sequence[str]], terms: Sequence[Mapping[str, Sequence[str]]]
) -> Places:
    """The matchers for ``regions`` (region id → its places) and glossary ``terms`` (each a
    mapping language → forms). A term belongs to a region when any of its forms is one of the
    region's places (case-insensitive); it then counts with all its forms."""
    per_region: dict[str, PlaceMatcher] = {}
    for rid, names in regions.items():
        own = {n.casefold() for n in names}
        extra = [
            form
            for term in terms
            if any(f.casefold() in own for forms in term.values() for f in forms)
            for forms in term.values()
            for form in forms
        ]
        per_region[rid] = PlaceMatcher([*names, *extra])
    display: dict[str, dict[str, str]] = {}
    every: list[str] = [n for names in regions.values() for n in names]
    for term in terms:
        names_by_lang = {lang: forms[0] for lang, forms in term.items() if forms}
        for forms in term.values():
            for form in forms:
                every.append(form)
                display.setdefault(form, names_by_lang)
    return Places(regions=per_region, known=PlaceMatcher(every), display=display)


def find_findings(now: datetime, sources: Sequence[WatchedSource], places: Places) -> list[Finding]:
    """What is wrong with each source, in the order given (pure: rows in, findings out)."""
    out: list[Finding] = []
    for src in sources:
        for check in (_stale, _off_region, _language):
            finding = check(now, src, places)
            if finding is not None:
                out.append(finding)
    return out


def _stale(now: datetime, src: WatchedSource, _places: Places) -> Finding | None:
    if src.failing_since is not None:
        return Finding(
            src.id,
            "failing",
            f"{src.id}: failing since {src.failing_since:%Y-%m-%d %H:%M} UTC "
            "(the source-failing alert covers it)",
            {"failing_since": src.failing_since.isoformat()},
        )
    window = timedelta(days=src.stale_days)
    if src.watched_since is None or now - src.watched_since < window:
        return None  # never fetched successfully, or not watched long enough to judge
    if src.last_new_at is None:
        days = (now - src.watched_since).days
        return Finding(
            src.id,
            "stale",
            f"{src.id}: no item at all in {days} days of successful fetches "
            f"(watched since {src.watched_since:%Y-%m-%d})",
            {"days": days, "last_new_at": None, "stale_days": src.stale_days},
        )
    if now - src.last_new_at < window:
        return None
    days = (now - src.last_new_at).days
    return Finding(
        src.id,
        "stale",
        f"{src.id}: no new item for {days} days (last {src.last_new_at:%Y-%m-%d})",
        {"days": days, "last_new_at": src.last_new_at.isoformat(), "stale_days": src.stale_days},
    )


def _off_region(_now: datetime, src: WatchedSource, places: Places) -> Finding | None:
    if len(src.items) < MIN_ITEMS:
        return None
    own = places.regions.get(src.region)
    if not own:
        return None  # a region without places cannot be judged
    if any(own.mentions(item.text) for item in src.items):
        return None
    counts: Counter[str] = Counter()
    for item in src.items:
        counts.update({places.name(p, src.language) for p in places.known.found(item.text)})
    evidence: dict[str, Any] = {"items": len(src.items), "region": src.region}
    if counts:
        named = sorted(counts.items(), key=lambda nc: (-nc[1], nc[0]))[:EVIDENCE_NAMES]
        evidence["places"] = dict(named)
        what = "its items name " + ", ".join(f"{n} {c}×" for n, c in named)
    else:
        words = _frequent_names(item.text for item in src.items)
        evidence["places"] = {}
        evidence["words"] = dict(words)
        what = "it names no known place" + (
            "; frequent names: " + ", ".join(f"{w} {c}×" for w, c in words) if words else ""
        )
    return Finding(
        src.id,
        "off-region",
        f"{src.id}: none of its last {len(src.items)} items names a place of {src.region} ({what})",
        evidence,
    )


def _frequent_names(texts: Iterable[str]) -> list[tuple[str, int]]:
    """The capitalised words most items use, not counting a sentence's first word: what a
    source writes about when it names no place the exchange knows (cheap, and a hint only)."""
    counts: Counter[str] = Counter()
    for text in texts:
        first = {m.group(1) for m in _SENTENCE_START.finditer(text)}
        words = {w for w in _CAPITALISED.findall(text) if w not in first}
        counts.update(words)
    ranked = sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))
    return [(w, c) for w, c in ranked[:EVIDENCE_NAMES] if c >= 2]


def _language(_now: datetime, src: WatchedSource, _places: Places) -> Finding | None:
    detected = [i for i in src.items if i.detected_language]
    if len(detected) < MIN_ITEMS:
        return None
    wrong = [i for i in detected if i.language_mismatch]
    if len(wrong) <= LANGUAGE_SHARE * len(detected):
        return None
    langs = Counter(i.detected_language for i in wrong).most_common()
    shown = ", ".join(f"{lang} {n}×" for lang, n in langs[:3])
    return Finding(
        src.id,
        "language",
        f"{src.id}: declared {src.language}, but {len(wrong)} of its last {len(detected)} items "
        f"with a detected language are not ({shown})",
        {
            "declared": src.language,
            "detected": {str(lang): n for lang, n in langs},
            "items": len(detected),
            "mismatched": len(wrong),
        },
    )


# -- the step ----------------------------------------------------------------------------------


@dataclass
class WatchReport:
    checked: int = 0  # enabled sources judged
    findings: list[Finding] = field(default_factory=list)
    unfetched: list[str] = field(default_factory=list)  # enabled, never fetched: not judged

    @property
    def flagged(self) -> list[str]:
        return sorted({f.source_id for f in self.findings if f.alerted})

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "flagged": self.flagged,
            "findings": [f.to_json() for f in self.findings],
            "unfetched": self.unfetched,
        }


def _glossary(config: Config) -> Glossary:
    if not config.translation.glossary:
        return Glossary()
    return load_glossary(config.resolve(config.translation.glossary))


def watch_sources(db: Database, config: Config, *, now: datetime) -> WatchReport:
    """The findings for every enabled source (reads only). Raises ConfigError when the
    glossary named in feeds.yaml cannot be read."""
    glossary = _glossary(config)
    places = places_of(
        {rid: r.places for rid, r in config.regions.items()},
        [t.forms for t in glossary.terms if not t.keep],
    )
    enabled = [s for s in config.sources if s.enabled]
    with db.session() as s:
        activity = queries.source_activity(s)
        rows = queries.recent_items(
            s, since=now - timedelta(days=RECENT_DAYS), per_source=RECENT_ITEMS
        )
    items: dict[str, list[RecentItem]] = {}
    for source_id, title, summary, detected, mismatch in rows:
        items.setdefault(source_id, []).append(
            RecentItem(f"{title}\n{summary}", detected, mismatch)
        )
    watched = []
    unfetched = []
    for src in enabled:
        act = activity.get(src.id)
        if act is None:
            unfetched.append(src.id)  # never fetched: nothing to judge yet
            continue
        watched.append(
            WatchedSource(
                id=src.id,
                region=src.region,
                language=src.language,
                stale_days=src.stale_days,
                watched_since=act["watched_since"],
                failing_since=act["failing_since"],
                last_new_at=act["last_new_at"],
                items=tuple(items.get(src.id, ())),
            )
        )
    return WatchReport(
        checked=len(watched), findings=find_findings(now, watched, places), unfetched=unfetched
    )
