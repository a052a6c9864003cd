"""The editor's desk on the real web app (uvicorn on loopback, the test's clock): reject with a
reason → a draft of the next version; edits accumulate on it without a mail each; "Send for
approval" mails each other editor once with what changed; after sending, the same link is a
read-only status page; everything in the editor's own language (issue 11)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.message import EmailMessage

import httpx
import pytest
from bs4 import BeautifulSoup

from newsexchange.approval import request_approval, run_approvals
from newsexchange.config import Config
from newsexchange.db import Database, Digest
from newsexchange.web.app import create_app
from tests.test_approval import (
    ANNA,
    BORIS,
    NOW,
    approval_config,
    clear_outbox,
    make_digest,
    outbox_messages,
    state_of,
)
from tests.webserver import WebServer, free_port

CLOCK = NOW + timedelta(hours=1)


class Desk:
    def __init__(self, config: Config, db: Database, server: WebServer) -> None:
        self.config, self.db, self.server = config, db, server
        self.http = httpx.Client(base_url=server.url, timeout=10, follow_redirects=False)

    def request(self, digest_id: int) -> dict[str, EmailMessage]:
        request_approval(self.db, self.config, digest_id, now=NOW)
        return {str(m["To"]): m for m in outbox_messages(self.config)}

    def page(self, url: str) -> BeautifulSoup:
        r = self.http.get(url)
        assert r.status_code == 200, r.text
        return BeautifulSoup(r.text, "lxml")

    def post(self, url: str, op: str, item: int | None = None, **fields: str) -> str:
        """Submit the desk's form for ``op`` (of item ``item``); returns where it goes on."""
        soup = self.page(url)
        for f in soup.find_all("form"):
            if not f.find("input", {"name": "op", "value": op}):
                continue
            if item is not None and not f.find("input", {"name": "item_id", "value": str(item)}):
                continue
            data = {i["name"]: i.get("value", "") for i in f.find_all("input") if i.get("name")}
            data.update(fields)
            r = self.http.post(url, data=data)
            assert r.status_code == 303, r.text
            return self.server.url + r.headers["location"].split("?")[0]
        raise AssertionError(f"no {op} form on the desk")


@pytest.fixture
def desk_factory(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> Iterator[Callable[..., Desk]]:
    servers: list[WebServer] = []

    def make(editors: tuple[str, ...] = (ANNA, BORIS), required: int = 1) -> Desk:
        port = free_port()
        cfg = approval_config(
            write_config, public_url=f"http://127.0.0.1:{port}", editors=editors, required=required
        )
        db = db_for(cfg)
        server = WebServer(create_app(cfg, db, clock=lambda: CLOCK), port=port).start()
        servers.append(server)
        return Desk(cfg, db, server)

    yield make
    for s in servers:
        s.stop()


def review_link(msg: EmailMessage) -> str:
    body = msg.get_body(preferencelist=("plain",))
    assert body is not None
    m = re.search(r"(http://\S+/review/\S+)", body.get_content())
    assert m, body.get_content()
    return m.group(1)


def item_ids(db: Database, digest_id: int) -> list[int]:
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        return [e.item_id for e in sorted(d.entries, key=lambda e: e.position) if e.included]


def digest_row(db: Database, digest_id: int) -> tuple[str, int, str | None]:
    with db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        return d.state, d.version, d.decided_reason


def test_reject_edit_and_send_for_approval_mails_each_other_editor_once(
    desk_factory: Callable[..., Desk],
) -> None:
    site = desk_factory()
    digest_id = make_digest(site.db, items=4)
    boris = review_link(site.request(digest_id)[BORIS])
    clear_outbox(site.config)
    first, second, third, fourth = item_ids(site.db, digest_id)

    # Reject with a reason on the page: a draft of version 2, the reason kept.
    desk = site.post(boris, "reject", comment="Item 4 is old news")
    assert digest_row(site.db, digest_id) == ("revising", 2, "Item 4 is old news")
    assert desk != boris  # the desk continues on a link for version 2
    notes = outbox_messages(site.config)
    assert [m["To"] for m in notes] == [ANNA]  # one note to the other editor, no request
    body = notes[0].get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Item 4 is old news" in body and "/review/" in body
    clear_outbox(site.config)
    page = site.page(desk)
    assert "Item 4 is old news" in page.get_text() and page.select_one('[data-state="revising"]')

    # Many edits: drop, restore, pin, unpin, move, intro: still version 2, nobody mailed.
    desk = site.post(desk, "drop", fourth)
    assert fourth not in item_ids(site.db, digest_id)
    assert site.page(desk).select_one(f'[data-left-out="{fourth}"]') is not None
    desk = site.post(desk, "drop", third)
    desk = site.post(desk, "restore", third)  # a dropped item comes back
    assert third in item_ids(site.db, digest_id)
    desk = site.post(desk, "pin", second)
    pinned = site.page(desk).select(f'[data-item="{second}"] [data-pinned]')
    assert pinned, "a pinned item shows a marker"
    desk = site.post(desk, "unpin", second)
    assert not site.page(desk).select(f'[data-item="{second}"] [data-pinned]')
    before = item_ids(site.db, digest_id)  # the restored item is pinned, so first
    assert before[0] == third and before.index(first) < before.index(second)
    desk = site.post(desk, "down", first)
    after = item_ids(site.db, digest_id)
    assert after.index(first) > after.index(second)
    desk = site.post(desk, "intro", intro="Главное за две недели.")
    assert site.page(desk).select_one("textarea#intro").get_text() == "Главное за две недели."
    assert digest_row(site.db, digest_id)[:2] == ("revising", 2)
    assert outbox_messages(site.config) == []
    assert site.page(desk).select('[data-diff="dropped"]')  # the diff to version 1

    # Send for approval: one mail to the other editor, with what changed since version 1.
    site.post(desk, "submit")
    assert digest_row(site.db, digest_id)[:2] == ("awaiting_approval", 2)
    [mail] = outbox_messages(site.config)
    assert mail["To"] == ANNA
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "What changed since version 1" in text
    assert "dropped: Новость 4" in text and "moved from" in text
    assert "the intro paragraph changed" in text
    # Anna approves version 2 from it; the intro is frozen with the content.
    approve = re.search(r"Approve:\s+(\S+)", text)
    assert approve
    conf = site.page(approve.group(1))
    form = conf.find("form")
    data = {i["name"]: i.get("value", "") for i in form.find_all("input") if i.get("name")}
    assert site.http.post(approve.group(1), data=data).status_code == 200
    with site.db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None and d.state == "approved" and d.version == 2
        assert d.frozen is not None and d.frozen["intro"] == {"ru": "Главное за две недели."}


def test_preview_shows_the_mail_and_is_framed_by_the_desk_only(
    desk_factory: Callable[..., Desk],
) -> None:
    site = desk_factory()
    digest_id = make_digest(site.db, items=2)
    desk = review_link(site.request(digest_id)[BORIS])
    page = site.http.get(desk)
    assert "frame-src 'self'" in page.headers["content-security-policy"]
    src = BeautifulSoup(page.text, "lxml").select_one(".preview iframe")["src"]
    preview = site.http.get(str(src))
    assert preview.status_code == 200 and "Новость 1" in preview.text
    assert "frame-ancestors 'self'" in preview.headers["content-security-policy"]
    assert preview.headers["x-frame-options"] == "SAMEORIGIN"
    # The preview of another token is refused.
    assert site.http.get("/review/forged.token/preview").status_code in (400, 403, 404)


def test_status_page_after_sending(desk_factory: Callable[..., Desk]) -> None:
    from newsexchange.delivery.send import run_send

    site = desk_factory()
    digest_id = make_digest(site.db, items=2, contacts=3)
    desk = review_link(site.request(digest_id)[BORIS])
    site.http.post(desk, data={**_form(site, desk, "approve")})
    assert state_of(site.db, digest_id) == "approved"
    run_send(site.db, site.config, now=CLOCK, digest_id=digest_id)
    assert state_of(site.db, digest_id) == "sent"
    r = site.http.get(desk)  # the same link, used to approve: now the status page
    assert r.status_code == 200
    soup = BeautifulSoup(r.text, "lxml")
    assert soup.select_one('[data-count="sent"] strong').get_text() == "3"
    assert soup.select_one('[data-count="failed"] strong').get_text() == "0"
    assert soup.select_one(f'a[href="/digests/{digest_id}"]') is not None
    assert not soup.find_all("form")  # read-only
    # The time is the exchange's (Petrozavodsk, Moscow time).
    assert "MSK" in soup.select_one("[data-state]").get_text()


def _form(site: Desk, url: str, op: str) -> dict[str, str]:
    for f in site.page(url).find_all("form"):
        if f.find("input", {"name": "op", "value": op}):
            return {i["name"]: i.get("value", "") for i in f.find_all("input") if i.get("name")}
    raise AssertionError(op)


def test_draft_nobody_sends_meets_the_deadline(desk_factory: Callable[..., Desk]) -> None:
    site = desk_factory()
    digest_id = make_digest(site.db, items=2)
    boris = review_link(site.request(digest_id)[BORIS])
    site.post(boris, "reject", comment="too short")
    assert state_of(site.db, digest_id) == "revising"
    early = run_approvals(site.db, site.config, now=NOW + timedelta(hours=2))
    assert early.requested == [] and state_of(site.db, digest_id) == "revising"
    late = run_approvals(site.db, site.config, now=NOW + timedelta(days=30))
    assert late.held == [digest_id] and state_of(site.db, digest_id) == "held"


def test_the_desk_speaks_the_editors_language(desk_factory: Callable[..., Desk]) -> None:
    site = desk_factory(
        editors=(
            "{email: anna@example.fi, language: fi}",
            "{email: boris@example.ru, language: ru}",
        )
    )
    digest_id = make_digest(site.db, items=2)
    mails = site.request(digest_id)
    assert str(mails[ANNA]["Subject"]).startswith("Hyväksyntä tarvitaan")
    assert str(mails[BORIS]["Subject"]).startswith("Требуется одобрение")
    clear_outbox(site.config)
    boris = review_link(mails[BORIS])
    page = site.page(boris)
    assert page.html["lang"] == "ru" and "Предпросмотр" in page.get_text()
    site.post(boris, "reject", comment="Нужно короче")
    [note] = outbox_messages(site.config)
    assert note["To"] == ANNA and "hylkäsi" in str(note["Subject"])
    body = note.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Hänen sanansa:" in body and "Нужно короче" in body and "Tarkistussivu:" in body


def test_an_unknown_op_and_a_restore_of_an_included_item_are_refused(
    desk_factory: Callable[..., Desk],
) -> None:
    site = desk_factory()
    digest_id = make_digest(site.db, items=2)
    desk = review_link(site.request(digest_id)[BORIS])
    data = _form(site, desk, "approve")
    r = site.http.post(desk, data={**data, "op": "explode"})
    assert r.status_code == 409 and "unknown change" in r.text
    first = item_ids(site.db, digest_id)[0]
    r = site.http.post(desk, data={**data, "op": "restore", "item_id": str(first)})
    assert r.status_code == 409 and "not left out" in r.text
    assert digest_row(site.db, digest_id)[:2] == ("awaiting_approval", 1)


def test_link_refusals_speak_the_editors_language() -> None:
    from newsexchange.approval.tokens import TokenError

    err = TokenError("used", "This link has already been used; nothing was changed.", status=409)
    assert err.message == "This link has already been used; nothing was changed."
    assert err.localized("ru") == "Эта ссылка уже использована; ничего не изменено."
    stale = TokenError(
        "stale_version",
        "This digest has changed since this link was sent (it is now version "
        "%(now)s, the link is for version %(link)s). A fresh approval "
        "request was mailed; please use that one.",
        now=3,
        link=1,
    )
    assert "(it is now version 3, the link is for version 1)" in stale.message
    assert "(nyt versio 3, linkki on versiolle 1)" in stale.localized("fi")
