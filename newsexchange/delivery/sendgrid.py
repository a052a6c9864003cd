"""Moved to :mod:`newsexchange.mail.sendgrid` (kept so that older imports keep working)."""

from newsexchange.mail.sendgrid import (
    CUSTOM_ARG,
    MAX_PERSONALIZATIONS,
    SendgridMailer,
    retry_after_seconds,
)

__all__ = ["CUSTOM_ARG", "MAX_PERSONALIZATIONS", "SendgridMailer", "retry_after_seconds"]
