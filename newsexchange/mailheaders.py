"""Moved to :mod:`newsexchange.mail.headers` (kept so that older imports keep working)."""

from newsexchange.mail.headers import (
    ADDRESS_HEADERS,
    POLICY,
    TEXT_HEADERS,
    WirePolicy,
    encode_display_name,
    encode_mailboxes,
    encode_text,
    header_text,
    mailbox,
    wire,
)

__all__ = [
    "ADDRESS_HEADERS",
    "POLICY",
    "TEXT_HEADERS",
    "WirePolicy",
    "encode_display_name",
    "encode_mailboxes",
    "encode_text",
    "header_text",
    "mailbox",
    "wire",
]
