"""``fulltext: true`` and ``require_place: true`` end to end: a loopback server serving a
feed of teasers and article pages shaped like real news pages, ``run_fetch`` storing into
SQLite (and PostgreSQL), and the pure rules of :mod:`newsexchange.ingest.fulltext`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from sqlalchemy import select

from newsexchange.config import Config
from newsexchange.db import Database, Item
from newsexchange.errors import ConfigError
from newsexchange.ingest import FetchReport, run_fetch
from newsexchange.ingest.fetch import DefaultFetcher, fetch_options
from newsexchange.ingest.fulltext import (
    NotAnArticle,
    StoredPage,
    extract_article,
    first_paragraphs,
    plan_pages,
)
from newsexchange.ingest.model import ParsedEntry
from tests.conftest import BASE_CONFIG
from tests.servers import HTTPServer, Request, Response, allow_private
from tests.test_ssrf import LoopbackOnly, names

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

#: One story: (title, teaser, the article's paragraphs).
STORIES = [
    (
        "Joensuun uusi kirjasto avataan keväällä",
        "Kirjasto avataan keväällä.",
        [
            "Joensuun kaupunki kertoi maanantaina, että uusi pääkirjasto avataan keskustassa "
            "ensi keväänä. Rakennustyöt ovat edenneet aikataulussa.",
            "Kirjastossa on tilaa kokouksille, näyttelyille ja lasten satutunneille. "
            "Kaupunginkirjaston johtajan mukaan kokoelmia on uudistettu koko vuoden ajan.",
            "Hankkeen kokonaiskustannukset ovat noin 24 miljoonaa euroa. Valtio osallistuu "
            "rahoitukseen kolmella miljoonalla eurolla. Loput maksaa kaupunki.",
            "Vanha kirjastorakennus myydään, ja sen tulevasta käytöstä päätetään ensi vuonna. "
            "Asukkaat voivat esittää toiveitaan kaupungin verkkosivuilla joulukuun loppuun.",
        ],
    ),
    (
        "Pohjois-Karjalan maakuntaliitto rahoittaa rajayhteistyötä",
        "Rahoitusta kolmelle hankkeelle.",
        [
            "Pohjois-Karjalan maakuntaliitto myönsi tiistaina rahoitusta kolmelle uudelle "
            "hankkeelle, jotka tehdään yhdessä Karjalan tasavallan toimijoiden kanssa.",
            "Hankkeet koskevat matkailua, metsäalan koulutusta ja kulttuurivaihtoa. Ne "
            "alkavat ensi vuoden alussa ja kestävät kaksi vuotta.",
            "Maakuntajohtajan mukaan yhteistyö rajan yli on tärkeää alueen elinvoimalle, "
            "vaikka olosuhteet ovat viime vuosina muuttuneet.",
        ],
    ),
    (
        "Itä-Suomen yliopisto tutkii boreaalisia metsiä",
        "Laaja metsätutkimus alkaa.",
        [
            "Itä-Suomen yliopiston tutkijat aloittavat laajan metsätutkimuksen "
            "Pohjois-Karjalassa syksyllä. Mukana on kymmenen tutkimusryhmää.",
            "Tutkimus selvittää, miten ilmaston lämpeneminen muuttaa boreaalisten metsien "
            "kasvua ja hiilensidontaa seuraavien vuosikymmenten aikana.",
        ],
    ),
]
NAV = "Etusivu Uutiset Urheilu Kulttuuri Mielipide"
COOKIES = "Käytämme evästeitä parantaaksemme palvelua. Hyväksy evästeet jatkaaksesi."
FOOTER = "© Karjalainen 2026. Kaikki oikeudet pidätetään. Asiakaspalvelu ja yhteystiedot."
RELATED = "Lue myös: Uimahalli remonttiin ensi kesänä"


def article_page(title: str, paragraphs: list[str]) -> str:
    """A news page as outlets publish them: banner, header, nav, the article, related
    links, footer."""
    nav = "".join(f'<li><a href="/{w.lower()}">{w}</a></li>' for w in NAV.split())
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    return f"""<!doctype html><html lang="fi"><head><meta charset="utf-8">
<title>{escape(title)} | Karjalainen</title><script>var tracking = 1;</script></head><body>
<div class="cookie-banner"><p>{COOKIES}</p><button>Hyväksy</button></div>
<header><a class="logo" href="/">Karjalainen</a><nav><ul>{nav}</ul></nav></header>
<main><article><h1>{escape(title)}</h1><p class="byline">Toimittaja Matti Meikäläinen</p>
{body}</article>
<aside class="related"><h2>Lue myös</h2><ul><li><a href="/a">{RELATED}</a></li></ul></aside>
</main><footer><p>{FOOTER}</p></footer></body></html>"""


def rss(items: list[tuple[str, str, str]]) -> bytes:
    """(title, link, teaser) items, newest first."""
    parts = ['<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>K</title>']
    for i, (title, link, teaser) in enumerate(items):
        date = format_datetime(NOW - timedelta(hours=i + 1))
        parts.append(
            f"<item><title>{escape(title)}</title><link>{escape(link)}</link>"
            f"<guid>{escape(link)}</guid><pubDate>{date}</pubDate>"
            f"<description>{escape(teaser)}</description></item>"
        )
    parts.append("</channel></rss>")
    return "".join(parts).encode()


def fetch_yaml(*servers: HTTPServer, extra: str = "") -> str:
    return (
        "fetch: {connect_timeout: 1, read_timeout: 2, total_timeout: 5, retries: 0, "
        f"{allow_private(*servers)}{extra}}}\n"
    )


def source_yaml(url: str, extra: str = ", fulltext: true") -> str:
    return (
        f'sources:\n  - {{id: karjalainen, region: joensuu, language: fi, url: "{url}"{extra}}}\n'
    )


@pytest.fixture
def open_db(tmp_path: Path) -> Iterator[Callable[[str | None], Database]]:
    opened: list[Database] = []

    def make(url: str | None = None) -> Database:
        db = Database(url or f"sqlite:///{tmp_path}/fulltext.db")
        opened.append(db)
        return db

    yield make
    for d in opened:
        d.dispose()


def stored(db: Database) -> dict[str, Item]:
    with db.session() as s:
        return {i.link or "": i for i in s.scalars(select(Item))}


def result(report: FetchReport) -> dict[str, object]:
    out: dict[str, object] = report.to_json()["results"][0]
    return out


def article_requests(server: HTTPServer) -> list[Request]:
    return [r for r in server.requests if r.path.startswith("/news/")]


def serve_stories(server: HTTPServer) -> list[tuple[str, str, str]]:
    items = []
    for n, (title, teaser, paras) in enumerate(STORIES):
        path = f"/news/{n}"
        server.route(
            path,
            Response(
                200,
                article_page(title, paras),
                {"Content-Type": "text/html; charset=utf-8"},
            ),
        )
        items.append((title, f"{server.url}{path}", teaser))
    return items


# -- end to end -------------------------------------------------------------------------------


def test_new_items_get_their_articles_first_paragraphs_once_and_keep_them(
    write_config: Callable[..., Config],
    http_server: HTTPServer,
    open_db: Callable[[str | None], Database],
    any_db_url: str,
) -> None:
    items = serve_stories(http_server)
    http_server.route(
        "/feed.xml", Response(200, rss(items), {"Content-Type": "application/rss+xml"})
    )
    cfg = write_config(
        fetch_yaml(http_server, extra=", fulltext_chars: 300")
        + source_yaml(f"{http_server.url}/feed.xml")
    )
    db = open_db(any_db_url)

    first = run_fetch(db, cfg, now=NOW)
    assert result(first)["new"] == 3 and result(first)["articles"] == 3
    assert "problem" not in result(first)
    rows = stored(db)
    for (_title, teaser, paras), (_, link, _) in zip(STORIES, items, strict=True):
        item = rows[link]
        # The article's own first paragraphs, whole, within fetch.fulltext_chars ...
        assert item.summary_text.startswith(paras[0])
        assert len(item.summary_text) <= 300
        assert item.summary_text != teaser and len(item.summary_text) > len(paras[0])
        assert item.summary_html.startswith(f"<p>{paras[0]}</p>")
        # ... none of the page's furniture, and the link is still the outlet's page.
        for furniture in (COOKIES, FOOTER, RELATED, "Urheilu", "Meikäläinen", "tracking"):
            assert furniture not in item.summary_text
        assert item.link == link and item.fulltext_at is not None
    # The bound cuts at a whole paragraph or a sentence end, never mid-sentence.
    story = rows[items[0][1]].summary_text
    assert story.endswith(".") and paras_prefix(STORIES[0][2], story)
    asked = len(article_requests(http_server))
    assert asked == 3

    # An unchanged feed (fetched in full: no validators) changes nothing, reads no page.
    second = run_fetch(db, cfg, now=NOW + timedelta(hours=1))
    assert (result(second)["new"], result(second)["unchanged"]) == (0, 3)
    assert len(article_requests(http_server)) == asked
    assert stored(db)[items[0][1]].summary_text == story

    # The feed corrects a title: the item is updated, its full text stays, no page is read.
    items[0] = ("Joensuun uusi pääkirjasto avataan keväällä", items[0][1], items[0][2])
    http_server.route(
        "/feed.xml", Response(200, rss(items), {"Content-Type": "application/rss+xml"})
    )
    third = run_fetch(db, cfg, now=NOW + timedelta(hours=2))
    assert result(third)["updated"] == 1
    after = stored(db)[items[0][1]]
    assert after.title == items[0][0] and after.summary_text == story
    assert len(article_requests(http_server)) == asked


def paras_prefix(paras: list[str], text: str) -> bool:
    """``text`` is whole paragraphs of ``paras`` and then a prefix of the next one ending at a
    sentence end."""
    rest = text
    for p in paras:
        if rest.startswith(p):
            rest = rest[len(p) :].lstrip()
            continue
        return rest == "" or (p.startswith(rest) and rest.endswith("."))
    return rest == ""


def test_pages_that_cannot_be_read_keep_the_teaser_and_the_run_is_ok(
    write_config: Callable[..., Config],
    http_server: HTTPServer,
    open_db: Callable[[str | None], Database],
) -> None:
    good = serve_stories(http_server)[0]
    http_server.route(
        "/news/pdf", Response(200, b"%PDF-1.7 ...", {"Content-Type": "application/pdf"})
    )
    http_server.route(
        "/news/empty",
        Response(
            200,
            article_page("Tyhjä", []).replace("<article>", "<div>"),
            {"Content-Type": "text/html"},
        ),
    )
    long_teaser = " ".join(STORIES[1][2]) + " Lisäksi teaserissa on enemmän kuin sivulla."
    http_server.route(
        "/news/short",
        Response(200, article_page("Lyhyt", STORIES[1][2][:1]), {"Content-Type": "text/html"}),
    )
    items = [
        good,
        ("Kadonnut juttu", f"{http_server.url}/news/gone", "Teaser of a 404."),
        ("PDF-liite", f"{http_server.url}/news/pdf", "Teaser of a PDF."),
        ("Tyhjä sivu", f"{http_server.url}/news/empty", "Teaser of a page without text."),
        ("Lyhyt sivu", f"{http_server.url}/news/short", long_teaser),
    ]
    http_server.route(
        "/feed.xml", Response(200, rss(items), {"Content-Type": "application/rss+xml"})
    )
    cfg = write_config(fetch_yaml(http_server) + source_yaml(f"{http_server.url}/feed.xml"))
    db = open_db(None)

    report = run_fetch(db, cfg, now=NOW)
    out = result(report)
    assert report.failed == 0 and out["status"] == "ok" and out["new"] == 5
    assert out["articles"] == 1
    problem = str(out["problem"])
    assert problem.startswith("3 of 5 article pages could not be read: ")
    assert "/news/gone: HTTP 404" in problem
    rows = stored(db)
    assert rows[good[1]].summary_text.startswith(STORIES[0][2][0])
    for title, link, teaser in items[1:]:
        assert rows[link].summary_text == teaser, title  # the feed's teaser stays
        assert rows[link].fulltext_at is not None  # tried once ...
    asked = len(article_requests(http_server))
    assert asked == 5

    again = run_fetch(db, cfg, now=NOW + timedelta(hours=1))
    assert result(again)["unchanged"] == 5 and "problem" not in result(again)
    assert len(article_requests(http_server)) == asked  # ... and never again


def test_a_page_on_a_refused_address_is_never_requested(
    write_config: Callable[..., Config],
    http_server: HTTPServer,
    open_db: Callable[[str | None], Database],
) -> None:
    other = HTTPServer().start()  # loopback, but not in fetch.allow_private
    try:
        other.route(
            "/news/x", Response(200, article_page(*STORIES[0][::2]), {"Content-Type": "text/html"})
        )
        good = serve_stories(http_server)[1]
        items = [
            good,
            ("Sisäverkko", "http://intranet.example.test/news/secret", "Teaser one."),
            ("Toinen portti", f"{other.url}/news/x", "Teaser two."),
        ]
        http_server.route(
            "/feed.xml", Response(200, rss(items), {"Content-Type": "application/rss+xml"})
        )
        cfg = write_config(fetch_yaml(http_server) + source_yaml(f"{http_server.url}/feed.xml"))
        network = LoopbackOnly()
        fetcher = DefaultFetcher(
            fetch_options(cfg),
            resolver=names({"intranet.example.test": ["10.0.0.5"]}),
            network=network,
        )
        db = open_db(None)
        report = run_fetch(db, cfg, now=NOW, fetcher=fetcher)
        out = result(report)
        assert out["status"] == "ok" and out["new"] == 3 and out["articles"] == 1
        assert str(out["problem"]).startswith("2 of 3 article pages could not be read: ")
        assert "refused" in str(out["problem"])
        assert other.requests == []
        assert {a for a in network.asked} == {("127.0.0.1", http_server.port)}
        rows = stored(db)
        assert rows["http://intranet.example.test/news/secret"].summary_text == "Teaser one."
        assert rows[f"{other.url}/news/x"].summary_text == "Teaser two."
        assert rows[good[1]].summary_text.startswith(STORIES[1][2][0])
    finally:
        other.stop()


def test_article_pages_of_one_host_are_read_a_few_at_a_time(
    write_config: Callable[..., Config],
    http_server: HTTPServer,
    open_db: Callable[[str | None], Database],
) -> None:
    lock = threading.Lock()
    now_in_flight = [0]
    most = [0]
    title, _, paras = STORIES[0]
    page = article_page(title, paras)

    def slow(_req: Request) -> Response:
        with lock:
            now_in_flight[0] += 1
            most[0] = max(most[0], now_in_flight[0])
        time.sleep(0.15)
        with lock:
            now_in_flight[0] -= 1
        return Response(200, page, {"Content-Type": "text/html"})

    http_server.route("*", slow)
    items = [(f"{title} {n}", f"{http_server.url}/news/{n}", "Teaser.") for n in range(7)]
    http_server.route(
        "/feed.xml", Response(200, rss(items), {"Content-Type": "application/rss+xml"})
    )
    cfg = write_config(
        fetch_yaml(http_server, extra=", per_host: 2") + source_yaml(f"{http_server.url}/feed.xml")
    )
    report = run_fetch(open_db(None), cfg, now=NOW)
    assert result(report)["articles"] == 7
    assert len(article_requests(http_server)) == 7
    assert most[0] == 2  # never more than fetch.per_host at once (and they do overlap)


def test_a_require_place_source_stores_only_items_about_its_region(
    write_config: Callable[..., Config],
    http_server: HTTPServer,
    open_db: Callable[[str | None], Database],
) -> None:
    base = BASE_CONFIG.replace(
        "joensuu:      {name: Joensuu, language: fi, timezone: Europe/Helsinki}",
        "joensuu:      {name: Joensuu, language: fi, timezone: Europe/Helsinki,"
        " places: [Joensuu, Pohjois-Karjala, Lieksa]}",
    )
    assert base != BASE_CONFIG
    items = [
        ("Joensuussa avataan uusi kirjasto", f"{http_server.url}/news/0", "Kirjasto avataan."),
        ("Helsingissä avataan uusi kirjasto", f"{http_server.url}/news/1", "Keskustakirjasto."),
        ("Hallitus esittää", f"{http_server.url}/news/2", "Esitys koskee myös Lieksaa."),
    ]
    http_server.route(
        "/feed.xml", Response(200, rss(items), {"Content-Type": "application/rss+xml"})
    )
    cfg = write_config(
        fetch_yaml(http_server)
        + source_yaml(f"{http_server.url}/feed.xml", ", require_place: true"),
        base=base,
    )
    db = open_db(None)
    out = result(run_fetch(db, cfg, now=NOW))
    assert (out["new"], out["skipped_off_region"], out["entries"]) == (2, 1, 3)
    assert set(stored(db)) == {items[0][1], items[2][1]}
    # The left-out item is not stored on the next run either.
    again = result(run_fetch(db, cfg, now=NOW + timedelta(hours=1)))
    assert (again["unchanged"], again["skipped_off_region"]) == (2, 1)
    assert len(stored(db)) == 2


def test_sources_without_the_options_report_neither_count(
    write_config: Callable[..., Config],
    http_server: HTTPServer,
    open_db: Callable[[str | None], Database],
) -> None:
    items = serve_stories(http_server)
    http_server.route(
        "/feed.xml", Response(200, rss(items), {"Content-Type": "application/rss+xml"})
    )
    cfg = write_config(fetch_yaml(http_server) + source_yaml(f"{http_server.url}/feed.xml", ""))
    db = open_db(None)
    out = result(run_fetch(db, cfg, now=NOW))
    assert out["new"] == 3 and "articles" not in out and "skipped_off_region" not in out
    assert article_requests(http_server) == []
    assert {i.summary_text for i in stored(db).values()} == {s[1] for s in STORIES}


# -- the pure rules ---------------------------------------------------------------------------


def entry(link: str | None, guid: str | None = None, text: str = "teaser") -> ParsedEntry:
    return ParsedEntry(guid=guid, link=link, title="t", summary_html=text, summary_text=text)


def test_plan_reads_new_and_untried_pages_up_to_the_cap_and_skips_shared_links() -> None:
    entries = [
        entry("http://a.test/1", "g1"),  # stored, tried
        entry("http://a.test/2", "g2"),  # stored, never tried (over an earlier cap)
        entry("http://a.test/3", "g3"),  # new
        entry("http://a.test/list"),  # two entries share this listing page
        entry("http://a.test/list"),
        entry("file:local.html", "g6"),  # not a web page
        entry(None, "g7"),
        entry("http://a.test/8", "g8"),
        entry("http://a.test/9", "g9"),  # over the cap
    ]
    stored_rows = [
        StoredPage(1, "g1", "http://a.test/1", True),
        StoredPage(2, "g2", "http://a.test/2", False),
    ]
    plan = plan_pages(entries, stored_rows, cap=3)
    assert plan.links == ["http://a.test/2", "http://a.test/3", "http://a.test/8"]
    assert plan.tried_ids == {1} and plan.deferred == 1
    assert plan.teasers["http://a.test/3"] == "teaser"
    # An item stored by its link before the feed gave guids is the same item.
    by_link = plan_pages(
        [entry("http://a.test/1", "new-guid")],
        [StoredPage(5, "http://a.test/1", "http://a.test/1", True)],
    )
    assert by_link.links == [] and by_link.tried_ids == {5}


def test_first_paragraphs_keeps_whole_paragraphs_and_cuts_the_last_at_a_sentence() -> None:
    paras = ["Yksi kaksi. Kolme neljä.", "Viisi kuusi. Seitsemän kahdeksan!", "Yhdeksän."]
    assert first_paragraphs(paras, 200) == paras
    assert first_paragraphs(paras, 25 + len("Viisi kuusi.") + 1) == [paras[0], "Viisi kuusi."]
    assert first_paragraphs(paras, 30) == [paras[0]]
    # A first paragraph without a sentence end that fits is cut at a word.
    cut = first_paragraphs(["sana " * 40], 50)
    assert len(cut) == 1 and len(cut[0]) <= 50 and cut[0].endswith("…")


def test_extraction_refuses_what_is_not_an_article() -> None:
    with pytest.raises(NotAnArticle, match="not an HTML page"):
        extract_article(b"{}", url="http://a.test/", content_type="application/json", limit=500)
    bare = article_page("x", []).replace("<article>", "<div>").encode()
    with pytest.raises(NotAnArticle, match="no article text"):
        extract_article(bare, url="http://a.test/", content_type="text/html", limit=500)
    art = extract_article(
        article_page(*STORIES[2][::2]).encode(), url="http://a.test/", content_type=None, limit=2000
    )
    assert art.summary_text == " ".join(STORIES[2][2])
    assert art.summary_html == "".join(f"<p>{p}</p>" for p in STORIES[2][2])


def test_require_place_on_a_region_without_places_is_a_config_error_at_its_line(
    write_config: Callable[..., Config],
) -> None:
    with pytest.raises(ConfigError) as caught:
        write_config(source_yaml("http://example.fi/rss", ", require_place: true"))
    msg = str(caught.value)
    line = BASE_CONFIG.count("\n") + 2  # the source's line, after "sources:"
    assert f"feeds.yaml:{line}: sources[0].require_place: region 'joensuu' lists no places" in msg


def test_turning_fulltext_on_reads_the_pages_of_items_already_stored_once(
    write_config: Callable[..., Config],
    http_server: HTTPServer,
    open_db: Callable[[str | None], Database],
) -> None:
    items = serve_stories(http_server)
    http_server.route(
        "/feed.xml", Response(200, rss(items), {"Content-Type": "application/rss+xml"})
    )
    url = f"{http_server.url}/feed.xml"
    db = open_db(None)
    plain = write_config(fetch_yaml(http_server) + source_yaml(url, ""))
    assert result(run_fetch(db, plain, now=NOW))["new"] == 3
    assert article_requests(http_server) == []

    full = write_config(fetch_yaml(http_server) + source_yaml(url))
    out = result(run_fetch(db, full, now=NOW + timedelta(hours=1)))
    assert (out["unchanged"], out["articles"]) == (3, 3)
    rows = stored(db)
    for (_title, _teaser, paras), (_, link, _) in zip(STORIES, items, strict=True):
        assert rows[link].summary_text.startswith(paras[0])
        assert rows[link].updated_at == NOW + timedelta(hours=1)  # translations see the change
    again = result(run_fetch(db, full, now=NOW + timedelta(hours=2)))
    assert again["unchanged"] == 3 and "articles" not in again
    assert len(article_requests(http_server)) == 3
