"""The pick-up set (``tests/data/pickup/``) as the matcher's inputs, and its scoring.

Shared by ``tests/test_pickup_quality.py`` and ``benchmarks/impact.py``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import yaml

from newsexchange.impact import CandidateText, Matcher, StoryText

DATA = Path(__file__).resolve().parent / "data" / "pickup"


@dataclass(frozen=True)
class Case:
    story: StoryText
    direction: str  # "fi→ru", "ru→fi", "fi→en", "ru→en"
    retellings: list[CandidateText]
    near_misses: list[tuple[str, CandidateText]]  # (kind, candidate)


def load(*, holdout: bool = False) -> list[Case]:
    """The set; ``holdout=True``: only the held-out stories (``holdout.yaml``, never tuned on)."""
    cases = []
    for path in sorted(DATA.glob("*.yaml")):
        if (path.name == "holdout.yaml") != holdout:
            continue
        for raw in yaml.safe_load(path.read_text(encoding="utf-8"))["stories"]:
            cases.append(_case(raw))
    return cases


def _when(raw: Any) -> datetime:
    return datetime.combine(raw, time(8), tzinfo=UTC)


def _case(raw: dict[str, Any]) -> Case:
    sid = int(raw["id"])
    published = _when(raw["published_at"])
    o, t = raw["original"], raw["translation"]
    story = StoryText(
        key=sid,
        language=t["language"],
        title=t["title"],
        summary=t["summary"],
        original_language=o["language"],
        original_title=o["title"],
        original_summary=o["summary"],
        published_at=published,
    )
    later = published + timedelta(days=3)
    retellings = [
        CandidateText(sid * 100 + i, r["language"], r["title"], r["summary"], later)
        for i, r in enumerate(raw["retellings"], 1)
    ]
    misses = [
        (
            m["kind"],
            CandidateText(sid * 100 + 50 + i, m["language"], m["title"], m["summary"], later),
        )
        for i, m in enumerate(raw["near_misses"], 1)
    ]
    return Case(story, f"{o['language']}→{t['language']}", retellings, misses)


@dataclass
class Quality:
    true_positives: int
    false_positives: list[tuple[int, int, float]]  # (story, candidate, score)
    missed: list[tuple[int, int, float]]  # (story, retelling, best score it got for that story)
    retellings: int

    @property
    def precision(self) -> float:
        found = self.true_positives + len(self.false_positives)
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.retellings if self.retellings else 1.0


def evaluate(cases: list[Case], *, min_score: float = 0.5) -> dict[str, Quality]:
    """Every candidate against all stories together (as in production): overall and per direction."""
    matcher = Matcher([c.story for c in cases], min_score=min_score)
    loose = Matcher([c.story for c in cases], min_score=0.0)
    out: dict[str, Quality] = {}
    for c in cases:
        for label in ("all", c.direction):
            out.setdefault(label, Quality(0, [], [], 0))
        for cand in c.retellings:
            found = matcher.matches(cand)
            for label in ("all", c.direction):
                q = out[label]
                q.retellings += 1
                if any(m.story == c.story.key for m in found):
                    q.true_positives += 1
                else:
                    best = [m.score for m in loose.matches(cand) if m.story == c.story.key]
                    q.missed.append((c.story.key, cand.key, max(best, default=0.0)))
                for m in found:
                    if m.story != c.story.key:
                        q.false_positives.append((m.story, cand.key, m.score))
        for _kind, cand in c.near_misses:
            for m in matcher.matches(cand):
                for label in ("all", c.direction):
                    out[label].false_positives.append((m.story, cand.key, m.score))
    return out
