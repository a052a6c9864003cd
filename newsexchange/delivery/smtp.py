"""Moved to :mod:`newsexchange.mail.smtp` (kept so that older imports keep working)."""

from newsexchange.mail.smtp import OnSent, SmtpMailer, Wait, dot_stuff

__all__ = ["OnSent", "SmtpMailer", "Wait", "dot_stuff"]
