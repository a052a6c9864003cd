"""Bad data never counts as good (issue 10, section 5) and only http(s) links are kept (§2).

Characters storage or readers must never get are removed on the way in (textclean, the
parser's output, the page scraper's output), links of other schemes are dropped, and one item
the database refuses does not fail its source. The PostgreSQL run of the same is in
tests/test_postgres_nul.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import select, text

from newsexchange.config import Config
from newsexchange.db import Database, Item, Source
from newsexchange.ingest import run_fetch
from newsexchange.ingest.clean import clean_url, sanitize_html
from newsexchange.ingest.parse import parse_feed
from newsexchange.textclean import clean_name, clean_text, strip_unstorable
from tests.servers import HTTPServer, Response, allow_private

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
FETCH = "fetch: {connect_timeout: 1, read_timeout: 1, total_timeout: 4, retries: 1}\n"

#: Every character class the issue names, each one that must go from a title or a name.
UNSTORABLE = [
    "\x00",
    "\x01",
    "\x08",
    "\x0b",
    "\x0c",
    "\x1f",
    "\ufffe",
    "\uffff",
    "\ud800",
    "\udfff",
]
INVISIBLE = [
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",  # embeddings, overrides
    "\u2066", "\u2067", "\u2068", "\u2069",  # isolates
    "\u200e", "\u200f", "\u061c",  # marks
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff",  # zero-width
]  # fmt: skip
#: What running text loses besides the unstorable characters.
EMBEDDINGS = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068"]


def _has_any(value: str | None, chars: list[str]) -> list[str]:
    return [c for c in chars if value and c in value]


# -- the pure functions ----------------------------------------------------------------------


@pytest.mark.parametrize("ch", UNSTORABLE + INVISIBLE)
def test_titles_and_names_lose_every_unstorable_and_invisible_character(ch: str) -> None:
    assert clean_name(f"Joen{ch}suu {ch}kaupunki{ch}") == "Joensuu kaupunki"


@pytest.mark.parametrize("ch", UNSTORABLE + EMBEDDINGS)
def test_running_text_loses_unstorable_characters_and_bidi_embeddings(ch: str) -> None:
    assert clean_text(f"Kirjasto{ch} avataan.") == "Kirjasto avataan."


def test_what_is_kept_tabs_newlines_and_words_in_any_script() -> None:
    assert strip_unstorable("a\tb\nc\rd") == "a\tb\nc\rd"
    assert clean_text("Тест\u200b ja ZWNJ\u200c\n") == "Тест\u200b ja ZWNJ\u200c\n"
    assert clean_name("  Пётр\tИванов\r\nОАО  ") == "Пётр Иванов ОАО"
    assert clean_name("Ääkköset ja 😀 emoji") == "Ääkköset ja 😀 emoji"
    assert clean_name("‮gpj.exe") == "gpj.exe"


# -- links: only http(s) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "link",
    [
        "javascript:alert(1)",
        " JaVaScRiPt:alert(1)",
        "java\tscript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "file:///etc/passwd",
        "ftp://example.fi/file",
        "mailto:toimitus@example.fi",
        "vbscript:msgbox(1)",
        "//",
    ],
)
def test_item_links_of_other_schemes_are_dropped(link: str) -> None:
    assert clean_url(link, None) is None
    # Relative to an http base the scheme still decides: a javascript: link is not made
    # "https://base/javascript:…" either.
    out = clean_url(link, "https://example.fi/feed")
    assert out is None or out.startswith("https://example.fi/"), out
    assert out is None or "script:" not in out.lower()


@pytest.mark.parametrize(
    ("html", "kept"),
    [
        ('<a href="mailto:toimitus@example.fi">toimitus@example.fi</a>', "toimitus@example.fi"),
        ('<a href="ftp://example.fi/f">tiedosto</a>', "tiedosto"),
        ('<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>', "x"),
        ('<a href="JaVa&#x09;ScRiPt:alert(1)">klik</a>', "klik"),
        ('<a href="file:///etc/passwd">x</a>', "x"),
        ('<img src="mailto:x@example.fi">', ""),
        ('<img src="data:image/png;base64,iVBORw0KGgo=">', ""),
        ('<img src="ftp://example.fi/a.png">', ""),
    ],
)
def test_sanitized_html_keeps_only_http_urls_in_href_and_src(html: str, kept: str) -> None:
    out = sanitize_html(html, "https://example.fi/feed")
    assert out == kept
    assert "href=" not in out and "src=" not in out


def test_sanitized_html_keeps_http_links_and_images() -> None:
    out = sanitize_html(
        '<p><a href="http://a.fi/x">a</a> <img src="https://a.fi/kuva.jpg" alt="k"></p>', None
    )
    assert 'href="http://a.fi/x"' in out and 'src="https://a.fi/kuva.jpg"' in out


# -- the parser's output ---------------------------------------------------------------------


def _rss_bytes(title: str, description: str, *, author: str = "", channel: str = "F") -> bytes:
    from xml.sax.saxutils import escape

    item = f"<item><title>{escape(title)}</title><link>http://example.fi/1</link>"
    if author:
        item += f"<author>{escape(author)}</author>"
    item += f"<description>{escape(description)}</description></item>"
    doc = (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>{escape(channel)}</title><link>http://example.fi/</link>{item}</channel></rss>"
    )
    return doc.encode("utf-8")


def _assert_clean_entry(title: str, summary_html: str, summary_text: str) -> None:
    assert not _has_any(title, UNSTORABLE + INVISIBLE), repr(title)
    for value in (summary_html, summary_text):
        assert not _has_any(value, UNSTORABLE + EMBEDDINGS), repr(value)


# (A lone surrogate cannot be written in UTF-8 bytes; the JSON Feed test below has them.)
@pytest.mark.parametrize(
    "ch", [c for c in UNSTORABLE + INVISIBLE if not 0xD800 <= ord(c) <= 0xDFFF]
)
def test_raw_characters_in_an_rss_feed_never_come_out_of_the_parser(ch: str) -> None:
    body = _rss_bytes(
        f"Kirjasto{ch} avataan",
        f"<p>Avajaiset{ch} ovat maanantaina.</p>",
        author=f"toimitus@example.fi (Maija{ch} Meikäläinen)",
        channel=f"Uutiset{ch}",
    )
    feed = parse_feed(body, url="http://127.0.0.1/feed")
    assert feed.title == "Uutiset"
    [e] = feed.entries
    assert e.title == "Kirjasto avataan"
    assert e.author is not None and not _has_any(e.author, UNSTORABLE + INVISIBLE)
    _assert_clean_entry(e.title, e.summary_html, e.summary_text)
    assert "Avajaiset" in e.summary_text and "maanantaina" in e.summary_text


@pytest.mark.parametrize("ref", ["&#x202E;", "&#8238;", "&#x200B;", "&#xFEFF;", "&#x2066;"])
def test_character_references_to_invisible_characters_are_removed_too(ref: str) -> None:
    body = _rss_bytes("x", "y").replace(
        b"<title>x</title>", f"<title>Otsikko{ref}</title>".encode()
    )
    body = body.replace(b"<description>y", f"<description>&lt;p&gt;Teksti{ref}&lt;/p&gt;".encode())
    [e] = parse_feed(body, url="http://127.0.0.1/feed").entries
    assert e.title == "Otsikko"
    if ref not in ("&#x200B;", "&#xFEFF;"):  # zero-width characters stay in running text
        assert e.summary_html == "<p>Teksti</p>"


def test_json_feed_escapes_nul_lone_surrogates_and_bidi_are_removed() -> None:
    doc = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Sy\u0000öte\u202e",
        "items": [
            {
                "id": "a\u00001",
                "url": "http://example.fi/a\u0000",
                "title": "Otsi\u0000kko \ud800yksi\u2066",
                "content_html": "<p>Sis\u0000ältö \udfff\u202etekstiä</p>",
                "authors": [{"name": "Nimi\u200f \u0007Sukunimi"}],
            },
            {"id": "b", "url": "javascript:alert(1)", "title": "Toinen", "content_text": "ok"},
        ],
    }
    feed = parse_feed(json.dumps(doc).encode(), url="http://127.0.0.1/feed.json")
    assert feed.title == "Syöte"
    a, b = feed.entries
    assert (a.guid, a.link, a.title, a.author) == (
        "a1",
        "http://example.fi/a",
        "Otsikko yksi",
        "Nimi Sukunimi",
    )
    assert a.summary_html == "<p>Sisältö tekstiä</p>" and a.summary_text == "Sisältö tekstiä"
    assert b.link is None  # only http(s) links are kept
    # everything is encodable now (a lone surrogate could not even be written as UTF-8)
    for e in feed.entries:
        for value in (e.guid, e.link, e.title, e.summary_html, e.summary_text, e.author):
            (value or "").encode("utf-8")


# -- the fetch step: stored clean, and one bad item never fails its source ---------------------


@pytest.fixture
def served(
    write_config: Callable[..., Config], http_server: HTTPServer, tmp_path: Path
) -> Iterator[Callable[..., tuple[Config, Database]]]:
    opened: list[Database] = []

    def make(body: bytes, db_url: str | None = None) -> tuple[Config, Database]:
        http_server.route("/feed", Response(200, body, {"Content-Type": "application/rss+xml"}))
        url = f"{http_server.url}/feed"
        fetch = FETCH.replace("}", ", " + allow_private(http_server) + "}")
        cfg = write_config(
            fetch + f'sources:\n  - {{id: a, region: joensuu, language: fi, url: "{url}"}}\n'
        )
        db = Database(db_url or f"sqlite:///{tmp_path}/bad.db")
        opened.append(db)
        return cfg, db

    yield make
    for d in opened:
        d.dispose()


def nul_feed() -> bytes:
    """Three items; the first has NUL bytes (and other controls) in its title and content."""
    items = []
    for i, (title, desc) in enumerate(
        [
            ("Kirjasto\x00 avataan\x01", "<p>Avajaiset\x00 ovat maanantaina.\x1f</p>"),
            ("Silta valmistuu", "<p>Työt alkavat keväällä.</p>"),
            ("Satama\u202e avataan", "<p>Laivat\u2066 tulevat.</p>"),
        ]
    ):
        items.append(
            f"<item><title>{title}</title><link>http://example.fi/{i}</link>"
            f"<guid>g{i}\x00</guid><pubDate>{format_datetime(NOW - timedelta(hours=i + 1))}"
            f"</pubDate><description><![CDATA[{desc}]]></description></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        "<title>Uutiset\x00</title><link>http://example.fi/</link>"
        + "".join(items)
        + "</channel></rss>"
    ).encode()


def stored(db: Database) -> dict[str, Item]:
    with db.session() as s:
        return {i.link: i for i in s.scalars(select(Item))}


def test_nul_bytes_in_a_served_feed_are_stored_clean_with_every_other_item(
    served: Callable[..., tuple[Config, Database]],
) -> None:
    cfg, db = served(nul_feed())
    report = run_fetch(db, cfg, now=NOW)
    assert report.failed == 0 and report.new_items == 3
    items = stored(db)
    assert set(items) == {f"http://example.fi/{i}" for i in range(3)}
    first = items["http://example.fi/0"]
    assert first.title == "Kirjasto avataan"
    assert first.guid is not None and first.guid.endswith("g0")  # feedparser resolves guids
    assert first.summary_html == "<p>Avajaiset ovat maanantaina.</p>"
    assert items["http://example.fi/2"].title == "Satama avataan"
    assert items["http://example.fi/2"].summary_text == "Laivat tulevat."
    with db.session() as s:
        src = s.get(Source, "a")
        assert src is not None and src.title == "Uutiset"


def refuse_item(db: Database, title_like: str) -> None:
    """A real database refusing one row (SQLite trigger), as PostgreSQL refused a NUL byte."""
    with db.session() as s:
        s.execute(
            text(
                "CREATE TRIGGER refuse_item BEFORE INSERT ON items "
                f"WHEN NEW.title LIKE '{title_like}' "
                "BEGIN SELECT RAISE(ABORT, 'this row is refused'); END"
            )
        )


def test_one_item_the_database_refuses_does_not_fail_its_source(
    served: Callable[..., tuple[Config, Database]],
) -> None:
    cfg, db = served(nul_feed())
    with db.session() as s:  # the schema exists once the Database is opened
        s.execute(select(Item.id)).all()
    refuse_item(db, "Silta%")

    report = run_fetch(db, cfg, now=NOW)

    assert report.failed == 0 and report.ok == 1
    out = report.to_json()["results"][0]
    assert out["status"] == "ok" and out["new"] == 2
    assert "1 of 3 items could not be stored: item 2 (http://example.fi/1)" in out["problem"]
    assert "this row is refused" in out["problem"] and len(out["problem"]) < 400
    assert set(stored(db)) == {"http://example.fi/0", "http://example.fi/2"}
    with db.session() as s:
        src = s.get(Source, "a")
        assert src is not None and src.last_error is None
        assert "could not be stored" in (src.parse_problem or "")

    # Once the database takes it, the next fetch stores the missing item and nothing twice.
    with db.session() as s:
        s.execute(text("DROP TRIGGER refuse_item"))
    again = run_fetch(db, cfg, now=NOW + timedelta(hours=1))
    assert again.failed == 0 and again.new_items == 1
    assert len(stored(db)) == 3


def test_when_no_item_can_be_stored_the_source_fails_with_one_line(
    served: Callable[..., tuple[Config, Database]],
) -> None:
    cfg, db = served(nul_feed())
    with db.session() as s:
        s.execute(select(Item.id)).all()
    refuse_item(db, "%")
    report = run_fetch(db, cfg, now=NOW)
    assert report.failed == 1 and not stored(db)
    [failure] = report.failures
    assert "could not store" in failure["error"]
