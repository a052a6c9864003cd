"""Forged and mis-aligned email replies: the pure sender check (SendGrid's SPF/dkim fields,
RFC 8601 Authentication-Results) and the SendGrid Inbound Parse webhook of the running app
(uvicorn on loopback), where every forgery is refused, logged and told to the editor it
impersonated, and only replies authenticated for the editor's own domain, carrying that
editor's own token, act. The IMAP side (Authentication-Results from a real dovecot mailbox)
is in tests/test_approval_imap.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from newsexchange.approval import audit_entries
from newsexchange.approval.sender_auth import (
    AuthFieldError,
    aligned,
    parse_authentication_results,
    parse_sendgrid_dkim,
    spf_result,
    trusted_results,
    verify_authentication_results,
    verify_sendgrid,
)
from newsexchange.approval.tokens import reply_token
from newsexchange.db import Approval, Digest, utcnow
from tests import test_approval_web as _web
from tests.test_approval import ANNA, BORIS, clear_outbox, links_in, make_digest, outbox_messages
from tests.test_approval import state_of as state
from tests.test_approval_web import Site, confirm

# The running app with its database and outbox (fixtures of tests/test_approval_web.py).
site_factory = _web.site_factory
site = _web.site

# -- the pure check -------------------------------------------------------------------------


def test_sendgrid_dkim_field_is_read_entry_by_entry() -> None:
    assert parse_sendgrid_dkim("{@example.fi : pass}") == [("example.fi", "pass")]
    assert parse_sendgrid_dkim("{@sendgrid.net : pass, @Example.FI : fail (body hash)}") == [
        ("sendgrid.net", "pass"),
        ("example.fi", "fail"),
    ]
    assert parse_sendgrid_dkim("none") == [] and parse_sendgrid_dkim(None) == []
    # A verifier's explanation may quote text the sender controls: it never adds an entry.
    assert parse_sendgrid_dkim("{@evil.example : fail (key said: @example.fi : pass)}") == [
        ("evil.example", "fail")
    ]
    for unreadable in ("{@evil.example : fail (@example.fi : pass}", "pass", "{example.fi}"):
        with pytest.raises(AuthFieldError):
            parse_sendgrid_dkim(unreadable)


def test_spf_result_word() -> None:
    assert spf_result("pass") == "pass"
    assert spf_result("fail (example.fi: 203.0.113.9 is not permitted)") == "fail"
    assert spf_result("passthrough") == "passthrough"
    assert spf_result("softfail") == "softfail" and spf_result(None) == "none"


def test_alignment_is_the_domain_or_a_subdomain_never_a_bare_tld() -> None:
    assert aligned("example.fi", "EXAMPLE.fi.")
    assert aligned("mail.example.fi", "example.fi") and aligned("example.fi", "mx.example.fi")
    assert not aligned("evil.example", "example.fi")
    assert not aligned("notexample.fi", "example.fi")
    assert not aligned("fi", "example.fi") and not aligned("fi", "fi")
    assert not aligned("", "example.fi") and not aligned("a.example.fi", "b.example.fi")


@pytest.mark.parametrize(
    ("spf", "dkim", "envelope_from"),
    [
        ("softfail", None, ANNA),
        (None, None, ANNA),
        ("pass", "{@evil.example : pass}", "mallory@evil.example"),
        ("fail (not permitted)", "{@example.fi : fail (body hash did not verify)}", ANNA),
        ("passthrough", "{@example.fi : passthrough}", ANNA),
        ("pass", None, None),  # SPF passed for an unknown envelope sender
        ("pass", None, "anna@example.fi.evil.example"),
        ("neutral", "{@example.fi.evil.example : pass}", ANNA),
    ],
)
def test_sendgrid_unaligned_or_failed_is_not_authenticated(
    spf: str | None, dkim: str | None, envelope_from: str | None
) -> None:
    v = verify_sendgrid(from_address=ANNA, envelope_from=envelope_from, spf=spf, dkim=dkim)
    assert not v.ok and "not authenticated for example.fi" in v.reason


def test_sendgrid_aligned_dkim_or_spf_is_authenticated() -> None:
    dkim = verify_sendgrid(
        from_address=ANNA,
        envelope_from="bounces@esp.example",
        spf="softfail",
        dkim="{@esp.example : pass, @mail.example.fi : pass}",
    )
    assert dkim.ok and dkim.method == "dkim" and "mail.example.fi" in dkim.reason
    spf = verify_sendgrid(
        from_address=ANNA, envelope_from="bounce@mail.example.fi", spf="pass", dkim="none"
    )
    assert spf.ok and spf.method == "spf"


def test_authentication_results_parsed_per_rfc_8601() -> None:
    ar = parse_authentication_results(
        'mx.example.org 1; dkim=pass (2048-bit key; "quoted") header.d=example.fi '
        'header.s="sel;1";\r\n\tspf=pass (mx.example.org: domain of anna@example.fi designates '
        "192.0.2.1 as permitted sender) smtp.mailfrom=anna@example.fi;\r\n\t"
        'dmarc=pass (p=reject dis=none) header.from=example.fi; dkim/1=fail reason="bad sig" '
        "header.i=@evil.example"
    )
    assert ar.authserv_id == "mx.example.org" and ar.version == 1
    assert [(r.method, r.result) for r in ar.results] == [
        ("dkim", "pass"),
        ("spf", "pass"),
        ("dmarc", "pass"),
        ("dkim", "fail"),
    ]
    assert ar.results[0].props == {"header.d": "example.fi", "header.s": "sel;1"}
    assert ar.results[3].reason == "bad sig"
    assert parse_authentication_results("mx.example.org; none").results == ()
    with pytest.raises(AuthFieldError):  # no authserv-id (some servers start with spf=…)
        parse_authentication_results("spf=pass smtp.mailfrom=example.fi")


def _ar(auth_id: str, results: str) -> str:
    return f"{auth_id}; {results}"


def test_only_the_configured_servers_topmost_results_are_trusted() -> None:
    ours = "mx.example.org"
    good = _ar(ours, "dkim=pass header.d=example.fi")
    sender_written = _ar(ours, "dkim=pass header.d=example.fi; spf=pass smtp.mailfrom=example.fi")

    def check(headers: list[tuple[int, str]]) -> tuple[bool, str]:
        v = verify_authentication_results(from_address=ANNA, headers=headers, authserv_id=ours)
        return v.ok, v.reason

    assert check([(0, good)])[0]
    # Another server's word (or the sender's, under another name) counts for nothing.
    ok, reason = check([(0, _ar("mx.evil.example", "dkim=pass header.d=example.fi"))])
    assert not ok and "mx.evil.example" in reason
    # Our server said "none"; a header with our id further down (written by the sender,
    # before our server's Received) is ignored.
    ok, reason = check(
        [(1, _ar(ours, "dkim=none; spf=softfail smtp.mailfrom=example.fi")), (3, sender_written)]
    )
    assert not ok and "below our server" in reason
    # Two milters on our server, same hop: both count.
    results, _ = trusted_results(
        [(1, _ar(ours, "dmarc=none")), (1, _ar(ours, "spf=pass smtp.mailfrom=example.fi"))],
        ours,
    )
    assert [r.method for r in results] == ["dmarc", "spf"]
    # Aligned SPF and DMARC pass count; DKIM for another domain and dmarc=fail do not.
    assert check([(0, _ar(ours, "spf=pass smtp.mailfrom=bounce@mail.example.fi"))])[0]
    assert check([(0, _ar(ours, "dmarc=pass header.from=example.fi"))])[0]
    assert not check([(0, _ar(ours, "dkim=pass header.d=evil.example"))])[0]
    assert not check([(0, _ar(ours, "dkim=pass header.d=example.fi; dmarc=fail"))])[0]
    # The same property twice is ambiguous and vouches for nothing.
    assert not check([(0, _ar(ours, "dkim=pass header.d=evil.example header.d=example.fi"))])[0]
    # Without the setting nothing read by IMAP can be verified.
    v = verify_authentication_results(from_address=ANNA, headers=[(0, good)], authserv_id=None)
    assert not v.ok and "mail.imap.authserv_id" in v.reason


def test_hostile_fields_vouch_for_nothing_and_cost_little() -> None:
    import time

    start = time.monotonic()
    huge = [
        (0, "mx.example.org; " + "a" * 200_000),
        (0, "mx.example.org; dkim=pass header.d=example.fi " + "(" * 10_000),
        *[(0, "mx.example.org; " + "x=" * 5_000)] * 100,
    ]
    v = verify_authentication_results(from_address=ANNA, headers=huge, authserv_id="mx.example.org")
    assert not v.ok
    sg = verify_sendgrid(
        from_address=ANNA, envelope_from=ANNA, spf="none", dkim="{" + "@example.fi : pass (" * 9999
    )
    assert not sg.ok
    assert time.monotonic() - start < 5


# -- the webhook of the running app ---------------------------------------------------------

AUTH = ("sendgrid", "s3cret-inbound")


def _token(site: Site, digest_id: int, editor: str = ANNA) -> str:
    with site.db.session() as s:
        d = s.get(Digest, digest_id)
        assert d is not None
        return reply_token(site.config, d, editor)


def post_reply(
    site: Site,
    token: str,
    *,
    sender: str = ANNA,
    text: str = "APPROVE\n",
    spf: str | None = None,
    dkim: str | None = None,
    envelope_from: str | None = ANNA,
    message_id: str,
) -> httpx.Response:
    """What SendGrid Inbound Parse posts for one reply (multipart/form-data)."""
    to = f"news+{token}.v1@example.org"
    fields = {
        "from": f"Editor <{sender}>",
        "to": to,
        "subject": f"Re: Approval needed [nx:{token}]",
        "text": text,
        "headers": f"From: Editor <{sender}>\nTo: {to}\nMessage-ID: {message_id}\n",
        "envelope": json.dumps({"to": [to], "from": envelope_from}),
    }
    if spf is not None:
        fields["SPF"] = spf
    if dkim is not None:
        fields["dkim"] = dkim
    return site.http.post(
        "/inbound/sendgrid", files={k: (None, v) for k, v in fields.items()}, auth=AUTH
    )


def approvals(site: Site) -> int:
    with site.db.session() as s:
        return s.scalar(select(func.count()).select_from(Approval)) or 0


FORGED = [
    ("SPF softfail", {"spf": "softfail"}),
    ("no SPF or DKIM fields at all", {}),
    (
        "DKIM passing for another domain",
        {"spf": "pass", "dkim": "{@evil.example : pass}", "envelope_from": "m@evil.example"},
    ),
    ("fail (reason)", {"spf": "fail (203.0.113.9 is not permitted)", "dkim": "none"}),
    ("passthrough", {"spf": "passthrough", "dkim": "{@example.fi : passthrough}"}),
]


def test_every_forged_reply_is_refused_logged_and_told_to_the_editor(site: Site) -> None:
    digest_id = make_digest(site.db)
    site.request(digest_id)
    clear_outbox(site.config)
    token = _token(site, digest_id)
    start = utcnow()
    for i, (name, kw) in enumerate(FORGED):
        # Two hours apart: the editor gets one notice per hour at most.
        site.server.app.state.clock = lambda i=i: start + timedelta(hours=2 * i)
        r = post_reply(site, token, message_id=f"<forged-{i}@evil.example>", **kw)  # type: ignore[arg-type]
        assert r.status_code == 200, (name, r.text)
        data = r.json()
        assert data["status"] == "refused", (name, data)
        assert "could not be verified" in data["reason"], (name, data)
    assert state(site.db, digest_id) == "awaiting_approval" and approvals(site) == 0
    with site.db.session() as s:
        log = [e for e in audit_entries(s, digest_id) if e["action"] == "reply_unverified"]
    assert len(log) == len(FORGED) == 5
    assert all(e["address"] == ANNA and e["detail"]["notified"] for e in log)
    notices = outbox_messages(site.config)
    assert [m["To"] for m in notices] == [ANNA] * 5  # the configured address, nobody else
    for m in notices:
        assert "could not be verified" in m["Subject"] and m["Auto-Submitted"] == "auto-replied"
        body = m.get_body(preferencelist=("plain",))
        assert body is not None and "nothing was changed" in body.get_content()
    # The review link in the notice is the editor's own, for the current version, and works.
    review = next(
        w
        for w in notices[0].get_body(preferencelist=("plain",)).get_content().split()  # type: ignore[union-attr]
        if "/review/" in w
    )
    page = site.http.get(review)
    assert page.status_code == 200 and ANNA in page.text and "Approve version 1" in page.text


def test_a_stream_of_forgeries_mails_the_editor_once_an_hour(site: Site) -> None:
    digest_id = make_digest(site.db)
    site.request(digest_id)
    clear_outbox(site.config)
    token = _token(site, digest_id)
    for i in range(3):
        assert post_reply(site, token, message_id=f"<f{i}@x>").json()["status"] == "refused"
    assert len(outbox_messages(site.config)) == 1
    with site.db.session() as s:
        log = [e for e in audit_entries(s, digest_id) if e["action"] == "reply_unverified"]
    assert len(log) == 3 and [bool(e["detail"].get("notified")) for e in log] == [
        True,
        False,
        False,
    ]


@pytest.mark.parametrize(
    ("kw", "method"),
    [
        ({"spf": "softfail", "dkim": "{@esp.example : pass, @example.fi : pass}"}, "DKIM"),
        ({"dkim": "{@mail.example.fi : pass}", "envelope_from": None}, "DKIM"),
        ({"spf": "pass", "dkim": "none", "envelope_from": "bounce@mail.example.fi"}, "SPF"),
    ],
)
def test_reply_authenticated_for_the_editors_domain_acts(
    site: Site, kw: dict[str, str | None], method: str
) -> None:
    digest_id = make_digest(site.db)
    site.request(digest_id)
    r = post_reply(site, _token(site, digest_id), message_id="<ok@example.fi>", **kw)  # type: ignore[arg-type]
    assert r.json()["status"] == "acted", r.json()
    assert state(site.db, digest_id) == "approved"
    with site.db.session() as s:
        entry = next(e for e in audit_entries(s, digest_id) if e["action"] == "approve")
    assert entry["actor"] == ANNA and entry["channel"] == "email"


def test_one_editor_cannot_act_with_another_editors_token(site: Site) -> None:
    digest_id = make_digest(site.db)
    site.request(digest_id)
    clear_outbox(site.config)
    anna_token = _token(site, digest_id, ANNA)
    # Boris, properly authenticated for his own domain, answers with Anna's token.
    r = post_reply(
        site,
        anna_token,
        sender=BORIS,
        dkim="{@example.ru : pass}",
        envelope_from=BORIS,
        message_id="<b1@example.ru>",
    )
    data = r.json()
    assert data["status"] == "ignored" and "token of anna@example.fi" in data["reason"]
    # … and Anna's name with Boris's token, even authenticated for example.fi, does nothing.
    r = post_reply(
        site, _token(site, digest_id, BORIS), dkim="{@example.fi : pass}", message_id="<a9@x>"
    )
    assert r.json()["status"] == "ignored"
    assert state(site.db, digest_id) == "awaiting_approval" and approvals(site) == 0
    assert outbox_messages(site.config) == []


def test_two_approvals_from_the_same_editor_count_once(site_factory: Callable[..., Site]) -> None:
    site = site_factory(required=2)
    digest_id = make_digest(site.db)
    mails = site.request(digest_id)
    token = _token(site, digest_id, ANNA)
    auth = {"dkim": "{@example.fi : pass}"}
    first = post_reply(site, token, message_id="<a1@example.fi>", **auth).json()
    second = post_reply(site, token, message_id="<a2@example.fi>", **auth).json()
    assert first["status"] == second["status"] == "acted"
    assert first["approved_by"] == second["approved_by"] == [ANNA]
    # Her approve link too: still one editor.
    page = confirm(site, links_in(mails[ANNA])["Approve"])
    assert "1 of 2 approvals" in page.text
    assert state(site.db, digest_id) == "awaiting_approval" and approvals(site) == 1
    boris = post_reply(
        site,
        _token(site, digest_id, BORIS),
        sender=BORIS,
        spf="pass",
        envelope_from=BORIS,
        message_id="<b1@example.ru>",
    ).json()
    assert boris["status"] == "acted" and boris["state"] == "approved"
    assert sorted(boris["approved_by"]) == [ANNA, BORIS]


@pytest.mark.parametrize(
    ("envelope", "says"),
    [
        ("{not json", "not JSON"),
        ('["news@example.org"]', "JSON object"),
        ('{"to": "x", "from": 42}', '"from"'),
        ('{"to": [1, 2], "from": "a@example.fi"}', '"to"'),
        ('{"to": {"a": 1}}', '"to"'),
    ],
)
def test_malformed_envelope_is_400_with_a_reason(site: Site, envelope: str, says: str) -> None:
    digest_id = make_digest(site.db)
    site.request(digest_id)
    token = _token(site, digest_id)
    fields = {
        "from": f"Anna <{ANNA}>",
        "to": f"news+{token}.v1@example.org",
        "subject": f"Re: [nx:{token}]",
        "text": "APPROVE\n",
        "dkim": "{@example.fi : pass}",
        "envelope": envelope,
    }
    r = site.http.post(
        "/inbound/sendgrid", files={k: (None, v) for k, v in fields.items()}, auth=AUTH
    )
    assert r.status_code == 400, r.text
    assert r.json()["ok"] is False and "malformed envelope" in r.json()["error"]
    assert says in r.json()["error"]
    assert "Traceback" not in r.text
    assert state(site.db, digest_id) == "awaiting_approval"


def test_an_inbound_post_over_the_cap_is_413_before_it_is_parsed(
    site_factory: Callable[..., Site],
) -> None:
    site = site_factory(
        mail='mail:\n  backend: outbox\n  from: "Exchange <news@example.org>"\n'
        "  outbox_dir: var/outbox\n  sendgrid: {inbound_max_bytes: 4096}\n"
    )
    digest_id = make_digest(site.db)
    site.request(digest_id)
    token = _token(site, digest_id)
    fields = {
        "from": f"Anna <{ANNA}>",
        "to": f"news+{token}.v1@example.org",
        "text": "APPROVE\n",
        "dkim": "{@example.fi : pass}",
    }
    big = site.http.post(
        "/inbound/sendgrid",
        files={**{k: (None, v) for k, v in fields.items()}, "html": (None, "x" * 8000)},
        auth=AUTH,
    )
    assert big.status_code == 413, big.text
    assert "(mail.sendgrid.inbound_max_bytes)" in big.json()["error"]
    assert state(site.db, digest_id) == "awaiting_approval"
    # The same reply under the cap is read and acts.
    small = site.http.post(
        "/inbound/sendgrid", files={k: (None, v) for k, v in fields.items()}, auth=AUTH
    )
    assert small.status_code == 200 and small.json()["status"] == "acted", small.text
