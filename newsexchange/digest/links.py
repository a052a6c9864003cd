"""Signed click links: ``{public_url}/r/{token}``, where the token carries the story's place
in the digest and the source URL it leads to (issue 14, "Clicks without spying").

Why the token carries the target: the redirect needs no lookup to know where to send the
reader, and nobody can make it send anyone elsewhere — the target is inside the signature
(itsdangerous, HMAC over the payload with ``config.secret_key`` and a salt of its own, so an
approval token can never pass for a click token or the other way round). A changed byte
anywhere fails the signature: never an open redirect.

No expiry, on purpose: a digest kept in a journalist's mailbox archive must keep working
links for years. The payload names no recipient: the links are the same in every copy
(``delivery/personalize.py`` substitutes only the unsubscribe link), so a click says which
story was opened, never who opened it.

Only ``http``/``https`` targets with a host are signed or followed: a ``javascript:`` or
``data:`` URL can neither be made into a link nor come out of one.

Pure: no database, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeSerializer

from newsexchange.config import Config
from newsexchange.db import MAX_ID
from newsexchange.errors import DigestError

__all__ = ["ClickLinkError", "ClickTarget", "click_url", "is_followable", "read_click"]

_SALT = "newsexchange.digest.click.v1"
#: A target longer than this is not signed (browsers and mail clients cut URLs around 2 kB
#: in the href and the redirect; the source link then goes in directly).
MAX_TARGET = 2048

ClickErrorKind = Literal["tampered", "target"]


class ClickLinkError(DigestError):
    """A click link that may not redirect; ``kind`` says why, ``message`` is for the page."""

    def __init__(self, kind: ClickErrorKind, message: str) -> None:
        self.kind = kind
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class ClickTarget:
    """What a verified click link says: the story (digest, position, item) and its source."""

    digest_id: int
    position: int
    item_id: int | None
    target: str


def is_followable(target: str) -> bool:
    """May ``target`` be signed and redirected to: an absolute http(s) URL with a host, no
    control characters or spaces (a header value must never be split), not too long."""
    if not target or len(target) > MAX_TARGET:
        return False
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in target):
        return False
    try:
        parts = urlsplit(target)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _serializer(config: Config) -> URLSafeSerializer:
    return URLSafeSerializer(config.secret_key.get_secret_value(), salt=_SALT)


def _id(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_ID:
        raise ValueError(f"not a database id: {value!r}")
    return value


def click_url(
    config: Config, digest_id: int, position: int, item_id: int | None, target: str
) -> str:
    """The signed redirect for one story's link; :class:`ClickLinkError` ("target") for a
    target that is not http(s)."""
    if not is_followable(target):
        raise ClickLinkError("target", f"not an http(s) link, not signed: {target[:80]!r}")
    payload = [_id(digest_id), _id(position), None if item_id is None else _id(item_id), target]
    token = _serializer(config).dumps(payload)
    return f"{config.public_url}/r/{token}"


def read_click(config: Config, token: str) -> ClickTarget:
    """Verify a click token; :class:`ClickLinkError` for a bad signature ("tampered") or a
    target that is not http(s) ("target")."""
    try:
        data: Any = _serializer(config).loads(token)
    except BadSignature:
        raise ClickLinkError(
            "tampered",
            "This link is not valid: it was changed or cut short. Copy the whole link from "
            "the email.",
        ) from None
    try:
        digest_id, position, item_id, target = data
        click = ClickTarget(
            digest_id=_id(digest_id),
            position=_id(position),
            item_id=None if item_id is None else _id(item_id),
            target=str(target) if isinstance(target, str) else "",
        )
    except (TypeError, ValueError):
        raise ClickLinkError("tampered", "This link is not valid (unexpected content).") from None
    if not is_followable(click.target):
        raise ClickLinkError("target", "This link does not lead to a web page.")
    return click
