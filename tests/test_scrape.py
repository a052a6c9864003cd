"""HTML sources (kind: html): CSS selectors, attributes, dates people write, charsets."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from newsexchange.config import HtmlSelect
from newsexchange.errors import FetchError
from newsexchange.ingest.scrape import parse_html_page, parse_human_date

DATA = Path(__file__).parent / "data"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
MSK = ZoneInfo("Europe/Moscow")
HEL = ZoneInfo("Europe/Helsinki")
EVENTS = HtmlSelect(
    item="article.event",
    title="h2.t",
    link="a.more@href",
    date="time@datetime",
    event_date="span.when",
    summary="p.lead",
)


def events_page() -> bytes:
    return (DATA / "ru-events.html").read_bytes()


def test_windows_1251_page_items_are_read_with_their_fields() -> None:
    feed = parse_html_page(
        events_page(),
        url="https://afisha.example.ru/",
        select=EVENTS,
        timezone="Europe/Moscow",
        now=NOW,
    )
    assert feed.parser == "html"
    assert feed.title == "Афиша Петрозаводска"
    assert feed.language == "ru"
    first, second = feed.entries
    assert first.title == "Концерт симфонического оркестра"
    # Relative to <base href>, utm_ parameters gone.
    assert first.link == "https://afisha.example.ru/events/1001"
    assert first.guid == first.link
    assert first.published_at == datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
    assert first.event_start == datetime(2026, 12, 1, 16, 0, tzinfo=UTC)  # 19:00 Moscow
    assert first.summary_text == "Карельская филармония, большой зал. Билеты в кассе."
    assert "<b>большой зал</b>" in first.summary_html
    assert "onclick" not in first.summary_html
    assert second.link == "https://afisha.example.ru/events/1002"
    assert second.published_at is None  # no <time> in this item
    assert second.event_start == datetime(2026, 12, 5, 9, 0, tzinfo=UTC)  # year inferred


def test_items_without_a_title_are_skipped_and_counted() -> None:
    feed = parse_html_page(events_page(), url="https://afisha.example.ru/", select=EVENTS, now=NOW)
    assert len(feed.entries) == 2
    assert feed.problem == "1 of 3 items had no title and were skipped"


def test_selector_that_matches_nothing_is_a_clear_error() -> None:
    select = HtmlSelect(item="div.news-card", title="h3")
    with pytest.raises(FetchError) as err:
        parse_html_page(events_page(), url="https://afisha.example.ru/", select=select)
    assert "'div.news-card' matched nothing" in str(err.value)
    assert err.value.retryable is False


def test_invalid_selector_is_a_clear_error() -> None:
    with pytest.raises(FetchError) as err:
        parse_html_page(
            events_page(), url="https://x.ru/", select=HtmlSelect(item="article[", title="h2")
        )
    assert "bad item selector" in str(err.value)


def test_item_that_is_itself_a_link_and_attribute_of_the_item() -> None:
    page = (
        b'<html><body><ul class="news">'
        b'<li><a class="n" href="/uutiset/1?fbclid=z" data-date="2026-11-20T10:00:00+02:00">'
        b"<span>Koulujen joululoma alkaa</span></a></li>"
        b"</ul></body></html>"
    )
    select = HtmlSelect(item="ul.news a.n", title="span", link="@href", date="@data-date")
    (e,) = parse_html_page(page, url="https://www.joensuu.fi/ajankohtaista", select=select).entries
    assert e.link == "https://www.joensuu.fi/uutiset/1"
    assert e.published_at == datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def test_empty_page_is_an_error() -> None:
    with pytest.raises(FetchError):
        parse_html_page(b"  ", url="https://x.fi/", select=EVENTS)


@pytest.mark.parametrize(
    ("text", "tz", "expected"),
    [
        ("2026-11-23T18:00:00+03:00", MSK, datetime(2026, 11, 23, 15, 0, tzinfo=UTC)),
        ("2026-11-23T18:00", HEL, datetime(2026, 11, 23, 16, 0, tzinfo=UTC)),
        ("2026-11-23", HEL, datetime(2026, 11, 22, 22, 0, tzinfo=UTC)),
        ("23.11.2026 klo 18.00", HEL, datetime(2026, 11, 23, 16, 0, tzinfo=UTC)),
        ("ma 1.12. klo 18", HEL, datetime(2026, 12, 1, 16, 0, tzinfo=UTC)),
        ("23. marraskuuta 2026", HEL, datetime(2026, 11, 22, 22, 0, tzinfo=UTC)),
        ("la 3.1.", HEL, datetime(2027, 1, 2, 22, 0, tzinfo=UTC)),  # next January
        ("23 ноября 2026 г. в 18:00", MSK, datetime(2026, 11, 23, 15, 0, tzinfo=UTC)),
        ("5 мая", MSK, datetime(2027, 5, 4, 21, 0, tzinfo=UTC)),
        ("3 марта 2027", MSK, datetime(2027, 3, 2, 21, 0, tzinfo=UTC)),
        ("сегодня, 14:05", MSK, datetime(2026, 11, 23, 11, 5, tzinfo=UTC)),
        ("вчера в 09:30", MSK, datetime(2026, 11, 22, 6, 30, tzinfo=UTC)),
        ("12:30 23.11.2026", MSK, datetime(2026, 11, 23, 9, 30, tzinfo=UTC)),
        ("Nov 23, 2026", UTC, None),  # month-first English is not a format we guess at
        ("ei päivämäärää", HEL, None),
        ("", HEL, None),
    ],
)
def test_human_dates(text: str, tz: ZoneInfo, expected: datetime | None) -> None:
    assert parse_human_date(text, tz=tz, now=NOW) == expected


def test_entity_bomb_in_an_html_page_is_not_expanded() -> None:
    bomb = (DATA / "entity-bomb.xml").read_text().split("<rss")[0]
    page = (
        bomb
        + '<html><body><article class="event"><h2 class="t">&lol9;</h2></article></body></html>'
    ).encode()
    feed = parse_html_page(page, url="https://x.ru/", select=EVENTS)
    assert len(feed.entries[0].title) < 100


@pytest.mark.parametrize(
    ("text", "tz"),
    [
        ("01.01.0001 00:00", MSK),  # would be year 0 in UTC
        ("0001-01-01T00:00+05:00", UTC),
        ("31.12.9999 23:59", ZoneInfo("America/New_York")),  # year 10000 in UTC
        ("99.99.2026", UTC),
    ],
)
def test_dates_out_of_range_are_none_not_errors(text: str, tz: ZoneInfo) -> None:
    assert parse_human_date(text, tz=tz, now=NOW) is None
