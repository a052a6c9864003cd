"""Cleaning: the HTML allowlist, plain text, URLs, story fingerprints, language detection."""

from __future__ import annotations

import pytest

from newsexchange.ingest.clean import clean_url, sanitize_html, text_of_safe_html, to_text
from newsexchange.ingest.langdetect import MIN_LETTERS, detect_language
from newsexchange.ingest.stories import SIMILAR_MAX_BITS, distance, fingerprint, similar

BASE = "https://www.karjalainen.fi/uutiset/2026/11/juttu"


# --- sanitize_html ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hostile", "forbidden"),
    [
        ("<script>alert(1)</script>ok", "alert"),
        ("<p onclick='steal()'>ok</p>", "onclick"),
        ('<img src="x.jpg" onerror="alert(1)">', "onerror"),
        ('<a href="javascript:alert(1)">ok</a>', "javascript"),
        ('<a href=" JaVa\tScRiPt&#x3a;alert(1)">ok</a>', "alert"),
        ('<a href="data:text/html;base64,PHNjcmlwdD4=">ok</a>', "data:"),
        ('<img src="data:image/png;base64,iVBORw0KGgo=">', "data:"),
        ("<p style='position:fixed'>ok</p>", "style"),
        ("<style>body{display:none}</style>ok", "display"),
        ('<iframe src="https://evil.example/"></iframe>ok', "iframe"),
        ('<form action="https://evil.example/"><input name="p"></form>ok', "form"),
        ('<object data="x.swf"></object><embed src="y.swf">ok', "swf"),
        ('<svg onload="alert(1)"><circle/></svg>ok', "svg"),
        ("<!-- secret comment -->ok", "secret"),
        ('<blockquote cite="javascript:alert(1)">ok</blockquote>', "javascript"),
        ("<math><mtext><script>alert(1)</script></mtext></math>ok", "alert"),
    ],
)
def test_sanitize_removes_dangerous_markup(hostile: str, forbidden: str) -> None:
    out = sanitize_html(hostile, BASE)
    assert forbidden not in out.lower()


def test_sanitize_keeps_ordinary_formatting() -> None:
    html = "<p>Joensuun <strong>tori</strong> ja <em>kuusi</em></p><ul><li>yksi</li></ul>"
    assert sanitize_html(html, BASE) == html


def test_sanitize_makes_links_absolute_adds_rel_and_strips_tracking() -> None:
    out = sanitize_html(
        '<a href="/sivu?utm_source=rss&amp;id=5&amp;fbclid=x">a</a>'
        '<a href="kuva.html?gclid=1#xtor=RSS-3">b</a><img src="//cdn.example.fi/k.jpg" alt="k">',
        BASE,
    )
    assert '<a href="https://www.karjalainen.fi/sivu?id=5" rel="noopener noreferrer">a</a>' in out
    assert 'href="https://www.karjalainen.fi/uutiset/2026/11/kuva.html"' in out
    assert 'src="https://cdn.example.fi/k.jpg"' in out


def test_sanitize_without_a_base_drops_relative_urls_but_keeps_the_text() -> None:
    out = sanitize_html('<a href="/x">linkki</a> <img src="/k.jpg">', None)
    assert out == "linkki"


@pytest.mark.parametrize(
    "pixel",
    [
        '<img src="https://example.fi/p.gif" width="1" height="1">',
        '<img src="https://example.fi/p.gif" width="0" height="0" alt="">',
        "<img src='https://example.fi/p.gif' height=1 width=1>",
        '<img src="https://mc.yandex.ru/watch/12345" alt="">',
        '<img src="https://counter.yadro.ru/hit?t52.6" width="88" height="31">',
        '<img src="https://feeds.feedburner.com/~r/karjalainen/~4/abc">',
        '<img src="https://www.facebook.com/tr?id=1&ev=PageView">',
    ],
)
def test_sanitize_drops_tracking_pixels(pixel: str) -> None:
    out = sanitize_html(f"<p>teksti {pixel}</p>", BASE)
    assert "<img" not in out
    assert "teksti" in out


def test_sanitize_keeps_real_images() -> None:
    out = sanitize_html('<img src="/k.jpg" width="640" height="360" alt="Kuusi">', BASE)
    assert (
        out == '<img src="https://www.karjalainen.fi/k.jpg" width="640" height="360" alt="Kuusi">'
    )


# --- to_text ------------------------------------------------------------------------------


def test_to_text_drops_tags_decodes_entities_and_collapses_whitespace() -> None:
    html = "<p>Hinta&nbsp;5&nbsp;&euro;</p>\n\n<p>Toinen   <b>kappale</b></p><script>x()</script>"
    assert to_text(html, 500) == "Hinta 5 € Toinen kappale"


def test_to_text_cuts_at_a_word_boundary_with_an_ellipsis() -> None:
    text = to_text("<p>Петрозаводск готовится к Новому году: на площади Кирова ставят ёлку</p>", 40)
    assert len(text) <= 40
    assert text.endswith("…")
    assert text == "Петрозаводск готовится к Новому году…"


def test_to_text_of_plain_text_with_angle_brackets_keeps_them() -> None:
    assert to_text("a &lt; b &amp; c", 100) == "a < b & c"


def test_text_of_safe_html_matches_to_text_on_sanitized_html() -> None:
    raw = '<div><p>Kolin <a href="/x">rinteet</a> avataan</p><br>lauantaina &amp; sunnuntaina</div>'
    safe = sanitize_html(raw, BASE)
    assert (
        text_of_safe_html(safe, 500)
        == to_text(safe, 500)
        == ("Kolin rinteet avataan lauantaina & sunnuntaina")
    )


# --- clean_url ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://yle.fi/a/74-2001?utm_source=rss&utm_medium=feed", "https://yle.fi/a/74-2001"),
        ("https://ptzgovorit.ru/news/1?yclid=77&page=2", "https://ptzgovorit.ru/news/1?page=2"),
        ("https://x.fi/a?mc_cid=1&mc_eid=2", "https://x.fi/a"),
        ("/uutiset/1", "https://www.karjalainen.fi/uutiset/1"),
        ("  https://x.fi/a b  ", "https://x.fi/ab"),
        ("javascript:alert(1)", None),
        ("data:text/html,hi", None),
        ("mailto:toimitus@karjalainen.fi", None),
        ("ftp://x.fi/file", None),
        ("", None),
        (None, None),
        ("https://", None),
    ],
)
def test_clean_url(url: str | None, expected: str | None) -> None:
    assert clean_url(url, BASE) == expected


def test_clean_url_without_base_refuses_relative() -> None:
    assert clean_url("/uutiset/1", None) is None


# --- fingerprints -------------------------------------------------------------------------

# Two reports of one story from different papers: reworded headline and lead.
SAME_STORY = [
    (
        ("Joensuun torille nousee joulukuusi ensi viikolla",
         "Joensuun torin joulukuusi tuodaan tänä vuonna Ilomantsista. Kuusi pystytetään "
         "torille ensi viikon maanantaina, ja valot sytytetään itsenäisyyspäivän aattona."),
        ("Ilomantsilainen kuusi koristaa Joensuun toria",
         "Tämän vuoden joulukuusi Joensuun torille tulee Ilomantsista. Kuusi pystytetään "
         "maanantaina ja valot sytytetään itsenäisyyspäivän aattona."),
    ),
    (
        ("Pohjois-Karjalan keskussairaalan päivystys ruuhkautui viikonloppuna",
         "Keskussairaalan päivystyksessä jonotettiin viikonloppuna useita tunteja. Sairaalan "
         "mukaan ruuhkaa lisäsivät influenssa ja liukkaat kelit."),
        ("Keskussairaalan päivystyksessä pitkät jonot viikonloppuna",
         "Pohjois-Karjalan keskussairaalan päivystyksessä odotusajat venyivät viikonloppuna "
         "useisiin tunteihin. Ruuhkaa lisäsivät influenssa ja liukkaat kelit."),
    ),
    (
        ("В Петрозаводске открыли новый пешеходный мост через Лососинку",
         "Мост соединил Зарецкий район с центром города. На открытии присутствовал глава "
         "Карелии. Строительство длилось два года."),
        ("Новый пешеходный мост через Лососинку открылся в Петрозаводске",
         "Пешеходный мост через реку Лососинку соединил Зарецкий район с центром "
         "Петрозаводска. Строительство моста длилось два года, на открытии был глава республики."),
    ),
    (
        ("Глава Карелии встретился с жителями Кондопоги",
         "Артур Парфенчиков обсудил с жителями Кондопоги ремонт дорог и работу городской "
         "поликлиники."),
        ("Парфенчиков провел встречу с жителями Кондопоги",
         "Глава Карелии Артур Парфенчиков встретился с кондопожанами. Обсуждали ремонт дорог "
         "и работу поликлиники."),
    ),
    (
        ("Карельская филармония представит новогоднюю программу",
         "Симфонический оркестр Карельской филармонии исполнит произведения Чайковского и "
         "Штрауса 28 декабря."),
        ("Оркестр филармонии Карелии сыграет Чайковского и Штрауса под Новый год",
         "28 декабря симфонический оркестр Карельской филармонии представит новогоднюю "
         "программу с произведениями Чайковского и Штрауса."),
    ),
]  # fmt: skip

# Different stories of the same town, some with the same headline pattern.
DIFFERENT_STORIES = [
    (
        ("Joensuun torille nousee joulukuusi ensi viikolla",
         "Joensuun torin joulukuusi tuodaan tänä vuonna Ilomantsista."),
        ("Joensuun kaupunginvaltuusto hyväksyi ensi vuoden talousarvion",
         "Valtuusto hyväksyi maanantaina ensi vuoden talousarvion. Veroprosentti pysyy ennallaan."),
    ),
    (
        ("Глава Карелии встретился с жителями Кондопоги",
         "Обсуждали ремонт дорог и работу поликлиники."),
        ("Глава Карелии встретился с жителями Сортавалы",
         "Обсуждали строительство школы и благоустройство набережной."),
    ),
    (
        ("В Петрозаводске открыли новый пешеходный мост через Лососинку",
         "Мост соединил Зарецкий район с центром города."),
        ("В Петрозаводске начали ремонт улицы Ленина",
         "Ремонт главной улицы города продлится до конца лета. Движение транспорта ограничат."),
    ),
    (
        ("Kolin kansallispuistoon uusi näköalapaikka",
         "Metsähallitus avasi Ukko-Kolille uuden esteettömän näköalatasanteen."),
        ("Kolilla hiihtokausi alkaa lauantaina",
         "Kolin rinteet avataan lauantaina, kun lunta on saatu tykitettyä riittävästi."),
    ),
    (
        ("В Карелии ожидаются сильные морозы",
         "Синоптики прогнозируют до минус 30 градусов в северных районах республики."),
        ("В Карелии открылся лыжный сезон",
         "На горе Спасская Губа начали работать подъемники, трассы подготовлены."),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("a", "b"), SAME_STORY)
def test_reworded_reports_of_one_story_are_similar(a: tuple[str, str], b: tuple[str, str]) -> None:
    fa, fb = fingerprint(*a), fingerprint(*b)
    assert similar(fa, fb), f"{distance(fa, fb)} bits apart (max {SIMILAR_MAX_BITS})"


@pytest.mark.parametrize(("a", "b"), DIFFERENT_STORIES)
def test_different_stories_are_not_similar(a: tuple[str, str], b: tuple[str, str]) -> None:
    fa, fb = fingerprint(*a), fingerprint(*b)
    assert not similar(fa, fb), f"only {distance(fa, fb)} bits apart"


def test_fingerprint_is_16_hex_digits_and_treats_yo_as_ye() -> None:
    fp = fingerprint("Ёлочный базар открылся на площади Кирова", "Новогодние ёлки продают")
    assert len(fp) == 16 and int(fp, 16) > 0
    assert fp == fingerprint("Елочный базар открылся на площади Кирова", "Новогодние елки продают")


def test_empty_text_has_a_zero_fingerprint_that_matches_nothing() -> None:
    fp = fingerprint("", "")
    assert fp == "0" * 16
    assert not similar(fp, fp)


# --- language -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("Joensuun kaupunginvaltuusto hyväksyi ensi vuoden talousarvion maanantaina.", "fi"),
        ("Глава Карелии встретился с жителями Кондопоги и обсудил ремонт дорог.", "ru"),
        ("The city council of Joensuu approved next year's budget on Monday.", "en"),
        ("Stadsfullmäktige i Joensuu godkände budgeten för nästa år på måndagen.", "sv"),
        ("Tallinna linnavalitsus kinnitas järgmise aasta eelarve esmaspäeval.", "et"),
        ("Київська міська рада затвердила бюджет на наступний рік у понеділок.", "uk"),
    ],
)
def test_detect_language(text: str, lang: str) -> None:
    assert detect_language(text) == lang


@pytest.mark.parametrize("text", ["", "Petroskoi", "Ошибка сервера", "12:00 — 18:00"])
def test_detect_language_gives_none_for_text_too_short_to_tell(text: str) -> None:
    assert sum(ch.isalpha() for ch in text) < MIN_LETTERS
    assert detect_language(text) is None
