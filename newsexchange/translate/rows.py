"""What a job writes: the one builder of a translation row's columns (pure).

The step applies :func:`row_values` to the row it already has, or inserts it as a new row
(most rows are new: they go in as one executemany, see
:func:`newsexchange.db.queries.translations.insert_translations`).
"""

from __future__ import annotations

import html as _html
from datetime import datetime, timedelta
from typing import Any

from newsexchange.ingest.clean import to_text
from newsexchange.textclean import clean_name, clean_text
from newsexchange.translate.base import lost_text
from newsexchange.translate.jobs import Job
from newsexchange.translate.plan import backoff_seconds

__all__ = ["failure", "row_values"]


def row_values(
    job: Job, *, attempts: int, now: datetime, cap_hours: float, summary_chars: int
) -> dict[str, Any]:
    """Every column a job sets on its translation row, new or old (``attempts``: the row's
    attempts so far).

    - ``original``: the item's own text, done;
    - every field translated: the translation, done;
    - otherwise pending (retryable) or failed (needs a fix: key, quota, language) with the
      reason and the next attempt after the back-off; stale text is cleared so an outdated
      translation never stands in for the changed item.
    """
    common: dict[str, Any] = {"updated_at": now, "source_hash": job.source_hash}
    if job.action == "original":
        return common | {
            "title": job.item_title,
            "summary_html": job.item_summary_html,
            "summary_text": job.item_summary_text,
            "provider": "original",
            "status": "done",
            "error": None,
            "next_attempt_at": None,
            "attempts": 0,
        }
    blank = [f.name for f in job.fields if f.result is not None and lost_text(f.value, f.result)]
    error = job.error
    if blank and error is None:
        # The last guard: whatever path produced it, a blank field is not done.
        error = f"empty translation of the {blank[0].replace('_', ' ')}"
    if error is None and all(f.result is not None for f in job.fields):
        return common | _translated(job, summary_chars) | {"attempts": attempts + 1}
    delay = (
        backoff_seconds(attempts + 1, cap_hours=cap_hours, retry_after=job.retry_after)
        if job.retryable
        else cap_hours * 3600.0
    )
    return common | {
        "title": None,
        "summary_html": None,
        "summary_text": None,
        "provider": None,
        "status": "pending" if job.retryable else "failed",
        "error": error or "not translated",
        "next_attempt_at": now + timedelta(seconds=delay),
        "attempts": attempts + 1,
    }


def _translated(job: Job, summary_chars: int) -> dict[str, Any]:
    values = {f.name: clean_text(f.result or "") for f in job.fields}
    out: dict[str, Any] = {
        # A title is shown in subjects and lists: no bidi or zero-width characters.
        "title": clean_name(values.get("title", "")),
    }
    if "summary_html" in values:
        out["summary_html"] = values["summary_html"]
        out["summary_text"] = _summary_text(
            values["summary_html"], job.item_summary_text, summary_chars
        )
    else:
        out["summary_text"] = values.get("summary_text", "")
        out["summary_html"] = _text_html(out["summary_text"])
    origins = [f.origin for f in job.fields if f.origin]
    providers = [o for o in origins if o not in ("editor", "memory", "glossary")]
    out["provider"] = providers[0] if providers else ("editor" if "editor" in origins else "memory")
    out |= {"status": "done", "error": None, "next_attempt_at": None}
    return out


def failure(job: Job, values: dict[str, Any]) -> dict[str, Any]:
    """A job left pending or failed, as ``TranslateReport.failed`` lists it."""
    return {
        "item": job.item_id,
        "language": job.target,
        "status": values["status"],
        "reason": values["error"],
        "attempts": values["attempts"],
        "next_attempt_at": values["next_attempt_at"].isoformat(),
    }


def _summary_text(summary_html: str, original_text: str, limit: int) -> str:
    """The plain-text summary of a translated HTML summary, bounded like the original."""
    return to_text(summary_html, max(limit, len(original_text)))


def _text_html(text: str) -> str:
    return f"<p>{_html.escape(text, quote=False)}</p>" if text else ""
