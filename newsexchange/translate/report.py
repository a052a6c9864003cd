"""What a translate run did: :class:`TranslateReport` (``translate --json`` prints its
``to_json()``; the service logs it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TranslateReport"]


@dataclass
class TranslateReport:
    items_seen: int = 0
    items_translated: int = 0
    translations_done: int = 0
    originals: int = 0
    cache_hits: int = 0
    fields_from_memory: int = 0
    segments_from_memory: int = 0
    segments_sent: int = 0
    characters_sent: dict[str, int] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    provider_errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    provider_seconds: float = 0.0
    elapsed_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "items_seen": self.items_seen,
            "items_translated": self.items_translated,
            "translations_done": self.translations_done,
            "originals": self.originals,
            "cache_hits": self.cache_hits,
            "fields_from_memory": self.fields_from_memory,
            "segments_from_memory": self.segments_from_memory,
            "segments_sent": self.segments_sent,
            "characters_sent": dict(sorted(self.characters_sent.items())),
            "requests": dict(sorted(self.requests.items())),
            "provider_errors": self.provider_errors,
            "pending": self.pending,
            # An outage fails every item: the first 200 say why, the total says how many.
            "failed": self.failed[:200],
            "failed_total": len(self.failed),
            "provider_seconds": round(self.provider_seconds, 3),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }
