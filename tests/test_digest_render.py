"""Rendering: localized labels, escaping, golden files, and a valid multipart .eml."""

from __future__ import annotations

import email
import email.policy
import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from newsexchange.config import Config
from newsexchange.db import Database, Digest, Translation
from newsexchange.digest import build_digest
from newsexchange.digest.render import (
    CONTENT_SCHEMA,
    UNSUBSCRIBE_MARKER,
    RenderedDigest,
    digest_content,
    format_period,
    render_content,
    render_digest,
    to_email,
)
from tests.test_digest_sample import HOSTILE_TITLE, sample_config, seed

NOW = datetime(2026, 11, 16, 8, 0, tzinfo=UTC)
NOV1 = date(2026, 11, 1)
GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("NEWSEXCHANGE_REGEN_GOLDEN") == "1"
EXCHANGE_OF = {
    "ru": "joensuu-to-petrozavodsk",
    "fi": "petrozavodsk-to-joensuu",
    "en": "border-en",
}


@pytest.fixture
def cfg(write_config: Callable[..., Config]) -> Config:
    return sample_config(write_config)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    d = Database(f"sqlite:///{tmp_path}/render.db")
    yield d
    d.dispose()


def render(db: Database, cfg: Config, language: str) -> RenderedDigest:
    rep = build_digest(db, cfg, EXCHANGE_OF[language], period_start=NOV1, now=NOW)
    with db.session() as s:
        d = s.get(Digest, rep.id)
        assert d is not None
        return render_digest(s, cfg, d)


@pytest.fixture
def seeded(db: Database) -> dict[str, int]:
    return seed(db)


# -- dates and labels ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("fi", "1.–15. marraskuuta 2026"),
        ("ru", "1–15 ноября 2026"),
        ("en", "1–15 November 2026"),
    ],
)
def test_period_reads_naturally_in_each_language(language: str, expected: str) -> None:
    assert format_period(date(2026, 11, 1), date(2026, 11, 15), language) == expected


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("fi", "16. helmikuuta – 6. maaliskuuta 2027"),
        ("ru", "16 февраля – 6 марта 2027"),
        ("en", "16 February – 6 March 2027"),
    ],
)
def test_period_across_months_names_both_months(language: str, expected: str) -> None:
    assert format_period(date(2027, 2, 16), date(2027, 3, 6), language) == expected


def test_period_across_years_names_both_years() -> None:
    assert format_period(date(2026, 12, 28), date(2027, 1, 6), "ru") == (
        "28 декабря 2026 – 6 января 2027"
    )


@pytest.mark.parametrize(
    ("language", "labels"),
    [
        (
            "ru",
            ["Новости", "События", "Читать оригинал", "Оригинальный заголовок (финский)",
             "Открыть в браузере", "Отписаться", "4 новости и 1 событие",
             "суббота, 28 ноября, 19:00", "(18:00 по Хельсинки)", "Добавить в календарь (.ics)"],
        ),
        (
            "fi",
            ["Uutiset", "Tapahtumat", "Lue alkuperäinen", "Alkuperäinen otsikko (venäjä)",
             "Avaa selaimessa", "Peru tilaus", "2 uutista ja 1 tapahtuma", "«Столица на Onego»",
             "perjantai 20. marraskuuta klo 17.00", "(klo 18.00 Moskovan aikaa)",
             "Lisää kalenteriin (.ics)"],
        ),
        (
            "en",
            ["News", "Events", "Read the original", "Original title (Finnish)",
             "Original title (Russian)", "View in browser", "Unsubscribe", "ГТРК «Карелия»"],
        ),
    ],
)  # fmt: skip
def test_labels_dates_and_source_names_are_in_the_digest_language(
    db: Database, cfg: Config, seeded: dict[str, int], language: str, labels: list[str]
) -> None:
    r = render(db, cfg, language)
    for label in labels:
        assert label in r.text, label
        assert label.replace("«", "&laquo;").replace("»", "&raquo;") in r.html or label in r.html
    assert r.language == language
    assert f'<html lang="{language}"' in r.html


def test_subject_names_the_exchange_and_the_period(
    db: Database, cfg: Config, seeded: dict[str, int]
) -> None:
    assert render(db, cfg, "ru").subject == "Новости Йоэнсуу и Северной Карелии: 1–15 ноября 2026"
    assert render(db, cfg, "fi").subject.endswith(": 1.–15. marraskuuta 2026")


def test_each_item_shows_translation_original_title_source_and_link(
    db: Database, cfg: Config, seeded: dict[str, int]
) -> None:
    r = render(db, cfg, "ru")
    assert "Безработица в Северной Карелии снизилась в октябре" in r.html
    assert "Pohjois-Karjalan työttömyys laski lokakuussa" in r.html  # original title
    assert "Yle Pohjois-Karjala" in r.html and "Karjalainen" in r.html
    # The story's link counts clicks (issue 14): the signed redirect to the source …
    from newsexchange.digest.links import read_click

    targets = {read_click(cfg, h.rsplit("/r/", 1)[1]).target for h in _click_hrefs(r.html)}
    assert "https://karjalainen.example/jobs" in targets
    assert 'href="https://karjalainen.example/jobs"' not in r.html
    # … and the editors' previews and the archive link straight to the source.
    with db.session() as s:
        d = s.get(Digest, r.digest_id)
        assert d is not None
        direct = render_digest(s, cfg, d, clicks=False)
    assert 'href="https://karjalainen.example/jobs"' in direct.html
    assert "/r/" not in direct.html + direct.text
    assert "[ru] Työttömiä työnhakijoita" in r.html  # the translated summary
    # The story both Finnish outlets carried appears once, crediting the other outlet.
    body = r.html.split('class="outer"', 1)[1]  # after the preheader
    assert body.count("Новый мост") == 1 and "Также: Karjalainen" in body


def _click_hrefs(html: str) -> list[str]:
    return re.findall(r'href="([^"]*/r/[^"]*)"', html)


# -- escaping --------------------------------------------------------------------------------


def test_hostile_title_is_escaped_in_html_and_kept_verbatim_in_text(
    db: Database, cfg: Config, seeded: dict[str, int]
) -> None:
    r = render(db, cfg, "ru")
    assert "<script" not in r.html.lower()
    assert 'Совет &lt;script&gt;alert("x")&lt;/script&gt; &amp; «бюджет»' in r.html
    assert "Valtuusto &lt;script&gt;" in r.html  # the original title too
    assert 'Совет <script>alert("x")</script> & «бюджет»' in r.text
    assert HOSTILE_TITLE in r.text


def test_markup_from_a_translation_provider_is_cleaned_before_it_is_trusted(
    db: Database, cfg: Config, seeded: dict[str, int]
) -> None:
    with db.session() as s:
        tr = s.query(Translation).filter_by(item_id=seeded["jobs"], language="ru").one()
        tr.summary_html = (
            '<p onclick="steal()">Текст <img src=x onerror=alert(1)>'
            '<a href="javascript:alert(2)">ссылка</a><script>alert(3)</script></p>'
        )
    r = render(db, cfg, "ru")
    assert "Текст" in r.html and "ссылка" in r.html
    for bad in ("onclick", "onerror", "javascript:", "<script", "alert(3)"):
        assert bad not in r.html, bad


def test_machine_translation_note_only_when_a_machine_translated_something(
    db: Database, cfg: Config, seeded: dict[str, int]
) -> None:
    assert "käännetty koneellisesti" in render(db, cfg, "fi").html
    with db.session() as s:
        for tr in s.query(Translation).filter_by(language="fi"):
            tr.provider = "editor"
    r = render(db, cfg, "fi")
    assert "koneellisesti" not in r.html and "koneellisesti" not in r.text
    assert "Alkuperäinen otsikko (venäjä)" in r.html  # the original title is still shown


def test_an_item_without_link_or_summary_still_renders_cleanly(
    db: Database, cfg: Config, seeded: dict[str, int]
) -> None:
    from newsexchange.db import Item

    with db.session() as s:
        item = s.get(Item, seeded["fares"])
        assert item is not None
        item.link = None
        for tr in item.translations:
            tr.summary_html, tr.summary_text = "", ""
    r = render(db, cfg, "fi")
    assert "Petroskoin joukkoliikenteen hinnat nousevat tammikuussa" in r.html
    block = r.text.split("Petroskoin joukkoliikenteen hinnat", 1)[1].split("\n\n\n", 1)[0]
    assert "Lue alkuperäinen" not in block and "None" not in block
    assert "None" not in r.html


def test_empty_digest_says_so_in_its_language(db: Database, cfg: Config) -> None:
    rep = build_digest(db, cfg, "border-en", period_start=date(2026, 12, 1), now=NOW)
    with db.session() as s:
        d = s.get(Digest, rep.id)
        assert d is not None
        r = render_digest(s, cfg, d)
    assert "No news in this period." in r.html and "No news in this period." in r.text
    assert r.preheader == "No news in this period."


def test_a_non_http_link_from_a_feed_is_not_linked(
    db: Database, cfg: Config, seeded: dict[str, int]
) -> None:
    from newsexchange.db import Item

    with db.session() as s:
        item = s.get(Item, seeded["jobs"])
        assert item is not None
        item.link = "javascript:alert(document.cookie)"
    r = render(db, cfg, "ru")
    assert "javascript:" not in r.html and "javascript:" not in r.text
    assert "Безработица в Северной Карелии" in r.html  # the item itself stays


# -- the email -------------------------------------------------------------------------------


def test_html_is_a_600px_table_layout_with_inlined_css_and_dark_mode(
    db: Database, cfg: Config, seeded: dict[str, int]
) -> None:
    html = render(db, cfg, "en").html
    container = re.search(r'<table class="container"[^>]*>', html)
    assert container and 'role="presentation"' in container[0] and 'width="600"' in container[0]
    assert "max-width: 600px" in html
    assert re.search(r'<td class="item"[^>]* style="[^"]*padding', html)  # CSS inlined
    assert '<meta name="color-scheme" content="light dark">' in html
    assert "@media (prefers-color-scheme: dark)" in html
    # Only the media-query block (and Outlook's font fallback, in a comment) stay in <head>.
    assert html.count("<style") - html.count("<!--[if mso]><style>") == 1
    assert "<img" not in html  # nothing depends on images


def test_preheader_view_link_and_unsubscribe_marker_are_in_place(
    db: Database, cfg: Config, seeded: dict[str, int]
) -> None:
    r = render(db, cfg, "fi")
    assert r.preheader.startswith("2 uutista ja 1 tapahtuma · ")
    body = r.html.split("<body", 1)[1]
    assert body.index(r.preheader.split(" · ")[0]) < body.index("<table")
    view = f"{cfg.public_url}/digests/1"
    assert r.view_url == view and f'href="{view}"' in r.html and view in r.text
    assert f'href="{UNSUBSCRIBE_MARKER}"' in r.html
    assert r.text.rstrip().endswith(UNSUBSCRIBE_MARKER)


def test_untranslated_item_carried_in_the_original_is_marked(
    write_config: Callable[..., Config], db: Database, seeded: dict[str, int]
) -> None:
    cfg = sample_config(write_config, ru_options="include_untranslated: true")
    r = render(db, cfg, "ru")
    assert "Ilosaarirockin ensimmäiset esiintyjät julkistettiin" in r.html
    assert "Без перевода — язык оригинала: финский" in r.html
    assert "[Без перевода — язык оригинала: финский]" in r.text


def test_eml_is_multipart_alternative_and_parses_back_with_the_cyrillic_subject(
    db: Database, cfg: Config, seeded: dict[str, int]
) -> None:
    r = render(db, cfg, "ru")
    msg = to_email(
        r,
        config=cfg,
        to="Журналист <journalist@example.ru>",
        extra_headers={"List-Id": "<petrozavodsk-media.example.org>"},
        now=NOW,
    )
    raw = msg.as_bytes()
    assert all(b < 128 for b in raw), "an SMTP message is 7-bit clean (encoded words, QP)"
    back = email.message_from_bytes(raw, policy=email.policy.default)
    assert back.get_content_type() == "multipart/alternative"
    assert back["Subject"] == "Новости Йоэнсуу и Северной Карелии: 1–15 ноября 2026"
    assert back["To"].addresses[0].display_name == "Журналист"
    assert back["From"].addresses[0].addr_spec == "news@example.org"
    assert back["Message-ID"].endswith("@example.org>")
    assert back["Date"].datetime == NOW
    assert back["List-Id"] == "<petrozavodsk-media.example.org>"
    parts = list(back.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert parts[0].get_content().replace("\r\n", "\n") == r.text
    assert "Безработица в Северной Карелии" in parts[1].get_content()


def test_frozen_content_is_rendered_even_after_a_translation_changes(
    db: Database, cfg: Config, seeded: dict[str, int]
) -> None:
    rep = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    with db.session() as s:
        d = s.get(Digest, rep.id)
        assert d is not None
        d.frozen = digest_content(s, cfg, d)
        assert d.frozen["schema"] == CONTENT_SCHEMA
        d.state = "approved"
        tr = s.query(Translation).filter_by(item_id=seeded["jobs"], language="ru").one()
        tr.title = "Исправленный заголовок"
    with db.session() as s:
        d = s.get(Digest, rep.id)
        assert d is not None
        html = render_digest(s, cfg, d).html
    assert "Безработица в Северной Карелии" in html and "Исправленный" not in html


def test_the_editors_intro_opens_the_mail_in_its_language_only(
    db: Database, cfg: Config, seeded: dict[str, int]
) -> None:
    rep = build_digest(db, cfg, "joensuu-to-petrozavodsk", period_start=NOV1, now=NOW)
    with db.session() as s:
        d = s.get(Digest, rep.id)
        assert d is not None
        content = digest_content(s, cfg, d)
    content["intro"] = {"ru": "Главное <за> две недели.\n\nВторой абзац.", "fi": "Ei tämä."}
    r = render_content(cfg, cfg.exchange("joensuu-to-petrozavodsk"), content, digest_id=rep.id)
    assert "Главное &lt;за&gt; две недели.</p>" in r.html and "Второй абзац.</p>" in r.html
    assert r.html.index("Второй абзац") < r.html.index("Безработица")
    assert "\nГлавное <за> две недели.\n\nВторой абзац.\n" in r.text
    assert "Ei tämä" not in r.html + r.text


# -- golden files ----------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["ru", "fi", "en"])
def test_rendered_digest_matches_the_golden_files(
    db: Database, cfg: Config, seeded: dict[str, int], language: str
) -> None:
    """Regenerate after an intended change with NEWSEXCHANGE_REGEN_GOLDEN=1, then review
    the diff of tests/golden/ like code."""
    r = render(db, cfg, language)
    for ext, got in (("txt", r.text), ("html", r.html)):
        path = GOLDEN / f"digest_{language}.{ext}"
        if REGEN:
            path.parent.mkdir(exist_ok=True)
            path.write_text(got, encoding="utf-8")
        assert path.exists(), f"{path} is missing: run with NEWSEXCHANGE_REGEN_GOLDEN=1"
        assert got == path.read_text(encoding="utf-8"), f"{path.name} differs"


@pytest.mark.parametrize(
    ("language", "n", "expected"),
    [
        ("ru", 1, "1 новость"),
        ("ru", 2, "2 новости"),
        ("ru", 5, "5 новостей"),
        ("ru", 21, "21 новость"),
        ("ru", 12, "12 новостей"),
        ("fi", 1, "1 uutinen"),
        ("fi", 3, "3 uutista"),
        ("en", 1, "1 news item"),
        ("en", 2, "2 news items"),
    ],
)
def test_counts_take_the_catalogues_plural_forms(language: str, n: int, expected: str) -> None:
    from newsexchange.digest.render import plural

    assert plural(language, "news", n) == expected


def test_labels_come_from_the_catalogue_of_each_language() -> None:
    from newsexchange.digest.render import labels, time_in, untranslated_note

    assert labels("fi")["view_online"] == "Avaa selaimessa"
    assert labels("ru")["events"] == "События"
    assert labels("en")["unsubscribe"] == "Unsubscribe"
    assert time_in("ru", "Хельсинки") == "время: Хельсинки"
    assert untranslated_note("fi", "venäjä") == "Ei käännetty – alkuperäinen kieli: venäjä"
