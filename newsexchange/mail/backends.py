"""The backend named in feeds.yaml: ``outbox``, ``smtp`` or ``sendgrid``. Nothing else
imports smtplib or the sendgrid library; everything that sends mail (approval requests,
reminders, operator alerts, digests) gets its backend here.
"""

from __future__ import annotations

from newsexchange.config import Config
from newsexchange.errors import ConfigError
from newsexchange.mail.base import Mailer
from newsexchange.mail.outbox_dir import OutboxMailer
from newsexchange.mail.sendgrid import SendgridMailer
from newsexchange.mail.smtp import SmtpMailer

__all__ = ["get_mailer"]


def get_mailer(config: Config) -> Mailer:
    """The backend named by ``mail.backend`` in feeds.yaml."""
    backend = config.mail.backend
    if backend == "outbox":
        return OutboxMailer(config.resolve(config.mail.outbox_dir))
    if backend == "smtp":
        return SmtpMailer(config)
    if backend == "sendgrid":
        return SendgridMailer(config)
    raise ConfigError(f"mail backend {backend!r} is not available in this version")
