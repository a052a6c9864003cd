"""Unsubscribing over the real app (uvicorn on loopback): the link from a delivered message,
the confirmation page a scanner cannot trigger, and the RFC 8058 one-click POST."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from newsexchange.config import Config
from newsexchange.db import Database, Delivery, Suppression
from newsexchange.delivery.send import run_send
from newsexchange.delivery.unsubscribe import unsubscribe_url
from newsexchange.web.app import create_app
from tests.servers import SMTPServer
from tests.test_delivery_support import NOW, delivery_config, seed_digest
from tests.webserver import WebServer


@pytest.fixture
def site(
    write_config: Callable[..., Config],
    db_for: Callable[[Config], Database],
    smtp_server: SMTPServer,
) -> Iterator[tuple[Config, Database, WebServer]]:
    cfg = delivery_config(write_config, smtp_port=smtp_server.port)
    db = db_for(cfg)
    server = WebServer(create_app(cfg, db)).start()
    yield cfg, db, server
    server.stop()


def _local(server: WebServer, url: str) -> str:
    """The same path on our loopback server (the mail links say public_url)."""
    return server.url + urlsplit(url).path


def _suppressions(db: Database) -> list[tuple[str, str | None, str]]:
    with db.session() as s:
        return [(x.email, x.list_id, x.reason) for x in s.scalars(select(Suppression))]


def test_one_click_post_from_a_delivered_message_unsubscribes_without_login(
    site: tuple[Config, Database, WebServer], smtp_server: SMTPServer
) -> None:
    cfg, db, server = site
    did = seed_digest(db, cfg, [("Анна", "anna@example.org"), ("", "desk@example.org")])
    run_send(db, cfg, now=NOW, digest_id=did)
    msg = smtp_server.received_by("anna@example.org")[0]
    https = re.findall(r"<(https://[^>]+)>", str(msg["List-Unsubscribe"]))[0]

    # What a mail client does for RFC 8058: a bare POST, no cookies, no CSRF value.
    resp = httpx.post(
        _local(server, https),
        content=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )

    assert resp.status_code == 200
    assert "Вы отписались" in resp.text and "anna@example.org" in resp.text  # the list speaks ru
    assert resp.headers["cache-control"] == "no-store"
    assert _suppressions(db) == [("anna@example.org", "petrozavodsk-media", "unsubscribed")]
    with db.session() as s:
        detail = s.scalars(select(Suppression.detail)).one()
    assert detail == "one-click (RFC 8058)"

    # The next digest skips her and only her.
    did2 = seed_digest(db, cfg, [], period_start=NOW.date())
    report = run_send(db, cfg, now=NOW, digest_id=did2)
    with db.session() as s:
        statuses = {
            d.email: d.status for d in s.scalars(select(Delivery).where(Delivery.digest_id == did2))
        }
    assert statuses == {"desk@example.org": "sent"} and report.sent == 1


def test_get_only_shows_a_confirmation_and_the_button_unsubscribes(
    site: tuple[Config, Database, WebServer],
) -> None:
    cfg, db, server = site
    url = _local(server, unsubscribe_url(cfg, "desk@example.org", "karelia-press"))

    page = httpx.get(url, timeout=10)  # a mail scanner prefetching the link

    assert page.status_code == 200
    assert '<form method="post"' in page.text and "<button" in page.text
    assert _suppressions(db) == []  # a GET changes nothing

    done = httpx.post(url, data={"confirm": "1"}, timeout=10)  # the person presses the button
    assert done.status_code == 200 and "desk@example.org" in done.text
    assert _suppressions(db) == [("desk@example.org", "karelia-press", "unsubscribed")]
    with db.session() as s:
        assert s.scalars(select(Suppression.detail)).one() == "unsubscribe page"

    again = httpx.get(url, timeout=10)
    assert "<button" not in again.text  # already unsubscribed: no second question
    twice = httpx.post(url, content=b"List-Unsubscribe=One-Click", timeout=10)
    assert twice.status_code == 200 and len(_suppressions(db)) == 1


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_forged_or_damaged_token_is_refused_and_changes_nothing(
    site: tuple[Config, Database, WebServer], method: str
) -> None:
    cfg, db, server = site
    good = unsubscribe_url(cfg, "desk@example.org", "karelia-press")
    token = good.rsplit("/", 1)[1]
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")

    resp = httpx.request(
        method, f"{server.url}/unsubscribe/{forged}", content=b"List-Unsubscribe=One-Click"
    )

    assert resp.status_code == 400 and "does not work" in resp.text
    assert _suppressions(db) == []
