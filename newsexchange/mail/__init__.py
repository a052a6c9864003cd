"""Outgoing mail, shared by approval, delivery and alerts: the message (:mod:`.message`), the
:class:`Mailer` interface (:mod:`.base`), the backends (:mod:`.outbox_dir`, :mod:`.smtp`,
:mod:`.sendgrid`, picked by :func:`get_mailer`), header encoding (:mod:`.headers`) and the
queue of system mail sent after commit (:mod:`.queue`)."""

from newsexchange.mail.backends import get_mailer
from newsexchange.mail.base import Mailer, OnSent, Wait
from newsexchange.mail.message import OutgoingMessage, SendResult, base_message

__all__ = [
    "Mailer",
    "OnSent",
    "OutgoingMessage",
    "SendResult",
    "Wait",
    "base_message",
    "get_mailer",
]
