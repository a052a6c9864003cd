"""Moved to :mod:`newsexchange.delivery.unsubscribe` (kept so that older imports keep working)."""

from newsexchange.delivery.unsubscribe import (
    HASH_PREFIX,
    SALT,
    UnsubscribeToken,
    apply_unsubscribe,
    email_hash,
    is_suppressed,
    make_token,
    read_token,
    suppress,
    unsubscribe_links,
    unsubscribe_mailto,
    unsubscribe_url,
)

__all__ = [
    "HASH_PREFIX",
    "SALT",
    "UnsubscribeToken",
    "apply_unsubscribe",
    "email_hash",
    "is_suppressed",
    "make_token",
    "read_token",
    "suppress",
    "unsubscribe_links",
    "unsubscribe_mailto",
    "unsubscribe_url",
]
