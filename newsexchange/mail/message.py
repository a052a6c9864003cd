"""What a mailer is handed and what it hands back: :class:`OutgoingMessage` (one message to
one recipient) and :class:`SendResult` (what became of it).

Shared by every backend (:mod:`.outbox_dir`, :mod:`.smtp`, :mod:`.sendgrid`) and by everything
that sends (approval, alerts, the delivery step); it imports none of them, which is what lets
the backends and :func:`newsexchange.mail.get_mailer` import each other one way only.
:func:`base_message` starts a system mail (approval, alerts) with the headers they share.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime

from newsexchange.config import Config
from newsexchange.mail.headers import header_text, wire

__all__ = ["OutgoingMessage", "SendResult", "base_message"]


def base_message(
    config: Config,
    *,
    to: str,
    subject: str,
    lang: str | None = None,
    now: datetime | None = None,
) -> EmailMessage:
    """The headers every system mail starts from (approval requests and notices, alerts):
    From (with the sender name of ``lang``, mail.from_names), To, Subject, Date — each
    value cleaned by :func:`~.headers.header_text`, the Subject folded by our rules."""
    msg = EmailMessage()
    msg["From"] = header_text(config.mail.sender(lang))
    msg["To"] = header_text(to)
    wire(msg)["Subject"] = header_text(subject)  # data, not structure; folded by mail.headers
    msg["Date"] = format_datetime((now or datetime.now()).astimezone())
    return msg


@dataclass
class OutgoingMessage:
    """One message to one recipient.

    Plain use (approval mails, alerts): ``message`` is complete and nothing else is needed.

    Bulk use (digests, see ``delivery/personalize.py``): the digest is rendered once per
    language, so ``message`` is the *shared template* of every recipient of that language
    (its bodies still hold the per-recipient markers) and the per-recipient parts ride
    alongside: ``raw`` is the finished message for backends that send bytes (SMTP, outbox),
    and ``substitutions`` / ``headers`` let a provider that personalizes itself (SendGrid)
    send one request for up to 1,000 recipients of the same template.
    """

    message: EmailMessage  # complete, or the shared template (see above)
    recipient: str  # envelope recipient
    delivery_id: int | None = None  # our Delivery row, carried to providers (custom_args)
    categories: list[str] = field(default_factory=list)
    raw: bytes | None = None  # the finished RFC 5322 bytes (CRLF) when already built
    message_id: str | None = None  # of this recipient's message, when ``message`` is shared
    recipient_name: str | None = None
    substitutions: dict[str, str] = field(default_factory=dict)  # marker → value
    headers: dict[str, str] = field(default_factory=dict)  # per-recipient headers

    def as_bytes(self) -> bytes:
        """The bytes to hand to an MTA (CRLF line ends, as SMTP wants)."""
        if self.raw is not None:
            return self.raw
        return self.message.as_bytes(policy=self.message.policy.clone(linesep="\r\n"))

    @property
    def msgid(self) -> str | None:
        return self.message_id or self.message["Message-ID"]


@dataclass
class SendResult:
    ok: bool
    provider_message_id: str | None = None
    permanent: bool = False  # a failure that retrying will not fix (unknown recipient …)
    error: str | None = None
    retry_after: float | None = None
    # The recipient address itself was refused (SMTP 5xx to RCPT, a provider "bounce"):
    # the address is suppressed. A permanent failure of the message as a whole (too big,
    # malformed request) is not the recipient's fault and suppresses nothing.
    bounce: bool = False
