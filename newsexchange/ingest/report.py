"""What one fetch run reports: a :class:`SourceOutcome` per source, gathered in a
:class:`FetchReport` (``fetch --json`` prints its ``to_json()``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["FetchReport", "Progress", "SourceOutcome"]


@dataclass
class SourceOutcome:
    """What happened to one source in one run."""

    source: str
    url: str
    status: str  # ok | not_modified | failed | skipped
    http_status: int | None = None
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    entries: int = 0
    error: str | None = None
    problem: str | None = None  # a recoverable parse problem (partly broken feed)
    parser: str | None = None
    next_attempt_at: datetime | None = None
    moved_to: str | None = None  # permanent redirect: the stored URL now
    skipped_off_region: int = 0  # require_place: entries naming no place of the region
    articles: int = 0  # fulltext: article texts stored as summaries
    cancelled: int = 0  # calendars: stored events the calendar no longer carries

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"source": self.source, "url": self.url, "status": self.status}
        for key in ("http_status", "error", "problem", "parser", "next_attempt_at", "moved_to"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value.isoformat() if isinstance(value, datetime) else value
        if self.status == "ok":
            data.update(
                entries=self.entries, new=self.new, updated=self.updated, unchanged=self.unchanged
            )
            # Only when they happened: most sources use neither option.
            for key in ("skipped_off_region", "articles", "cancelled"):
                if getattr(self, key):
                    data[key] = getattr(self, key)
        return data


@dataclass
class FetchReport:
    """The result of :func:`run_fetch`; ``to_json()`` is what ``fetch --json`` prints.

    ``sources`` counts every source considered: ``ok`` (fetched and parsed) +
    ``not_modified`` (304 or an unchanged file) + ``failed`` + ``skipped`` (resting after
    failures).
    """

    outcomes: list[SourceOutcome] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    def _count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def ok(self) -> int:
        return self._count("ok")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def not_modified(self) -> int:
        return self._count("not_modified")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def new_items(self) -> int:
        return sum(o.new for o in self.outcomes)

    @property
    def updated_items(self) -> int:
        return sum(o.updated for o in self.outcomes)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [
            {"source": o.source, "url": o.url, "error": o.error, "status": o.http_status}
            for o in self.outcomes
            if o.status == "failed"
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "sources": len(self.outcomes),
            "ok": self.ok,
            "not_modified": self.not_modified,
            "failed": self.failed,
            "skipped": self.skipped,
            "new_items": self.new_items,
            "updated_items": self.updated_items,
            "failures": self.failures,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "results": [o.to_json() for o in self.outcomes],
        }


Progress = Callable[[SourceOutcome, int, int], None]  # (outcome, done, total)
