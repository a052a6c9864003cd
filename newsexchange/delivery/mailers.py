"""Mail backends behind one small protocol: ``outbox`` (a folder of .eml files, the embedded
default), ``smtp`` and ``sendgrid``. Nothing else imports smtplib or the sendgrid library.

Everything that sends mail (approval requests, reminders, operator alerts, digests) goes
through :func:`get_mailer`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Protocol

from newsexchange.config import Config
from newsexchange.errors import ConfigError, DeliveryError
from newsexchange.private import make_private_dir, write_private_file


@dataclass
class OutgoingMessage:
    """One message to one recipient.

    Plain use (approval mails, alerts): ``message`` is complete and nothing else is needed.

    Bulk use (digests, see ``send.py``): the digest is rendered once per language, so
    ``message`` is the *shared template* of every recipient of that language (its bodies
    still hold the per-recipient markers) and the per-recipient parts ride alongside:
    ``raw`` is the finished message for backends that send bytes (SMTP, outbox), and
    ``substitutions`` / ``headers`` let a provider that personalizes itself (SendGrid)
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


class Mailer(Protocol):
    name: str

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Hand messages to the backend; one result per message, in order. Never raises for
        a per-message failure; raises DeliveryError only when the backend is unusable."""
        ...

    def close(self) -> None: ...


class OutboxMailer:
    """Writes one .eml file per message into a folder: the default, and a safe dry run.

    The file name is derived from the Message-ID, so writing the same message twice (a resend
    after a crash) replaces the file instead of adding a second one. Files are written to a
    temporary name and renamed, so a reader never sees half a message.
    """

    name = "outbox"
    personalizes = False  # wants ``raw`` per recipient (see OutgoingMessage)
    reports_each = True  # send(..., on_sent=) reports each message as it is written

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def send(
        self,
        messages: Sequence[OutgoingMessage],
        *,
        on_sent: Callable[[int, SendResult], object] | None = None,
    ) -> list[SendResult]:
        results = []
        try:
            make_private_dir(self.folder)  # owner-only: these are the messages as mailed
            for out in messages:
                msgid = out.msgid or make_msgid(domain="newsexchange.invalid")
                stem = re.sub(r"[^A-Za-z0-9._@-]+", "_", msgid.strip("<>"))[:180]
                path = self.folder / f"{stem}.eml"
                tmp = path.with_suffix(".eml.tmp")
                data = out.raw if out.raw is not None else out.message.as_bytes()
                try:
                    write_private_file(tmp, data)
                except OSError:
                    tmp.unlink(missing_ok=True)  # no half-written file left behind
                    raise
                os.replace(tmp, path)
                results.append(SendResult(ok=True, provider_message_id=str(path.name)))
                if on_sent is not None:
                    on_sent(len(results) - 1, results[-1])
        except OSError as exc:
            # A full disk or a folder we may not write: the backend is unusable, so the send
            # stops and hands the rest back (what was written is recorded as sent).
            where = exc.filename or self.folder
            raise DeliveryError(
                f"cannot write the outbox ({where}): {exc.strerror or exc}"
            ) from exc
        return results

    def close(self) -> None:
        pass


def get_mailer(config: Config) -> Mailer:
    """The backend named by ``mail.backend`` in feeds.yaml."""
    backend = config.mail.backend
    if backend == "outbox":
        return OutboxMailer(config.resolve(config.mail.outbox_dir))
    if backend == "smtp":
        from newsexchange.delivery.smtp import SmtpMailer

        return SmtpMailer(config)
    if backend == "sendgrid":
        from newsexchange.delivery.sendgrid import SendgridMailer

        return SendgridMailer(config)
    raise ConfigError(f"mail backend {backend!r} is not available in this version")
