"""The pick-up matcher (pure: no database, no network).

A **story** is one item of a sent digest, with the text the digest carried (its translation
into the receiving language) and its original text. A **candidate** is an item that a source
of the receiving region published after the digest was sent. :class:`Matcher` is built once
over many stories and asked, candidate by candidate, which stories that candidate retells;
its cost must not grow as stories × candidates (an index over the stories, so a candidate is
compared with the few stories it shares rare features with).

Precision first: a wrong pick-up in a funder's report is worse than a missed one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["CandidateText", "Match", "Matcher", "StoryText"]


@dataclass(frozen=True)
class StoryText:
    """One story of a sent digest."""

    key: int  # the story's item id
    language: str  # the receiving language: the language of ``title``/``summary``
    title: str  # as the digest carried it (translated)
    summary: str
    original_language: str
    original_title: str
    original_summary: str
    published_at: datetime | None = None


@dataclass(frozen=True)
class CandidateText:
    """One item of the receiving side's media."""

    key: int  # its item id
    language: str
    title: str
    summary: str
    published_at: datetime | None = None


@dataclass(frozen=True)
class Match:
    """A candidate that retells a story: score in 0..1 and what it rests on."""

    story: int  # StoryText.key
    candidate: int  # CandidateText.key
    score: float
    evidence: dict[str, Any] = field(default_factory=dict)


class Matcher:
    """An index over ``stories``; :meth:`matches` says which of them a candidate retells."""

    def __init__(self, stories: Sequence[StoryText], *, min_score: float = 0.5) -> None:
        raise NotImplementedError("the matcher is being built (issue 14)")

    def matches(self, candidate: CandidateText) -> list[Match]:
        """The stories ``candidate`` retells, best first, each with score ≥ ``min_score``."""
        raise NotImplementedError
