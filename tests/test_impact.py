"""Impact (issue 14): the report's JSON shape over real rows, the pick-up step (idempotent,
its window, the receiving region, an editor's decision kept), confirm/reject, and the
``impact`` command's --json and --format csv.

The pick-up step is tested with a small matcher of our own (passed as ``matcher_factory``):
what is under test here is what the step compares and writes, not the matcher's judgement
(tests/test_impact_e2e.py runs the real one)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import textwrap
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from newsexchange import cli
from newsexchange.config import Config
from newsexchange.db import (
    AuditEntry,
    Database,
    Delivery,
    Digest,
    Item,
    JobRun,
    Pickup,
    Source,
    StoryClicks,
    Suppression,
)
from newsexchange.impact.match import CandidateText, Match, StoryText
from newsexchange.impact.pickups import PickupNotFound, confirm, find_pickups, reject
from newsexchange.impact.report import digest_impact, period_impact
from newsexchange.service.scheduler import Service
from tests.servers import HTTPServer, Response, allow_private
from tests.test_delivery_support import FROM, NOW, seed_digest

SENT_AT = NOW + timedelta(hours=1)


def impact_config(write_config: Callable[..., Config], database_url: str) -> Config:
    text = textwrap.dedent(
        f"""\
        timezone: Europe/Helsinki
        database_url: {database_url}
        public_url: https://news.example.org
        mail:
          backend: outbox
          from: "{FROM}"
          outbox_dir: var/outbox
        regions:
          joensuu:      {{name: Joensuu, language: fi, timezone: Europe/Helsinki}}
          petrozavodsk: {{name: Petrozavodsk, language: ru, timezone: Europe/Moscow}}
          murmansk:     {{name: Murmansk, language: ru, timezone: Europe/Moscow}}
        sources:
          - {{id: yle, name: Yle Pohjois-Karjala, region: joensuu, url: "https://example.fi/rss", language: fi}}
          - {{id: stolica, name: Stolica na Onego, region: petrozavodsk, url: "https://example.ru/rss", language: ru}}
          - {{id: hibiny, name: Hibiny, region: murmansk, url: "https://example.ru/m.rss", language: ru}}
        lists:
          petrozavodsk-media: {{name: Petrozavodsk media, language: ru}}
        exchanges:
          - id: joensuu-to-petrozavodsk
            name: Новости Йоэнсуу
            from: [joensuu]
            to: petrozavodsk
            language: ru
            editors: [editor@example.fi]
            lists: [petrozavodsk-media]
        """
    )
    return write_config(base=text, env={"NEWSEXCHANGE_SECRET_KEY": "s3cret"})


class TagMatcher:
    """A matcher for tests: a candidate retells a story when its title holds the first word
    of the story's original title. Counts how many times it is built."""

    built: list[int] = []

    def __init__(self, stories: Sequence[StoryText], *, min_score: float = 0.5) -> None:
        self.stories = list(stories)
        self.min_score = min_score
        TagMatcher.built.append(len(self.stories))

    def matches(self, candidate: CandidateText) -> list[Match]:
        out = []
        for s in self.stories:
            tag = s.original_title.split()[0]
            if tag in candidate.title:
                out.append(Match(s.key, candidate.key, 0.9, {"names": [tag]}))
        return out


def _factory(stories: Sequence[StoryText], *, min_score: float) -> Any:
    return TagMatcher(stories, min_score=min_score)


def _sent_digest(db: Database, cfg: Config) -> int:
    did = seed_digest(db, cfg, 4, enqueue=True)
    with db.session() as s:
        d = s.get(Digest, did)
        assert d is not None
        d.state = "sent"
        d.sent_at = SENT_AT
        for src in ("stolica", "hibiny"):
            if s.get(Source, src) is None:
                s.add(Source(id=src, config_url=f"https://{src}", url=f"https://{src}"))
    return did


def _item(db: Database, source: str, region: str, title: str, at: datetime) -> int:
    with db.session() as s:
        item = Item(
            source_id=source,
            identity=f"{source}-{title}-{at.isoformat()}",
            title=title,
            summary_text=title,
            link=f"https://example.ru/{source}/{abs(hash(title)) % 10000}",
            region=region,
            language="ru",
            published_at=at,
            content_hash="x",
        )
        s.add(item)
        s.flush()
        return item.id


def _pickups(db: Database) -> list[tuple[int, int, str]]:
    with db.session() as s:
        rows = s.query(Pickup).order_by(Pickup.item_id).all()
        return [(p.story_item_id, p.item_id, p.status) for p in rows]


def _story_ids(db: Database, did: int) -> list[int]:
    with db.session() as s:
        d = s.get(Digest, did)
        assert d is not None
        return [e.item_id for e in d.entries]


def test_pickups_are_found_in_the_receiving_region_within_the_window_once(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database], any_db_url: str
) -> None:
    cfg = impact_config(write_config, any_db_url)
    db = db_for(cfg)
    did = _sent_digest(db, cfg)
    first, second = _story_ids(db, did)
    retold = _item(
        db,
        "stolica",
        "petrozavodsk",
        "Joensuun площадь: что изменится",
        SENT_AT + timedelta(days=2),
    )
    _item(db, "stolica", "petrozavodsk", "Joensuun площадь ещё раз", SENT_AT + timedelta(days=22))
    _item(db, "stolica", "petrozavodsk", "Joensuun площадь раньше", SENT_AT - timedelta(hours=2))
    _item(db, "hibiny", "murmansk", "Joensuun площадь в Мурманске", SENT_AT + timedelta(days=1))
    bridge = _item(db, "stolica", "petrozavodsk", "Pielisjoen мост", SENT_AT + timedelta(days=20))
    _item(db, "stolica", "petrozavodsk", "Погода в Петрозаводске", SENT_AT + timedelta(days=3))
    TagMatcher.built.clear()

    now = SENT_AT + timedelta(days=23)
    report = find_pickups(db, cfg, now=now, matcher_factory=_factory)

    assert TagMatcher.built == [2]  # one matcher over every story of the run
    assert report.digests == [did] and report.suggested == 2
    assert _pickups(db) == [(first, retold, "suggested"), (second, bridge, "suggested")]
    again = find_pickups(db, cfg, now=now, matcher_factory=_factory)
    assert again.suggested == 0 and len(_pickups(db)) == 2
    # Out of scope a while after the window: nothing compared at all.
    late = find_pickups(db, cfg, now=SENT_AT + timedelta(days=30), matcher_factory=_factory)
    assert late.digests == [] and late.candidates == 0


def test_an_editors_decision_is_never_overridden_and_is_audited(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database], any_db_url: str
) -> None:
    cfg = impact_config(write_config, any_db_url)
    db = db_for(cfg)
    did = _sent_digest(db, cfg)
    a = _item(db, "stolica", "petrozavodsk", "Joensuun площадь", SENT_AT + timedelta(days=1))
    b = _item(db, "stolica", "petrozavodsk", "Pielisjoen мост", SENT_AT + timedelta(days=1))
    now = SENT_AT + timedelta(days=3)
    find_pickups(db, cfg, now=now, matcher_factory=_factory)
    with db.session() as s:
        ids = {p.item_id: p.id for p in s.query(Pickup).all()}
        confirm(s, ids[a], "editor@example.fi", now)
        reject(s, ids[b], "editor@example.fi", now)
        reject(s, ids[b], "editor@example.fi", now)  # the same twice: logged once
        with pytest.raises(PickupNotFound):
            confirm(s, 999999, "editor@example.fi", now)
    find_pickups(db, cfg, now=now + timedelta(hours=1), matcher_factory=_factory)
    assert sorted(st for _, _, st in _pickups(db)) == ["confirmed", "rejected"]
    with db.session() as s:
        log = [
            (e.action, e.actor, e.detail["item"])
            for e in s.query(AuditEntry).filter(AuditEntry.digest_id == did).order_by(AuditEntry.id)
        ]
        p = s.get(Pickup, ids[a])
        assert p is not None and p.decided_by == "editor@example.fi" and p.decided_at == now
    assert log == [
        ("pickup_confirmed", "editor@example.fi", a),
        ("pickup_rejected", "editor@example.fi", b),
    ]


def _outcomes(db: Database, did: int) -> None:
    """4 deliveries: one delivered then unsubscribed, one bounced by a SendGrid event, one
    refused at SMTP time, one delivered then complained; clicks on both stories."""
    with db.session() as s:
        rows = s.query(Delivery).filter(Delivery.digest_id == did).order_by(Delivery.id).all()
        assert len(rows) == 4
        for r in rows:
            r.status, r.sent_at = "sent", NOW
        rows[1].status, rows[1].last_error = "failed", "bounce: 550 no such user"
        rows[2].status, rows[2].sent_at, rows[2].last_error = "failed", None, "550 refused"
        s.add(Suppression(email=rows[1].email, list_id=None, reason="bounced", created_at=NOW))
        s.add(
            Suppression(
                email=rows[3].email,
                list_id=None,
                reason="complained",
                created_at=NOW + timedelta(hours=1),
            )
        )
        s.add(
            Suppression(
                email=rows[0].email,
                list_id="petrozavodsk-media",
                reason="unsubscribed",
                created_at=NOW + timedelta(hours=2),
            )
        )
        items = [e.item_id for e in s.get(Digest, did).entries]  # type: ignore[union-attr]
        s.add(StoryClicks(digest_id=did, position=0, item_id=items[0], clicks=3))
        s.add(StoryClicks(digest_id=did, position=1, item_id=items[1], clicks=1))


def test_the_digest_report_has_the_issues_shape_over_real_rows(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database], any_db_url: str
) -> None:
    cfg = impact_config(write_config, any_db_url)
    db = db_for(cfg)
    did = _sent_digest(db, cfg)
    _outcomes(db, did)
    first, second = _story_ids(db, did)
    a = _item(db, "stolica", "petrozavodsk", "Joensuun площадь", SENT_AT + timedelta(days=1))
    find_pickups(db, cfg, now=SENT_AT + timedelta(days=2), matcher_factory=_factory)

    with db.session() as s:
        data = digest_impact(s, cfg, did)

    assert list(data) == [
        "digest",
        "exchange",
        "sent",
        "delivered",
        "bounced",
        "complained",
        "unsubscribed",
        "clicks",
        "stories",
    ]
    assert {k: data[k] for k in list(data)[:8]} == {
        "digest": did, "exchange": "joensuu-to-petrozavodsk", "sent": 4, "delivered": 2,
        "bounced": 2, "complained": 1, "unsubscribed": 1, "clicks": 4,
    }  # fmt: skip
    s0, s1 = data["stories"]
    assert (s0["position"], s0["item_id"], s0["title"], s0["clicks"]) == (
        0,
        first,
        "Рыночная площадь Йоэнсуу обновится",
        3,
    )
    assert (s1["position"], s1["item_id"], s1["clicks"], s1["pickups"]) == (1, second, 1, [])
    [p] = s0["pickups"]
    # The issue's fields, then the two the editors decide by: the row's id and the evidence.
    assert p == {
        "item_id": a, "source": "stolica", "title": "Joensuun площадь",
        "url": p["url"], "published_at": (SENT_AT + timedelta(days=1)).isoformat(),
        "score": 0.9, "status": "suggested", "id": p["id"], "evidence": p["evidence"],
    }  # fmt: skip
    assert isinstance(p["id"], int) and isinstance(p["evidence"], dict)
    assert p["url"].startswith("https://example.ru/stolica/")
    json.dumps(data)  # JSON-able as is


def test_period_report_counts_only_confirmed_pickups(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> None:
    cfg = impact_config(write_config, "sqlite:///var/test.db")
    db = db_for(cfg)
    did = _sent_digest(db, cfg)
    a = _item(db, "stolica", "petrozavodsk", "Joensuun площадь", SENT_AT + timedelta(days=1))
    _item(db, "stolica", "petrozavodsk", "Pielisjoen мост", SENT_AT + timedelta(days=1))
    find_pickups(db, cfg, now=SENT_AT + timedelta(days=2), matcher_factory=_factory)
    with db.session() as s:
        p = s.query(Pickup).filter(Pickup.item_id == a).one()
        confirm(s, p.id, "editor@example.fi", SENT_AT + timedelta(days=2))
    with db.session() as s:
        [row] = period_impact(
            s, cfg, "joensuu-to-petrozavodsk", date(2026, 11, 1), date(2026, 11, 30)
        )
        assert (
            period_impact(s, cfg, "joensuu-to-petrozavodsk", date(2026, 12, 1), date(2026, 12, 31))
            == []
        )
    assert (
        row["digest"],
        row["stories"],
        row["pickups"],
        row["stories_picked_up"],
        row["outlets"],
    ) == (did, 2, 1, 1, ["stolica"])


def _cli(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(args)
    return code, out.getvalue()


def test_impact_command_prints_json_and_csv(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> None:
    cfg = impact_config(write_config, "sqlite:///var/test.db")
    db = db_for(cfg)
    did = _sent_digest(db, cfg)
    _outcomes(db, did)
    assert cfg.path is not None
    conf = ["--config", str(cfg.path)]

    code, out = _cli(["impact", str(did), "--json", *conf])
    assert code == 0
    data = json.loads(out)
    assert (data["digest"], data["sent"], data["delivered"], data["clicks"]) == (did, 4, 2, 4)
    assert [s["clicks"] for s in data["stories"]] == [3, 1]

    code, text = _cli(["impact", str(did), *conf])
    assert code == 0 and "sent 4, delivered 2, bounced 2" in text and "Рыночная площадь" in text

    code, out = _cli(
        [
            "impact",
            "--exchange",
            "joensuu-to-petrozavodsk",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-30",
            "--format",
            "csv",
            *conf,
        ]
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1 and rows[0]["digest"] == str(did) and rows[0]["sent"] == "4"
    assert rows[0]["clicks"] == "4" and rows[0]["pickups"] == "0"

    code, out = _cli(
        [
            "impact",
            "--exchange",
            "joensuu-to-petrozavodsk",
            "--from",
            "2026-11-01",
            "--to",
            "2026-11-30",
            "--format",
            "json",
            *conf,
        ]
    )
    assert code == 0 and [r["digest"] for r in json.loads(out)["digests"]] == [did]


def test_impact_command_refuses_an_unknown_digest_and_bad_dates(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = impact_config(write_config, "sqlite:///var/test.db")
    db_for(cfg)
    assert cfg.path is not None
    conf = ["--config", str(cfg.path)]
    code, out = _cli(["impact", "424242", "--json", *conf])
    assert code == 2 and json.loads(out) == {
        "ok": False,
        "error": "no digest with id 424242 (see: newsexchange digest list)",
        "kind": "usage",
    }
    for bad in (
        ["--from", "2026-13-01", "--to", "2026-12-01"],
        ["--from", "2026-12-02", "--to", "2026-12-01"],
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(["impact", "--exchange", "joensuu-to-petrozavodsk", *bad, *conf])
        assert exc.value.code == 2
    code, _ = _cli(
        ["impact", "--exchange", "nope", "--from", "2026-11-01", "--to", "2026-11-02", *conf]
    )
    assert code == 2
    assert "no exchange with id 'nope'" in capsys.readouterr().err


def test_the_service_looks_for_pickups_after_each_fetch_and_its_translation(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    http_server: HTTPServer,
) -> None:
    empty = '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'
    http_server.route("/rss", Response(200, empty, {"Content-Type": "application/rss+xml"}))
    cfg = write_config(
        f"""\
        fetch: {{interval_minutes: 30, {allow_private(http_server)}}}
        """,
        base=textwrap.dedent(
            f"""\
            database_url: sqlite:///var/wiring.db
            regions:
              joensuu: {{name: Joensuu, language: fi}}
              petrozavodsk: {{name: Petrozavodsk, language: ru}}
            sources:
              - {{id: s1, region: joensuu, language: fi, url: "{http_server.url}/rss"}}
            exchanges:
              - {{id: fi-ru, from: [joensuu], to: petrozavodsk, language: ru, editors: [e@example.fi]}}
            """
        ),
    )
    db = db_for(cfg)
    service = Service(cfg, db)
    outcome = service.run_job("fetch")
    assert outcome is not None and outcome.status == "ok"
    with db.session() as s:
        ran = [r.job for r in s.query(JobRun).order_by(JobRun.id)]
        impact = s.query(JobRun).filter(JobRun.job == "impact").one()
    assert ran == ["fetch", "translate", "impact"]
    assert impact.ok and impact.summary == {
        "digests": [], "stories": 0, "candidates": 0, "suggested": 0,
        "skipped": "no sent digest in its pick-up window",
    }  # fmt: skip
