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

Cut for a work queue (issue 13): :func:`pending_ranges` lists the work of the next run as
inclusive item-id ranges of up to ``size`` due items, and ``run_translate(..., id_range=r)``
works on one of them; everything else (report, usage limits, provider back-off) is as for a
whole run. Runs over disjoint ranges can go at once on many workers: they never write the
same translation rows, they insert memory keys in one order, and provider usage is added in
SQL (:func:`_record_usage`) and re-read before every page, so no count is lost and a daily
character limit is overshot by at most one page per run going at once.
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

__all__ = [
    "iter_translations",
    "pending_ranges",
    "providers_down",
    "run_translate",
    "translation_data",
]

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
    id_range: tuple[int, int] | None = None,
) -> TranslateReport:
    """Translate what is due (see the module docstring). ``limit`` caps the items worked on.
    ``translators`` replaces the configured chain (the benchmark and tests of the chain).
    ``id_range`` (inclusive item ids, one of :func:`pending_ranges`) works only on the items
    within it: a queue's translation job; runs over disjoint ranges may go at once. The
    report's ``pending`` still counts every unfinished translation, in range or not."""
    started = time.perf_counter()
    report = TranslateReport()
    glossary = _load_glossary(config)
    own = translators is None
    if translators is None:
        translators = build_translators(config)
    chain = Chain(translators, config, report, sleep=sleep)
    try:
        for jobs in _pages(db, config, report, now, limit, id_range):
            # Read before every page, not once per run: other runs (other ranges, other
            # workers) spend the same daily budget meanwhile.
            _used_today(db, chain, now)
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


def pending_ranges(
    db: Database, config: Config, *, now: datetime, size: int = PAGE
) -> list[tuple[int, int]]:
    """The work of the next :func:`run_translate` cut for a queue: inclusive item-id ranges in
    id order, each holding at most ``size`` of the items that run would work on (the same
    selection, :func:`_pages`); empty when nothing is due. Nothing is translated or written.

    A range runs from its first item's id to its last's, so ids in between that needed
    nothing now belong to no other range: two ranges never overlap, and an item that becomes
    due later in such a gap is simply in the next plan's ranges."""
    if size < 1:
        raise ValueError(f"pending_ranges: size must be at least 1, not {size}")
    ids: list[int] = []
    for page in _item_pages(db, config, TranslateReport(), now, None, None):
        ids.extend(item_id for item_id, _ in page)
    return [
        (chunk[0], chunk[-1]) for chunk in (ids[i : i + size] for i in range(0, len(ids), size))
    ]


def _pages(
    db: Database,
    config: Config,
    report: TranslateReport,
    now: datetime,
    limit: int | None,
    id_range: tuple[int, int] | None = None,
) -> Iterable[list[Job]]:
    """Step 1, a page of items at a time: the jobs of at most ``limit`` items in all (within
    ``id_range`` if given). Each page is read in its own short session (closed before any
    provider is asked)."""
    for page in _item_pages(db, config, report, now, limit, id_range):
        yield [job for _, item_jobs in page for job in item_jobs]


def _item_pages(
    db: Database,
    config: Config,
    report: TranslateReport,
    now: datetime,
    limit: int | None,
    id_range: tuple[int, int] | None,
) -> Iterable[list[tuple[int, list[Job]]]]:
    """The one selection both :func:`run_translate` and :func:`pending_ranges` make: pages of
    ``(item id, its jobs)`` for the items with something to do (``items_to_look_at``, then
    ``snapshot`` non-empty), in id order."""
    exchanges: Exchanges = [(e.from_, e.language) for e in config.exchanges]
    languages = {r: len(wanted_languages(r, exchanges)) for r in config.regions}
    last_id, up_to = (id_range[0] - 1, id_range[1]) if id_range else (0, None)
    worked = 0
    while limit is None or worked < limit:
        page: list[tuple[int, list[Job]]] = []
        with db.session() as s:
            items = q.items_to_look_at(
                s,
                after_id=last_id,
                up_to_id=up_to,
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
                page.append((item.id, item_jobs))
        if page:
            yield page


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
    """Requests, characters and health per provider per UTC day (provider_usage).

    Added in SQL (``requests = requests + n``), never read, added to and written back: two
    runs at once (two ranges on two workers) each add their own, where the read-modify-write
    lost one of them whenever both read before either committed. Providers go in name order
    so two such runs lock the rows in one order (PostgreSQL would otherwise see a deadlock)."""
    day = now.date()
    for name in sorted(chain.usage):
        u = chain.usage[name]
        _ensure_usage_row(session, name, day)
        down: bool | None = None
        last_error: str | None = None
        if u["error"] and not u["ok"]:
            down, last_error = True, u["error"]  # down since its first failure
        elif u["ok"]:
            down, last_error = False, u["error"]
        q.add_usage(
            session,
            name,
            day,
            requests=u["requests"],
            characters=u["characters"],
            failures=u["failures"],
            down=down,
            last_error=last_error,
            now=now,
        )


def _ensure_usage_row(session: Session, provider: str, day: date) -> None:
    """The day's row, created if missing (by whichever run gets there first)."""
    if q.usage_of_day(session, provider, day) is not None:
        return
    # A provider down since yesterday is still down since yesterday.
    prev = q.last_usage_before(session, provider, day)
    q.insert_usage_row(
        session,
        provider,
        day,
        down_since=prev.down_since if prev else None,
        last_error=prev.last_error if prev and prev.down_since else None,
    )


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
