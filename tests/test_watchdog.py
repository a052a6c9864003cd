"""The source watchdog (issue 15): a source writing about another region, a source that stopped
publishing, a source in another language than declared — found from the stored items, shown
by ``check --sources`` and ``/readyz``, and alerted once to the editors."""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from newsexchange.alerts import WATCHDOG_REMIND_AFTER, check_alerts, watchdog_conditions
from newsexchange.cli import main
from newsexchange.config import Config, database_url
from newsexchange.db import Database, Item, JobRun, Source, utcnow
from newsexchange.db.queries.watchdog import head_revision
from newsexchange.ingest import run_fetch
from newsexchange.ingest.watchdog import (
    MIN_ITEMS,
    Finding,
    RecentItem,
    WatchedSource,
    find_findings,
    places_of,
    watch_sources,
)
from tests.servers import HTTPServer, Response
from tests.test_ingest import NOW as FEED_NOW
from tests.test_ingest import fetch_yaml, fi_items, rss
from tests.test_web_ops import served

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

BASE = """\
timezone: Europe/Helsinki
database_url: sqlite:///var/test.db
public_url: http://127.0.0.1:8080
mail:
  backend: outbox
  from: "Exchange <news@example.org>"
  outbox_dir: var/outbox
  operators: [ops@example.org]
translation: {glossary: glossary.yaml}
regions:
  joensuu:
    {name: Joensuu, language: fi, timezone: Europe/Helsinki, places: [Joensuu, Liperi, Kitee]}
  petrozavodsk:
    {name: Petrozavodsk, language: ru, timezone: Europe/Moscow, places: [Петрозаводск, Кондопога]}
"""

SOURCES = """\
sources:
  - {id: yle-pk, region: joensuu, url: "https://yle.example/rss", language: fi}
  - {id: karjalainen, region: joensuu, url: "https://karjalainen.example/rss", language: fi}
  - {id: karjalan-sanomat, region: petrozavodsk, url: "https://ks.example/rss", language: fi}
  - {id: stolica, region: petrozavodsk, url: "https://stolica.example/rss", language: ru}
exchanges:
  - {id: fi-to-ru, from: [joensuu], language: ru, editors: [editor@example.fi]}
  - {id: ru-to-fi, from: [petrozavodsk], language: fi, editors: [redaktor@example.ru]}
"""

GLOSSARY = """\
terms:
  - {fi: Petroskoi, en: Petrozavodsk, ru: [Петрозаводск]}
  - {fi: [Lappeenranta, Lappeenrannassa, Lappeenrannan], en: Lappeenranta, ru: [Лаппеэнранта]}
  - {fi: Imatra, en: Imatra, ru: [Иматра]}
"""

SOUTH_KARELIA = [
    "Lappeenrannassa avattiin uusi uimahalli",
    "Imatralla sähkökatko illalla",
    "Lappeenrannan kaupunginvaltuusto kokoontui",
    "Liikenneonnettomuus valtatie kuudella, Imatra",
]


def _config(write_config: Callable[..., Config], tmp_path: Path, url: str | None = None) -> Config:
    (tmp_path / "glossary.yaml").write_text(GLOSSARY, encoding="utf-8")
    base = BASE if url is None else BASE.replace("sqlite:///var/test.db", url)
    return write_config(SOURCES, base=base)


@pytest.fixture
def cfg(write_config: Callable[..., Config], tmp_path: Path) -> Config:
    return _config(write_config, tmp_path)


@pytest.fixture
def db(cfg: Config) -> Iterator[Database]:
    d = Database(database_url(cfg))
    yield d
    d.dispose()


@pytest.fixture
def any_cfg(write_config: Callable[..., Config], tmp_path: Path, any_db_url: str) -> Config:
    """The config on SQLite, then on PostgreSQL."""
    return _config(write_config, tmp_path, any_db_url)


@pytest.fixture
def any_db(any_cfg: Config) -> Iterator[Database]:
    d = Database(database_url(any_cfg))
    yield d
    d.dispose()


def _source(db: Database, sid: str, *, watched_since: datetime, **values: Any) -> None:
    with db.session() as s:
        s.add(Source(id=sid, config_url="u", url="u", watched_since=watched_since, **values))


def _items(
    db: Database,
    sid: str,
    texts: list[str],
    *,
    last_seen: datetime,
    region: str = "joensuu",
    language: str = "fi",
    detected: list[str | None] | None = None,
) -> None:
    """Items of ``sid``, one an hour up to ``last_seen`` (the last text newest)."""
    with db.session() as s:
        n = len(texts)
        for i, text in enumerate(texts):
            seen = last_seen - timedelta(hours=n - 1 - i)
            det = detected[i] if detected else None
            s.add(
                Item(
                    source_id=sid,
                    identity=f"{sid}-{seen.isoformat()}-{i}",
                    title=text,
                    summary_text=f"{text}. Lisää tietoa myöhemmin.",
                    region=region,
                    language=language,
                    detected_language=det,
                    language_mismatch=det is not None and det != language,
                    published_at=seen,
                    first_seen_at=seen,
                    updated_at=seen,
                    content_hash=f"h{i}",
                )
            )


def _by(findings: list[Any], kind: str) -> dict[str, Any]:
    return {f.source_id: f for f in findings if f.kind == kind}


# -- off-region -------------------------------------------------------------------------------


def test_a_source_about_another_region_is_flagged_off_region_and_the_report_names_its_places(
    write_config: Callable[..., Config], tmp_path: Path, any_db_url: str
) -> None:
    cfg = _config(write_config, tmp_path, any_db_url)
    db = Database(database_url(cfg))
    try:
        _source(db, "yle-pk", watched_since=NOW - timedelta(days=5))
        texts = [*SOUTH_KARELIA * 5, "Lappeenrannassa sataa"]
        _items(db, "yle-pk", texts, last_seen=NOW - timedelta(hours=1))
        report = watch_sources(db, cfg, now=NOW)
    finally:
        db.dispose()
    off = _by(report.findings, "off-region")
    assert list(off) == ["yle-pk"] and report.flagged == ["yle-pk"]
    f = off["yle-pk"]
    assert f.message == (
        "yle-pk: none of its last 21 items names a place of joensuu "
        "(its items name Lappeenranta 11×, Imatra 10×)"
    )
    assert f.evidence["places"] == {"Lappeenranta": 11, "Imatra": 10}
    assert f.key == "watchdog:off-region:yle-pk"


def test_items_naming_the_region_with_case_endings_or_the_glossarys_exonym_are_not_off_region(
    cfg: Config, db: Database
) -> None:
    _source(db, "yle-pk", watched_since=NOW - timedelta(days=5))
    # one in twenty items names the region, inflected: the source is about it
    _items(db, "yle-pk", [*SOUTH_KARELIA * 4, "Joensuussa juhlittiin"], last_seen=NOW)
    _source(db, "karjalan-sanomat", watched_since=NOW - timedelta(days=5))
    # Petroskoi is the glossary's Finnish name of Петрозаводск, a place of the region
    news = ["Uusi silta valmistui", "Talvi tuli aikaisin", "Petroskoissa avattiin museo"]
    _items(db, "karjalan-sanomat", news * 4, last_seen=NOW, region="petrozavodsk")
    report = watch_sources(db, cfg, now=NOW)
    assert _by(report.findings, "off-region") == {}
    assert report.checked == 2


def test_a_source_with_few_recent_items_is_not_judged_and_one_naming_nothing_shows_its_words(
    cfg: Config,
) -> None:
    places = places_of({"joensuu": ["Joensuu"]}, [{"fi": ["Lappeenranta"], "ru": ["Лаппеэнранта"]}])
    texts = ["Kuopion Kalevan uutiset: Kuopion tori", "Tänään Kuopion Kalevan lehti"]

    def src(n: int) -> WatchedSource:
        items = tuple(RecentItem(texts[i % 2], None, False) for i in range(n))
        return WatchedSource("x", "joensuu", "fi", 30, NOW - timedelta(days=1), None, NOW, items)

    assert find_findings(NOW, [src(MIN_ITEMS - 1)], places) == []
    [finding] = find_findings(NOW, [src(MIN_ITEMS)], places)
    assert finding.kind == "off-region"
    assert "it names no known place; frequent names: Kalevan 10×, Kuopion 5×" in finding.message


# -- stale ------------------------------------------------------------------------------------


def test_a_source_is_stale_after_its_stale_days_not_before_and_not_once_it_publishes(
    any_cfg: Config, any_db: Database
) -> None:
    _source(any_db, "karjalainen", watched_since=NOW - timedelta(days=100))
    last = NOW - timedelta(days=10)
    _items(any_db, "karjalainen", ["Joensuussa satoi"] * 3, last_seen=last)

    def stale(now: datetime) -> str | None:
        f = _by(watch_sources(any_db, any_cfg, now=now).findings, "stale").get("karjalainen")
        return f.message if f else None

    assert stale(NOW) is None  # 10 days: within its 30
    assert stale(last + timedelta(days=29, hours=23)) is None
    later = last + timedelta(days=41)
    assert stale(later) == f"karjalainen: no new item for 41 days (last {last:%Y-%m-%d})"
    _items(any_db, "karjalainen", ["Joensuussa paistoi"], last_seen=later - timedelta(hours=2))
    assert stale(later) is None


def test_the_watch_starts_at_the_first_successful_fetch_and_a_feed_that_stops_goes_stale(
    write_config: Callable[..., Config], http_server: HTTPServer, tmp_path: Path
) -> None:
    http_server.route("/feed", Response(200, rss(fi_items(3)), {"ETag": '"v1"'}))
    cfg = write_config(
        fetch_yaml(http_server)
        + "sources:\n"
        + f'  - {{id: kp, region: joensuu, language: fi, url: "{http_server.url}/feed"}}\n'
    )
    db = Database(database_url(cfg))
    try:
        start = FEED_NOW  # the feed's items were published the hours before
        assert run_fetch(db, cfg, now=start).to_json()["new_items"] == 3
        run_fetch(db, cfg, now=start + timedelta(days=20))  # the same items: nothing new
        with db.session() as s:
            row = s.get(Source, "kp")
            assert row is not None and row.watched_since == start
        assert watch_sources(db, cfg, now=start + timedelta(days=20)).findings == []
        stale = watch_sources(db, cfg, now=start + timedelta(days=31, hours=1)).findings
        assert [(f.source_id, f.kind) for f in stale] == [("kp", "stale")]
    finally:
        db.dispose()


def test_a_new_source_is_not_stale_and_one_that_never_published_is_after_stale_days(
    cfg: Config, db: Database
) -> None:
    _source(db, "stolica", watched_since=NOW - timedelta(days=2))
    assert _by(watch_sources(db, cfg, now=NOW).findings, "stale") == {}
    [f] = _by(watch_sources(db, cfg, now=NOW + timedelta(days=29)).findings, "stale").values()
    assert f.message.startswith("stolica: no item at all in 31 days of successful fetches")


def test_a_failing_source_is_reported_failing_not_stale_and_not_flagged(
    cfg: Config, db: Database
) -> None:
    _source(
        db,
        "karjalainen",
        watched_since=NOW - timedelta(days=100),
        failing_since=NOW - timedelta(days=40),
    )
    report = watch_sources(db, cfg, now=NOW)
    assert [(f.source_id, f.kind) for f in report.findings] == [("karjalainen", "failing")]
    assert report.flagged == []
    # the alerts job mails the failure once, as a failing source, and nothing for the watchdog
    alerts = check_alerts(db, cfg, now=NOW)
    assert [k.split(":")[0] for k in alerts.alerts] == ["source-failing"]


# -- language ---------------------------------------------------------------------------------


def test_a_source_declared_finnish_whose_items_are_mostly_detected_russian_is_flagged(
    any_cfg: Config, any_db: Database
) -> None:
    _source(any_db, "yle-pk", watched_since=NOW - timedelta(days=5))
    texts = ["Joensuussa uutinen"] * 20
    # 11 of 18 detections are Russian (two items without a detection do not count)
    detected: list[str | None] = ["ru"] * 11 + ["fi"] * 7 + [None] * 2
    _items(any_db, "yle-pk", texts, last_seen=NOW, detected=detected)
    [f] = _by(watch_sources(any_db, any_cfg, now=NOW).findings, "language").values()
    assert f.message == (
        "yle-pk: declared fi, but 11 of its last 18 items with a detected language are not (ru 11×)"
    )
    # 9 of 18 is not "most"
    with any_db.session() as s:
        s.query(Item).delete()
    _items(any_db, "yle-pk", texts, last_seen=NOW, detected=["ru"] * 9 + ["fi"] * 9 + [None] * 2)
    assert _by(watch_sources(any_db, any_cfg, now=NOW).findings, "language") == {}


# -- check --sources --------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], cfg: Config, *args: str) -> tuple[int, str]:
    code = main(["check", *args, "--config", str(cfg.path)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_check_sources_prints_each_finding_and_json_adds_a_watchdog_key(
    capsys: pytest.CaptureFixture[str], any_cfg: Config, any_db: Database
) -> None:
    now = utcnow()  # the command runs on the real clock
    _source(any_db, "yle-pk", watched_since=now - timedelta(days=5))
    _items(any_db, "yle-pk", SOUTH_KARELIA * 3, last_seen=now - timedelta(hours=1))
    _source(any_db, "karjalainen", watched_since=now - timedelta(days=90))
    last = now - timedelta(days=41)
    _items(any_db, "karjalainen", ["Joensuussa satoi"], last_seen=last)

    code, out = _cli(capsys, any_cfg, "--sources")
    assert code == 0, out
    assert "sources: 2 checked (2 not fetched yet: karjalan-sanomat, stolica)" in out
    assert f"  karjalainen: no new item for 41 days (last {last:%Y-%m-%d})" in out
    assert "  yle-pk: none of its last 12 items names a place of joensuu (its items name" in out

    code, strict = _cli(capsys, any_cfg, "--strict")  # implies --sources
    assert code == 1 and "karjalainen: no new item" in strict

    code, plain = _cli(capsys, any_cfg, "--json")
    assert code == 0 and "watchdog" not in json.loads(plain)  # the contract without --sources
    code, out = _cli(capsys, any_cfg, "--sources", "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["sources"] == 4
    assert data["watchdog"]["flagged"] == ["karjalainen", "yle-pk"]
    assert data["watchdog"]["unfetched"] == ["karjalan-sanomat", "stolica"]
    kinds = {(f["source"], f["finding"]) for f in data["watchdog"]["findings"]}
    assert kinds == {("karjalainen", "stale"), ("yle-pk", "off-region")}


def test_check_sources_without_a_database_says_so_and_creates_none(
    capsys: pytest.CaptureFixture[str], cfg: Config
) -> None:
    path = Path(cfg.resolve("var/test.db"))
    assert not path.exists()
    code, out = _cli(capsys, cfg, "--sources")
    assert code == 1
    assert "sources: not checked: the database " in out and "does not exist" in out
    assert not path.exists()


def test_check_sources_on_a_database_behind_the_code_says_to_migrate(
    capsys: pytest.CaptureFixture[str], cfg: Config, db: Database
) -> None:
    with db.engine.begin() as c:
        c.exec_driver_sql("UPDATE alembic_version SET version_num = '0005'")
    code, out = _cli(capsys, cfg, "--sources", "--json")
    assert code == 1
    head = head_revision()
    assert head > "0005"
    assert json.loads(out)["watchdog"]["error"] == (
        f"the database schema is at revision 0005, this version needs {head} "
        "(run newsexchange migrate)"
    )


# -- /readyz ----------------------------------------------------------------------------------


def test_readyz_lists_flagged_sources_as_warnings_and_stays_ready(
    cfg: Config, db: Database
) -> None:
    now = NOW + timedelta(days=400)  # far from the real clock either way: injected
    with db.session() as s:
        s.add(JobRun(job="fetch", started_at=now - timedelta(minutes=5), finished_at=now, ok=True))
    _source(db, "yle-pk", watched_since=now - timedelta(days=5))
    _items(db, "yle-pk", SOUTH_KARELIA * 3, last_seen=now - timedelta(hours=1))
    with served(cfg, db, clock=lambda: now) as url:
        r = httpx.get(f"{url}/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ready"] is True and body["reasons"] == []
    assert body["checks"]["sources"]["flagged"] == ["yle-pk"]
    [warning] = body["warnings"]
    assert warning.startswith("yle-pk: none of its last 12 items names a place of joensuu")


# -- alerts -----------------------------------------------------------------------------------


def _outbox(cfg: Config) -> list[email.message.EmailMessage]:
    folder = Path(cfg.resolve("var/outbox"))
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
        for p in sorted(folder.glob("*.eml"))
    ]


def test_the_alerts_job_mails_a_finding_once_and_again_when_it_cleared_and_came_back(
    any_cfg: Config, any_db: Database
) -> None:
    _source(any_db, "karjalainen", watched_since=NOW - timedelta(days=100))
    _items(any_db, "karjalainen", ["Joensuussa satoi"], last_seen=NOW - timedelta(days=41))

    first = check_alerts(any_db, any_cfg, now=NOW)
    second = check_alerts(any_db, any_cfg, now=NOW + timedelta(hours=1))
    assert first.alerts == ["watchdog:stale:karjalainen"] and second.new == 0
    [mail] = _outbox(any_cfg)
    assert " ".join(str(mail["Subject"]).split()) == (
        "[newsexchange] Source karjalainen has published nothing new for 41 days"
    )
    # the editors of the exchange reading its region, and the operators
    assert mail["To"] == "editor@example.fi, ops@example.org"
    assert "karjalainen: no new item for 41 days" in mail.get_content()

    # it publishes again: the finding clears …
    _items(any_db, "karjalainen", ["Joensuussa paistoi"], last_seen=NOW + timedelta(hours=2))
    assert check_alerts(any_db, any_cfg, now=NOW + timedelta(hours=3)).new == 0
    # … and comes back 30 days later: mailed again
    back = check_alerts(any_db, any_cfg, now=NOW + timedelta(days=31))
    assert back.alerts == ["watchdog:stale:karjalainen"]
    assert len(_outbox(any_cfg)) == 2

    # still standing: a reminder only after WATCHDOG_REMIND_AFTER
    assert check_alerts(any_db, any_cfg, now=NOW + timedelta(days=40)).new == 0
    remind = check_alerts(any_db, any_cfg, now=NOW + timedelta(days=31) + WATCHDOG_REMIND_AFTER)
    assert remind.alerts == ["watchdog:stale:karjalainen"]
    assert len(_outbox(any_cfg)) == 3


def test_a_finding_goes_to_the_editors_of_the_exchanges_reading_its_region(cfg: Config) -> None:
    findings = [
        Finding("yle-pk", "off-region", "yle-pk: …"),
        Finding("stolica", "language", "stolica: …"),
        Finding("karjalainen", "failing", "karjalainen: …"),  # alerted as a failing source
    ]
    conds = watchdog_conditions(cfg, findings)
    assert [(c.key, c.subject, c.to) for c in conds] == [
        (
            "watchdog:off-region:yle-pk",
            "Source yle-pk does not seem to write about Joensuu",
            ("editor@example.fi", "ops@example.org"),
        ),
        (
            "watchdog:language:stolica",
            "Source stolica does not publish in ru",
            ("redaktor@example.ru", "ops@example.org"),
        ),
    ]


def test_a_broken_glossary_does_not_stop_the_other_alerts(
    cfg: Config, db: Database, tmp_path: Path
) -> None:
    (tmp_path / "glossary.yaml").write_text("terms: [ [", encoding="utf-8")
    _source(
        db,
        "karjalainen",
        watched_since=NOW - timedelta(days=100),
        failing_since=NOW - timedelta(days=2),
    )
    report = check_alerts(db, cfg, now=NOW)
    assert [k.split(":")[0] for k in report.alerts] == ["source-failing"]
