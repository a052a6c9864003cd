"""Fetch and translation cut into batches for a work queue (issue 13): the planners
(``due_source_ids``, ``pending_ranges``) and the batch runs (``run_fetch(only_due=True)``,
``run_translate(id_range=…)``), against a loopback feed server, the local LibreTranslate
stand-in, and SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import newsexchange.translate.step as translate_step
from newsexchange.config import Config
from newsexchange.db import Database, Item, ProviderUsage, Source, Translation
from newsexchange.errors import ConfigError
from newsexchange.ingest import FetchReport, due_source_ids, run_fetch
from newsexchange.ingest.step import fetched_meanwhile
from newsexchange.translate import TranslateReport, pending_ranges, providers_down, run_translate
from tests.servers import HTTPServer, Response
from tests.test_ingest import NOW, fetch_yaml, fi_items, rss
from tests.test_translate_support import NOW as TNOW
from tests.test_translate_support import FakeLibre, add_item, exchange_config, fake_translate

# -- fetch: due_source_ids and only_due ---------------------------------------------------------

#: Not in alphabetical order, so "in config order" is seen to be kept.
SOURCES = ("zeta", "alpha", "broken", "paused", "mid")


def _sources_yaml(server: HTTPServer) -> str:
    lines = ["sources:"]
    for sid in SOURCES:
        extra = ", enabled: false" if sid == "paused" else ""
        lines.append(
            f'  - {{id: {sid}, region: joensuu, language: fi, url: "{server.url}/{sid}"{extra}}}'
        )
    return "\n".join(lines) + "\n"


@pytest.fixture
def feeds(http_server: HTTPServer) -> HTTPServer:
    for sid in SOURCES:
        if sid == "broken":
            http_server.route(f"/{sid}", Response(500, b"down"))
        else:
            # a little slow, so two runs started together overlap on the wire
            body = rss(fi_items(2, prefix=sid))
            http_server.route(f"/{sid}", Response(200, body, delay=0.2))
    return http_server


@pytest.fixture
def fetch_setup(
    write_config: Callable[..., Config], feeds: HTTPServer, any_db_url: str
) -> Iterator[tuple[Config, Database]]:
    cfg = write_config(fetch_yaml(feeds) + _sources_yaml(feeds))
    db = Database(any_db_url)
    yield cfg, db
    db.dispose()


def fetched(report: FetchReport) -> list[str]:
    return [o.source for o in report.outcomes if o.status != "skipped"]


def requests_to(server: HTTPServer, sid: str) -> int:
    return len(server.requests_to(f"/{sid}"))


def test_due_source_ids_are_what_run_fetch_fetches_and_fetch_nothing(
    fetch_setup: tuple[Config, Database], feeds: HTTPServer
) -> None:
    cfg, db = fetch_setup
    # Before any fetch every enabled source is due, in feeds.yaml order.
    assert due_source_ids(db, cfg, now=NOW) == ["zeta", "alpha", "broken", "mid"]
    assert feeds.requests == [], "planning must not fetch"

    first = run_fetch(db, cfg, now=NOW)
    assert fetched(first) == ["zeta", "alpha", "broken", "mid"]
    assert first.failed == 1  # broken rests now (next attempt after its back-off)

    later = NOW + timedelta(minutes=5)  # broken rests for one interval (30 minutes)
    seen = len(feeds.requests)
    plan = due_source_ids(db, cfg, now=later)
    assert len(feeds.requests) == seen
    assert plan == ["zeta", "alpha", "mid"]
    assert fetched(run_fetch(db, cfg, now=later)) == plan

    # Once its rest is over, the broken source is due again for both.
    with db.session() as s:
        broken = s.get(Source, "broken")
        assert broken is not None and broken.next_attempt_at is not None
        after_rest = broken.next_attempt_at + timedelta(seconds=1)
    plan = due_source_ids(db, cfg, now=after_rest)
    assert "broken" in plan
    assert fetched(run_fetch(db, cfg, now=after_rest)) == plan


def test_batch_with_only_due_skips_a_source_fetched_meanwhile_and_a_resting_one(
    fetch_setup: tuple[Config, Database], feeds: HTTPServer
) -> None:
    cfg, db = fetch_setup
    run_fetch(db, cfg, now=NOW - timedelta(minutes=20))  # broken rests until NOW + 10 min
    slot = NOW
    plan = due_source_ids(db, cfg, now=slot)
    assert plan == ["zeta", "alpha", "mid"]
    batch = [*plan, "broken"]  # a resting source in a batch (a plan made earlier)

    # While the batch waits in the queue, a console fetch (or another worker) takes alpha.
    run_fetch(db, cfg, now=slot + timedelta(minutes=1), source_ids=["alpha"])
    assert requests_to(feeds, "alpha") == 2

    report = run_fetch(db, cfg, now=slot + timedelta(minutes=2), source_ids=batch, only_due=True)
    assert fetched(report) == ["zeta", "mid"]
    assert {o.source: o.status for o in report.outcomes}["alpha"] == "skipped"
    assert {o.source: o.status for o in report.outcomes}["broken"] == "skipped"
    assert requests_to(feeds, "alpha") == 2, "alpha was fetched again"
    assert requests_to(feeds, "zeta") == 2 and requests_to(feeds, "mid") == 2

    # A job given its planner's now (the slot) skips them just the same.
    again = run_fetch(db, cfg, now=slot, source_ids=batch, only_due=True)
    assert fetched(again) == []

    # The next slot fetches alpha as usual: the claim does not outlive the interval.
    nxt = slot + timedelta(minutes=cfg.fetch.interval_minutes)
    report = run_fetch(db, cfg, now=nxt, source_ids=["alpha"], only_due=True)
    assert fetched(report) == ["alpha"] and requests_to(feeds, "alpha") == 3

    # Without only_due, source_ids still means "fetch these even if not due" (the console).
    forced = run_fetch(db, cfg, now=nxt, source_ids=["alpha", "broken"])
    assert fetched(forced) == ["alpha", "broken"]


def test_fetched_meanwhile_means_within_half_an_interval_or_after_now() -> None:
    at = NOW
    assert not fetched_meanwhile(None, at, interval_minutes=30)
    assert not fetched_meanwhile(at - timedelta(minutes=15), at, interval_minutes=30)
    assert fetched_meanwhile(at - timedelta(minutes=14), at, interval_minutes=30)
    assert fetched_meanwhile(at, at, interval_minutes=30)
    assert fetched_meanwhile(at + timedelta(hours=1), at, interval_minutes=30)
    assert not fetched_meanwhile(at - timedelta(minutes=31), at, interval_minutes=60)


def test_a_batch_leaves_out_sources_removed_or_disabled_since_it_was_planned(
    fetch_setup: tuple[Config, Database], feeds: HTTPServer
) -> None:
    cfg, db = fetch_setup
    # "gone" was in the planner's feeds.yaml, "paused" was enabled there.
    batch = ["gone", "zeta", "paused"]
    report = run_fetch(db, cfg, now=NOW, source_ids=batch, only_due=True)
    assert [o.source for o in report.outcomes] == ["zeta"] and fetched(report) == ["zeta"]
    assert requests_to(feeds, "paused") == 0
    with pytest.raises(ConfigError, match="unknown source 'gone'"):
        run_fetch(db, cfg, now=NOW, source_ids=batch)  # the console's fetch still says so


def test_only_due_with_force_is_refused(fetch_setup: tuple[Config, Database]) -> None:
    cfg, db = fetch_setup
    with pytest.raises(ValueError, match="exclude"):
        run_fetch(db, cfg, now=NOW, source_ids=["zeta"], only_due=True, force=True)


def test_two_batch_jobs_holding_the_same_sources_fetch_each_once(
    write_config: Callable[..., Config], feeds: HTTPServer, pg_server_url: Callable[[], str]
) -> None:
    cfg = write_config(fetch_yaml(feeds) + _sources_yaml(feeds))
    db = Database(pg_server_url())
    try:
        batch = due_source_ids(db, cfg, now=NOW)
        reports: list[FetchReport] = []
        errors: list[BaseException] = []
        start = threading.Barrier(3)

        def job() -> None:
            try:
                start.wait(timeout=60)
                reports.append(run_fetch(db, cfg, now=NOW, source_ids=batch, only_due=True))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=job) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors and len(reports) == 3
        for sid in ("zeta", "alpha", "mid"):
            assert requests_to(feeds, sid) == 1, f"{sid} fetched by two jobs"
        assert sorted(s for r in reports for s in fetched(r)) == sorted(batch)
        with db.session() as s:
            assert len(s.scalars(select(Item.id).where(Item.source_id == "zeta")).all()) == 2
    finally:
        db.dispose()


# -- translate: pending_ranges and id_range ----------------------------------------------------


@pytest.fixture
def libre() -> Iterator[FakeLibre]:
    server = HTTPServer().start()
    yield FakeLibre(server)
    server.stop()


def _config(write_config: Callable[..., Config], libre: FakeLibre) -> Config:
    return write_config(
        exchange_config(f"    - {{name: libre, url: {libre.url}, timeout: 10}}\n"),
    )


@pytest.fixture
def tsetup(
    write_config: Callable[..., Config], libre: FakeLibre, any_db_url: str
) -> Iterator[tuple[Config, Database]]:
    db = Database(any_db_url)
    yield _config(write_config, libre), db
    db.dispose()


def _add(db: Database, n: int, word: str) -> list[int]:
    """``n`` items with texts of their own (no sentence shared, so no memory hit differs
    between a run and its ranges)."""
    return [
        add_item(
            db,
            title=f"{word} uutinen numero {i}",
            summary_text=f"Tapahtuma {word} {i} alkaa huomenna.",
            updated_at=TNOW - timedelta(hours=1),
        )
        for i in range(n)
    ]


def translated_at(db: Database, when: Any) -> set[int]:
    with db.session() as s:
        rows = s.scalars(select(Translation).where(Translation.updated_at == when))
        return {t.item_id for t in rows if t.status == "done"}


def test_pending_ranges_cover_exactly_the_items_run_translate_translates(
    tsetup: tuple[Config, Database],
) -> None:
    cfg, db = tsetup
    assert pending_ranges(db, cfg, now=TNOW) == []
    old = _add(db, 3, "vanha")
    run_translate(db, cfg, now=TNOW)
    assert pending_ranges(db, cfg, now=TNOW + timedelta(minutes=1)) == []

    new = _add(db, 3, "uusi")
    later = TNOW + timedelta(hours=2)
    with db.session() as s:  # the middle old item changes: due again, its neighbours not
        item = s.get(Item, old[1])
        assert item is not None
        item.title = "Muutettu otsikko"
        item.content_hash = "changed"
        item.updated_at = TNOW + timedelta(hours=1)
    due = [old[1], *new]

    ranges = pending_ranges(db, cfg, now=later, size=2)
    assert ranges == [(due[0], due[1]), (due[2], due[3])]
    assert old[2] in range(ranges[0][0], ranges[0][1] + 1)  # a gap: inside, but not due
    assert pending_ranges(db, cfg, now=later) == [(due[0], due[-1])]

    report = run_translate(db, cfg, now=later)
    assert translated_at(db, later) == set(due)
    assert report.items_translated == len(due)
    assert pending_ranges(db, cfg, now=later + timedelta(minutes=1)) == []
    with pytest.raises(ValueError):
        pending_ranges(db, cfg, now=later, size=0)


def _translations(db: Database) -> dict[tuple[int, str], tuple[Any, ...]]:
    with db.session() as s:
        return {
            (t.item_id, t.language): (
                t.status,
                t.provider,
                t.title,
                t.summary_html,
                t.summary_text,
                t.source_hash,
            )
            for t in s.scalars(select(Translation))
        }


def test_translating_range_by_range_gives_the_same_translations_as_one_run(
    tsetup: tuple[Config, Database],
    write_config: Callable[..., Config],
    libre: FakeLibre,
    tmp_path: Path,
) -> None:
    cfg, db = tsetup
    ids = _add(db, 7, "sama")
    ranges = pending_ranges(db, cfg, now=TNOW, size=3)
    assert ranges == [(ids[0], ids[2]), (ids[3], ids[5]), (ids[6], ids[6])]

    first = run_translate(db, cfg, now=TNOW, id_range=ranges[0])
    assert first.items_translated == 3
    assert {k[0] for k in _translations(db)} == set(ids[:3]), "a range touched items outside it"
    assert pending_ranges(db, cfg, now=TNOW, size=3) == ranges[1:]
    for r in ranges[1:]:
        run_translate(db, cfg, now=TNOW, id_range=r)

    whole = Database(f"sqlite:///{tmp_path}/whole.db")
    try:
        assert _add(whole, 7, "sama") == ids
        report = run_translate(whole, cfg, now=TNOW)
        assert report.items_translated == 7
        by_range, by_run = _translations(db), _translations(whole)
        assert len(by_run) == 14 and by_range == by_run
        assert by_run[(ids[0], "ru")][2] == fake_translate("sama uutinen numero 0")
    finally:
        whole.dispose()


def test_two_ranges_translated_at_once_on_postgres_lose_no_usage_count(
    write_config: Callable[..., Config],
    libre: FakeLibre,
    pg_server_url: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One item per page, so each run writes its usage once per item: many chances for the
    # two runs' writes to meet.
    monkeypatch.setattr(translate_step, "PAGE", 1)
    cfg = _config(write_config, libre)
    db = Database(pg_server_url())
    try:
        ids = _add(db, 30, "rinnakkain")
        ranges = pending_ranges(db, cfg, now=TNOW, size=15)
        assert ranges == [(ids[0], ids[14]), (ids[15], ids[29])]
        reports: list[TranslateReport] = []
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def job(r: tuple[int, int]) -> None:
            try:
                start.wait(timeout=60)
                reports.append(run_translate(db, cfg, now=TNOW, id_range=r))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=job, args=(r,)) for r in ranges]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        assert [r.items_translated for r in reports] == [15, 15]
        with db.session() as s:
            usage = s.scalars(select(ProviderUsage)).one()
        assert usage.characters == libre.chars == sum(r.characters_sent["libre"] for r in reports)
        assert usage.requests == sum(r.requests["libre"] for r in reports)
        assert usage.requests >= libre.requests == 30 * 2  # one per item and language pair
        assert translated_at(db, TNOW) == set(ids)
    finally:
        db.dispose()


def test_provider_health_is_kept_by_the_usage_added_in_sql(
    tsetup: tuple[Config, Database], libre: FakeLibre
) -> None:
    """Down since its first failure, through later failures and into the next day (a row of
    its own, carrying the outage over); up again at the first success."""
    cfg, db = tsetup

    def usage(day: Any) -> ProviderUsage:
        with db.session() as s:
            return s.scalars(select(ProviderUsage).where(ProviderUsage.day == day)).one()

    libre.failure = Response(503, '{"error": "Service unavailable"}')
    _add(db, 1, "eka")
    run_translate(db, cfg, now=TNOW)
    first = usage(TNOW.date())
    assert first.down_since == TNOW and "503" in (first.last_error or "")
    assert first.failures >= 1 and first.requests >= 1

    _add(db, 1, "toka")
    run_translate(db, cfg, now=TNOW + timedelta(hours=1))
    again = usage(TNOW.date())
    assert again.down_since == TNOW and again.failures > first.failures
    assert again.requests > first.requests

    tomorrow = TNOW + timedelta(days=1)
    _add(db, 1, "kolmas")
    run_translate(db, cfg, now=tomorrow)
    assert usage(tomorrow.date()).down_since == TNOW
    down = providers_down_at(db, tomorrow)
    assert [(d["provider"], d["down_since"]) for d in down] == [("libre", TNOW)]

    libre.failure = None
    _add(db, 1, "neljäs")
    run_translate(db, cfg, now=tomorrow + timedelta(hours=1))
    up = usage(tomorrow.date())
    assert up.down_since is None and up.characters > 0
    assert providers_down_at(db, tomorrow + timedelta(hours=2)) == []


def providers_down_at(db: Database, now: Any) -> list[dict[str, Any]]:
    with db.session() as s:
        return providers_down(s, now=now)


def test_two_ranges_sharing_sentences_translate_at_once_on_postgres(
    write_config: Callable[..., Config],
    libre: FakeLibre,
    pg_server_url: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same two sentences in both ranges, in opposite orders, translated at about the same
    moment: both runs send them and insert the same memory keys; every page still ends done
    and right (the unique key settles the double insert). The keys are inserted in one order
    so the two inserts wait rather than deadlock; whether these runs ever meet inside that
    millisecond is up to timing, so this guards the concurrent path, not the ordering alone."""
    monkeypatch.setattr(translate_step, "PAGE", 1)
    libre.delay = 0.05  # both runs wait on the provider together, then write together
    cfg = _config(write_config, libre)
    db = Database(pg_server_url())
    n = 12
    try:
        for order in (1, -1):
            for i in range(n):
                pair = [f"Ensimmäinen lause {i} kertoo.", f"Toinen lause {i} jatkaa."]
                add_item(
                    db,
                    title=f"Otsikko {order} {i}",
                    summary_text=" ".join(pair[::order]),
                    updated_at=TNOW - timedelta(hours=1),
                )
        ranges = pending_ranges(db, cfg, now=TNOW, size=n)
        assert len(ranges) == 2
        # Item i of one range and item i of the other are translated at the same time.
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def job(r: tuple[int, int]) -> None:
            try:
                start.wait(timeout=60)
                run_translate(db, cfg, now=TNOW, id_range=r)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=job, args=(r,)) for r in ranges]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        with db.session() as s:
            rows = s.scalars(select(Translation).where(Translation.language == "ru")).all()
            items = {i.id: i for i in s.scalars(select(Item))}
        assert len(rows) == 2 * n and all(t.status == "done" for t in rows)
        for t in rows:
            assert t.summary_text == fake_translate(items[t.item_id].summary_text)
    finally:
        db.dispose()


def test_two_ranges_at_once_hold_the_daily_character_limit_within_a_page(
    write_config: Callable[..., Config],
    libre: FakeLibre,
    pg_server_url: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each run re-reads the day's usage before every page, so two runs at once overshoot
    ``chars_per_day`` by at most the page the other has in flight (read once per run, each
    would have spent the whole budget: twice the limit)."""
    monkeypatch.setattr(translate_step, "PAGE", 1)
    libre.delay = 0.02
    limit = 1000
    cfg = write_config(
        exchange_config(
            f"    - {{name: libre, url: {libre.url}, timeout: 10, chars_per_day: {limit}}}\n"
        )
    )
    db = Database(pg_server_url())
    try:
        ids = _add(db, 40, "raja")
        ranges = pending_ranges(db, cfg, now=TNOW, size=20)
        assert ranges == [(ids[0], ids[19]), (ids[20], ids[39])]
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def job(r: tuple[int, int]) -> None:
            try:
                start.wait(timeout=60)
                run_translate(db, cfg, now=TNOW, id_range=r)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=job, args=(r,)) for r in ranges]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        # a page is one request per language pair (fi→ru, fi→en)
        page_chars = 2 * max(c.chars for c in libre.calls)
        assert libre.chars > limit - page_chars, "the budget was not used"
        assert libre.chars <= limit + page_chars, f"{libre.chars} chars against {limit}"
        with db.session() as s:
            assert s.scalars(select(ProviderUsage)).one().characters == libre.chars
            pending = s.scalars(select(Translation).where(Translation.status != "done")).all()
        assert pending and all("daily character limit" in (t.error or "") for t in pending)
    finally:
        db.dispose()
