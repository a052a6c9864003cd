"""What one page of items asks of the translate step, as plain jobs (pure: no database, no
network).

:func:`snapshot` reads an item (and its stored translations) into one :class:`Job` per language
that needs work, as :func:`.plan.decide` says; the step then fills each job's fields
(:mod:`.fill`) and writes them (:mod:`.rows` builds the row).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from newsexchange.db import Item, Translation
from newsexchange.translate.base import lost_text
from newsexchange.translate.fields import FieldPlan
from newsexchange.translate.plan import (
    Existing,
    decide,
    source_language,
    text_hash,
    wanted_languages,
)

__all__ = ["FieldJob", "Job", "lost", "snapshot"]

#: ``(from regions, language)`` of every exchange.
Exchanges = list[tuple[Sequence[str], str]]


@dataclass
class FieldJob:
    name: str  # title | summary_html | summary_text
    value: str
    html: bool
    result: str | None = None
    origin: str | None = None  # editor / memory / provider name when known
    plan: FieldPlan | None = None


@dataclass
class Job:
    item_id: int
    source: str
    target: str
    action: str
    source_hash: str
    item_title: str
    item_summary_html: str
    item_summary_text: str
    fields: list[FieldJob] = field(default_factory=list)
    error: str | None = None
    retryable: bool = True
    retry_after: float | None = None

    @property
    def pair(self) -> tuple[str, str]:
        return (self.source, self.target)


def snapshot(
    item: Item,
    exchanges: Exchanges,
    now: datetime,
    detect: Callable[[str], str | None] | None,
) -> list[Job]:
    """The jobs one item needs now (none when every wanted language is current)."""
    detected = item.detected_language
    if detected is None and detect is not None:
        try:
            detected = detect(f"{item.title}\n{item.summary_text}")
        except Exception:  # detection is a hint; never let it stop translation
            detected = None
    src = source_language(item.language, detected)
    h = text_hash(item.title, item.summary_html, item.summary_text)
    existing = {
        t.language: Existing(t.status, t.provider, t.source_hash, t.next_attempt_at)
        for t in item.translations
        # A "done" translation that lost the item's words (stored blank before empty answers
        # were refused) is no translation: it is done again.
        if not (t.status == "done" and t.provider != "original" and lost(item, t))
    }
    needs = decide(
        wanted=wanted_languages(item.region, exchanges),
        source=src,
        current_hash=h,
        existing=existing,
        now=now,
    )
    jobs = []
    for need in needs:
        job = Job(
            item_id=item.id,
            source=src,
            target=need.language,
            action=need.action,
            source_hash=h,
            item_title=item.title,
            item_summary_html=item.summary_html,
            item_summary_text=item.summary_text,
        )
        if need.action == "translate":
            job.fields.append(FieldJob("title", item.title, html=False))
            if item.summary_html.strip():
                job.fields.append(FieldJob("summary_html", item.summary_html, html=True))
            elif item.summary_text.strip():
                job.fields.append(FieldJob("summary_text", item.summary_text, html=False))
        jobs.append(job)
    return jobs


def lost(item: Item, t: Translation) -> bool:
    """Whether a stored translation is blank where the item has words."""
    if lost_text(item.title, t.title):
        return True
    summary = item.summary_html if item.summary_html.strip() else item.summary_text
    return lost_text(summary, t.summary_html if item.summary_html.strip() else t.summary_text)
