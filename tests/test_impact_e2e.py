"""End to end (issue 14): a digest sent through the local SMTP server; the receiving side's
feed (a loopback server) later publishes two retellings of its stories and a near miss (the
same city, another subject); the service's fetch (``Service.run_job("fetch")``, in process)
is followed by the pick-up step; ``newsexchange impact ID --json`` lists exactly the two.

Runs with the real matcher (``newsexchange.impact.match.Matcher``); skipped, visibly, only
while that matcher is still the interface's stub (until the matcher's branch is merged)."""

from __future__ import annotations

import contextlib
import io
import json
import textwrap
from datetime import datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from newsexchange import cli
from newsexchange.approval.decide import content_hash, freeze_content
from newsexchange.config import Config, load_config
from newsexchange.db import Database, Digest, DigestItem, Item, Source, Translation, utcnow
from newsexchange.delivery.outbox import enqueue_deliveries
from newsexchange.delivery.send import run_send
from newsexchange.service.scheduler import Service
from tests.servers import HTTPServer, Response, SMTPServer, allow_private

STORIES = [
    (
        "Joensuu avaa uuden sillan Pielisjoen yli 15. joulukuuta",
        "Kaupungin mukaan 240 metriä pitkä Suvantosilta maksoi 12 miljoonaa euroa. "
        "Pormestari Kari Peltonen avaa sillan juhlallisesti.",
        "Йоэнсуу откроет новый мост через реку Пиелисйоки 15 декабря",
        "По данным города, мост Сувантосилта длиной 240 метров обошёлся в 12 миллионов евро. "
        "Мэр Кари Пелтонен торжественно откроет мост.",
    ),
    (
        "Joensuun yliopisto aloittaa venäjänkielisen metsäkoulutuksen",
        "Itä-Suomen yliopisto ottaa syksyllä 30 opiskelijaa Karjalan tasavallasta "
        "metsätieteen maisteriohjelmaan.",
        "Университет Йоэнсуу начнёт обучение лесному делу на русском языке",
        "Университет Восточной Финляндии осенью примет 30 студентов из Республики Карелия "
        "на магистерскую программу по лесоведению.",
    ),
]

RU_ITEMS = [
    (
        "ru-1",
        "В финском Йоэнсуу 15 декабря откроют мост за 12 миллионов евро",
        "Мэр Кари Пелтонен откроет 240-метровый мост Сувантосилта через Пиелисйоки. "
        "«Это пример для Петрозаводска», — считает депутат Заксобрания Карелии Иван Петров.",
    ),
    (
        "ru-2",
        "30 студентов из Карелии будут учиться в университете Йоэнсуу",
        "Программа по лесоведению на русском языке начнётся осенью в Университете Восточной "
        "Финляндии, рассказали в минобразования Карелии.",
    ),
    (
        "ru-3",
        "В Йоэнсуу прошёл фестиваль карельской кухни",
        "Жители Йоэнсуу и гости из Петрозаводска попробовали калитки и уху на городской "
        "площади в субботу.",
    ),
]


def _feed(base: str, title: str, items: list[tuple[str, str, str, datetime]]) -> str:
    entries = "".join(
        f"<item><title>{t}</title><link>{base}/{g}</link><guid>{g}</guid>"
        f"<description>{d}</description><pubDate>{format_datetime(at)}</pubDate></item>"
        for g, t, d, at in items
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
        f"<title>{title}</title><link>{base}/</link>{entries}</channel></rss>"
    )


def _config(tmp_path: Path, feeds: HTTPServer, smtp: SMTPServer) -> Config:
    path = tmp_path / "feeds.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            timezone: Europe/Helsinki
            database_url: sqlite:///var/impact-e2e.db
            public_url: https://news.example.org
            fetch: {{interval_minutes: 30, {allow_private(feeds)}}}
            mail:
              backend: smtp
              from: "Exchange <news@example.org>"
              rate_per_second: 1000
              smtp: {{host: 127.0.0.1, port: {smtp.port}, connections: 1, timeout: 30}}
            regions:
              joensuu:      {{name: Joensuu, language: fi, timezone: Europe/Helsinki}}
              petrozavodsk: {{name: Petrozavodsk, language: ru, timezone: Europe/Moscow}}
            sources:
              - {{id: karjalainen, name: Karjalainen, region: joensuu, language: fi, url: "{feeds.url}/fi.xml"}}
              - {{id: stolica, name: Столица на Онего, region: petrozavodsk, language: ru, url: "{feeds.url}/ru.xml"}}
            lists:
              ptz-media: {{name: Petrozavodsk media, language: ru}}
            exchanges:
              - id: fi-to-ru
                name: Новости Йоэнсуу
                from: [joensuu]
                to: petrozavodsk
                language: ru
                editors: [editor@example.fi]
                lists: [ptz-media]
            """
        ),
        encoding="utf-8",
    )
    return load_config(path, env={"NEWSEXCHANGE_SECRET_KEY": "e2e-impact-key-0123456789"})


def _approved_digest(db: Database, cfg: Config, *, published: datetime) -> int:
    from newsexchange.db import Contact, ListMembership

    with db.session() as s:
        for src in cfg.sources:
            s.add(Source(id=src.id, config_url=str(src.url), url=str(src.url)))
        s.flush()
        digest = Digest(
            exchange_id="fi-to-ru",
            period_start=published.date(),
            period_end=published.date() + timedelta(days=6),
            language="ru",
            state="approved",
            token="impact-e2e-token",
            approved_at=published,
        )
        for pos, (fi, fi_sum, ru, ru_sum) in enumerate(STORIES):
            item = Item(
                source_id="karjalainen",
                identity=f"fi-{pos}",
                title=fi,
                summary_text=fi_sum,
                summary_html=f"<p>{fi_sum}</p>",
                link=f"https://karjalainen.example/{pos}",
                region="joensuu",
                language="fi",
                published_at=published,
                content_hash=f"h{pos}",
            )
            item.translations.append(
                Translation(
                    language="ru",
                    title=ru,
                    summary_text=ru_sum,
                    summary_html=f"<p>{ru_sum}</p>",
                    provider="libre",
                    status="done",
                )
            )
            s.add(item)
            s.flush()
            digest.entries.append(DigestItem(item_id=item.id, position=pos, section="news"))
        s.add(digest)
        s.flush()
        # Frozen as an approval freezes it: what was mailed stays what was mailed, whatever the
        # later fetch changes in the items (the fi feed is fetched again below).
        digest.frozen = freeze_content(s, cfg, digest)
        digest.content_hash = content_hash(digest.frozen)
        for i in range(3):
            c = Contact(email=f"j{i}@media.example", name=f"Журналист {i}", language="ru")
            c.memberships.append(ListMembership(list_id="ptz-media"))
            s.add(c)
        s.flush()
        enqueue_deliveries(s, cfg, digest, now=published)
        return digest.id


def test_two_retellings_on_the_receiving_side_are_listed_and_the_near_miss_is_not(
    tmp_path: Path, smtp_server: SMTPServer
) -> None:
    feeds = HTTPServer().start()
    try:
        feeds.route(
            "/fi.xml",
            Response(
                200, _feed(feeds.url, "Karjalainen", []), {"Content-Type": "application/rss+xml"}
            ),
        )
        feeds.route(
            "/ru.xml",
            Response(200, _feed(feeds.url, "Столица", []), {"Content-Type": "application/rss+xml"}),
        )
        cfg = _config(tmp_path, feeds, smtp_server)
        db = Database(_db_url(cfg))
        try:
            sent_at = utcnow() - timedelta(days=2)  # relative to the (maybe moved) clock
            did = _approved_digest(db, cfg, published=sent_at - timedelta(days=1))
            report = run_send(db, cfg, now=sent_at, digest_id=did)
            assert report.ok and len(smtp_server.messages) == 3
            with db.session() as s:
                d = s.get(Digest, did)
                assert d is not None and d.state == "sent" and d.sent_at == sent_at

            later = [
                (g, t, d, sent_at + timedelta(hours=5 + i)) for i, (g, t, d) in enumerate(RU_ITEMS)
            ]
            feeds.route(
                "/ru.xml",
                Response(
                    200, _feed(feeds.url, "Столица", later), {"Content-Type": "application/rss+xml"}
                ),
            )
            service = Service(cfg, db)
            outcome = service.run_job("fetch")
            assert outcome is not None and outcome.status == "ok", outcome
            ran = [o.job for o in service.history]
            assert ran[0] == "fetch"
            impact_runs = [r for r in _runs(db) if r[0] == "impact"]
            assert impact_runs and impact_runs[-1][1] is True  # the step ran after the fetch, ok

            out = io.StringIO()
            assert cfg.path is not None
            with contextlib.redirect_stdout(out):
                code = cli.main(["impact", str(did), "--json", "--config", str(cfg.path)])
            assert code == 0
            data = json.loads(out.getvalue())
            found = {(s["position"], p["title"]) for s in data["stories"] for p in s["pickups"]}
            assert found == {(0, RU_ITEMS[0][1]), (1, RU_ITEMS[1][1])}
            assert all(
                p["status"] == "suggested" and 0 < p["score"] <= 1 and p["source"] == "stolica"
                for s in data["stories"]
                for p in s["pickups"]
            )
            assert data["sent"] == data["delivered"] == 3
        finally:
            db.dispose()
    finally:
        feeds.stop()


def _db_url(cfg: Config) -> str:
    from newsexchange.config import database_url

    return database_url(cfg)


def _runs(db: Database) -> list[tuple[str, bool | None]]:
    from newsexchange.db import JobRun

    with db.session() as s:
        return [(r.job, r.ok) for r in s.query(JobRun).order_by(JobRun.id)]
