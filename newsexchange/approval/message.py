"""An inbound email reply as plain data: :class:`InboundMessage`, read from RFC 5322 bytes
(:func:`parse_message`: IMAP, or SendGrid's raw MIME post) or from SendGrid Inbound Parse's
fields (:func:`from_sendgrid`). No database, no network; what the reply *means* is
:mod:`newsexchange.approval.rules`.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from email.message import EmailMessage, Message
from email.utils import getaddresses, parseaddr
from typing import Any, Literal

from bs4 import BeautifulSoup

__all__ = [
    "InboundFormatError",
    "InboundMessage",
    "from_sendgrid",
    "html_to_text",
    "parse_envelope",
    "parse_message",
]


@dataclass(frozen=True)
class InboundMessage:
    sender: str  # the From address, lowercased ("" when absent)
    recipients: tuple[str, ...]  # To, Cc, Delivered-To, X-Original-To, envelope recipients
    subject: str
    text: str  # the plain-text body (HTML-only mail is reduced to text)
    headers: Mapping[str, tuple[str, ...]]  # lowercased name → values
    message_id: str | None = None
    return_path: str | None = None  # None: absent; "": the null sender <>
    content_type: str = "text/plain"
    envelope_from: str | None = None
    spf: str | None = None  # SendGrid's SPF verdict
    dkim: str | None = None  # SendGrid's DKIM summary, e.g. "{@example.fi : pass}"
    from_addresses: tuple[str, ...] = ()  # every address in every From header
    #: (hop, value) of each Authentication-Results header, top first; hop = the number of
    #: Received headers above it (see sender_auth.trusted_results)
    auth_results: tuple[tuple[int, str], ...] = ()
    #: whose checks vouch for the sender: the receiving server's Authentication-Results
    #: ("headers", IMAP) or SendGrid's own SPF/dkim fields ("sendgrid")
    auth_source: Literal["headers", "sendgrid"] = "headers"

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def references(self) -> tuple[str, ...]:
        ids: list[str] = []
        for name in ("in-reply-to", "references"):
            for v in self.headers.get(name, ()):
                ids.extend(re.findall(r"<[^<>\s]+>", v))
        return tuple(ids)

    @property
    def fingerprint(self) -> str:
        """What makes this reply "the same message" when it arrives twice."""
        basis = self.message_id or json.dumps([self.sender, self.subject, self.text])
        return "mail:" + hashlib.sha256(basis.encode("utf-8")).hexdigest()[:40]


def _addresses(values: Sequence[str]) -> list[str]:
    return [a.strip().lower() for _n, a in getaddresses(list(values)) if a and "@" in a]


def _header_items(msg: Message) -> list[tuple[str, str]]:
    """Every header as (name, text). Python's header parser raises on some malformed values
    (IndexError on ``From: <``, ``Message-ID: <>``, an unclosed quote: found by the property
    tests); such a header is read as its raw, unfolded text rather than failing the message."""
    out: list[tuple[str, str]] = []
    for name, raw in msg.raw_items():
        try:
            text = str(email.policy.default.header_fetch_parse(name, raw))
        except Exception:  # a stdlib parser bug on hostile input, never ours to raise
            text = re.sub(r"\r?\n[ \t]+", " ", str(raw)).strip()
        out.append((name, text))
    return out


def _headers_of(items: Sequence[tuple[str, str]]) -> dict[str, tuple[str, ...]]:
    out: dict[str, list[str]] = {}
    for k, v in items:
        out.setdefault(k.lower(), []).append(v)
    return {k: tuple(v) for k, v in out.items()}


def _auth_results_of(items: Sequence[tuple[str, str]]) -> tuple[tuple[int, str], ...]:
    out: list[tuple[int, str]] = []
    hop = 0
    for k, v in items:
        name = k.lower()
        if name == "received":
            hop += 1
        elif name == "authentication-results":
            out.append((hop, v))
    return tuple(out)


def html_to_text(html: str) -> str:
    soup = BeautifulSoup(html, "lxml")
    for bq in soup.find_all("blockquote"):  # quoted text in HTML replies
        bq.replace_with("\n> (quoted)\n")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    return soup.get_text("\n")


def _body_text(msg: EmailMessage) -> str:
    if msg.get_content_type() == "multipart/report":
        return ""
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # unknown charset, broken encoding
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    text = str(content)
    if part.get_content_type() == "text/html":
        text = html_to_text(text)
    return text


def parse_message(raw: bytes, *, envelope_to: Sequence[str] = ()) -> InboundMessage:
    """An RFC 5322 message (IMAP, or SendGrid's "POST the raw, full MIME message")."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    items = _header_items(msg)
    headers = _headers_of(items)
    rcpts = _addresses(
        [
            *headers.get("to", ()),
            *headers.get("cc", ()),
            *headers.get("delivered-to", ()),
            *headers.get("x-original-to", ()),
            *headers.get("envelope-to", ()),
            *envelope_to,
        ]
    )
    rp = headers.get("return-path")
    return_path = None if rp is None else parseaddr(rp[0])[1].strip().lower()
    return InboundMessage(
        sender=parseaddr(headers.get("from", ("",))[0])[1].strip().lower(),
        recipients=tuple(dict.fromkeys(rcpts)),
        subject=(headers.get("subject") or ("",))[0],
        text=_body_text(msg),
        headers=headers,
        message_id=(headers.get("message-id") or (None,))[0],
        return_path=return_path,
        content_type=msg.get_content_type(),
        from_addresses=tuple(_addresses(headers.get("from", ()))),
        auth_results=_auth_results_of(items),
    )


class InboundFormatError(ValueError):
    """An inbound post that is not what SendGrid sends (the webhook answers 400)."""


def parse_envelope(value: str | None) -> tuple[list[str], str | None]:
    """SendGrid's ``envelope`` field, ``{"to": ["…"], "from": "…"}``: (recipients, sender).

    Absent or empty: no envelope. Anything else that is not that JSON shape raises
    :class:`InboundFormatError` saying what is wrong.
    """
    if value is None or not value.strip():
        return [], None
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise InboundFormatError(f"malformed envelope: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InboundFormatError(
            f"malformed envelope: expected a JSON object, got {type(data).__name__}"
        )
    to = data.get("to")
    if to is None:
        to = []
    elif isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not all(isinstance(x, str) for x in to):
        raise InboundFormatError('malformed envelope: "to" must be a list of addresses')
    sender = data.get("from")
    if sender is not None and not isinstance(sender, str):
        raise InboundFormatError('malformed envelope: "from" must be an address (a string)')
    return [str(x) for x in to], (sender if sender is not None else None)


def from_sendgrid(form: Mapping[str, str]) -> InboundMessage:
    """SendGrid Inbound Parse fields (from, to, cc, subject, text, html, headers, envelope,
    SPF, dkim), or the raw message in ``email`` when "POST the raw, full MIME message" is on.

    Raises :class:`InboundFormatError` for a malformed ``envelope``."""
    env_to, env_from = parse_envelope(form.get("envelope"))
    if form.get("email"):
        m = parse_message(form["email"].encode("utf-8", "surrogateescape"), envelope_to=env_to)
        return _with(
            m,
            envelope_from=env_from,
            spf=form.get("SPF"),
            dkim=form.get("dkim"),
            auth_source="sendgrid",
        )
    hdr_msg = email.message_from_string(
        (form.get("headers") or "").strip() + "\n\n", policy=email.policy.default
    )
    hdr_items = _header_items(hdr_msg)
    headers = _headers_of(hdr_items)
    text = form.get("text") or ""
    if not text.strip() and form.get("html"):
        text = html_to_text(form["html"])
    rcpts = _addresses(
        [
            form.get("to", ""),
            form.get("cc", ""),
            *headers.get("delivered-to", ()),
            *headers.get("x-original-to", ()),
            *env_to,
        ]
    )
    rp = headers.get("return-path")
    from_values = [form["from"]] if form.get("from") else list(headers.get("from", ()))
    return InboundMessage(
        sender=parseaddr(form.get("from") or (headers.get("from") or ("",))[0])[1].lower(),
        recipients=tuple(dict.fromkeys(rcpts)),
        subject=form.get("subject") or (headers.get("subject") or ("",))[0],
        text=text,
        headers=headers,
        message_id=(headers.get("message-id") or (None,))[0],
        return_path=None if rp is None else parseaddr(rp[0])[1].lower(),
        content_type=str(hdr_msg.get_content_type()),
        envelope_from=env_from,
        spf=form.get("SPF"),
        dkim=form.get("dkim"),
        from_addresses=tuple(_addresses(from_values)),
        auth_results=_auth_results_of(hdr_items),
        auth_source="sendgrid",
    )


def _with(m: InboundMessage, **changes: Any) -> InboundMessage:
    return replace(m, **changes)
