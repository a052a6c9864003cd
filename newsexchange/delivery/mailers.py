"""Moved to :mod:`newsexchange.mail` (kept so that older imports keep working)."""

from newsexchange.mail import Mailer, OutgoingMessage, SendResult, get_mailer
from newsexchange.mail.outbox_dir import OutboxMailer

__all__ = ["Mailer", "OutboxMailer", "OutgoingMessage", "SendResult", "get_mailer"]
