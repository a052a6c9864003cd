"""Empty and blank answers from a provider are that provider failing, never a translation.

Issue 10: 32 empty translations were stored as done and their items vanished from every
digest. Against real local LibreTranslate-speaking servers that answer "" or "   " for some
texts: the next provider translates those texts, or, with none left, the translation stays
pending with a reason naming the provider; the memory never keeps a blank answer, and blank
"done" rows stored before the fix are translated again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from newsexchange.config import Config
from newsexchange.db import Database, Translation, TranslationMemory
from newsexchange.translate import run_translate
from newsexchange.translate.memory import key_of
from tests.servers import HTTPServer
from tests.test_translate_support import NOW, FakeLibre, add_item, exchange_config, fake_translate


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


def _libre(url: str) -> str:
    return f"    - {{name: libre, url: {url}, timeout: 2}}\n"


def _rows(db: Database, item_id: int) -> dict[str, Translation]:
    with db.session() as s:
        rows = s.scalars(select(Translation).where(Translation.item_id == item_id)).all()
        return {t.language: t for t in rows}


def _memory(db: Database) -> list[tuple[str, str, str]]:
    with db.session() as s:
        return [
            (m.source_text, m.target_text, m.origin) for m in s.scalars(select(TranslationMemory))
        ]


TITLE = "Kirjasto avataan"
SUMMARY = "Tervetuloa kaikille."


@pytest.mark.parametrize("answer", ["", "   ", "\u200b"])
def test_blank_answer_goes_to_the_next_provider_and_is_not_remembered(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    libre: FakeLibre,
    libre2: FakeLibre,
    answer: str,
) -> None:
    libre.blank = {TITLE: answer}
    cfg = write_config(exchange_config(_libre(libre.url) + _libre(libre2.url)))
    db = db_for(cfg)
    item = add_item(db, title=TITLE, summary_text=SUMMARY, detected="fi")

    report = run_translate(db, cfg, now=NOW)

    rows = _rows(db, item)
    for lang in ("ru", "en"):
        assert rows[lang].status == "done"
        assert rows[lang].title == fake_translate(TITLE)
        assert rows[lang].summary_text == fake_translate(SUMMARY)
    # the first provider translated the summary; only the title went on to the second
    assert [c.texts for c in libre2.calls] == [[TITLE], [TITLE]]
    assert report.provider_errors["libre"]["last"].startswith("bad_answer: empty translation")
    memory = _memory(db)
    assert memory and all(target.strip() and target != answer for _s, target, _o in memory)
    assert (TITLE, fake_translate(TITLE), "libre-2") in memory


def test_blank_answer_with_no_provider_left_stays_pending_with_the_provider_named(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    libre: FakeLibre,
) -> None:
    libre.blank = {SUMMARY: "   "}
    cfg = write_config(exchange_config(_libre(libre.url)))
    db = db_for(cfg)
    item = add_item(db, title=TITLE, summary_text=SUMMARY, detected="fi")

    report = run_translate(db, cfg, now=NOW)

    ru = _rows(db, item)["ru"]
    assert ru.status == "pending" and ru.title is None and ru.summary_text is None
    assert ru.error == "libre: bad_answer: empty translation in the answer"
    assert ru.next_attempt_at is not None and ru.next_attempt_at > NOW
    assert report.translations_done == 0 and report.pending == 2 and not report.ok
    # The title's good answer is remembered; the blank one is not.
    assert {(s, t) for s, t, _o in _memory(db)} == {(TITLE, fake_translate(TITLE))}

    # Retried later, once the provider answers properly.
    libre.blank = {}
    run_translate(db, cfg, now=ru.next_attempt_at + timedelta(seconds=1))
    ru = _rows(db, item)["ru"]
    assert ru.status == "done" and ru.summary_text == fake_translate(SUMMARY)


def test_html_summary_answered_blank_is_not_done(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    libre: FakeLibre,
) -> None:
    libre.blank = {"Avajaiset ovat maanantaina.": ""}
    cfg = write_config(exchange_config(_libre(libre.url)))
    db = db_for(cfg)
    item = add_item(db, title=TITLE, summary_html="<p>Avajaiset ovat maanantaina.</p>")
    run_translate(db, cfg, now=NOW)
    ru = _rows(db, item)["ru"]
    assert ru.status == "pending" and ru.summary_html is None
    assert "libre" in (ru.error or "") and "empty translation" in (ru.error or "")


def test_blank_translations_stored_as_done_before_the_fix_are_translated_again(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    libre: FakeLibre,
) -> None:
    cfg = write_config(exchange_config(_libre(libre.url)))
    db = db_for(cfg)
    item = add_item(db, title=TITLE, summary_text=SUMMARY, detected="fi", updated_at=NOW)
    run_translate(db, cfg, now=NOW)
    assert _rows(db, item)["ru"].status == "done"
    # What the old code left behind: a done row with an empty title, and the blank answer in
    # the memory, long after the item last changed (so only the repair brings it back).
    with db.session() as s:
        row = s.scalars(
            select(Translation).where(Translation.item_id == item, Translation.language == "ru")
        ).one()
        row.title, row.summary_text, row.summary_html = "", "", ""
        mem = s.scalars(
            select(TranslationMemory).where(
                TranslationMemory.source_hash == key_of(TITLE),
                TranslationMemory.target_lang == "ru",
            )
        ).one()
        mem.target_text = ""
    sent = libre.requests

    run_translate(db, cfg, now=NOW + timedelta(days=2))

    ru = _rows(db, item)["ru"]
    assert ru.status == "done" and ru.title == fake_translate(TITLE)
    assert ru.summary_text == fake_translate(SUMMARY)
    assert _rows(db, item)["en"].title == fake_translate(TITLE, "en")
    # The blank memory entry was not served: the title was asked for again.
    assert libre.requests == sent + 1 and libre.calls[-1].texts == [TITLE]


def test_nul_and_bidi_in_a_provider_answer_are_removed_before_storing_on_both_databases(
    any_db_url: str,
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    libre: FakeLibre,
) -> None:
    libre.blank = {
        TITLE: "Библиотека\x00 открывается\u202e",
        SUMMARY: "Добро\x00 пожаловать\ufffe всем.",
    }
    cfg = write_config(
        exchange_config(_libre(libre.url)), env={"NEWSEXCHANGE_DATABASE_URL": any_db_url}
    )
    db = db_for(cfg)
    item = add_item(db, title=TITLE, summary_text=SUMMARY, detected="fi")

    report = run_translate(db, cfg, now=NOW)

    # Before: PostgreSQL refused the NUL and the whole translate run raised.
    assert report.translations_done == 2, report.failed
    ru = _rows(db, item)["ru"]
    assert ru.status == "done"
    assert ru.title == "Библиотека открывается"
    assert ru.summary_text == "Добро пожаловать всем."
    assert all("\x00" not in target for _s, target, _o in _memory(db))
