"""Email replies to approval requests: APPROVE, REJECT <reason>, DROP 3, 7.

Two halves, as in the house style:

- **Pure decisions** (no database, no network): :func:`parse_message` / :func:`from_sendgrid`
  turn a reply into an :class:`InboundMessage`; :func:`judge_reply` says whether it may act and
  what it asks for. They are tested on real RFC 5322 bytes.
- **The step** :func:`process_inbound` does the reading and writing: finds the digest by its
  token, acts through :mod:`newsexchange.approval.decide`, logs, acknowledges, and remembers
  the message so a redelivered webhook or a re-polled mailbox never acts twice. The SendGrid
  Inbound Parse route lives in :mod:`newsexchange.approval.web`; :func:`poll_imap` reads a
  mailbox with imapclient.

A reply acts only when ALL of these hold:

1. it is not automatic: no ``Auto-Submitted`` (other than ``no``), ``X-Autoreply``,
   ``Precedence: bulk|auto_reply|junk|list``, ``List-Id``, out-of-office subject, bounce
   (``MAILER-DAEMON``/``postmaster`` sender, empty return path, ``multipart/report``);
2. the sender (From, exactly one address) is one of the exchange's editors;
3. it carries *that editor's own* reply token for the digest: the plus-address we set as
   Reply-To (``news+<token>.v<version>@…``, found in To/Cc/Delivered-To/X-Original-To or the
   SMTP envelope) or the subject tag ``[nx:<token>]`` (compared in constant time). Each
   editor's requests carry a different token (:func:`~newsexchange.approval.tokens.
   editor_reply_token`), so editor B cannot act with A's token, even authenticated as B;
4. it is authenticated for the From domain (:mod:`newsexchange.approval.sender_auth`): DKIM
   or SPF passing and aligned with it, as SendGrid reports it or, for IMAP, as the operator's
   own receiving server wrote in Authentication-Results (``mail.imap.authserv_id``). A reply
   that passes 1-3 but not this is refused, logged (``reply_unverified``) and the editor is
   mailed at their configured address that it could not be verified, with their review link;
5. it answers the digest's current version (when the reply says which version it answers:
   the plus-address or the In-Reply-To of our request): a DROP 3 counted against an older
   numbering would drop the wrong story;
6. the first non-empty line of the *fresh* text (quoted lines, "On … wrote:" and Outlook
   "-----Original Message-----"/"From:" blocks removed) is a command. Our own request quotes
   the word APPROVE in its instructions, so an APPROVE inside quoted text never counts.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage, Message
from email.utils import getaddresses, parseaddr
from typing import Any, Literal

from newsexchange.approval.sender_auth import (
    SenderAuth,
    verify_authentication_results,
    verify_sendgrid,
)
from newsexchange.config import Config

log = logging.getLogger(__name__)

# -- the message, as plain data -----------------------------------------------------------------


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


def _html_to_text(html: str) -> str:
    from bs4 import BeautifulSoup

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
        text = _html_to_text(text)
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
        text = _html_to_text(form["html"])
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
    from dataclasses import replace

    return replace(m, **changes)


# -- what the reply says ------------------------------------------------------------------------

Verb = Literal["approve", "reject", "drop"]

# The editors write Finnish and Russian as readily as English.
_VERBS: dict[str, Verb] = {
    **dict.fromkeys(["approve", "approved", "hyväksy", "hyväksyn", "hyväksytty"], "approve"),
    **dict.fromkeys(["одобрить", "одобряю", "одобрено", "утверждаю"], "approve"),
    **dict.fromkeys(["reject", "rejected", "hylkää", "hylkään", "отклонить", "отклоняю"], "reject"),
    **dict.fromkeys(["drop", "remove", "poista", "убрать", "удалить"], "drop"),
}


@dataclass(frozen=True)
class ReplyCommand:
    verb: Verb
    reason: str | None = None  # REJECT <reason>
    positions: tuple[int, ...] = ()  # DROP 3, 7 (1-based, as numbered in the request)


_QUOTE_HEADER = re.compile(
    r"""^(
        -{2,}\s*(original\s+message|alkuperäinen\s+viesti|исходное\s+сообщение)\s*-{2,}
      | _{8,}
      | .*\b(wrote|kirjoitti|пишет|написал|написала|написал\(а\)|schrieb|a\s+écrit)\s*:\s*$
      | .*<[^<>@\s]+@[^<>\s]+>\s*:\s*$
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_OUTLOOK_FROM = re.compile(r"^\**(from|lähettäjä|от|von)\s*:\**\s", re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(
    r"^\**(sent|date|to|subject|lähetetty|päivämäärä|vastaanottaja|aihe|отправлено|дата|кому|тема)"
    r"\s*:",
    re.IGNORECASE,
)


def fresh_text(text: str) -> str:
    """The part of a reply the sender wrote now: quoted lines and quoted blocks removed."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    for i, line in enumerate(lines):
        s = line.strip()
        if s == "--" and line.rstrip() in ("--", "-- "):  # signature delimiter
            break
        if s.startswith(">"):
            continue
        if _QUOTE_HEADER.match(s):
            break
        # "On Mon, 23 Nov 2026 at 10:00, Exchange <news@example.org>" + newline + "wrote:"
        if s.lower().startswith("on ") and i + 1 < len(lines):
            joined = s + " " + lines[i + 1].strip()
            if _QUOTE_HEADER.match(joined):
                break
        if _OUTLOOK_FROM.match(s) and any(
            _OUTLOOK_NEXT.match(x.strip()) for x in lines[i + 1 : i + 5]
        ):
            break
        out.append(line)
    return "\n".join(out).strip()


def parse_command(text: str) -> ReplyCommand | None:
    """The command on the first non-empty line of the fresh text, or None."""
    fresh = fresh_text(text)
    lines = [ln.strip() for ln in fresh.split("\n")]
    nonempty = [ln for ln in lines if ln]
    if not nonempty:
        return None
    first = nonempty[0]
    m = re.match(r"^\**(\w+)\**(.*)$", first)
    if not m:
        return None
    verb = _VERBS.get(m.group(1).lower())
    rest = m.group(2).strip()
    if verb is None:
        return None
    if verb == "approve":
        # Exactly the word (with punctuation at most): "Approve? Not sure…" must not approve.
        return ReplyCommand("approve") if re.fullmatch(r"[.!]*", rest) else None
    if verb == "reject":
        reason_lines = [rest.lstrip(":-–— ").strip(), *nonempty[1:]]
        reason = "\n".join(x for x in reason_lines if x).strip()[:2000]
        return ReplyCommand("reject", reason=reason or None)
    rest = rest.lstrip(":").strip().rstrip(".")
    positions = _positions(rest)
    return ReplyCommand("drop", positions=positions) if positions else None


def _positions(spec: str) -> tuple[int, ...]:
    """ "3, 7", "3 7", "3-5 and 9" → (3, 7) / (3, 4, 5, 9); anything else → ()."""
    spec = re.sub(r"\b(and|ja|и)\b", ",", spec, flags=re.IGNORECASE)
    out: list[int] = []
    for part in re.split(r"[,;\s]+", spec.strip()):
        if not part:
            continue
        m = re.fullmatch(r"#?(\d{1,3})(?:[-–](\d{1,3}))?", part)
        if not m:
            return ()
        a = int(m.group(1))
        b = int(m.group(2) or a)
        if a < 1 or b < a or b - a > 100:
            return ()
        out.extend(range(a, b + 1))
    return tuple(dict.fromkeys(out))


# -- is it automatic, and does it carry the token -----------------------------------------------

_OOO_SUBJECT = re.compile(
    r"^(auto(matic)?\s*(reply|response)|autoreply|auto:|out of (the )?office|ooo\b|"
    r"abwesenheit|automaattinen vastaus|poissa|lomalla|автоответ|автоматический ответ|"
    r"вне офиса|в отпуске|undeliverable|undelivered|delivery status notification|"
    r"mail delivery failed|returned mail)",
    re.IGNORECASE,
)


def auto_reply_reason(msg: InboundMessage) -> str | None:
    """Why this message is automatic (RFC 3834 and the common conventions), or None."""
    auto = (msg.header("auto-submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {auto}"
    for name in ("x-autoreply", "x-autorespond", "x-auto-reply", "x-failed-recipients"):
        if msg.header(name) is not None:
            return f"{name} header"
    prec = (msg.header("precedence") or "").strip().lower()
    if prec in ("bulk", "auto_reply", "junk", "list"):
        return f"Precedence: {prec}"
    if msg.header("list-id") is not None:
        return "mailing-list message (List-Id)"
    if msg.content_type == "multipart/report":
        return "delivery or read report (multipart/report)"
    if msg.return_path == "" or (msg.envelope_from is not None and msg.envelope_from == ""):
        return "null return path (a bounce)"
    local = msg.sender.split("@", 1)[0]
    if local in ("mailer-daemon", "postmaster", "noreply", "no-reply") or not msg.sender:
        return f"sent by {msg.sender or 'nobody'} (a bounce or robot)"
    subject = re.sub(r"^((re|fw|fwd|vs|ответ|на)\s*:\s*)+", "", msg.subject.strip(), flags=re.I)
    if _OOO_SUBJECT.match(subject):
        return "out-of-office or bounce subject"
    return None


def sender_authentication(msg: InboundMessage, *, authserv_id: str | None) -> SenderAuth:
    """Is the From address authenticated for its domain? SendGrid's own checks for what
    SendGrid posted; the trusted Authentication-Results header for everything else."""
    if msg.auth_source == "sendgrid":
        return verify_sendgrid(
            from_address=msg.sender,
            envelope_from=msg.envelope_from,
            spf=msg.spf,
            dkim=msg.dkim,
        )
    return verify_authentication_results(
        from_address=msg.sender, headers=msg.auth_results, authserv_id=authserv_id
    )


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


def subject_tag(token: str) -> str:
    return f"[nx:{token}]"


_MSGID_RE = re.compile(r"^<nx-approval\.(\d+)\.v(\d+)\.[A-Za-z0-9]+@[^>]+>$")


def request_message_id(digest_id: int, version: int, domain: str) -> str:
    import secrets

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


@dataclass(frozen=True)
class ReplyVerdict:
    act: bool
    reason: str  # why it may not act, or what it does
    command: ReplyCommand | None = None
    notify_sender: bool = False  # worth an answer: a verified editor whose reply did nothing
    #: the reply names an editor and carries their token but is not authenticated for their
    #: domain: refused, and the editor (at their configured address) is told
    unverified: bool = False


def judge_reply(
    msg: InboundMessage,
    *,
    editor_tokens: Mapping[str, str],
    digest_version: int,
    local: str,
    domain: str,
    authserv_id: str | None,
) -> ReplyVerdict:
    """May this reply act on this digest, and what does it ask? Pure: plain data in and out.

    ``editor_tokens`` maps each editor (lowercased) to their own reply token for this digest
    (:func:`newsexchange.approval.tokens.editor_reply_token`); ``authserv_id`` is the
    configured ``mail.imap.authserv_id`` (None: Authentication-Results are not trusted).
    """
    why = auto_reply_reason(msg)
    if why:
        return ReplyVerdict(False, f"automatic message ignored: {why}")
    editors = {e.strip().lower(): t for e, t in editor_tokens.items()}
    if msg.sender not in editors:
        return ReplyVerdict(False, f"{msg.sender} is not an editor of this exchange")
    if len(set(msg.from_addresses)) > 1:
        return ReplyVerdict(
            False, "the From header names more than one address; a reply must come from one"
        )
    carried = token_refs(msg, local=local, domain=domain)

    def same(a: str, b: str) -> bool:
        return hmac.compare_digest(a.lower().encode(), b.lower().encode())

    refs = [r for r in carried if same(r.token, editors[msg.sender])]
    if not refs:
        others = sorted(e for e, t in editors.items() for r in carried if same(r.token, t))
        if others:
            return ReplyVerdict(
                False,
                f"the reply carries the reply token of {', '.join(others)}, not of "
                f"{msg.sender}: a reply acts only for the editor whose request it answers",
            )
        return ReplyVerdict(False, f"the reply does not carry {msg.sender}'s token for this digest")
    auth = sender_authentication(msg, authserv_id=authserv_id)
    if not auth.ok:
        return ReplyVerdict(
            False, f"the sender could not be verified: {auth.reason}", unverified=True
        )
    command = parse_command(msg.text)
    if command is None:
        return ReplyVerdict(
            False,
            "no command on the first line of the reply (expected APPROVE, REJECT <reason> "
            "or DROP 3, 7)",
            notify_sender=True,
        )
    versions = {r.version for r in refs if r.version is not None}
    if versions and digest_version not in versions:
        return ReplyVerdict(
            False,
            f"the reply answers version {max(versions)} but the digest is now version "
            f"{digest_version}; answer the latest approval request",
            command=command,
            notify_sender=True,
        )
    return ReplyVerdict(True, command.verb, command=command)


# -- the step -----------------------------------------------------------------------------------


@dataclass
class InboundResult:
    status: Literal["acted", "ignored", "refused", "duplicate"]
    reason: str
    digest_id: int | None = None
    sender: str | None = None
    verb: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "digest_id": self.digest_id,
            "sender": self.sender,
            "verb": self.verb,
            **self.detail,
        }


def process_inbound(
    db: Any, config: Config, msg: InboundMessage, *, now: datetime, via: str
) -> InboundResult:
    """Act on one inbound reply (or decide not to), in one transaction; safe to repeat."""
    from newsexchange.approval.audit import audit
    from newsexchange.approval.decide import apply_edit, decide
    from newsexchange.approval.notify import (
        send_acknowledgement,
        send_requests,
        send_unverified_notice,
    )
    from newsexchange.approval.tokens import find_digest_by_reply_token, is_used, reply_token
    from newsexchange.db import UsedToken
    from newsexchange.errors import ApprovalError, DigestError

    local, domain = reply_address_parts(config)
    with db.session() as session:
        if is_used(session, msg.fingerprint):
            return InboundResult("duplicate", "this message was already processed", None)
        session.add(UsedToken(jti=msg.fingerprint, used_at=now))
        digest = None
        for ref in token_refs(msg, local=local, domain=domain):
            digest = find_digest_by_reply_token(session, ref.token)
            if digest is not None:
                break
        if digest is None:
            log.info(
                "inbound reply ignored: no digest token",
                extra={"via": via, "sender_domain": msg.sender.rpartition("@")[2]},
            )
            return InboundResult("ignored", "the reply carries no known digest token")
        known = {e.id: e for e in config.exchanges}
        if digest.exchange_id not in known:
            return InboundResult(
                "ignored",
                f"digest {digest.id} belongs to exchange {digest.exchange_id!r}, "
                "which is no longer in the configuration",
                digest.id,
                msg.sender,
            )
        editors = known[digest.exchange_id].editors
        imap = config.mail.imap
        verdict = judge_reply(
            msg,
            editor_tokens={e: reply_token(config, digest, e) for e in editors},
            digest_version=digest.version,
            local=local,
            domain=domain,
            authserv_id=imap.authserv_id if imap is not None else None,
        )
        result = InboundResult(
            "refused" if verdict.unverified else "ignored",
            verdict.reason,
            digest.id,
            msg.sender,
            verdict.command.verb if verdict.command else None,
        )
        if not verdict.act or verdict.command is None:
            notified = None
            if verdict.unverified:
                notified = _may_notify_unverified(session, digest.id, msg.sender, now=now)
                if notified:
                    send_unverified_notice(
                        session, config, digest, editor=msg.sender, reason=verdict.reason, now=now
                    )
            audit(
                session,
                digest_id=digest.id,
                actor=msg.sender or "(unknown)",
                action="reply_unverified" if verdict.unverified else "reply_ignored",
                channel="email",
                address=msg.sender,
                now=now,
                reason=verdict.reason,
                via=via,
                subject=msg.subject[:200],
                notified=notified,
            )
            if verdict.notify_sender:
                send_acknowledgement(
                    session,
                    config,
                    digest,
                    to=msg.sender,
                    ok=False,
                    message=verdict.reason,
                    in_reply_to=msg.message_id,
                    now=now,
                )
            return result
        cmd = verdict.command
        try:
            with session.begin_nested():
                if cmd.verb == "drop":
                    if apply_edit(
                        session,
                        config,
                        digest,
                        editor=msg.sender,
                        channel="email",
                        address=msg.sender,
                        now=now,
                        drop=cmd.positions,
                        note=f"reply via {via}",
                    ):
                        send_requests(session, config, digest, now=now, kind="changed")
                    message = (
                        f"Items {', '.join(map(str, cmd.positions))} were dropped; digest "
                        f"{digest.id} is now version {digest.version} and needs approval again."
                    )
                else:
                    d = decide(
                        session,
                        config,
                        digest,
                        editor=msg.sender,
                        decision="approve" if cmd.verb == "approve" else "reject",
                        channel="email",
                        address=msg.sender,
                        comment=cmd.reason,
                        now=now,
                    )
                    message = d.message
                    result.detail = {"state": d.state, "approved_by": d.approved_by}
        except (ApprovalError, DigestError) as exc:
            result.status, result.reason = "refused", str(exc)
            audit(
                session,
                digest_id=digest.id,
                actor=msg.sender,
                action="reply_refused",
                channel="email",
                address=msg.sender,
                now=now,
                reason=str(exc),
                via=via,
            )
            send_acknowledgement(
                session,
                config,
                digest,
                to=msg.sender,
                ok=False,
                message=str(exc),
                in_reply_to=msg.message_id,
                now=now,
            )
            return result
        result.status, result.reason = "acted", message
        send_acknowledgement(
            session,
            config,
            digest,
            to=msg.sender,
            ok=True,
            message=message,
            in_reply_to=msg.message_id,
            now=now,
        )
        return result


#: At most one "your reply could not be verified" mail per editor and digest in this time, so
#: a stream of forged replies cannot flood an editor's inbox.
UNVERIFIED_NOTICE_EVERY = timedelta(hours=1)


def _may_notify_unverified(session: Any, digest_id: int, editor: str, *, now: datetime) -> bool:
    from sqlalchemy import select

    from newsexchange.db import AuditEntry

    rows = session.scalars(
        select(AuditEntry).where(
            AuditEntry.digest_id == digest_id,
            AuditEntry.action == "reply_unverified",
            AuditEntry.actor == editor,
            AuditEntry.at > now - UNVERIFIED_NOTICE_EVERY,
        )
    ).all()
    return not any((r.detail or {}).get("notified") for r in rows)


# -- IMAP -------------------------------------------------------------------------------------

PROCESSED_FLAG = b"$NxProcessed"


@dataclass
class PollReport:
    fetched: int = 0
    failed: int = 0  # messages that could not be processed (retried on the next poll)
    results: list[InboundResult] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for r in self.results:
            counts[r.status] = counts.get(r.status, 0) + 1
        return {
            "ok": self.ok,
            "fetched": self.fetched,
            "failed": self.failed,
            **{k: counts.get(k, 0) for k in ("acted", "ignored", "refused", "duplicate")},
            "results": [r.to_json() for r in self.results],
            "error": self.error,
        }


def poll_imap(db: Any, config: Config, *, now: datetime, limit: int = 200) -> PollReport:
    """Read new replies from the IMAP mailbox (mail.imap) and act on them.

    A message is handled when it lacks our ``$NxProcessed`` keyword (read or not: a person
    may have opened the mailbox first) and arrived within the longest link validity; after
    it is handled (acted on or not) it gets ``\\Seen`` and the keyword, and is moved to
    ``processed_folder`` when one is configured. Handling is also deduplicated by Message-ID in the database, so a
    crash between acting and flagging cannot make a reply act twice.
    """
    from imapclient import IMAPClient
    from imapclient.exceptions import IMAPClientError

    from newsexchange.errors import ConfigError

    settings = config.mail.imap
    if settings is None:
        raise ConfigError("mail.imap is not configured (expected mail: imap: {host: …})")
    user = config.secret(settings.username_env)
    password = config.secret(settings.password_env)
    if not user or not password:
        raise ConfigError(
            f"IMAP credentials missing: set {settings.username_env} and {settings.password_env}"
        )
    report = PollReport()
    try:
        client = IMAPClient(settings.host, port=settings.port, ssl=settings.ssl, timeout=30)
    except (OSError, IMAPClientError) as exc:
        report.error = f"IMAP {settings.host}:{settings.port}: {exc}"
        return report
    try:
        client.login(user, password)
        client.select_folder(settings.folder)
        # Not "UNSEEN": someone opening the shared mailbox in a mail client marks replies
        # read, and they must still be processed. Replies older than the longest link
        # validity cannot answer a live request, so an old mailbox is not read back to 1999.
        days = max([e.approval.link_valid_days for e in config.exchanges] or [7.0])
        since = (now - timedelta(days=days + 1)).date()
        uids = client.search(["UNKEYWORD", PROCESSED_FLAG.decode(), "SINCE", since])[:limit]
        move_to = getattr(settings, "processed_folder", None)
        if move_to and not client.folder_exists(move_to):
            client.create_folder(move_to)
        for uid in uids:
            data = client.fetch([uid], ["BODY.PEEK[]"]).get(uid) or {}
            raw = data.get(b"BODY[]")
            if not isinstance(raw, bytes):
                continue
            report.fetched += 1
            try:
                msg = parse_message(raw)
                report.results.append(process_inbound(db, config, msg, now=now, via="imap"))
            except Exception as exc:
                # Left unflagged: the next poll tries again (a database hiccup must not lose
                # an approval; the Message-ID record stops a retry from acting twice). One
                # bad message does not block the others.
                log.exception("inbound IMAP message failed", extra={"uid": uid})
                report.failed += 1
                report.results.append(InboundResult("refused", f"could not process: {exc}"))
                continue
            client.add_flags([uid], [b"\\Seen", PROCESSED_FLAG])
            if move_to:
                client.move([uid], move_to)
    except (OSError, IMAPClientError) as exc:
        report.error = f"IMAP {settings.host}:{settings.port}: {exc}"
    finally:
        with contextlib.suppress(OSError, IMAPClientError):
            client.logout()
    return report
