"""Personalization: a digest rendered once per language and list, then each recipient's copy
made by substitution in the pre-serialized template (To, Message-ID, List-Unsubscribe and the
unsubscribe URL in both bodies) — no re-rendering, no email package objects per recipient.

A digest with events carries their ``.ics`` as an attachment
(:func:`newsexchange.digest.ics.digest_calendar`): it holds no per-recipient part, so it is
serialized once with the template and every copy carries the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import copy
import html
import re
from datetime import datetime
from email.message import EmailMessage

from newsexchange.config import Config
from newsexchange.db import Delivery, Digest, Session
from newsexchange.delivery.outbox import sender_domain
from newsexchange.delivery.unsubscribe import unsubscribe_links
from newsexchange.digest.ics import digest_calendar
from newsexchange.digest.render import UNSUBSCRIBE_MARKER, render_digest, to_email
from newsexchange.errors import DeliveryError
from newsexchange.mail import OutgoingMessage
from newsexchange.mail.headers import header_text, mailbox

__all__ = ["UNSUBSCRIBE_MARKER", "PreparedDigest", "Renderer", "list_headers"]

# Placeholders in the pre-serialized template: ASCII, no spaces, so no header folding or
# quoted-printable encoding can split them.
_TO = "nx-recipient-placeholder@nx.invalid"
_MSGID = "<nx-message-id-placeholder@nx.invalid>"
_LISTUNSUB = "nx-list-unsubscribe-placeholder"
_BODY = "nx-body-placeholder-{}"


class _Body:
    """One body part with the unsubscribe marker, encoded so that per recipient only the
    tail after the first marker is encoded again.

    Both transfer encodings are local: quoted-printable line by line, base64 in 57-byte
    groups (one 76-character line each). So the text up to the last line break (QP) or
    57-byte boundary (base64) before the first marker is encoded once, and each recipient
    costs the encoding of the footer only. The encoding is the shorter of the two for this
    body, as the email package chooses: mostly ASCII (an English digest, inlined CSS) stays
    readable quoted-printable; Cyrillic, which QP triples, goes base64.
    """

    def __init__(self, content: str, *, is_html: bool) -> None:
        text = content.replace("\r\n", "\n").replace("\n", "\r\n")
        self.is_html = is_html
        qp_len = len(binascii.b2a_qp(text.encode("utf-8"), istext=True))
        b64_len = (len(text.encode("utf-8")) + 2) // 3 * 4 * 78 // 76
        self.cte = "quoted-printable" if qp_len <= b64_len else "base64"
        first = text.find(UNSUBSCRIBE_MARKER)
        if first < 0:
            first = len(text)
        raw = text.encode("utf-8")
        if self.cte == "quoted-printable":
            cut = len(text[: text.rfind("\n", 0, first) + 1].encode("utf-8"))
        else:
            # May fall inside a multi-byte character: fine, base64 works on bytes.
            cut = len(text[:first].encode("utf-8")) // 57 * 57
        self.head = self._encode(raw[:cut])
        self.pieces = raw[cut:].split(UNSUBSCRIBE_MARKER.encode())

    def _encode(self, data: bytes) -> bytes:
        if not data:
            return b""
        if self.cte == "quoted-printable":
            return binascii.b2a_qp(data, istext=True)
        return base64.encodebytes(data).replace(b"\n", b"\r\n")

    def render(self, url: str) -> bytes:
        value = (html.escape(url, quote=True) if self.is_html else url).encode("utf-8")
        tail = self._encode(value.join(self.pieces))
        if self.cte == "quoted-printable" and not tail.endswith(b"\r\n"):
            tail += b"\r\n"
        return self.head + tail


class PreparedDigest:
    """One digest rendered for one language and list, serialized once, personalized by
    substitution.

    ``to_email`` builds the message once with placeholders for To, Message-ID and
    List-Unsubscribe, and each body part replaced by a placeholder; the result is
    serialized to bytes (CRLF, RFC 2047 headers) once. Per recipient: the unsubscribe URL
    goes into each body (the HTML gets it escaped), the body is encoded (quoted-printable
    or base64, whichever the template showed to be shorter; C-speed binascii), and four
    ``bytes.replace`` calls finish the message. Attachments (the events' ``.ics``) are no
    body: they stay in the serialized template as they are.
    """

    def __init__(
        self,
        config: Config,
        template: EmailMessage,
        *,
        list_id: str,
        categories: list[str],
    ) -> None:
        self.config = config
        self.list_id = list_id
        self.categories = categories
        self.template = template  # kept intact (with markers) for providers like SendGrid
        skeleton = copy.deepcopy(template)
        self.parts: list[tuple[bytes, _Body]] = []
        bodies = (p for p in skeleton.walk() if not p.is_multipart() and not p.is_attachment())
        for i, part in enumerate(bodies):
            placeholder = _BODY.format(i)
            body = _Body(part.get_content(), is_html=part.get_content_subtype() == "html")
            self.parts.append((placeholder.encode(), body))
            part.set_payload(placeholder)  # already "encoded": written as-is
            del part["Content-Transfer-Encoding"]
            part["Content-Transfer-Encoding"] = body.cte
        self.raw = skeleton.as_bytes(policy=template.policy.clone(linesep="\r\n"))
        for needle in (_TO, _MSGID, _LISTUNSUB):
            if needle.encode() not in self.raw:  # pragma: no cover - guards a renderer change
                raise DeliveryError(f"digest template lost its {needle} placeholder")

    def list_unsubscribe(self, email: str) -> tuple[str, str, str]:
        url, mailto = unsubscribe_links(self.config, email, self.list_id)
        return url, mailto, f"<{url}>, <{mailto}>"

    def personalize(self, d: Delivery, name: str | None, *, raw: bool = True) -> OutgoingMessage:
        url, mailto, header = self.list_unsubscribe(d.email)
        name = header_text(name)  # a stored name may predate cleaning at import
        out = OutgoingMessage(
            message=self.template,
            recipient=d.email,
            delivery_id=d.id,
            categories=self.categories,
            message_id=d.message_id,
            recipient_name=name or None,
            substitutions={UNSUBSCRIBE_MARKER: url},
            headers={"List-Unsubscribe": header},
        )
        if raw:
            data = self.raw
            for placeholder, body in self.parts:
                data = data.replace(placeholder, body.render(url), 1)
            to = _to_header(name, d.email)
            data = data.replace(_TO.encode(), to.encode("ascii"), 1)
            data = data.replace(_MSGID.encode(), d.message_id.encode("ascii"), 1)
            # Folded after the comma (RFC 5322 §2.2.3) so the line stays readable.
            folded = f"<{url}>,\r\n <{mailto}>"
            data = data.replace(_LISTUNSUB.encode(), folded.encode("ascii"), 1)
            out.raw = data
        return out


# atext and spaces only: a '.' is not atext and needs quoting (policy.default fails on it).
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9 '-]+$")


def _to_header(name: str | None, addr: str) -> str:
    """``Name <addr>``, the name as one RFC 2047 encoded-word when it is not plain ASCII
    (:func:`newsexchange.mail.headers.mailbox`: never split, so every decoder reads the name
    back as it was). The name is cleaned first (:func:`header_text`): these bytes go into
    the message as they are, so a CR/LF in a name would start a header of its own."""
    name = header_text(name)
    if not name:
        return addr
    if _PLAIN_NAME.match(name):
        return f"{name} <{addr}>"
    return mailbox(name, addr)


def list_headers(config: Config, list_id: str) -> dict[str, str]:
    """The headers every digest copy of a list carries (RFC 2369, 2919, 3834, 8058)."""
    settings = config.lists.get(list_id)
    name = header_text((settings.name_in(settings.language) if settings else None) or list_id)
    domain = sender_domain(config)
    return {
        "List-Id": f"{name} <{header_text(list_id)}.{domain}>",
        "List-Unsubscribe": _LISTUNSUB,
        # RFC 8058: the https URL above accepts a POST with this body, without login.
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "Precedence": "bulk",  # RFC 3834 §3.1.8 readers: no vacation auto-replies
        "Auto-Submitted": "auto-generated",
        "X-Auto-Response-Suppress": "OOF, AutoReply",  # the same, for Exchange
    }


class Renderer:
    """Renders each (digest, list) once per run and keeps the prepared template."""

    def __init__(self, config: Config, *, now: datetime) -> None:
        self.config = config
        self.now = now
        self.cache: dict[tuple[int, str, str], PreparedDigest] = {}

    def get(self, session: Session, digest: Digest, list_id: str, language: str) -> PreparedDigest:
        key = (digest.id, list_id, language)
        prepared = self.cache.get(key)
        if prepared is None:
            rendered = render_digest(session, self.config, digest)
            calendar = digest_calendar(session, self.config, digest)
            template = to_email(
                rendered,
                config=self.config,
                to=_TO,
                extra_headers=list_headers(self.config, list_id),
                now=self.now,
                message_id=_MSGID,
                calendar=calendar,
            )
            prepared = PreparedDigest(
                self.config,
                template,
                list_id=list_id,
                categories=["newsexchange", digest.exchange_id, f"digest-{digest.id}"],
            )
            self.cache[key] = prepared
        return prepared
