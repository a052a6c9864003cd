"""The pick-up matcher (newsexchange/impact/match.py) on the pick-up set, and its parts.

The set (tests/data/pickup/, README there) has 40 stories in four directions, 43 true
retellings and 80 near misses; every candidate is run against all stories at once, as in
production. Measured at the default ``min_score`` 0.5: precision 1.0, recall 1.0 (the lowest
true score 0.512, the highest near miss 0.385) — the assertions hold those figures."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsexchange.config.schema import ImpactSettings
from newsexchange.impact import CandidateText, Matcher, StoryText
from newsexchange.impact.features import (
    date_keys,
    extract,
    fold,
    name_key,
    number_keys,
    place_key,
    stems,
    transliterate,
)
from tests.pickup_set import evaluate, load

#: Measured on the set (rounded down); the test fails if a change makes the matcher worse.
PRECISION = 1.0
RECALL = 1.0


@pytest.fixture(scope="module")
def quality():  # type: ignore[no-untyped-def]
    return evaluate(load(), min_score=ImpactSettings().pickup_min_score)


def test_the_set_is_as_large_as_the_issue_asks() -> None:
    cases = load()
    assert len(cases) >= 40
    assert sum(len(c.near_misses) for c in cases) >= 80
    assert all(c.retellings for c in cases)
    assert {c.direction for c in cases} >= {"fi→ru", "ru→fi", "fi→en", "ru→en"}
    # some retellings are in a third language (neither the story's nor the translation's)
    assert any(
        r.language not in (c.story.language, c.story.original_language)
        for c in cases
        for r in c.retellings
    )


def test_precision_and_recall_stay_at_the_measured_figures(quality) -> None:  # type: ignore[no-untyped-def]
    q = quality["all"]
    assert q.precision >= PRECISION, f"false pick-ups: {q.false_positives}"
    assert q.recall >= RECALL, f"missed retellings (story, candidate, score): {q.missed}"


@pytest.mark.parametrize("direction", ["fi→ru", "ru→fi", "fi→en", "ru→en"])
def test_every_direction_is_found_and_precise(quality, direction: str) -> None:  # type: ignore[no-untyped-def]
    q = quality[direction]
    assert q.retellings > 0
    assert q.precision >= 0.95 and q.recall >= 0.8, (q.false_positives, q.missed)


def test_the_held_out_stories_reach_the_targets_among_all_the_others() -> None:
    """``holdout.yaml`` was written after the weights were tuned: the honest figure.

    Measured 1.0 / 1.0 (6 retellings, 12 near misses, run against all 46 stories); too few
    to hold to that, so the issue's targets are asserted."""
    held = load(holdout=True)
    everything = load() + held
    q = evaluate(everything, min_score=ImpactSettings().pickup_min_score)["all"]
    assert q.precision >= 0.95 and q.recall >= 0.8, (q.false_positives, q.missed)
    keys = {c.story.key for c in held}
    held_q = evaluate(held)["all"]
    assert held_q.retellings == 6 and keys
    assert held_q.precision >= 0.95 and held_q.recall >= 0.8, (
        held_q.false_positives,
        held_q.missed,
    )


JOENSUU = StoryText(
    key=1,
    language="ru",
    title="Йоэнсуу закупит десять электробусов",
    summary="Городское правление Йоэнсуу решило приобрести десять электробусов. Стоимость "
    "закупки составит 4,8 миллиона евро. Руководитель транспортного отдела Микко Хямяляйнен "
    "рассказал, что автобусы выйдут на маршруты в сентябре.",
    original_language="fi",
    original_title="Joensuun kaupunki ostaa kymmenen sähköbussia",
    original_summary="Hankinnan arvo on 4,8 miljoonaa euroa. Liikennepäällikkö Mikko "
    "Hämäläinen kertoo, että bussit ajavat syyskuussa.",
    published_at=datetime(2026, 3, 2, 8, tzinfo=UTC),
)
LATER = datetime(2026, 3, 5, 8, tzinfo=UTC)


def test_a_retelling_from_petrozavodsk_is_found_with_its_evidence() -> None:
    retelling = CandidateText(
        10,
        "ru",
        "Финские соседи пересаживаются на электробусы",
        "Микко Хямяляйнен из Йоэнсуу говорит, что первые электробусы поедут в сентябре. Город потратит "
        "4,8 млн евро на десять машин. «Нам бы такой опыт пригодился», — сказал петрозаводский "
        "депутат Олег Сидоров.",
        LATER,
    )
    [m] = Matcher([JOENSUU]).matches(retelling)
    assert (m.story, m.candidate) == (1, 10) and 0.5 <= m.score <= 1
    assert m.evidence["language"] == "ru"
    assert "Хямяляйнен" in m.evidence["names"]
    assert m.evidence["numbers"] == ["4.8"]
    assert m.evidence["places"] == ["Йоэнсуу"]
    # the wording is compared without the names (they count once, as names)
    [[story_sentence, candidate_sentence, similarity]] = m.evidence["sentences"]
    assert "десять электробусов" in story_sentence and "десять машин" in candidate_sentence
    assert 0.3 <= similarity <= 1


def test_a_finnish_candidate_is_compared_with_the_original() -> None:
    finnish = CandidateText(
        11,
        "fi",
        "Joensuu hankkii sähköbusseja",
        "Liikennepäällikkö Mikko Hämäläisen mukaan 4,8 miljoonan euron bussit ajavat syyskuussa.",
        LATER,
    )
    [m] = Matcher([JOENSUU]).matches(finnish)
    assert m.evidence["language"] == "fi" and m.evidence["sentences"]


def test_the_same_city_on_another_subject_does_not_match() -> None:
    other = CandidateText(
        12,
        "ru",
        "В Йоэнсуу открылся новый бассейн",
        "В финском Йоэнсуу после ремонта открылся городской бассейн. Билет стоит 7 евро.",
        LATER,
    )
    assert Matcher([JOENSUU]).matches(other) == []


def test_a_candidate_published_before_the_story_is_no_pick_up() -> None:
    early = CandidateText(13, "fi", JOENSUU.original_title, JOENSUU.original_summary,
                          datetime(2026, 3, 1, tzinfo=UTC))  # fmt: skip
    assert Matcher([JOENSUU]).matches(early) == []


def test_the_index_compares_a_candidate_only_with_stories_it_shares_features_with() -> None:
    kizhi = StoryText(2, "fi", "Kizhissä odotetaan ennätyskautta",
                      "Museon johtaja Jelena Bogdanova odottaa 230 000 kävijää.", "ru",
                      "В Кижах ожидают рекордный сезон",
                      "Директор музея Елена Богданова ожидает 230 тысяч посетителей.")  # fmt: skip
    matcher = Matcher([JOENSUU, kizhi])
    candidate = CandidateText(
        20, "ru", "Электробусы в Йоэнсуу", "Микко Хямяляйнен: 4,8 млн евро на электробусы.", LATER
    )
    matcher.matches(candidate)
    assert matcher.compared == 1  # with the Joensuu story only, never with Kizhi
    nothing = CandidateText(21, "en", "Weather", "Rain is expected tomorrow.", LATER)
    assert matcher.matches(nothing) == [] and matcher.compared == 1


def test_numbers_are_read_in_every_spelling() -> None:
    assert number_keys("1 200 рублей, 1,200 euros, 1200 euroa") == {"1200"}
    assert number_keys("4,8 miljoonaa, 4.8 million, 2,50 €") == {"4.8", "2.5"}
    assert number_keys("18 % ja 11,2 prosenttia vuonna 2026") == {"18", "11.2", "2026"}


def test_dates_are_read_in_three_languages_and_are_not_numbers() -> None:
    for text in ("12 марта", "12. maaliskuuta", "March 12", "12.3.", "on 12 March"):
        dates, rest = date_keys(text)
        assert dates == {"03-12"}, text
        assert "12" not in number_keys(rest), text
    assert date_keys("25. toukokuuta 2026")[0] == {"05-25"}


def test_names_share_a_key_across_scripts_and_case_endings() -> None:
    assert (
        len({name_key(w) for w in ("Hämäläinen", "Hämäläisen", "Хямяляйнен", "Хямяляйнена")}) == 1
    )
    assert name_key("Smirnova") == name_key("Смирновой")
    assert name_key("Virtanen") == name_key("Virtasen")
    assert name_key("Bogdanova") == name_key("Богданова")
    assert name_key("Kondratjev") == name_key("Кондратьев") == name_key("Kondratyev")
    assert name_key("Virtanen") != name_key("Smirnova")


def test_transliteration_folds_the_spellings_of_one_name() -> None:
    assert transliterate("Йоэнсуу") == "joensuu"
    assert fold("Kostomuksha") == fold("Костомукша") == fold("Kostomukša")
    assert fold("Žukov") == fold("Жуков") == fold("Zhukov")


def test_places_are_known_by_their_exonyms() -> None:
    assert place_key("Petroskoissa") == place_key("Петрозаводске") == "petrozavodsk"
    assert place_key("Joensuussa") == place_key("Йоэнсуу") == "joensuu"
    assert place_key("Aunuksessa") == place_key("Олонце") == "olonets"
    assert place_key("Hämäläinen") is None


def test_stems_are_word_prefixes_without_stop_words() -> None:
    assert stems("электробусов электробусы и на") == {"элект"}
    assert stems("sähköbussia sähköbusseja että") == {"sähkö"}


def test_sentence_starts_are_not_names_but_names_are() -> None:
    f = extract("Выставка открылась", "Об этом сообщил Иван Петров. Петров добавил, что всё.")
    assert set(f.names.values()) == {"Иван", "Петров"}
    assert frozenset({name_key("Иван"), name_key("Петров")}) in f.name_groups


def test_the_benchmark_scores_a_small_share_of_the_pairs_and_finds_the_retellings() -> None:
    """benchmarks/impact.py on a small scale: it runs, and the index does its job."""
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "impact.py"
    spec = importlib.util.spec_from_file_location("bench_impact", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.run(200, 1000)
    assert r["pairs_scored"] < r["pairs_possible"] / 10
    assert r["retellings_found"] >= 0.8 * r["retellings"]
