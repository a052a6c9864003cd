"""Pure parts of translation: sentences, packing, glossary, HTML templates, decisions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from newsexchange.errors import ConfigError
from newsexchange.translate import plan_field
from newsexchange.translate.base import (
    classify_status,
    lost_text,
    normalize,
    pack,
    parse_retry_after,
    split_long,
    split_sentences,
)
from newsexchange.translate.glossary import load_glossary, parse_glossary, restore
from newsexchange.translate.plan import (
    Existing,
    backoff_seconds,
    decide,
    source_language,
    wanted_languages,
)
from tests.test_translate_support import NOW

GLOSSARY = Path(__file__).resolve().parent.parent / "glossary.yaml"


def test_sentences_split_at_ends_and_keep_every_character() -> None:
    text = "Kaupunki kasvaa. Esim. Joensuussa on 80 000 asukasta! Mitä nyt? «Hyvä» päivä."
    parts = split_sentences(text)
    assert "".join(parts) == text
    assert parts == [
        "Kaupunki kasvaa. ",
        "Esim. Joensuussa on 80 000 asukasta! ",
        "Mitä nyt? ",
        "«Hyvä» päivä.",
    ]


def test_russian_abbreviations_and_initials_do_not_end_a_sentence() -> None:
    text = "В 2024 г. А. С. Пушкин приехал на ул. Ленина. Потом уехал."
    assert split_sentences(text) == [
        "В 2024 г. А. С. Пушкин приехал на ул. Ленина. ",
        "Потом уехал.",
    ]


def test_split_long_cuts_at_clauses_or_words_within_the_limit() -> None:
    text = "sana " * 100 + "loppu, ja vielä " + "toinen " * 50
    pieces = split_long(text, 120)
    assert "".join(pieces) == text
    assert all(len(p) <= 120 for p in pieces)
    assert all(p.endswith(" ") for p in pieces[:-1])


def test_pack_respects_characters_separators_and_count() -> None:
    texts = ["a" * 40, "b" * 40, "c" * 40, "d" * 10]
    assert list(pack(texts, 100, 10, sep=1)) == [[0, 1], [2, 3]]
    assert list(pack(texts, 1000, 2)) == [[0, 1], [2, 3]]


def test_normalize_collapses_whitespace_but_keeps_case() -> None:
    assert normalize("  Joensuu\n\t on  kaunis ") == "Joensuu on kaunis"
    assert normalize("Joensuu") != normalize("joensuu")


def test_retry_after_as_seconds_or_http_date() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    assert parse_retry_after("soon") is None


@pytest.mark.parametrize(
    ("status", "body", "kind", "retryable"),
    [
        (429, "", "rate_limited", True),
        (503, "", "server", True),
        (403, "Invalid API key", "auth", False),
        (400, "Visit portal to get an API key", "auth", False),
        (456, "", "quota", False),
        (400, "fi is not supported", "unsupported", False),
    ],
)
def test_http_errors_are_classified(status: int, body: str, kind: str, retryable: bool) -> None:
    err = classify_status("libre", status, body)
    assert (err.kind, err.retryable) == (kind, retryable)


def test_shipped_glossary_protects_inflected_names_in_all_directions() -> None:
    g = load_glossary(GLOSSARY)
    text, reps = g.protect(
        "Petroskoissa ja Kostamuksessa, Laatokalla ja Joensuun torilla", "fi", "ru"
    )
    assert "Petroskoi" not in text and "Kostamu" not in text and "Laatok" not in text
    assert reps == ["Петрозаводск", "Костомукша", "Ладожское озеро", "Йоэнсуу"]
    text, reps = g.protect("В Петрозаводске и Сортавале", "ru", "fi")
    assert reps == ["Petroskoi", "Sortavala"]
    text, reps = g.protect("The University of Eastern Finland in North Karelia", "en", "ru")
    assert reps == ["Университет Восточной Финляндии", "Северная Карелия"]


def test_glossary_keep_names_pass_through_unchanged_and_longest_term_wins() -> None:
    g = load_glossary(GLOSSARY)
    text, reps = g.protect("Business Joensuu ja Itä-Suomen yliopisto", "fi", "en")
    assert reps == ["Business Joensuu", "University of Eastern Finland"]
    assert restore(text, reps) == "Business Joensuu ja University of Eastern Finland"


def test_glossary_does_not_match_inside_other_words() -> None:
    g = parse_glossary({"terms": [{"fi": "Koli", "en": "Koli", "ru": "Коли"}]})
    text, reps = g.protect("Kolikko ja Kolilla", "fi", "ru")
    assert text == "Kolikko ja Kolilla" and reps == []  # no endings configured
    g = parse_glossary({"terms": [{"fi": "Koli", "ru": "Коли"}], "endings": {"fi": ["lla"]}})
    text, reps = g.protect("Kolikko ja Kolilla", "fi", "ru")
    assert text == "Kolikko ja XGL0X" and reps == ["Коли"]


def test_restore_tolerates_spacing_and_refuses_lost_placeholders() -> None:
    assert restore("в XGL 0 X и xgl1x", ["Йоэнсуу", "Сортавала"]) == "в Йоэнсуу и Сортавала"
    with pytest.raises(ValueError, match="Сортавала"):
        restore("в XGL0X", ["Йоэнсуу", "Сортавала"])


def test_glossary_mistakes_are_reported_with_the_file() -> None:
    with pytest.raises(ConfigError, match=r"terms\[0\]: unknown language 'de'"):
        parse_glossary({"terms": [{"fi": "Joensuu", "de": "Joensuu"}]}, filename="g.yaml")
    with pytest.raises(ConfigError, match="unknown key"):
        parse_glossary({"term": []})


def test_html_field_is_walked_text_node_by_text_node() -> None:
    plan = plan_field(
        '<p>Hei <a href="/x?a=1&amp;b=2" title="a>b">maailma</a>! Toinen.</p><pre>ei</pre>',
        html=True,
        split_at=1000,
    )
    assert plan.cores() == ["Hei", "maailma", "Toinen."]  # "!" alone is not sent
    out = plan.assemble(str.upper)
    assert (
        out == '<p>HEI <a href="/x?a=1&amp;b=2" title="a>b">MAAILMA</a>! TOINEN.</p><pre>ei</pre>'
    )


def test_html_entities_are_decoded_for_translation_and_escaped_back() -> None:
    plan = plan_field("<p>A &amp; B &lt;3</p>", html=True, split_at=1000)
    assert plan.cores() == ["A & B <3"]
    assert plan.assemble(lambda s: s + " & <x>") == "<p>A &amp; B &lt;3 &amp; &lt;x&gt;</p>"


def test_wanted_languages_follow_the_exchanges_plus_english() -> None:
    exchanges = [(["joensuu"], "ru"), (["petrozavodsk"], "fi"), (["joensuu"], "en")]
    assert wanted_languages("joensuu", exchanges) == ["en", "ru"]
    assert wanted_languages("petrozavodsk", exchanges) == ["en", "fi"]
    assert wanted_languages("elsewhere", exchanges) == ["en"]


def test_detected_language_wins_only_when_it_is_an_exchange_language() -> None:
    assert source_language("fi", "en") == "en"
    assert source_language("fi", "et") == "fi"  # a short Finnish title misdetected
    assert source_language("ru", None) == "ru"


def test_decide_skips_current_and_waiting_and_redoes_changed() -> None:
    done = Existing("done", "libre", "h1", None)
    waiting = Existing("pending", None, "h1", NOW + timedelta(minutes=5))
    due = Existing("pending", None, "h1", NOW - timedelta(minutes=5))
    args = {"wanted": ["en", "ru"], "source": "fi", "now": NOW}
    assert decide(current_hash="h1", existing={"en": done, "ru": waiting}, **args) == []
    assert [
        n.language for n in decide(current_hash="h1", existing={"en": done, "ru": due}, **args)
    ] == ["ru"]
    changed = decide(current_hash="h2", existing={"en": done, "ru": waiting}, **args)
    assert [(n.language, n.action) for n in changed] == [("en", "translate"), ("ru", "translate")]
    orig = decide(current_hash="h1", existing={}, wanted=["en"], source="en", now=NOW)
    assert [(n.language, n.action) for n in orig] == [("en", "original")]


def test_backoff_doubles_from_five_minutes_up_to_the_cap_and_honours_retry_after() -> None:
    assert [backoff_seconds(n, cap_hours=1) for n in (1, 2, 3, 4, 5, 6)] == [
        300,
        600,
        1200,
        2400,
        3600,
        3600,
    ]
    assert backoff_seconds(1, cap_hours=6, retry_after=7200) == 7200
    assert backoff_seconds(1, cap_hours=1, retry_after=7200) == 3600


@pytest.mark.parametrize(
    ("source", "result", "lost"),
    [
        ("Kirjasto avataan", "", True),
        ("Kirjasto avataan", "   ", True),
        ("Kirjasto avataan", "\u200b\ufeff", True),
        ("<p>Avajaiset</p>", "<p> </p>", True),
        ("<p>Avajaiset</p>", "<p>&nbsp;</p>", True),
        ("Kirjasto avataan", "Библиотека открывается", False),
        ("Kello 12", "12", False),
        ("—", "", False),  # nothing to lose: punctuation alone
        ("", "", False),
    ],
)
def test_lost_text_tells_a_blank_answer_from_a_translation(
    source: str, result: str, lost: bool
) -> None:
    assert lost_text(source, result) is lost
