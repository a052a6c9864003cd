"""Only a POST that asks for it unsubscribes (RFC 8058), over the real app: HEAD (``curl -I``),
GET, PUT, DELETE, OPTIONS and a POST that says nothing change nothing; the headers mailed
offer exactly what the page accepts."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from newsexchange.config import Config
from newsexchange.db import Database, Suppression
from newsexchange.delivery.send import run_send
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
    server = WebServer(create_app(cfg, db, clock=lambda: NOW)).start()
    yield cfg, db, server
    server.stop()


def _suppressions(db: Database) -> list[tuple[str, str | None, str, str | None]]:
    with db.session() as s:
        return [(x.email, x.list_id, x.reason, x.detail) for x in s.scalars(select(Suppression))]


def _mailed_link(
    site: tuple[Config, Database, WebServer], smtp_server: SMTPServer
) -> tuple[str, dict[str, str]]:
    """Deliver a digest to Anna; the https unsubscribe URL on our loopback server, and the
    list headers as she received them."""
    cfg, db, server = site
    did = seed_digest(db, cfg, [("Анна", "anna@example.org")])
    run_send(db, cfg, now=NOW, digest_id=did)
    msg = smtp_server.received_by("anna@example.org")[0]
    headers = {k: str(msg[k]) for k in ("List-Unsubscribe", "List-Unsubscribe-Post")}
    https = re.findall(r"<(https://[^>]+)>", headers["List-Unsubscribe"])
    assert len(https) == 1
    return server.url + urlsplit(https[0]).path, headers


def test_the_mailed_headers_offer_one_https_one_click_url_and_a_mailto(
    site: tuple[Config, Database, WebServer], smtp_server: SMTPServer
) -> None:
    _url, headers = _mailed_link(site, smtp_server)
    # RFC 8058 §3.1: exactly one https URI, and the Post header with exactly this value.
    uris = re.findall(r"<([^>]+)>", headers["List-Unsubscribe"])
    assert [u.split(":", 1)[0] for u in uris] == ["https", "mailto"]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    raw = smtp_server.envelopes[0][2]
    assert raw.count(b"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n") == 1


def test_head_get_and_other_methods_on_the_mailed_link_change_nothing(
    site: tuple[Config, Database, WebServer], smtp_server: SMTPServer
) -> None:
    _cfg, db, _server = site
    url, _headers = _mailed_link(site, smtp_server)

    head = httpx.head(url, timeout=10)  # what `curl -I` and link checkers send
    assert head.status_code == 200 and head.content == b""
    assert head.headers["cache-control"] == "no-store"
    get = httpx.get(url, timeout=10)
    assert get.status_code == 200 and '<form method="post"' in get.text
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        resp = httpx.request(method, url, content=b"List-Unsubscribe=One-Click", timeout=10)
        assert resp.status_code == 405, method

    assert _suppressions(db) == []


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"", "application/x-www-form-urlencoded"),
        (b"List-Unsubscribe=Two-Clicks", "application/x-www-form-urlencoded"),
        (b"confirm=0", "application/x-www-form-urlencoded"),
        (b"unsubscribe=yes", "application/x-www-form-urlencoded"),
        (b"\xff\xfe", "application/x-www-form-urlencoded"),
        (b"--x\r\nnot a part\r\n", "multipart/form-data; boundary=x"),  # malformed
        (b"List-Unsubscribe=One-Click", "multipart/form-data"),  # no boundary
    ],
)
def test_a_post_that_does_not_ask_to_unsubscribe_changes_nothing(
    site: tuple[Config, Database, WebServer], smtp_server: SMTPServer, body: bytes, ctype: str
) -> None:
    _cfg, db, _server = site
    url, _headers = _mailed_link(site, smtp_server)

    resp = httpx.post(url, content=body, headers={"Content-Type": ctype})

    assert resp.status_code == 400
    assert "Ничего не изменилось" in resp.text and "<button" in resp.text  # asked again
    assert _suppressions(db) == []


def test_a_one_click_post_as_multipart_form_data_unsubscribes_without_a_redirect(
    site: tuple[Config, Database, WebServer], smtp_server: SMTPServer
) -> None:
    _cfg, db, _server = site
    url, _headers = _mailed_link(site, smtp_server)
    boundary = "nx-boundary-8058"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"One-Click\r\n--{boundary}--\r\n"
    ).encode()

    resp = httpx.post(
        url,
        content=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        follow_redirects=False,
        timeout=10,
    )

    assert resp.status_code == 200  # RFC 8058 clients do not follow redirects
    assert _suppressions(db) == [
        ("anna@example.org", "petrozavodsk-media", "unsubscribed", "one-click (RFC 8058)")
    ]


def test_the_pages_own_button_unsubscribes_and_an_oversized_post_does_not(
    site: tuple[Config, Database, WebServer], smtp_server: SMTPServer
) -> None:
    _cfg, db, _server = site
    url, _headers = _mailed_link(site, smtp_server)

    big = httpx.post(url, content=b"confirm=1&pad=" + b"x" * 100_000, timeout=10)
    assert big.status_code == 413 and _suppressions(db) == []

    done = httpx.post(url, data={"confirm": "1"}, timeout=10)
    assert done.status_code == 200 and "Вы отписались" in done.text
    assert _suppressions(db) == [
        ("anna@example.org", "petrozavodsk-media", "unsubscribed", "unsubscribe page")
    ]
