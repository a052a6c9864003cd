"""Review and approval links are bound to their editor and to the digest version they were
mailed for, and approving consumes them: on the running app (uvicorn on loopback), following
the links from the mails in the outbox as an editor would."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
from bs4 import BeautifulSoup
from sqlalchemy import func, select

from newsexchange.approval import audit_entries
from newsexchange.db import Approval, Digest
from tests import test_approval_web as _web
from tests.test_approval import ANNA, BORIS, clear_outbox, links_in, make_digest, outbox_messages
from tests.test_approval import state_of as state
from tests.test_approval_web import Site, confirm

# The running app with its database and outbox (fixtures of tests/test_approval_web.py).
site_factory = _web.site_factory
site = _web.site


def approvals(site: Site) -> int:
    with site.db.session() as s:
        return s.scalar(select(func.count()).select_from(Approval)) or 0


def version(site: Site, digest_id: int) -> int:
    with site.db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        return d.version


def form_data(page: httpx.Response, op: str, position: str | None = None) -> dict[str, str]:
    """The fields of the review page's form for ``op`` (and item ``position``)."""
    soup = BeautifulSoup(page.text, "lxml")
    for f in soup.find_all("form"):
        if not f.find("input", {"name": "op", "value": op}):
            continue
        if position and not f.find("input", {"name": "position", "value": position}):
            continue
        return {i["name"]: i.get("value", "") for i in f.find_all("input") if i.get("name")}
    raise AssertionError(f"no {op} form on the page")


def drop(site: Site, review_url: str, position: str) -> str:
    """Drop an item on the review page; returns where the page continues."""
    page = site.http.get(review_url)
    assert page.status_code == 200, page.text
    r = site.http.post(review_url, data=form_data(page, "drop", position))
    assert r.status_code == 303, r.text
    return site.server.url + r.headers["location"].split("?")[0]


def submit(site: Site, desk_url: str) -> None:
    """Press "Send for approval" on the desk."""
    page = site.http.get(desk_url)
    r = site.http.post(desk_url, data=form_data(page, "submit"))
    assert r.status_code == 303, r.text


def test_version_1_review_link_cannot_approve_version_3(site: Site) -> None:
    digest_id = make_digest(site.db, items=4)
    mails = site.request(digest_id)
    anna_v1 = links_in(mails[ANNA])
    old_page = site.http.get(anna_v1["Open the review page"])
    csrf = form_data(old_page, "approve")["csrf"]
    # Boris makes two changes, each sent for approval: version 3 (issue 11: an edit on a
    # version the editors saw starts a draft of the next version; sending it asks again).
    boris_review = links_in(mails[BORIS])["Open the review page"]
    boris_v2 = drop(site, boris_review, "4")
    submit(site, boris_v2)
    boris_v3 = drop(site, boris_v2, "3")
    submit(site, boris_v3)
    assert boris_v2 != boris_review and boris_v3 != boris_v2  # each version its own link
    assert version(site, digest_id) == 3
    # Anna's version-1 review page shows version 3, read-only, and says why.
    page = site.http.get(anna_v1["Open the review page"])
    assert page.status_code == 200
    assert "for version 1" in page.text and "now version 3" in page.text
    assert "Approve version" not in page.text
    assert not BeautifulSoup(page.text, "lxml").find_all("form")
    # Posting the approve form anyway (naming version 3) is refused with that page.
    for op in ("approve", "drop"):
        r = site.http.post(
            anna_v1["Open the review page"],
            data={"csrf": csrf, "version": "3", "op": op, "position": "1"},
        )
        assert r.status_code == 409, r.text
        assert "for version 1" in r.text and "cannot approve or change version 3" in r.text
    # So is her version-1 one-click approve link.
    assert site.http.get(anna_v1["Approve"]).status_code == 409
    assert state(site.db, digest_id) == "awaiting_approval" and approvals(site) == 0
    assert version(site, digest_id) == 3
    with site.db.session() as s:
        refused = [e for e in audit_entries(s, digest_id) if e["action"] == "review_refused"]
    assert refused and refused[0]["actor"] == ANNA
    assert refused[0]["detail"] == {"reason": "stale_version", "version": 1}
    # The request for version 3 in her mail approves version 3.
    latest = [m for m in outbox_messages(site.config) if m["To"] == ANNA][-1]
    done = confirm(site, links_in(latest)["Approve"])
    assert done.status_code == 200 and state(site.db, digest_id) == "approved"


def test_approving_on_the_review_page_consumes_the_link(
    site_factory: Callable[..., Site],
) -> None:
    site = site_factory(required=2)
    digest_id = make_digest(site.db)
    mails = site.request(digest_id)
    review = links_in(mails[ANNA])["Open the review page"]
    page = site.http.get(review)
    data = form_data(page, "approve")
    first = site.http.post(review, data=data)
    assert first.status_code == 200 and "1 of 2 approvals" in first.text
    again = site.http.post(review, data=data)
    assert again.status_code == 409 and "already been used" in again.text
    assert site.http.get(review).status_code == 409
    assert approvals(site) == 1
    # Her one-click link still works once, and adds nothing: one editor, one approval.
    approve = links_in(mails[ANNA])["Approve"]
    assert "1 of 2 approvals" in confirm(site, approve).text
    used = site.http.get(approve)
    assert used.status_code == 409 and "already been used" in used.text
    assert approvals(site) == 1 and state(site.db, digest_id) == "awaiting_approval"
    # The other editor's approval completes it.
    assert "Approved" in confirm(site, links_in(mails[BORIS])["Approve"]).text
    assert state(site.db, digest_id) == "approved"


def test_approve_link_cannot_be_used_twice(site_factory: Callable[..., Site]) -> None:
    site = site_factory(required=2)  # still open after the first use: the link is what says no
    digest_id = make_digest(site.db)
    link = links_in(site.request(digest_id)[ANNA])["Approve"]
    field = re.search(r'name="csrf" value="([^"]+)"', site.http.get(link).text)
    assert field is not None
    assert site.http.post(link, data={"csrf": field.group(1)}).status_code == 200
    second = site.http.post(link, data={"csrf": field.group(1)})
    assert second.status_code == 409 and "already been used" in second.text
    assert approvals(site) == 1 and state(site.db, digest_id) == "awaiting_approval"


def test_an_edit_continues_on_a_link_for_the_new_version(site: Site) -> None:
    digest_id = make_digest(site.db, items=3)
    mails = site.request(digest_id)
    clear_outbox(site.config)
    v1 = links_in(mails[BORIS])["Open the review page"]
    v2 = drop(site, v1, "2")
    page = site.http.get(v2)
    assert page.status_code == 200 and "version 2" in page.text
    # Issue 11: a draft of version 2, sent for approval before anyone approves it.
    assert "Send version 2 for approval" in page.text and BORIS in page.text
    submit(site, v2)
    page = site.http.get(v2)
    assert "Approve version 2" in page.text
    # The version-1 link stays bound to version 1: read-only now.
    old = site.http.get(v1)
    assert "for version 1" in old.text and "Approve version" not in old.text
    # The link made for version 2 is Boris's and approves version 2 (as Boris).
    done = site.http.post(v2, data=form_data(page, "approve"))
    assert done.status_code == 200 and state(site.db, digest_id) == "approved"
    with site.db.session() as s:
        entry = next(e for e in audit_entries(s, digest_id) if e["action"] == "approve")
    assert entry["actor"] == BORIS and entry["detail"]["version"] == 2
