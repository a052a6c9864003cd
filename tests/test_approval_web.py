"""The approval pages on the real web app (uvicorn on loopback) with the real mail path: an
editor reads the request (an .eml from the outbox, or a message the aiosmtpd server
received), follows the link with httpx, confirms, and the digest is approved. And everything
that must not work: forged, replayed, expired, wrong-editor and stale links, a GET-only
scanner, a POST without the CSRF value, the inbound webhook without its secret."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.message import EmailMessage

import httpx
import pytest
from bs4 import BeautifulSoup
from sqlalchemy import func, select

from newsexchange.approval import audit_entries, request_approval
from newsexchange.approval.tokens import make_action_token, reply_token
from newsexchange.config import Config
from newsexchange.db import (
    Approval,
    Database,
    Digest,
    TranslationMemory,
    UsedToken,
    utcnow,
)
from newsexchange.web.app import create_app
from tests.servers import SMTPServer
from tests.test_approval import (
    ANNA,
    BORIS,
    approval_config,
    clear_outbox,
    links_in,
    make_digest,
    outbox_messages,
    state_of,
)
from tests.webserver import WebServer, free_port

SECRET_ENV = {"SENDGRID_INBOUND_SECRET": "s3cret-inbound"}


class Site:
    """A config, its database and the web app serving it on loopback."""

    def __init__(self, config: Config, db: Database, server: WebServer) -> None:
        self.config, self.db, self.server = config, db, server
        self.http = httpx.Client(base_url=server.url, timeout=10, follow_redirects=False)

    def request(self, digest_id: int) -> dict[str, EmailMessage]:
        request_approval(self.db, self.config, digest_id, now=utcnow())
        return {str(m["To"]): m for m in outbox_messages(self.config)}


@pytest.fixture
def site_factory(
    write_config: Callable[..., Config], db_for: Callable[[Config], Database]
) -> Iterator[Callable[..., Site]]:
    servers: list[WebServer] = []

    def make(db_url: str | None = None, **kw: object) -> Site:
        port = free_port()
        env = {**SECRET_ENV, **({"NEWSEXCHANGE_DATABASE_URL": db_url} if db_url else {})}
        cfg = approval_config(
            write_config,
            public_url=f"http://127.0.0.1:{port}",
            env=env,
            **kw,  # type: ignore[arg-type]
        )
        db = db_for(cfg)
        server = WebServer(create_app(cfg, db), port=port).start()
        servers.append(server)
        return Site(cfg, db, server)

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def site(site_factory: Callable[..., Site]) -> Site:
    return site_factory()


def confirm(site: Site, url: str, **fields: str) -> httpx.Response:
    """What an editor does: open the link, press the button on the page."""
    page = site.http.get(url)
    assert page.status_code == 200, page.text
    form = BeautifulSoup(page.text, "lxml").find("form")
    assert form is not None
    data = {i["name"]: i.get("value", "") for i in form.find_all("input") if i.get("name")}
    data.update(fields)
    return site.http.post(url, data=data)


def counts(db: Database) -> tuple[int, int, int]:
    """Approvals, used tokens, and the recipients the approvals counted. (The deliveries
    themselves are queued by the send step, off the editor's request, since issue 13; an
    approval that acted twice would count its recipients twice.)"""
    with db.session() as s:
        counted = sum(
            int(e["detail"].get("deliveries") or 0)
            for d in s.scalars(select(Digest.id))
            for e in audit_entries(s, d)
            if e["action"] == "approved"
        )
        return (
            s.scalar(select(func.count()).select_from(Approval)) or 0,
            s.scalar(select(func.count()).select_from(UsedToken)) or 0,
            counted,
        )


def test_editor_follows_approve_link_confirms_and_digest_is_approved(site: Site) -> None:
    digest_id = make_digest(site.db, contacts=2)
    mails = site.request(digest_id)
    link = links_in(mails[ANNA])["Approve"]
    assert link.startswith(site.server.url + "/approve/")
    page = site.http.get(link)
    assert page.status_code == 200 and "Approve this digest?" in page.text
    assert (
        page.headers["referrer-policy"] == "no-referrer"
        and "no-store" in page.headers["cache-control"]
    )
    assert state_of(site.db, digest_id) == "awaiting_approval"  # GET changed nothing
    done = confirm(site, link)
    assert done.status_code == 200 and "Approved" in done.text
    assert state_of(site.db, digest_id) == "approved"
    assert counts(site.db) == (1, 1, 2)
    with site.db.session() as s:
        entry = next(e for e in audit_entries(s, digest_id) if e["action"] == "approve")
    assert entry["actor"] == ANNA and entry["channel"] == "web" and entry["address"] == "127.0.0.1"
    # Replayed: the same link (GET or POST) is refused and changes nothing.
    again = site.http.get(link)
    assert again.status_code == 409 and "already been used" in again.text
    form_data = {"csrf": re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)}  # type: ignore[union-attr]
    replay = site.http.post(link, data=form_data)
    assert replay.status_code == 409
    assert counts(site.db) == (1, 1, 2)
    with site.db.session() as s:
        refused = [e for e in audit_entries(s, digest_id) if e["action"] == "approve_refused"]
    assert len(refused) == 1 and refused[0]["actor"] == ANNA
    assert refused[0]["detail"]["reason"] in ("used", "closed")


def test_two_editors_over_smtp_each_approve_from_their_own_mail(
    site_factory: Callable[..., Site], smtp_server: SMTPServer
) -> None:
    mail = (
        'mail:\n  backend: smtp\n  from: "Exchange <news@example.org>"\n'
        f"  smtp: {{host: 127.0.0.1, port: {smtp_server.port}}}\n"
    )
    site = site_factory(required=2, mail=mail)
    digest_id = make_digest(site.db)
    request_approval(site.db, site.config, digest_id, now=utcnow())
    anna_mail = smtp_server.received_by(ANNA)
    boris_mail = smtp_server.received_by(BORIS)
    assert len(anna_mail) == 1 and len(boris_mail) == 1
    first = confirm(site, links_in(anna_mail[0])["Approve"])
    assert "1 of 2 approvals" in first.text
    assert state_of(site.db, digest_id) == "awaiting_approval"
    second = confirm(site, links_in(boris_mail[0])["Approve"])
    assert second.status_code == 200 and "Approved" in second.text
    assert state_of(site.db, digest_id) == "approved"


def test_get_only_scanner_following_every_link_changes_nothing(site: Site) -> None:
    digest_id = make_digest(site.db)
    mails = site.request(digest_id)
    before = counts(site.db)
    for msg in mails.values():
        html = msg.get_body(preferencelist=("html",))
        text = msg.get_body(preferencelist=("plain",))
        assert html is not None and text is not None
        urls = set(re.findall(r'href="([^"]+)"', html.get_content()))
        urls |= set(re.findall(r"https?://\S+", text.get_content()))
        ours = [u for u in urls if u.startswith(site.server.url)]
        assert len(ours) >= 4
        for u in ours:
            site.http.get(u)
            site.http.head(u)
    assert counts(site.db) == before
    assert state_of(site.db, digest_id) == "awaiting_approval"


def test_forged_and_foreign_key_tokens_are_refused(site: Site) -> None:
    digest_id = make_digest(site.db)
    link = links_in(site.request(digest_id)[ANNA])["Approve"]
    token = link.rsplit("/", 1)[1]
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    for bad in (flipped, token[:-10], "nonsense"):
        r = site.http.get(f"/approve/{bad}")
        assert r.status_code == 400 and "not valid" in r.text
    other_cfg = site.config.model_copy()
    other_cfg._env = {"NEWSEXCHANGE_SECRET_KEY": "another-key"}
    foreign = make_action_token(
        other_cfg,
        digest_id=digest_id,
        version=1,
        editor=ANNA,
        action="approve",
        now=utcnow(),
        valid_days=7,
    )
    assert site.http.get(f"/approve/{foreign}").status_code == 400
    assert counts(site.db)[:2] == (0, 0)


def test_expired_link_is_refused(site: Site) -> None:
    digest_id = make_digest(site.db)
    link = links_in(site.request(digest_id)[ANNA])["Approve"]
    page = site.http.get(link)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    site.server.app.state.clock = lambda: utcnow() + timedelta(days=7, minutes=1)
    assert site.http.get(link).status_code == 410
    r = site.http.post(link, data={"csrf": csrf})
    assert r.status_code == 410 and "expired" in r.text
    assert counts(site.db)[:2] == (0, 0) and state_of(site.db, digest_id) == "awaiting_approval"


def test_link_for_an_address_that_is_not_an_editor_is_refused(site: Site) -> None:
    digest_id = make_digest(site.db)
    site.request(digest_id)
    token = make_action_token(
        site.config,
        digest_id=digest_id,
        version=1,
        editor="mallory@example.com",
        action="approve",
        now=utcnow(),
        valid_days=7,
    )
    r = site.http.get(f"/approve/{token}")
    # Not an editor, so no language of their own: the source side's, Finnish (issue 11).
    assert r.status_code == 403 and "ei ole tämän vaihdon toimittaja" in r.text
    assert counts(site.db)[:2] == (0, 0)


def test_post_without_csrf_value_changes_nothing(site: Site) -> None:
    digest_id = make_digest(site.db)
    link = links_in(site.request(digest_id)[ANNA])["Approve"]
    assert site.http.post(link, data={}).status_code == 403
    assert site.http.post(link, data={"csrf": "0" * 64}).status_code == 403
    assert counts(site.db)[:2] == (0, 0)


def test_reject_link_needs_a_reason_and_rejects(site: Site) -> None:
    digest_id = make_digest(site.db)
    link = links_in(site.request(digest_id)[BORIS])["Reject"]
    assert confirm(site, link, comment="").status_code == 409  # no reason: refused, link unused
    assert state_of(site.db, digest_id) == "awaiting_approval"
    r = confirm(site, link, comment="old news")
    assert r.status_code == 200 and "Rejected" in r.text
    with site.db.session() as s:
        d = s.get(Digest, digest_id)
        # Issue 11: back with the editors as a draft of the next version, reason kept.
        assert d is not None and d.state == "revising" and d.decided_reason == "old news"
        assert d.version == 2


def test_review_drop_makes_new_version_voids_approval_and_old_links(
    site_factory: Callable[..., Site],
) -> None:
    site = site_factory(required=2)
    digest_id = make_digest(site.db, items=3)
    mails = site.request(digest_id)
    anna_links, boris_links = links_in(mails[ANNA]), links_in(mails[BORIS])
    confirm(site, anna_links["Approve"])
    clear_outbox(site.config)
    review = boris_links["Open the review page"]
    page = site.http.get(review)
    assert page.status_code == 200 and "Новость 2" in page.text and "1 of 2" in page.text
    soup = BeautifulSoup(page.text, "lxml")
    drop_form = next(
        f
        for f in soup.find_all("form")
        if f.find("input", {"name": "op", "value": "drop"})
        and f.find("input", {"name": "position", "value": "2"})
    )
    data = {i["name"]: i.get("value", "") for i in drop_form.find_all("input")}
    r = site.http.post(review, data=data)
    assert r.status_code == 303
    after = site.http.get(r.headers["location"])
    included = " ".join(d.get_text() for d in BeautifulSoup(after.text, "lxml").select("div.item"))
    assert "Новость 2" not in included and "Новость 1" in included  # now under "Left out"
    assert "version 2" in after.text and "0 of 2" in after.text
    # Issue 11: an edit makes a draft of version 2 and mails nobody; "Send for approval"
    # mails the other editor once.
    assert outbox_messages(site.config) == []
    # The same form again names version 1: refused, nothing dropped twice.
    assert site.http.post(review, data=data).status_code == 409
    # Boris's version-1 approve link is stale now.
    stale = site.http.get(boris_links["Approve"])
    assert stale.status_code == 409 and "changed" in stale.text
    with site.db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None and d.version == 2 and d.state == "revising"
    desk = site.server.url + r.headers["location"].split("?")[0]
    page = BeautifulSoup(site.http.get(desk).text, "lxml")
    submit = next(
        f for f in page.find_all("form") if f.find("input", {"name": "op", "value": "submit"})
    )
    sent = site.http.post(
        desk, data={i["name"]: i.get("value", "") for i in submit.find_all("input")}
    )
    assert sent.status_code == 303
    fresh = outbox_messages(site.config)
    assert [m["To"] for m in fresh] == [ANNA]
    # Both approve version 2: Anna from the fresh mail, Boris on his page.
    confirm(site, links_in(fresh[0])["Approve"])
    page = BeautifulSoup(site.http.get(desk).text, "lxml")
    approve = next(
        f for f in page.find_all("form") if f.find("input", {"name": "op", "value": "approve"})
    )
    site.http.post(desk, data={i["name"]: i.get("value", "") for i in approve.find_all("input")})
    assert state_of(site.db, digest_id) == "approved"


def test_review_corrects_a_translation_into_the_memory(site: Site) -> None:
    digest_id = make_digest(site.db, items=2)
    review = links_in(site.request(digest_id)[ANNA])["Open the review page"]
    page = BeautifulSoup(site.http.get(review).text, "lxml")
    form = next(
        f for f in page.find_all("form") if f.find("input", {"name": "op", "value": "translate"})
    )
    data = {i["name"]: i.get("value", "") for i in form.find_all("input")}
    data["title"] = "Исправленный заголовок"
    data["summary"] = "Исправленное резюме"
    r = site.http.post(review, data=data)
    assert r.status_code == 303, r.text
    assert "Исправленный заголовок" in site.http.get(r.headers["location"]).text
    with site.db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None and d.version == 2
        origins = s.scalars(select(TranslationMemory.origin)).all()
    assert "editor" in origins


def test_inbound_webhook_refuses_without_or_with_wrong_secret(site: Site) -> None:
    digest_id = make_digest(site.db)
    site.request(digest_id)
    with site.db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        token = reply_token(site.config, d, ANNA)
    fields = {
        "from": f"Anna <{ANNA}>",
        "to": f"news+{token}.v1@example.org",
        "subject": f"Re: [nx:{token}]",
        "text": "APPROVE\n",
        "headers": f"From: Anna <{ANNA}>\nMessage-ID: <wh-1@example.fi>\n",
        "envelope": "{}",
        "dkim": "{@example.fi : pass}",  # SendGrid verified Anna's domain's signature
        "SPF": "none",
    }
    files = {k: (None, v) for k, v in fields.items()}  # multipart/form-data, as SendGrid posts
    assert site.http.post("/inbound/sendgrid", files=files).status_code == 401
    assert (
        site.http.post("/inbound/sendgrid", files=files, auth=("sendgrid", "wrong")).status_code
        == 403
    )
    assert site.http.post("/inbound/sendgrid/wrong", files=files).status_code == 403
    assert state_of(site.db, digest_id) == "awaiting_approval"
    ok = site.http.post("/inbound/sendgrid", files=files, auth=("sendgrid", "s3cret-inbound"))
    assert ok.status_code == 200 and ok.json()["status"] == "acted"
    assert state_of(site.db, digest_id) == "approved"


def test_two_clicks_racing_act_once(site_factory: Callable[..., Site], any_db_url: str) -> None:
    site = site_factory(db_url=any_db_url)
    digest_id = make_digest(site.db, contacts=2)
    link = links_in(site.request(digest_id)[ANNA])["Approve"]
    page = site.http.get(link)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def click() -> None:
        with httpx.Client(timeout=30) as c:
            barrier.wait()
            statuses.append(c.post(link, data={"csrf": csrf}).status_code)

    threads = [threading.Thread(target=click) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200, 409, 409, 409]
    assert counts(site.db) == (1, 1, 2)
    assert state_of(site.db, digest_id) == "approved"


def test_request_changes_is_recorded_and_the_other_editor_is_told(site: Site) -> None:
    digest_id = make_digest(site.db)
    link = links_in(site.request(digest_id)[ANNA])["Request changes"]
    clear_outbox(site.config)
    r = confirm(site, link, comment="item 2 is an advert")
    assert r.status_code == 200 and "Changes requested" in r.text
    assert state_of(site.db, digest_id) == "awaiting_approval"  # still open for edits
    [note] = outbox_messages(site.config)
    assert note["To"] == BORIS and "asked for changes" in note["Subject"]
    body = note.get_body(preferencelist=("plain",))
    assert body is not None and "item 2 is an advert" in body.get_content()
    assert "/review/" in body.get_content()


def test_review_moves_an_item_up(site: Site) -> None:
    digest_id = make_digest(site.db, items=3)
    review = links_in(site.request(digest_id)[ANNA])["Open the review page"]
    soup = BeautifulSoup(site.http.get(review).text, "lxml")
    up3 = next(
        f
        for f in soup.find_all("form")
        if f.find("input", {"name": "op", "value": "up"})
        and f.find("input", {"name": "position", "value": "3"})
    )
    r = site.http.post(review, data={i["name"]: i.get("value", "") for i in up3.find_all("input")})
    assert r.status_code == 303
    with site.db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None and d.version == 2
        titles = [e.item.title for e in sorted(d.entries, key=lambda e: e.position) if e.included]
    assert titles == ["Uutinen 1", "Uutinen 3", "Uutinen 2"]


def test_an_action_link_is_not_a_review_link(site: Site) -> None:
    digest_id = make_digest(site.db)
    approve = links_in(site.request(digest_id)[ANNA])["Approve"]
    token = approve.rsplit("/", 1)[1]
    r = site.http.get(f"/review/{token}")
    assert r.status_code == 400 and "not a review link" in r.text
