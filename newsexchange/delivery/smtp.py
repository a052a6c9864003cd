"""SMTP backend (smtplib): STARTTLS or implicit TLS, optional auth from the environment."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from collections.abc import Sequence

from newsexchange.config import Config
from newsexchange.delivery.mailers import OutgoingMessage, SendResult
from newsexchange.errors import DeliveryError


class SmtpMailer:
    name = "smtp"

    def __init__(self, config: Config) -> None:
        self.settings = config.mail.smtp
        self.username = config.secret(self.settings.username_env)
        self.password = config.secret(self.settings.password_env)
        self._conn: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            conn: smtplib.SMTP
            if s.tls:
                conn = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout,
                                        context=ssl.create_default_context())
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
                if s.starttls:
                    conn.starttls(context=ssl.create_default_context())
            if self.username and self.password:
                conn.login(self.username, self.password)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"SMTP {s.host}:{s.port}: {exc}") from exc
        return conn

    def send(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        results: list[SendResult] = []
        for out in messages:
            if self._conn is None:
                self._conn = self._connect()
            try:
                refused = self._conn.send_message(out.message, to_addrs=[out.recipient])
                if refused:
                    code, text = next(iter(refused.values()))
                    results.append(SendResult(False, permanent=code >= 500,
                                              error=f"{code} {text.decode(errors='replace')}"))
                else:
                    results.append(SendResult(True, provider_message_id=out.message["Message-ID"]))
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
                results.append(SendResult(False, permanent=code >= 500,
                                          error=f"{code} {text.decode(errors='replace')}"))
            except smtplib.SMTPResponseException as exc:
                results.append(SendResult(False, permanent=exc.smtp_code >= 500,
                                          error=f"{exc.smtp_code} {exc.smtp_error!r}"))
            except (OSError, smtplib.SMTPException) as exc:
                self._conn = None
                results.append(SendResult(False, error=f"SMTP connection: {exc}"))
        return results

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._conn.quit()
            self._conn = None
