"""parse_feed on crafted feeds: charsets, hostile input, broken input, both parser paths."""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsexchange.errors import FetchError
from newsexchange.ingest import parse as parse_mod
from newsexchange.ingest.parse import parse_date, parse_feed, parsers

DATA = Path(__file__).parent / "data"
RU_TITLE = "В Петрозаводске открыли новый пешеходный мост через Лососинку"
RU_FEED_TITLE = "Столица на Онего: новости Петрозаводска"


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("ru-windows-1251.xml", "application/rss+xml"),
        ("ru-windows-1251.xml", "application/rss+xml; charset=windows-1251"),
        ("ru-windows-1251.xml", "text/xml"),
        ("ru-koi8r.xml", None),
        ("ru-koi8r.xml", "application/xml; charset=koi8-r"),
        ("ru-koi8r-undeclared.xml", None),
        ("ru-koi8r-undeclared.xml", "application/rss+xml; charset=KOI8-R"),
        ("ru-utf8-bom.xml", None),
        ("ru-utf8-bom.xml", "application/rss+xml; charset=utf-8"),
    ],
)
def test_russian_text_comes_out_right_in_every_charset(name: str, content_type: str | None) -> None:
    feed = parse_feed(read(name), url="https://stolicaonego.ru/rss", content_type=content_type)
    assert feed.title == RU_FEED_TITLE
    assert [e.title for e in feed.entries] == [
        RU_TITLE,
        "Глава Карелии встретился с жителями Кондопоги",
    ]
    assert "Ёлки" in feed.entries[0].summary_text


def test_windows_1251_served_with_an_http_charset_overrides_nothing_on_the_fast_path() -> None:
    feed = parse_feed(
        read("ru-windows-1251.xml"),
        url="https://stolicaonego.ru/rss",
        content_type="application/rss+xml; charset=windows-1251",
    )
    assert feed.parser == "fast"
    assert feed.problem is None


def test_undeclared_koi8r_is_detected_and_the_detection_recorded() -> None:
    feed = parse_feed(read("ru-koi8r-undeclared.xml"), url="https://stolicaonego.ru/rss")
    assert feed.entries[0].title == RU_TITLE
    assert feed.problem is not None and "koi8-r" in feed.problem


def test_http_says_utf8_but_the_document_is_windows_1251_as_it_declares() -> None:
    # feedparser would let HTTP win (RFC 3023) and produce mojibake; the bytes settle it.
    feed = parse_feed(
        read("ru-windows-1251.xml"),
        url="https://stolicaonego.ru/rss",
        content_type="application/rss+xml; charset=utf-8",
    )
    assert feed.entries[0].title == RU_TITLE
    assert feed.problem == (
        "charset conflict: HTTP says utf-8, the document says cp1251; read as cp1251"
    )


def test_http_says_windows_1251_but_the_document_is_utf8_as_it_declares() -> None:
    body = read("ru-utf8-bom.xml")[3:]  # no BOM: only the declaration says UTF-8
    feed = parse_feed(
        body, url="https://stolicaonego.ru/rss", content_type="text/xml; charset=windows-1251"
    )
    assert feed.parser == "fast"
    assert feed.entries[0].title == RU_TITLE
    assert feed.problem is not None and "read as utf-8" in feed.problem


def test_conflict_between_two_single_byte_charsets_goes_to_feedparser() -> None:
    feed = parse_feed(
        read("ru-koi8r.xml"),
        url="https://stolicaonego.ru/rss",
        content_type="application/rss+xml; charset=windows-1251",
    )
    assert feed.parser == "feedparser"
    assert feed.entries  # read by feedparser's rules (HTTP wins), never a crash


def test_rss_item_fields_are_cleaned_dated_in_utc_and_tracking_stripped() -> None:
    feed = parse_feed(read("ru-windows-1251.xml"), url="https://stolicaonego.ru/rss")
    first = feed.entries[0]
    assert first.link == "https://stolicaonego.ru/news/most-cherez-lososinku/"
    assert first.guid == "stolica-101"  # isPermaLink="false": not resolved as a URL
    assert first.published_at == datetime(2026, 11, 23, 7, 0, tzinfo=UTC)
    assert first.summary_html.startswith("<p>Мост соединил")
    assert feed.language == "ru"


def test_atom_entry_relative_links_resolve_and_dates_convert_to_utc() -> None:
    feed = parse_feed(read("fi-atom.xml"), url="https://www.karjalainen.fi/feed")
    a, b = feed.entries
    assert a.title == "Joensuun torille nousee joulukuusi"  # type="html" title → plain text
    assert a.link == "https://www.karjalainen.fi/uutiset/joulukuusi?id=7"  # fbclid gone
    assert a.published_at == datetime(2026, 11, 23, 8, 15, tzinfo=UTC)
    assert a.updated_at == datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    assert a.author == "Liisa Korhonen"
    assert 'src="https://www.karjalainen.fi/kuvat/kuusi.jpg"' in a.summary_html
    # No image element of its own: the summary's first picture stands in.
    assert a.image_url == "https://www.karjalainen.fi/kuvat/kuusi.jpg"
    assert b.image_url is None
    # Only <updated>: that is the story's date.
    assert b.published_at == datetime(2026, 11, 22, 16, 0, tzinfo=UTC)
    assert b.summary_text == "Odotusajat venyivät viikonloppuna useisiin tunteihin."
    assert feed.language == "fi"


@pytest.mark.parametrize("name", ["fi-atom.xml", "ru-windows-1251.xml", "ru-utf8-bom.xml"])
def test_fast_path_and_feedparser_give_the_same_entries(name: str) -> None:
    p = parsers()
    fast = p["fast"](read(name), url="https://example.org/feed")
    ref = p["feedparser"](read(name), url="https://example.org/feed")
    assert fast.entries == ref.entries
    assert (fast.title, fast.link, fast.language) == (ref.title, ref.link, ref.language)


def test_hostile_html_is_neutralised_in_titles_summaries_and_links() -> None:
    feed = parse_feed(read("hostile.xml"), url="https://evil.example/rss")
    (e,) = feed.entries
    blob = (e.title + e.summary_html + (feed.title or "")).lower()
    for bad in ("<script", "onerror", "onmouseover", "onload", "javascript", "style", "<iframe",
                "<form", "<input", "<object", "<embed", "<svg", "data:", "mc.yandex.ru",
                "pixel.gif", "utm_", "gclid", "yclid", "mc_cid", "mc_eid"):  # fmt: skip
        assert bad not in blob, bad
    assert e.link is None  # a javascript: link is no link
    assert e.title == "Otsikko"
    assert 'href="https://evil.example/sivu?id=9"' in e.summary_html
    assert 'rel="noopener noreferrer"' in e.summary_html
    assert 'src="https://example.fi/kuva.jpg"' in e.summary_html  # real image kept
    assert e.image_url == "https://example.fi/kuva.jpg"  # not the tracking pixels before it


@pytest.mark.parametrize("force", [None, "feedparser"])
def test_entity_bomb_finishes_fast_without_expanding(
    force: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parse_mod, "FORCE_PARSER", force)
    start = time.perf_counter()
    try:
        feed = parse_feed(read("entity-bomb.xml"), url="https://bomb.example/rss")
    except FetchError:
        pass
    else:
        total = sum(len(e.title) + len(e.summary_html) for e in feed.entries)
        assert total < 10_000  # nothing was expanded (expanded: 10^9 "lol"s)
        assert feed.problem  # and the feed is marked as broken
    assert time.perf_counter() - start < 2.0


def test_external_entities_are_never_resolved() -> None:
    feed = parse_feed(read("external-entity.xml"), url="https://xxe.example/rss")
    blob = " ".join(e.title + e.summary_html for e in feed.entries)
    assert "root:" not in blob
    assert feed.parser == "feedparser" and feed.problem


def test_truncated_feed_yields_readable_items_with_the_problem_recorded() -> None:
    feed = parse_feed(read("truncated.xml"), url="https://www.karjalainen.fi/feed")
    assert feed.parser == "feedparser"
    assert feed.entries[0].title == "Joensuun torille nousee joulukuusi"
    assert feed.problem and "SAXParseException" in feed.problem


def test_html_page_is_a_clear_error_naming_the_feed_it_links_to() -> None:
    with pytest.raises(FetchError) as err:
        parse_feed(read("html-page.html"), url="https://www.joensuu.fi/ajankohtaista",
                   content_type="text/html; charset=utf-8")  # fmt: skip
    assert err.value.retryable is False
    assert "HTML page" in str(err.value)
    assert "https://www.joensuu.fi/ajankohtaista/rss.xml" in str(err.value)


@pytest.mark.parametrize("body", [b"", b"   \n", b"\x00\x01garbage\xff\xfe", b"{not json"])
def test_empty_or_garbage_body_is_a_non_retryable_fetch_error(body: bytes) -> None:
    with pytest.raises(FetchError) as err:
        parse_feed(body, url="https://example.org/feed")
    assert err.value.retryable is False


def test_feed_without_dates_leaves_published_at_empty() -> None:
    body = b"<rss version='2.0'><channel><title>T</title><item><title>A</title><link>http://a.fi/1</link></item></channel></rss>"
    (e,) = parse_feed(body, url="http://a.fi/rss").entries
    assert e.published_at is None and e.updated_at is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 23 Nov 2026 10:00:00 +0300", datetime(2026, 11, 23, 7, 0, tzinfo=UTC)),
        ("Mon, 23 Nov 2026 10:00:00 GMT", datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
        ("2026-11-23T10:00:00+02:00", datetime(2026, 11, 23, 8, 0, tzinfo=UTC)),
        ("2026-11-23T10:00:00.123Z", datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)),
        ("Mon, 23 Nov 2026 10:00:00 EST", datetime(2026, 11, 23, 15, 0, tzinfo=UTC)),
        ("2026-11-23", datetime(2026, 11, 23, 0, 0, tzinfo=UTC)),
        # feedparser gives up on a zone-less RFC 822 date; we read it as UTC.
        ("Mon, 23 Nov 2026 10:00:00", datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
        ("not a date", None),
    ],
)
def test_dates_become_aware_utc(value: str, expected: datetime | None) -> None:
    assert parse_date(value) == expected


def test_fast_date_parser_agrees_with_feedparsers_handlers() -> None:
    from feedparser.datetimes import _parse_date

    samples = [
        "Mon, 23 Nov 2026 10:00:00 +0300", "Sun, 1 Mar 2026 23:59:59 -0930",
        "23 Nov 2026 10:00 GMT", "2026-11-23T10:00:00Z", "2026-02-28T23:30:00-05:00",
        "2026-11-23 10:00:00+03:00", "Tue, 03 Jun 2008 11:05:30 UT",
    ]  # fmt: skip
    for s in samples:
        fast = parse_mod._fast_date(s)
        st = _parse_date(s)
        assert fast is not None, s
        assert fast == datetime(*st[:6], tzinfo=UTC), s


def test_typical_russian_feed_with_yandex_extensions_takes_the_fast_path() -> None:
    # yandex:full-text, turbo:content, <amplink>, <pdalink>: feedparser files them under
    # names none of our fields read, so the fast path may skip them.
    body = read("ru-yandex.xml")
    feed = parse_feed(body, url="https://vesti.karelia.ru/rss/")
    assert feed.parser == "fast"
    first, second = feed.entries
    assert first.link == "https://vesti.karelia.ru/news/2026/11/23/sneg/"
    assert first.author == "Анна Иванова"
    assert first.image_url == "https://vesti.karelia.ru/img/sneg.jpg"
    assert first.summary_text == "Снегопад начался ночью, к утру на дорогах образовались заторы."
    assert second.image_url == "https://vesti.karelia.ru/img/meteor.jpg"
    ref = parsers()["feedparser"](body, url="https://vesti.karelia.ru/rss/")
    assert feed.entries == ref.entries and feed.title == ref.title == "ГТРК «Карелия»: новости"


def test_unknown_element_with_children_makes_the_fast_path_step_aside() -> None:
    # feedparser's handlers ignore nesting: this nested <title> becomes the item's title.
    body = (
        b"<rss version='2.0'><channel><title>T</title><item><link>http://a.fi/1</link>"
        b"<related><title>Nested</title></related></item></channel></rss>"
    )
    feed = parse_feed(body, url="http://a.fi/rss")
    assert feed.parser == "feedparser"
    assert feed.entries[0].title == "Nested"


def test_very_long_descriptions_are_cut_before_cleaning_and_stay_well_formed() -> None:
    para = "<p>" + "Петрозаводск " * 40 + "<b>жирный</b></p>"
    body = (
        "<rss version='2.0'><channel><title>T</title><item><title>Long</title>"
        f"<link>http://a.ru/1</link><description><![CDATA[{para * 100}]]></description>"
        "</item></channel></rss>"
    ).encode()
    (e,) = parse_feed(body, url="http://a.ru/rss").entries
    assert len(e.summary_html) <= parse_mod.SUMMARY_HTML_MAX_CHARS + 100
    assert e.summary_html.count("<p>") == e.summary_html.count("</p>")
    assert len(e.summary_text) <= 500


def test_json_feed_is_read_with_plain_text_escaped_and_html_sanitized() -> None:
    body = json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "title": "Joensuun kaupunki",
            "home_page_url": "https://www.joensuu.fi/",
            "language": "fi",
            "items": [
                {
                    "id": 1001,
                    "url": "/uutiset/1001?utm_campaign=x",
                    "title": "Torin <kuusi> pystytetään",
                    "summary": "Kuusi <b> tulee Ilomantsista",
                    "date_published": "2026-11-23T10:00:00+02:00",
                    "authors": [{"name": "Viestintä"}],
                },
                {
                    "id": "b",
                    "content_html": "<p onclick='x()'>Hei</p><script>alert(1)</script>",
                    "image": "https://www.joensuu.fi/k.jpg",
                },
                "not an item",
            ],
        }
    ).encode()
    feed = parse_feed(
        body, url="https://www.joensuu.fi/feed.json", content_type="application/feed+json"
    )
    assert (feed.parser, feed.title, feed.language) == ("json", "Joensuun kaupunki", "fi")
    a, b = feed.entries
    assert a.guid == "1001" and a.link == "https://www.joensuu.fi/uutiset/1001"
    assert a.title == "Torin <kuusi> pystytetään"  # plain text stays text
    assert a.summary_html == "Kuusi &lt;b&gt; tulee Ilomantsista"
    assert a.published_at == datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    assert a.author == "Viestintä"
    assert b.summary_html == "<p>Hei</p>" and b.image_url == "https://www.joensuu.fi/k.jpg"
    assert feed.problem == "1 items were not objects and were skipped"


@pytest.mark.parametrize("body", [b"{not json", b'{"title": "no items"}', b"[1, 2]"])
def test_json_that_is_not_a_json_feed_is_a_clear_error(body: bytes) -> None:
    with pytest.raises(FetchError) as err:
        parse_feed(body, url="https://example.org/feed.json")
    assert err.value.retryable is False


def test_mutated_feeds_never_raise_anything_but_fetch_error() -> None:
    # A small deterministic fuzz: cut, flipped and inserted bytes in real-looking feeds,
    # including dates at the edge of datetime's range and garbled charset names (which
    # make feedparser itself raise UnicodeDecodeError).
    rng = random.Random(20261123)
    seeds = [
        read(n) for n in ("fi-atom.xml", "ru-windows-1251.xml", "ru-yandex.xml", "hostile.xml")
    ]
    snippets = [
        b"<", b"&", b"<![CDATA[", b"</item>", b"<entry>", b"\xff", b"\x00", b'encoding="\x8bx"',
        b"<pubDate>Mon, 01 Jan 0001 00:00:00 +1400</pubDate>",
        b"<updated>0001-01-01T00:00:00+14:00</updated>", b"<link>http://[::1</link>",
        b'<guid isPermaLink="true">//</guid>', b'<!ENTITY a "b">',
    ]  # fmt: skip
    outcomes: set[str] = set()
    for _ in range(150):
        body = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(max(1, len(body)))
            op = rng.random()
            if op < 0.35:
                body[pos:pos] = rng.choice(snippets)
            elif op < 0.6:
                del body[pos : pos + rng.randint(1, 40)]
            elif op < 0.7:
                del body[pos:]
            elif body:
                body[min(pos, len(body) - 1)] = rng.randrange(256)
        ctype = rng.choice([None, "application/rss+xml", "text/xml; charset=windows-1251"])
        try:
            outcomes.add(
                parse_feed(bytes(body), url="https://example.org/feed", content_type=ctype).parser
            )
        except FetchError:
            outcomes.add("error")
    assert {"fast", "feedparser"} <= outcomes


def test_whitespace_before_the_xml_declaration_stays_on_the_fast_path() -> None:
    body = b"\n\n  " + read("ru-windows-1251.xml")
    feed = parse_feed(body, url="https://stolicaonego.ru/rss")
    assert feed.parser == "fast"
    assert feed.entries[0].title == RU_TITLE
    assert feed.entries == parsers()["feedparser"](body, url="https://stolicaonego.ru/rss").entries


def test_html_entities_undeclared_in_xml_stay_on_the_fast_path() -> None:
    # &laquo; &raquo; &nbsp; &mdash; outside CDATA: not well-formed XML, but the commonest
    # defect of Russian feeds; read as their characters, as feedparser does.
    body = (
        "<rss version='2.0'><channel><title>Новости&nbsp;Карелии</title><item>"
        "<title>Театр &laquo;Творческая мастерская&raquo; &mdash; премьера</title>"
        "<link>http://a.ru/1</link><description>Спектакль&hellip;</description>"
        "</item></channel></rss>"
    ).encode()
    feed = parse_feed(body, url="http://a.ru/rss")
    assert feed.parser == "fast"
    assert feed.entries[0].title == "Театр «Творческая мастерская» — премьера"
    assert feed.entries[0].summary_text == "Спектакль…"
    assert feed.entries == parsers()["feedparser"](body, url="http://a.ru/rss").entries
