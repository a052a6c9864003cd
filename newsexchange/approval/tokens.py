"""Signed, expiring, single-use action links, and the digest's reply token.

An action link names one digest, one digest version, one editor and one action (approve,
reject, changes, review) and carries a unique id (``jti``). It is signed with itsdangerous
(HMAC-SHA1 over the payload, key ``config.secret_key``, a salt per purpose) so nobody without
the key can make or alter one; the signature check inside itsdangerous is constant-time, and
every comparison we add (jti, CSRF values, reply tokens) uses :func:`hmac.compare_digest`.

The expiry is inside the signed payload and computed from the ``now`` passed in, instead of
itsdangerous' ``max_age`` which reads the wall clock: tests control time, nothing sleeps.

Reply tokens: each editor's reply address and subject tag carry their own token for the
digest (:func:`editor_reply_token`), so a reply acts only for the editor it was mailed to.

Single use: when a link acts, its jti is inserted into ``used_tokens`` in the same transaction
as the decision. The primary key makes a second use fail even when two clicks race.

Checking a link is split in two, so the pages can tell the editor exactly what is wrong:
:func:`read_action_token` (signature, shape, expiry: no database) and
:func:`check_against_digest` (is it this digest, this version, a current editor, still open).
Both raise :class:`TokenError` whose ``kind`` names the case and whose ``message`` is what the
page shows.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from itsdangerous import BadSignature, URLSafeTimedSerializer

from newsexchange.config import Config
from newsexchange.db import Digest, Session, UsedToken
from newsexchange.db.queries import approvals as queries
from newsexchange.digest.states import OPEN
from newsexchange.errors import ApprovalError
from newsexchange.i18n import gettext_for

Action = Literal["approve", "reject", "changes", "review"]
ACTIONS: tuple[Action, ...] = ("approve", "reject", "changes", "review")
#: States in which a digest still waits for a decision (held: the deadline passed, but a late
#: approval is still the editors' call, never an automatic send): ``digest.states.OPEN``.
OPEN_STATES = OPEN

_SALT = "newsexchange.approval.action.v1"
_CSRF_SALT = b"newsexchange.approval.csrf.v1"

TokenErrorKind = Literal[
    "tampered", "expired", "used", "other_digest", "stale_version", "wrong_editor", "closed"
]


class TokenError(ApprovalError):
    """An action link that may not act; ``kind`` says why, ``message`` is for the editor."""

    def __init__(
        self, kind: TokenErrorKind, message: str, *, status: int = 400, **values: object
    ) -> None:
        # ``message`` is an English template with %(name)s placeholders, a literal where it
        # is raised so that pybabel extracts it (``-k TokenError:2``); the page shows it in the
        # editor's language (:meth:`localized`), the log and the console in English.
        self.kind = kind
        self.template = message
        self.values = values
        self.message = message % values if values else message
        self.status = status
        super().__init__(self.message)

    def localized(self, language: str | None) -> str:
        return gettext_for(language)(self.template, **self.values)


@dataclass(frozen=True)
class ActionClaims:
    """What a verified action link says."""

    digest_id: int
    version: int
    editor: str
    action: Action
    jti: str
    expires_at: datetime


def _serializer(config: Config) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(config.secret_key.get_secret_value(), salt=_SALT)


def make_action_token(
    config: Config,
    *,
    digest_id: int,
    version: int,
    editor: str,
    action: Action,
    now: datetime,
    valid_days: float,
) -> str:
    """A signed link token; valid for ``valid_days`` from ``now``."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})")
    expires = now + timedelta(days=valid_days)
    payload = {
        "d": digest_id,
        "v": version,
        "e": editor.strip().lower(),
        "a": action,
        "j": secrets.token_urlsafe(12),
        "x": int(expires.timestamp()),
    }
    token: str = _serializer(config).dumps(payload)
    return token


def read_action_token(config: Config, token: str, *, now: datetime) -> ActionClaims:
    """Verify the signature and the expiry of a link; no database involved."""
    try:
        data: Any = _serializer(config).loads(token)
    except BadSignature:
        raise TokenError(
            "tampered",
            "This link is not valid: it was changed or cut short (copy the whole link from "
            "the email, or open the latest approval request).",
            status=400,
        ) from None
    try:
        claims = ActionClaims(
            digest_id=int(data["d"]),
            version=int(data["v"]),
            editor=str(data["e"]),
            action=data["a"],
            jti=str(data["j"]),
            expires_at=datetime.fromtimestamp(int(data["x"]), UTC),
        )
    except (KeyError, TypeError, ValueError):
        raise TokenError("tampered", "This link is not valid (unexpected content).") from None
    if claims.action not in ACTIONS:
        raise TokenError("tampered", "This link is not valid (unknown action).")
    if now >= claims.expires_at:
        raise TokenError(
            "expired",
            "This link has expired. Links in approval requests are valid for a limited time; "
            "use the latest request, or ask the operator to send a new one.",
            status=410,
        )
    return claims


def check_against_digest(
    claims: ActionClaims,
    digest: Digest | None,
    *,
    editors: Sequence[str],
    expected_digest_id: int | None = None,
    allow_older_version: bool = False,
) -> None:
    """Is this link for this digest, its current version, a current editor, still open?"""
    if digest is None or claims.digest_id != digest.id:
        raise TokenError("other_digest", "This link belongs to another digest.", status=404)
    if expected_digest_id is not None and expected_digest_id != digest.id:
        raise TokenError("other_digest", "This link belongs to another digest.", status=400)
    if not any(_eq(claims.editor, e.strip().lower()) for e in editors):
        raise TokenError(
            "wrong_editor",
            "This link was made for an address that is not an editor of this exchange.",
            status=403,
        )
    if digest.state not in OPEN:
        raise TokenError(
            "closed",
            "This digest is already %(state)s; nothing was changed.",
            status=409,
            state=digest.state.replace("_", " "),
        )
    stale = claims.version > digest.version or (
        claims.version < digest.version and not allow_older_version
    )
    if stale:
        raise TokenError(
            "stale_version",
            "This digest has changed since this link was sent (it is now version "
            "%(now)s, the link is for version %(link)s). A fresh approval "
            "request was mailed; please use that one.",
            status=409,
            now=digest.version,
            link=claims.version,
        )


def is_used(session: Session, jti: str) -> bool:
    return queries.is_used(session, jti)


def mark_used(session: Session, jti: str, *, now: datetime) -> None:
    """Record the use of a link in the current transaction; a second use raises."""
    if is_used(session, jti):
        raise TokenError(
            "used", "This link has already been used; nothing was changed.", status=409
        )
    session.add(UsedToken(jti=jti, used_at=now))
    session.flush()  # the primary key refuses a racing second use here, not at commit


def csrf_value(config: Config, token: str) -> str:
    """The CSRF value a confirmation form carries: tied to its link, signed with our key."""
    key = config.secret_key.get_secret_value().encode()
    return hmac.new(key, _CSRF_SALT + token.encode(), hashlib.sha256).hexdigest()


def check_csrf(config: Config, token: str, value: str | None) -> bool:
    return bool(value) and _eq(csrf_value(config, token), value or "")


def new_reply_token() -> str:
    """An unguessable digest reply token (``digest.token``): 160 random bits, lowercase
    base32, so mail systems that fold the case of local parts keep it intact."""
    return base64.b32encode(secrets.token_bytes(20)).decode().lower().rstrip("=")


#: How many characters of the digest's token start an editor's reply token (80 bits: they
#: find the digest); the rest is the editor's part.
REPLY_PREFIX_LEN = 16
_REPLY_SALT = b"newsexchange.approval.reply.v1"


def editor_reply_token(key: str, digest_token: str, editor: str) -> str:
    """One editor's reply token for one digest: the first 16 characters of the digest's
    token (they find the digest) and 16 characters of HMAC-SHA256(key, digest token, editor)
    (80 bits that only this editor's mail ever carried). Lowercase base32, 32 characters, so
    ``news+<token>.v12@…`` stays well inside the 64 octets of a local part.

    A reply acts only with its sender's own token: editor B cannot act with the token from
    editor A's request, and a forwarded request does not let anybody else act.
    """
    digest_token = digest_token.strip().lower()
    mac = hmac.new(
        key.encode("utf-8"),
        _REPLY_SALT + b"|" + digest_token.encode() + b"|" + editor.strip().lower().encode(),
        hashlib.sha256,
    ).digest()
    tail = base64.b32encode(mac).decode().lower()[:16]
    return digest_token[:REPLY_PREFIX_LEN] + tail


def reply_token(config: Config, digest: Digest, editor: str) -> str:
    """:func:`editor_reply_token` with our key."""
    return editor_reply_token(config.secret_key.get_secret_value(), digest.token, editor)


def find_digest_by_reply_token(session: Session, token: str) -> Digest | None:
    """The digest an editor's reply token belongs to (found by the digest part; whose token
    it is, is the caller's check, in constant time: :func:`editor_reply_token`)."""
    token = token.strip().lower()
    if len(token) < 2 * REPLY_PREFIX_LEN:  # never match a short guess
        return None
    prefix = token[:REPLY_PREFIX_LEN]
    for row in queries.digests_by_token_prefix(session, prefix, REPLY_PREFIX_LEN):
        if _eq(row.token.lower()[:REPLY_PREFIX_LEN], prefix):
            return row
    return None


def _eq(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
