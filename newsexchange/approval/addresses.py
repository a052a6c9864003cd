"""Where replies go and how a reply names its digest: the plus-address, the subject tag, the
request's Message-ID, and reading them back (:func:`token_refs`). Pure; shared by the mails
we send (:mod:`.notices`) and the replies we read (:mod:`.inbound`), which is what used to
tie notify and inbound in a circle.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from email.utils import parseaddr

from newsexchange.approval.message import InboundMessage
from newsexchange.config import Config

__all__ = [
    "TokenRef",
    "mail_domain",
    "plus_address",
    "reply_address_parts",
    "request_message_id",
    "subject_tag",
    "token_refs",
]


@dataclass(frozen=True)
class TokenRef:
    token: str
    version: int | None  # the digest version the reply says it answers, when it says


def reply_address_parts(config: Config) -> tuple[str, str]:
    """(local part, domain) of the address replies go to (mail.reply_to, else mail.from)."""
    addr = parseaddr(config.mail.reply_to or config.mail.from_)[1].strip().lower()
    local, _, domain = addr.partition("@")
    return local.split("+", 1)[0], domain


def plus_address(config: Config, token: str, version: int) -> str:
    local, domain = reply_address_parts(config)
    return f"{local}+{token}.v{version}@{domain}"


def mail_domain(config: Config) -> str:
    """The domain of our Message-IDs: the reply address's."""
    return reply_address_parts(config)[1] or "newsexchange.invalid"


def subject_tag(token: str) -> str:
    return f"[nx:{token}]"


_MSGID_RE = re.compile(r"^<nx-approval\.(\d+)\.v(\d+)\.[A-Za-z0-9]+@[^>]+>$")


def request_message_id(digest_id: int, version: int, domain: str) -> str:
    return f"<nx-approval.{digest_id}.v{version}.{secrets.token_hex(8)}@{domain}>"


def token_refs(msg: InboundMessage, *, local: str, domain: str) -> list[TokenRef]:
    """Every digest token the reply carries: plus-addresses to our reply address first, then
    the subject tag. The version comes from the plus-address, else our request's Message-ID
    in In-Reply-To/References."""
    refs: list[TokenRef] = []
    plus = re.compile(
        rf"^{re.escape(local)}\+([a-z0-9_-]{{16,64}})(?:\.v(\d+))?@{re.escape(domain)}$"
    )
    for rcpt in msg.recipients:
        m = plus.match(rcpt.lower())
        if m:
            refs.append(TokenRef(m.group(1), int(m.group(2)) if m.group(2) else None))
    for m in re.finditer(r"\[nx:([A-Za-z0-9_-]{16,64})(?:\.v(\d+))?\]", msg.subject):
        refs.append(TokenRef(m.group(1).lower(), int(m.group(2)) if m.group(2) else None))
    ref_version: int | None = None
    for mid in msg.references:
        mm = _MSGID_RE.match(mid)
        if mm:
            ref_version = int(mm.group(2))  # the last one is what was answered
    out: list[TokenRef] = []
    for r in refs:
        r2 = r if r.version is not None else TokenRef(r.token, ref_version)
        if r2 not in out:
            out.append(r2)
    return out
