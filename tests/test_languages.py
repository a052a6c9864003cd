"""Pages and mail in the readers' own language: the archive and its Atom feed speak the
exchange's language (the index the browser's, among fi/ru/en), the unsubscribe page the
list's, and the sender and list names can be given per language. Over the real app
(uvicorn) and a real aiosmtpd server on loopback."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from datetime import date

import feedparser
import httpx

from newsexchange.config import Config, database_url
from newsexchange.db import Database
from newsexchange.delivery.send import run_send
from newsexchange.delivery.unsubscribe import unsubscribe_url
from newsexchange.web.app import create_app
from newsexchange.web.archive import page_language
from tests.servers import SMTPServer
from tests.test_archive import EXCHANGE, _digest, _items
from tests.test_delivery_support import NOW, delivery_config, seed_digest
from tests.test_header_injection import _reload
from tests.test_web_ops import served
from tests.webserver import WebServer


def test_the_archive_pages_and_feed_speak_the_exchanges_language(
    write_config: Callable[..., Config],
) -> None:
    cfg = write_config(EXCHANGE)  # one exchange, in Russian
    db = Database(database_url(cfg))
    try:
        _items(db, date(2026, 10, 1), [("Joensuun tori avautuu", "В Йоэнсуу открывается рынок")])
        _digest(db, cfg, date(2026, 10, 1), approve=True, send=True)
        with served(cfg, db) as url:
            page = httpx.get(f"{url}/archive/fi-to-ru", headers={"accept-language": "fi"})
            feed = feedparser.parse(httpx.get(f"{url}/archive/fi-to-ru/atom.xml").content)
            index_en = httpx.get(f"{url}/archive")
            index_fi = httpx.get(f"{url}/archive", headers={"accept-language": "fi-FI,en;q=0.5"})
            index_ru = httpx.get(f"{url}/archive", headers={"accept-language": "de, ru;q=0.8"})
            missing = httpx.get(f"{url}/digests/99999", headers={"accept-language": "ru"})
    finally:
        db.dispose()

    # The exchange's page is Russian whatever the browser asks.
    assert '<html lang="ru">' in page.text
    assert "Как отписаться" in page.text and "Unsubscribing" not in page.text
    assert "Лента Atom" in page.text and "язык: русский" in page.text
    assert feed.feed.language == "ru"
    assert feed.feed.subtitle == "Дайджесты обмена новостями «Новости Йоэнсуу» (русский)"
    # The index lists every exchange: the browser's language among fi/ru/en, else English.
    assert "<h1>Digest archive</h1>" in index_en.text and "in Russian" in index_en.text
    assert "<h1>Katsausarkisto</h1>" in index_fi.text and "kieli: venäjä" in index_fi.text
    assert "<h1>Архив дайджестов</h1>" in index_ru.text
    assert index_fi.headers["vary"] == "Accept-Language"
    assert missing.status_code == 404 and "Дайджест не найден" in missing.text


def test_page_language_takes_the_best_weighted_supported_language() -> None:
    assert page_language(None) == "en"
    assert page_language("de-DE,de;q=0.9") == "en"
    assert page_language("de, fi;q=0.3, ru;q=0.7") == "ru"
    assert page_language("ru-RU, fi") == "ru"  # equal weights: the first
    assert page_language("fi;q=bad, ru;q=0.1") == "ru"


def test_the_unsubscribe_page_speaks_the_lists_language_with_its_name_in_it(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
) -> None:
    cfg = _reload(
        delivery_config(write_config),
        {
            "{name: Petrozavodsk media, language: ru}": (
                "{name: Petrozavodsk media, names: {ru: Медиа Петрозаводска}, language: ru}"
            )
        },
    )
    db = db_for(cfg)
    server = WebServer(create_app(cfg, db)).start()
    try:
        path = unsubscribe_url(cfg, "anna@example.org", "petrozavodsk-media").split("/", 3)[3]
        page = httpx.get(f"{server.url}/{path}")
        done = httpx.post(f"{server.url}/{path}", data={"confirm": "1"})
        other = unsubscribe_url(cfg, "anna@example.org", "karelia-press").split("/", 3)[3]
        fallback = httpx.get(f"{server.url}/{other}")
    finally:
        server.stop()

    assert '<html lang="ru">' in page.text
    assert "Больше не присылать «Медиа Петрозаводска» на адрес anna@example.org?" in page.text
    assert "Petrozavodsk media" not in page.text
    assert "<h1>Вы отписались</h1>" in done.text and "«Медиа Петрозаводска»" in done.text
    assert "«Karelia press»" in fallback.text  # no Russian name given: the single name


def test_the_digest_comes_from_the_senders_name_in_its_language(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> None:
    cfg = _reload(
        delivery_config(write_config, smtp_port=smtp_server.port),
        {
            "  reply_to:": (
                '  from_names: {ru: "Обмен новостями Йоэнсуу и Петрозаводска", fi: Uutisvaihto}\n'
                "  reply_to:"
            ),
            "{name: Petrozavodsk media, language: ru}": (
                "{name: Petrozavodsk media, names: {ru: Медиа Петрозаводска}, language: ru}"
            ),
        },
    )
    db = db_for(cfg)
    did = seed_digest(db, cfg, [("Анна", "anna@example.org")])

    assert run_send(db, cfg, now=NOW, digest_id=did).sent == 1

    raw = smtp_server.envelopes[0][2]
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    sender = msg["From"].addresses[0]
    assert sender.display_name == "Обмен новостями Йоэнсуу и Петрозаводска"
    assert sender.addr_spec == cfg.mail.sender(None).split("<")[1].rstrip(">")
    assert str(msg["List-Id"]).startswith("Медиа Петрозаводска <petrozavodsk-media.")
    assert cfg.mail.sender("en") == cfg.mail.from_  # no English name given: from as it is


def test_the_approval_request_comes_from_the_senders_name_in_the_editors_language(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> None:
    from newsexchange.approval import request_approval
    from tests.test_approval import ANNA, approval_config, make_digest

    mail = (
        'mail:\n  backend: outbox\n  from: "Exchange <news@example.org>"\n'
        '  from_names: {fi: Uutisvaihto, ru: "Обмен новостями"}\n  outbox_dir: var/outbox\n'
    )
    cfg = approval_config(write_config, editors=(f"{{email: {ANNA}, language: fi}}",), mail=mail)
    db = db_for(cfg)
    digest_id = make_digest(db)
    assert request_approval(db, cfg, digest_id, now=NOW) == 1
    [eml] = sorted(cfg.resolve("var/outbox").glob("nx-approval.*.eml"))
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert msg["From"].addresses[0].display_name == "Uutisvaihto"
    assert msg["From"].addresses[0].addr_spec == "news@example.org"
