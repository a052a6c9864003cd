"""The translate step: every item in every language an exchange will carry it in, plus English.

``run_translate(db, config, *, now, limit=None) -> TranslateReport`` reads the items a page at a
time and, for each page:

1. decides what each item needs (:mod:`.jobs`, :mod:`.plan`: original / translate / nothing);
2. looks each field (title, summary) up whole in the translation memory, then sentence by
   sentence (:mod:`.memory`), in one query per language pair;
3. sends what is still missing, once per distinct sentence, through the provider chain
   (:mod:`.chain`) with the glossary terms protected (:mod:`.glossary`), packed under each
   provider's request limit; a provider that fails (timeout, 429, 5xx, quota, bad key) hands
   the rest to the next one (2 and 3: :mod:`.fill`);
4. writes the translations (:mod:`.rows` builds each row), the memory and the provider usage
   in one short transaction.

No database transaction is open while a provider is being asked (SQLite takes its write lock
at BEGIN), so the fetch step and the web app are never held up by a slow provider. A page whose
providers all fail leaves those translations pending with the reason and a retry time; the
other items of the page, and every later page, still go through. A translation is marked
done only when every sentence of every field was translated: nothing untranslated is ever
presented as translated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from newsexchange.config import Config
from newsexchange.db import Database, Item, ProviderUsage, Session, Translation
from newsexchange.db.queries import translations as q
from newsexchange.ingest.langdetect import detect_language
from newsexchange.translate.base import Translator
from newsexchange.translate.chain import Chain
from newsexchange.translate.fill import translate_jobs
from newsexchange.translate.glossary import Glossary, load_glossary
from newsexchange.translate.jobs import Exchanges, Job, snapshot
from newsexchange.translate.memory import Entry, store
from newsexchange.translate.plan import wanted_languages
from newsexchange.translate.providers import build_translators
from newsexchange.translate.report import TranslateReport
from newsexchange.translate.rows import failure, row_values

__all__ = ["iter_translations", "providers_down", "run_translate", "translation_data"]

log = logging.getLogger("newsexchange.translate")
PAGE = 500

#: Items changed this recently are always looked at (their text hash decides). A fetch run
#: stamps changed items with the ``now`` it started with, which can be earlier than a translate
#: run that finished meanwhile; within this window every run compares the hashes, so such a
#: change is never missed unless one fetch run lasts longer than this.
RECHECK = timedelta(hours=6)


def run_translate(
    db: Database,
    config: Config,
    *,
    now: datetime,
    limit: int | None = None,
    translators: Sequence[Translator] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> TranslateReport:
    """Translate what is due (see the module docstring). ``limit`` caps the items worked on.
    ``translators`` replaces the configured chain (the benchmark and tests of the chain)."""
    started = time.perf_counter()
    report = TranslateReport()
    glossary = _load_glossary(config)
    own = translators is None
    if translators is None:
        translators = build_translators(config)
    chain = Chain(translators, config, report, sleep=sleep)
    try:
        _used_today(db, chain, now)
        for jobs in _pages(db, config, report, now, limit):
            entries = translate_jobs(db, jobs, chain, glossary, report)
            _write(db, jobs, entries, chain, config, report, now)
        with db.session() as s:
            report.pending = q.count_unfinished(s)
    finally:
        if own:
            for t in translators:
                t.close()
    report.elapsed_seconds = time.perf_counter() - started
    log.info("translated", extra={k: v for k, v in report.to_json().items() if k != "failed"})
    return report


def _pages(
    db: Database, config: Config, report: TranslateReport, now: datetime, limit: int | None
) -> Iterable[list[Job]]:
    """Step 1, a page of items at a time: the jobs of at most ``limit`` items in all. Each page
    is read in its own short session (closed before any provider is asked)."""
    exchanges: Exchanges = [(e.from_, e.language) for e in config.exchanges]
    languages = {r: len(wanted_languages(r, exchanges)) for r in config.regions}
    last_id = 0
    worked = 0
    while limit is None or worked < limit:
        jobs: list[Job] = []
        with db.session() as s:
            items = q.items_to_look_at(
                s,
                after_id=last_id,
                limit=PAGE,
                languages_of_region=languages,
                changed_since=now - RECHECK,
            )
            if not items:
                return
            last_id = items[-1].id
            for item in items:
                report.items_seen += 1
                item_jobs = snapshot(item, exchanges, now, detect_language)
                if not item_jobs:
                    continue
                if limit is not None and worked >= limit:
                    break
                worked += 1
                jobs.extend(item_jobs)
        if jobs:
            yield jobs


def _load_glossary(config: Config) -> Glossary:
    if not config.translation.glossary:
        return Glossary()
    return load_glossary(config.resolve(config.translation.glossary))


def _used_today(db: Database, chain: Chain, now: datetime) -> None:
    """Each provider's characters of today so far (its ``chars_per_day`` holds across runs)."""
    with db.session() as s:
        for slot in chain.slots:
            if slot.chars_per_day is None:
                continue
            row = q.usage_of_day(s, slot.translator.name, now.date())
            slot.used_today = row.characters if row else 0


def _write(
    db: Database,
    jobs: list[Job],
    entries: list[Entry],
    chain: Chain,
    config: Config,
    report: TranslateReport,
    now: datetime,
) -> None:
    """Step 4: one short transaction for the page."""
    cap = config.translation.max_attempts_backoff_hours
    with db.session() as s:
        store(s, entries, now=now)
        ids = sorted({j.item_id for j in jobs})
        rows: dict[tuple[int, str], Translation | dict[str, Any]] = {
            (t.item_id, t.language): t for t in q.translations_of(s, ids)
        }
        finished: set[int] = set()
        new_rows: list[dict[str, Any]] = []
        for j in jobs:
            row = rows.get((j.item_id, j.target))
            if row is None:
                row = {"item_id": j.item_id, "language": j.target, "created_at": now}
                new_rows.append(row)
                rows[(j.item_id, j.target)] = row
            values = row_values(
                j,
                attempts=_attempts(row),
                now=now,
                cap_hours=cap,
                summary_chars=config.fetch.summary_chars,
            )
            _set(row, values)
            if j.action == "original":
                report.originals += 1
                finished.add(j.item_id)
            elif values["status"] == "done":
                report.translations_done += 1
                finished.add(j.item_id)
            else:
                report.failed.append(failure(j, values))
        q.insert_translations(s, new_rows)
        report.items_translated += len(finished)
        _record_usage(s, chain, now)
        chain.usage.clear()


def _attempts(row: Translation | dict[str, Any]) -> int:
    return (row.get("attempts") if isinstance(row, dict) else row.attempts) or 0


def _set(row: Translation | dict[str, Any], values: dict[str, Any]) -> None:
    """Set the columns of a stored row, or of a new one (a dict until inserted)."""
    if isinstance(row, dict):
        row.update(values)
    else:
        for column, value in values.items():
            setattr(row, column, value)


def _record_usage(session: Session, chain: Chain, now: datetime) -> None:
    """Requests, characters and health per provider per UTC day (provider_usage)."""
    day = now.date()
    for name, u in chain.usage.items():
        row = _usage_row(session, name, day)
        row.requests = (row.requests or 0) + u["requests"]
        row.characters = (row.characters or 0) + u["characters"]
        row.failures = (row.failures or 0) + u["failures"]
        if u["error"] and not u["ok"]:
            row.last_error = u["error"]
            if row.down_since is None:
                row.down_since = now
        elif u["ok"]:
            row.down_since = None
            if u["error"]:
                row.last_error = u["error"]


def _usage_row(session: Session, provider: str, day: date) -> ProviderUsage:
    row = q.usage_of_day(session, provider, day)
    if row is None:
        # A provider down since yesterday is still down since yesterday.
        prev = q.last_usage_before(session, provider, day)
        row = ProviderUsage(
            provider=provider,
            day=day,
            requests=0,
            characters=0,
            failures=0,
            down_since=prev.down_since if prev else None,
            last_error=prev.last_error if prev and prev.down_since else None,
        )
        session.add(row)
        session.flush()
    return row


def providers_down(
    session: Session, *, now: datetime, longer_than: timedelta = timedelta(hours=1)
) -> list[dict[str, Any]]:
    """Providers failing without a success for longer than ``longer_than`` (for the service's
    operator alert): ``[{provider, down_since, last_error}]``."""
    latest: dict[str, ProviderUsage] = {}
    for row in q.usage_rows(session):
        latest[row.provider] = row
    return [
        {"provider": p, "down_since": r.down_since, "last_error": r.last_error}
        for p, r in sorted(latest.items())
        if r.down_since is not None and now - r.down_since >= longer_than
    ]


def iter_translations(item: Item) -> Iterable[dict[str, Any]]:
    """An item's translations as plain data (for ``items --json`` and ``translation show``)."""
    for t in sorted(item.translations, key=lambda t: t.language):
        yield translation_data(t)


def translation_data(t: Translation) -> dict[str, Any]:
    """One translation row as plain data (the ``--json`` form)."""
    return {
        "language": t.language,
        "status": t.status,
        "provider": t.provider,
        "title": t.title,
        "summary_text": t.summary_text,
        "summary_html": t.summary_html,
        "error": t.error,
        "attempts": t.attempts,
        "next_attempt_at": t.next_attempt_at,
        "updated_at": t.updated_at,
    }
