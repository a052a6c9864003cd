"""The translate step end to end against a local LibreTranslate-speaking server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from newsexchange.cli import main
from newsexchange.config import Config
from newsexchange.db import Database, ProviderUsage, Translation, TranslationMemory
from newsexchange.translate import providers_down, run_translate, set_editor_translation
from tests.servers import HTTPServer, Response
from tests.test_translate_support import (
    NOW,
    FakeLibre,
    add_item,
    exchange_config,
    fake_translate,
)

GLOSSARY = str(Path(__file__).resolve().parent.parent / "glossary.yaml")


@pytest.fixture
def libre() -> Iterator[FakeLibre]:
    server = HTTPServer().start()
    yield FakeLibre(server)
    server.stop()


@pytest.fixture
def libre2() -> Iterator[FakeLibre]:
    server = HTTPServer().start()
    yield FakeLibre(server)
    server.stop()


def _libre(url: str, extra: str = "", timeout: float = 2) -> str:
    return f"    - {{name: libre, url: {url}, timeout: {timeout}{extra}}}\n"


def translations(db: Database, item_id: int) -> dict[str, Translation]:
    with db.session() as s:
        rows = s.scalars(select(Translation).where(Translation.item_id == item_id)).all()
        return {t.language: t for t in rows}


@pytest.fixture
def setup(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database], libre: FakeLibre
) -> Callable[..., tuple[Config, Database]]:
    def make(providers: str | None = None, **kw: str) -> tuple[Config, Database]:
        cfg = write_config(exchange_config(providers or _libre(libre.url), **kw))
        return cfg, db_for(cfg)

    return make


def test_finnish_item_gets_russian_and_english_and_second_run_sends_nothing(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    cfg, db = setup()
    item = add_item(
        db,
        title="Kaupunki avaa uuden kirjaston.",
        summary_html="<p>Avajaiset ovat maanantaina.</p>",
    )
    report = run_translate(db, cfg, now=NOW)

    rows = translations(db, item)
    assert set(rows) == {"ru", "en"}
    for lang in ("ru", "en"):
        assert rows[lang].status == "done"
        assert rows[lang].provider == "libre"
        assert rows[lang].title == fake_translate("Kaupunki avaa uuden kirjaston.")
        assert (
            rows[lang].summary_html
            == "<p>" + fake_translate("Avajaiset ovat maanantaina.") + "</p>"
        )
        assert rows[lang].summary_text == fake_translate("Avajaiset ovat maanantaina.")
    assert report.translations_done == 2 and report.items_translated == 1
    # one POST /translate per language pair, and the GET /languages asked once per run
    assert libre.requests == 2 and report.requests == {"libre": 3}
    sent = libre.chars
    assert report.characters_sent == {"libre": sent} and sent > 0

    again = run_translate(db, cfg, now=NOW + timedelta(hours=1))
    assert libre.requests == 2, "a second run with nothing new must send zero requests"
    assert again.requests == {} and again.translations_done == 0


def test_same_sentence_in_many_items_is_sent_once_and_served_from_memory(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    cfg, db = setup()
    shared = "Tiedote julkaistaan huomenna."
    ids = [
        add_item(db, title=f"Uutinen {w}", summary_text=shared) for w in ("yksi", "kaksi", "kolme")
    ]
    run_translate(db, cfg, now=NOW)
    sent = [t for c in libre.calls if c.target == "ru" for t in c.texts]
    assert sent.count(shared) == 1
    assert all(translations(db, i)["ru"].summary_text == fake_translate(shared) for i in ids)

    later = add_item(db, title="Uutinen yksi", summary_text=shared)  # an exact repeat
    before = libre.requests
    report = run_translate(db, cfg, now=NOW)
    assert libre.requests == before
    assert report.cache_hits >= 2
    assert translations(db, later)["ru"].provider == "memory"


def test_long_text_is_cut_at_sentence_boundaries_under_the_request_limit(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    cfg, db = setup(_libre(libre.url, ", max_chars: 1000"))
    sentences = [f"Tämä on lause numero {i} pitkässä artikkelissa." for i in range(120)]
    body = " ".join(sentences)
    item = add_item(db, title="Pitkä juttu", summary_text=body)
    run_translate(db, cfg, now=NOW)

    ru_calls = [c for c in libre.calls if c.target == "ru"]
    assert len(ru_calls) >= len(body) // 1000
    for call in ru_calls:
        assert call.chars + len(call.texts) <= 1000  # texts plus their separators
        for t in call.texts:
            assert t in sentences or t == "Pitkä juttu", "a request held a cut sentence"
    assert translations(db, item)["ru"].summary_text == fake_translate(body)


def test_glossary_terms_come_out_intact_although_the_provider_mangles_names(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    cfg, db = setup(glossary=GLOSSARY)
    item = add_item(
        db,
        title="Joensuussa ja Petroskoissa juhlitaan ystävyyttä",
        summary_text="Pohjois-Karjala ja Karjalan tasavalta sopivat Äänisjärven matkailusta.",
    )
    run_translate(db, cfg, now=NOW)
    rows = translations(db, item)
    ru, en = rows["ru"], rows["en"]
    assert "Йоэнсуу" in ru.title and "Петрозаводск" in ru.title
    assert "Северная Карелия" in ru.summary_text and "Республика Карелия" in ru.summary_text
    assert "Онежское озеро" in ru.summary_text
    assert "Petrozavodsk" in en.title and "North Karelia" in en.summary_text
    assert "Lake Onega" in en.summary_text and "Republic of Karelia" in en.summary_text
    for text in (ru.title, ru.summary_text, en.title, en.summary_text):
        assert "uusneoJ" not in text and "XGL" not in text
    # the provider never saw the names, only placeholders
    sent = " ".join(t for c in libre.calls for t in c.texts)
    assert "Joensuu" not in sent and "Petroskoi" not in sent and "XGL0X" in sent


def test_provider_that_loses_a_placeholder_is_refused_and_the_next_one_translates(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre, libre2: FakeLibre
) -> None:
    libre.mangle = True
    cfg, db = setup(_libre(libre.url) + _libre(libre2.url), glossary=GLOSSARY)
    item = add_item(
        db, title="Sortavalan museo avataan", summary_text="Kävijöitä odotetaan paljon."
    )
    run_translate(db, cfg, now=NOW)
    ru = translations(db, item)["ru"]
    assert ru.status == "done"
    assert ru.title.startswith("Сортавала") and "xgl" not in ru.title.lower()
    assert libre2.requests >= 1


def test_timeout_on_first_provider_falls_back_to_the_next(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre, libre2: FakeLibre
) -> None:
    libre.failure = Response(200, "{}", delay=3)  # longer than timeout: 2
    cfg, db = setup(_libre(libre.url, timeout=0.5) + _libre(libre2.url))
    item = add_item(
        db, title="Uusi silta valmistuu", summary_text="Työt alkavat keväällä.", detected="fi"
    )
    t0 = time.monotonic()
    report = run_translate(db, cfg, now=NOW)
    assert time.monotonic() - t0 < 2.0, "a hung provider must not hold the step"
    rows = translations(db, item)
    assert rows["ru"].status == "done" and rows["ru"].provider == "libre-2"
    assert libre2.requests == 2 and libre.requests == 1  # the slow one is not asked again
    assert report.provider_errors["libre"]["last"].startswith("timeout")


def test_full_outage_keeps_items_pending_with_reason_then_retries_after_backoff(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    libre.failure = Response(503, json.dumps({"error": "Service unavailable"}))
    cfg, db = setup()
    item = add_item(db, title="Kirjasto avataan", summary_text="Tervetuloa.")
    report = run_translate(db, cfg, now=NOW)
    ru = translations(db, item)["ru"]
    assert ru.status == "pending" and ru.title is None and ru.summary_text is None
    assert "503" in (ru.error or "") and ru.attempts == 1
    assert ru.next_attempt_at is not None and ru.next_attempt_at > NOW
    assert not report.ok and {f["language"] for f in report.failed} == {"ru", "en"}
    assert report.pending == 2

    # Before the retry time nothing is sent; after it, the recovered provider translates.
    calls = libre.requests
    run_translate(db, cfg, now=NOW + timedelta(minutes=1))
    assert libre.requests == calls
    libre.failure = None
    done = run_translate(db, cfg, now=ru.next_attempt_at + timedelta(seconds=1))
    ru = translations(db, item)["ru"]
    assert ru.status == "done" and ru.title == fake_translate("Kirjasto avataan")
    assert done.pending == 0 and done.ok

    with db.session() as s:
        usage = s.scalars(select(ProviderUsage)).one()
        assert usage.failures >= 1 and usage.down_since is None  # healthy again


def test_outage_backoff_grows_and_is_capped(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    libre.failure = Response(500, "{}")
    cfg, db = setup(extra="")
    item = add_item(db, title="Kirjasto", summary_text="")
    now = NOW
    delays = []
    for _ in range(8):
        run_translate(db, cfg, now=now)
        ru = translations(db, item)["ru"]
        assert ru.next_attempt_at is not None
        delays.append((ru.next_attempt_at - now).total_seconds())
        now = ru.next_attempt_at
    assert delays[:3] == [300, 600, 1200]
    assert max(delays) == cfg.translation.max_attempts_backoff_hours * 3600
    assert translations(db, item)["ru"].attempts == 8


def test_429_with_retry_after_moves_to_next_provider_and_delays_the_retry(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre, libre2: FakeLibre
) -> None:
    libre.failure = Response(429, json.dumps({"error": "Slowdown"}), {"Retry-After": "7200"})
    cfg, db = setup(_libre(libre.url))
    item = add_item(db, title="Hiihtokausi alkaa", summary_text="")
    run_translate(db, cfg, now=NOW)
    ru = translations(db, item)["ru"]
    assert ru.status == "pending" and "rate_limited" in (ru.error or "")
    assert ru.next_attempt_at is not None
    wait = (ru.next_attempt_at - NOW).total_seconds()
    assert 7190 <= wait <= 7200, "Retry-After must be honoured"
    assert libre.requests == 1, "after a 429 the provider is not asked again in the same run"

    cfg2, db2 = setup(_libre(libre.url) + _libre(libre2.url))
    item2 = add_item(db2, title="Hiihtokausi alkaa", summary_text="")
    run_translate(db2, cfg2, now=NOW)
    assert translations(db2, item2)["ru"].status == "done" and libre2.requests == 2


def test_outage_for_one_pair_does_not_block_other_items(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    libre.languages = ["fi", "en"]  # the server has no Russian model
    cfg, db = setup()
    fi_item = add_item(db, title="Kirjasto avataan", summary_text="")
    run_translate(db, cfg, now=NOW)
    rows = translations(db, fi_item)
    assert rows["en"].status == "done"
    assert rows["ru"].status == "failed" and "not installed" in (rows["ru"].error or "")


def test_requests_per_second_limit_spaces_requests(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    cfg, db = setup(_libre(libre.url, ", requests_per_second: 10, max_chars: 200"))
    add_item(
        db, title="Otsikko", summary_text=" ".join(f"Lause numero {i} on tässä." for i in range(30))
    )
    t0 = time.monotonic()
    run_translate(db, cfg, now=NOW)
    elapsed = time.monotonic() - t0
    n = libre.requests
    assert n >= 6
    assert elapsed >= (n - 1) / 10 * 0.9, f"{n} requests in {elapsed:.2f}s breaks 10 requests/s"


def test_chars_per_day_limit_hands_over_to_next_provider_and_is_remembered(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre, libre2: FakeLibre
) -> None:
    cfg, db = setup(_libre(libre.url, ", chars_per_day: 60") + _libre(libre2.url))
    add_item(db, title="Ensimmäinen uutinen tänään", summary_text="")
    run_translate(db, cfg, now=NOW)
    first = libre.chars
    assert 0 < first <= 60
    add_item(db, title="Toinen uutinen on paljon pidempi kuin ensimmäinen", summary_text="")
    run_translate(db, cfg, now=NOW + timedelta(minutes=5))
    assert libre.chars == first, "the daily character limit must hold across runs"
    assert libre2.requests >= 1
    with db.session() as s:
        row = s.scalars(select(ProviderUsage).where(ProviderUsage.provider == "libre")).one()
        assert row.characters == first


def test_editor_correction_wins_from_then_on(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    cfg, db = setup()
    first = add_item(db, title="Torilla tavataan", summary_text="Kesäkahvila aukeaa.")
    run_translate(db, cfg, now=NOW)
    with db.session() as s:
        t = set_editor_translation(
            s,
            first,
            "ru",
            title="Встречаемся на площади",
            summary="Открывается летнее кафе.",
            now=NOW,
        )
        assert t.provider == "editor" and t.status == "done"
    run_translate(db, cfg, now=NOW + timedelta(hours=1))
    ru = translations(db, first)["ru"]
    assert ru.title == "Встречаемся на площади" and ru.provider == "editor"
    assert ru.summary_html == "<p>Открывается летнее кафе.</p>"

    # the same title elsewhere gets the editor's words, without a request
    before = libre.requests
    other = add_item(
        db, title="Torilla tavataan", summary_text="Kesäkahvila aukeaa.", source="other"
    )
    run_translate(db, cfg, now=NOW + timedelta(hours=2))
    assert translations(db, other)["ru"].title == "Встречаемся на площади"
    assert translations(db, other)["ru"].provider == "editor"
    assert libre.requests == before


def test_changed_item_is_translated_again(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    cfg, db = setup()
    item = add_item(db, title="Vanha otsikko", summary_text="")
    run_translate(db, cfg, now=NOW)
    from newsexchange.db import Item

    with db.session() as s:
        s.get(Item, item).title = "Korjattu otsikko"  # type: ignore[union-attr]
    run_translate(db, cfg, now=NOW + timedelta(minutes=5))
    assert translations(db, item)["ru"].title == fake_translate("Korjattu otsikko")


def test_html_summary_keeps_markup_and_links(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    cfg, db = setup()
    summary = (
        '<p>Lue <a href="https://example.fi/a?x=1&amp;y=2" title="Linkki">koko juttu</a> '
        "täältä. <strong>Tärkeää</strong> tietoa &amp; muuta.</p><ul><li>Yksi</li></ul>"
        "<pre>koodi ei käänny</pre>"
    )
    item = add_item(db, title="Otsikko", summary_html=summary)
    run_translate(db, cfg, now=NOW)
    ru = translations(db, item)["ru"].summary_html or ""
    assert ru == (
        f'<p>{fake_translate("Lue")} <a href="https://example.fi/a?x=1&amp;y=2" title="Linkki">'
        f"{fake_translate('koko juttu')}</a> {fake_translate('täältä.')} "
        f"<strong>{fake_translate('Tärkeää')}</strong> {fake_translate('tietoa')} &amp; "
        f"{fake_translate('muuta.')}</p><ul><li>{fake_translate('Yksi')}</li></ul>"
        "<pre>koodi ei käänny</pre>"
    )
    sent = [t for c in libre.calls for t in c.texts]
    assert not any("<" in t or "href" in t for t in sent), "markup must not be sent"
    assert "koodi ei käänny" not in sent


def test_item_already_in_target_language_is_kept_as_original(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    cfg, db = setup()
    # a Finnish source that posted an English press release: detected, not declared
    english = add_item(
        db,
        title="University opens a new campus",
        summary_text="Classes start in May.",
        detected="en",
    )
    russian = add_item(db, title="Новости Карелии", region="petrozavodsk", language="ru")
    run_translate(db, cfg, now=NOW)
    en = translations(db, english)
    assert en["en"].provider == "original" and en["en"].title == "University opens a new campus"
    assert en["ru"].provider == "libre"
    assert [c.source for c in libre.calls if c.target == "ru"] == ["en"]
    ru = translations(db, russian)
    assert set(ru) == {"en", "fi"}  # the ru→fi exchange and English; nothing to do for ru


def test_limit_caps_items_worked_on(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    cfg, db = setup()
    for i in range(5):
        add_item(db, title=f"Uutinen numero {i}")
    report = run_translate(db, cfg, now=NOW, limit=2)
    assert report.items_translated == 2
    report = run_translate(db, cfg, now=NOW)
    assert report.items_translated == 3


def test_provider_down_for_an_hour_is_reported_for_alerting(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    libre.failure = Response(502, "")
    cfg, db = setup()
    add_item(db, title="Uutinen")
    run_translate(db, cfg, now=NOW)
    with db.session() as s:
        assert providers_down(s, now=NOW + timedelta(minutes=30)) == []
        down = providers_down(s, now=NOW + timedelta(minutes=61))
    assert [d["provider"] for d in down] == ["libre"] and "502" in down[0]["last_error"]


def test_memory_never_stores_a_translation_twice(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    cfg, db = setup()
    add_item(db, title="Sama otsikko", summary_text="Sama teksti.")
    add_item(db, title="Sama otsikko", summary_text="Sama teksti.", source="b")
    run_translate(db, cfg, now=NOW)
    with db.session() as s:
        rows = s.scalars(select(TranslationMemory)).all()
    keys = [(r.source_lang, r.target_lang, r.source_hash) for r in rows]
    assert len(keys) == len(set(keys)) == 4  # 2 texts x 2 languages


# -- the command line ----------------------------------------------------------------------


def test_cli_translate_json_set_show_and_import(
    setup: Callable[..., tuple[Config, Database]],
    libre: FakeLibre,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    cfg, db = setup()
    item = add_item(db, title="Kirjasto avataan", summary_text="Tervetuloa.")
    conf = str(cfg.path)
    assert main(["translate", "--config", conf, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["translations_done"] == 2 and out["characters_sent"]["libre"] > 0

    assert (
        main(
            [
                "translation",
                "set",
                str(item),
                "ru",
                "--title",
                "Библиотека открывается",
                "--summary",
                "Добро пожаловать.",
                "--config",
                conf,
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["translation"]["provider"] == "editor"

    assert main(["translation", "show", str(item), "--config", conf, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    by_lang = {t["language"]: t for t in shown["translations"]}
    assert by_lang["ru"]["title"] == "Библиотека открывается"

    tm = tmp_path / "tm.yaml"
    tm.write_text(
        "- {source_lang: fi, target_lang: ru, source: 'Uusi uutinen', target: 'Новая новость'}\n",
        encoding="utf-8",
    )
    assert main(["translation", "import", str(tm), "--config", conf, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["imported"] == 1
    new = add_item(db, title="Uusi uutinen")
    before = libre.calls.copy()
    assert main(["translate", "--config", conf, "--json"]) == 0
    capsys.readouterr()
    assert translations(db, new)["ru"].title == "Новая новость"
    assert all(c.target != "ru" for c in libre.calls[len(before) :])

    bad = tmp_path / "bad.yaml"
    bad.write_text("- {source_lang: xx, target_lang: ru, source: a, target: b}\n", encoding="utf-8")
    assert main(["translation", "import", str(bad), "--config", conf, "--json"]) == 2
    assert "xx" in json.loads(capsys.readouterr().out)["error"]


def test_cli_translate_exit_1_when_translations_stay_pending(
    setup: Callable[..., tuple[Config, Database]],
    libre: FakeLibre,
    capsys: pytest.CaptureFixture[str],
) -> None:
    libre.failure = Response(500, "{}")
    cfg, db = setup()
    add_item(db, title="Kirjasto")
    assert main(["translate", "--config", str(cfg.path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and out["pending"] == 2 and out["failed"][0]["reason"]


def test_memory_editor_override_and_pending_work_the_same_on_sqlite_and_postgresql(
    any_db_url: str,
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    libre: FakeLibre,
) -> None:
    cfg = write_config(
        exchange_config(_libre(libre.url)), env={"NEWSEXCHANGE_DATABASE_URL": any_db_url}
    )
    db = db_for(cfg)
    a = add_item(db, title="Satama avataan", summary_text="Laivat tulevat.", detected="fi")
    b = add_item(db, title="Satama avataan", summary_text="Laivat tulevat.", source="b")
    report = run_translate(db, cfg, now=NOW)
    assert report.translations_done == 4 and libre.requests == 2
    with db.session() as s:
        set_editor_translation(s, a, "ru", title="Порт открывается", summary=None, now=NOW)
    with db.session() as s:
        origins = {r.origin for r in s.scalars(select(TranslationMemory))}
    assert origins == {"libre", "editor"}
    c = add_item(db, title="Satama avataan", summary_text="Laivat tulevat.", source="c")
    libre.failure = Response(503, "")
    run_translate(db, cfg, now=NOW + timedelta(hours=1))
    rows = translations(db, c)
    assert rows["ru"].title == "Порт открывается" and rows["ru"].status == "done"
    assert translations(db, b)["ru"].title == fake_translate("Satama avataan")  # kept as it was


def test_two_runs_racing_on_the_same_new_items_both_finish(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre
) -> None:
    import threading

    cfg, db = setup()
    ids = [add_item(db, title=f"Uutinen {i}", detected="fi") for i in range(20)]
    libre.delay = 0.3  # both runs have read the page before either one writes
    results: list[object] = []

    def run() -> None:
        try:
            results.append(run_translate(db, cfg, now=NOW))
        except Exception as exc:  # the assertion below shows it
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(not isinstance(r, Exception) for r in results), results
    assert all(translations(db, i)["ru"].status == "done" for i in ids)


def test_cli_translation_set_from_file_and_bad_usage(
    setup: Callable[..., tuple[Config, Database]],
    libre: FakeLibre,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    cfg, db = setup()
    item = add_item(db, title="Kirjasto avataan", summary_text="Tervetuloa.")
    conf = str(cfg.path)
    fix = tmp_path / "fix.yaml"
    fix.write_text("title: Библиотека открыта\nsummary: Добро пожаловать.\n", encoding="utf-8")
    assert main(["translation", "set", str(item), "ru", "--file", str(fix), "--config", conf]) == 0
    capsys.readouterr()
    assert translations(db, item)["ru"].title == "Библиотека открыта"
    assert (
        main(["translation", "set", "999", "ru", "--title", "x", "--config", conf, "--json"]) == 2
    )
    assert "no item with id 999" in json.loads(capsys.readouterr().out)["error"]
    assert main(["translation", "set", str(item), "de", "--title", "x", "--config", conf]) == 2
    assert "unknown language" in capsys.readouterr().err


def test_items_done_long_ago_are_not_loaded_again_but_a_changed_one_is(
    any_db_url: str,
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    libre: FakeLibre,
) -> None:
    from newsexchange.db import Item

    cfg = write_config(
        exchange_config(_libre(libre.url)), env={"NEWSEXCHANGE_DATABASE_URL": any_db_url}
    )
    db = db_for(cfg)
    old = NOW - timedelta(days=2)
    add_item(db, title="Vanha uutinen", detected="fi", updated_at=old)
    b = add_item(db, title="Toinen vanha", detected="fi", updated_at=old)
    add_item(db, title="Новость", region="petrozavodsk", language="ru", updated_at=old)
    assert run_translate(db, cfg, now=NOW - timedelta(days=1)).translations_done == 6
    assert run_translate(db, cfg, now=NOW).items_seen == 0, "finished items must not be loaded"

    with db.session() as s:  # b changes at the source; ingestion stamps updated_at
        item = s.get(Item, b)
        assert item is not None
        item.title, item.updated_at = "Korjattu otsikko", NOW
    report = run_translate(db, cfg, now=NOW + timedelta(minutes=1))
    assert report.items_seen == 1
    assert translations(db, b)["ru"].title == fake_translate("Korjattu otsikko")


def test_reason_of_a_pending_translation_names_every_provider_that_failed(
    setup: Callable[..., tuple[Config, Database]], libre: FakeLibre, libre2: FakeLibre
) -> None:
    libre.failure = Response(503, json.dumps({"error": "overloaded"}))
    libre2.failure = Response(403, json.dumps({"error": "Invalid API key"}))
    cfg, db = setup(_libre(libre.url) + _libre(libre2.url))
    item = add_item(db, title="Uutinen", detected="fi")
    run_translate(db, cfg, now=NOW)
    ru = translations(db, item)["ru"]
    assert ru.status == "pending"  # the 503 may heal; the bad key alone would make it failed
    assert "libre: server: HTTP 503" in (ru.error or "")
    assert "libre-2: auth: HTTP 403" in (ru.error or "")
