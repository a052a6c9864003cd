"""Which translations an item needs, decided over plain data (no database, no network).

- Every exchange whose ``from`` includes the item's region wants the exchange's language;
  English is wanted for every item (the exchange's reports go out in English too).
- The source language is the *detected* one when detection gave one of the exchange's languages
  (a Finnish site posting an English press release), else the one the source declares (a short
  Finnish title detected as Estonian is still Finnish).
- An item already in a wanted language gets that language as "original", without a request.
- A translation is done when its ``source_hash`` is the item's current text hash; an item edited
  at the source since then is translated again. Pending ones wait for ``next_attempt_at``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from newsexchange.common.retry import Backoff
from newsexchange.config import LANGUAGES

Action = Literal["original", "translate"]


@dataclass(frozen=True)
class Existing:
    """What the database holds for one (item, language)."""

    status: str
    provider: str | None
    source_hash: str | None
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class Need:
    language: str
    action: Action


def text_hash(title: str, summary_html: str, summary_text: str) -> str:
    """The hash of what gets translated; a change in any of it means translating again."""
    h = hashlib.sha256()
    for part in (title, summary_html, summary_text):
        h.update(part.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


def wanted_languages(region: str, exchanges: Iterable[tuple[Sequence[str], str]]) -> list[str]:
    """Languages an item of ``region`` must exist in: each exchange is ``(from, language)``."""
    out = ["en"]
    for from_, language in exchanges:
        if region in from_ and language not in out:
            out.append(language)
    return out


def source_language(declared: str, detected: str | None) -> str:
    if detected and detected in LANGUAGES:
        return detected
    return declared


def decide(
    *,
    wanted: Sequence[str],
    source: str,
    current_hash: str,
    existing: dict[str, Existing],
    now: datetime,
) -> list[Need]:
    """What to do for one item now; languages that need nothing (done and current, or waiting
    for their retry time) are left out."""
    needs: list[Need] = []
    for lang in wanted:
        have = existing.get(lang)
        if lang == source:
            if (
                have
                and have.status == "done"
                and have.provider == "original"
                and have.source_hash == current_hash
            ):
                continue
            needs.append(Need(lang, "original"))
            continue
        if have is not None:
            if have.status == "done" and have.source_hash == current_hash:
                continue
            if (
                have.status in ("pending", "failed")
                and have.source_hash == current_hash
                and have.next_attempt_at is not None
                and have.next_attempt_at > now
            ):
                continue
        needs.append(Need(lang, "translate"))
    return needs


def backoff_seconds(attempts: int, *, cap_hours: float, retry_after: float | None = None) -> float:
    """Delay before the next attempt: 5 min, 10, 20 … up to ``cap_hours``, never earlier than a
    provider's Retry-After (itself at most ``cap_hours``)."""
    return Backoff(base=300.0, cap=cap_hours * 3600.0).delay(attempts, retry_after)
