"""SendGrid backend (v3 Mail Send through the sendgrid library).

Digest recipients that share a template (same language, same rendered digest) go in one
request of up to 1,000 personalizations (SendGrid's limit per request), each with:
``to``, ``substitutions`` (the per-recipient unsubscribe URL fills the ``%%UNSUBSCRIBE_URL%%``
marker in both bodies), ``headers`` (List-Unsubscribe and Message-ID differ per recipient)
and ``custom_args`` (``nx_delivery_id``: the Event Webhook hands it back, which is how
bounces find our Delivery row). Categories name the exchange and digest for SendGrid's stats.
A template's attachments (a digest's ``events.ics``) go in ``attachments`` once per request,
base64, with the bare MIME type: the API refuses a ``type`` holding ``;`` ("The attachment
type cannot contain ';', or CRLF characters", sendgrid/sendgrid-php#250), so a calendar's
``method=PUBLISH`` parameter is left to the file's own METHOD line.

Answers: 202 accepted (``X-Message-Id`` is the provider id of the request); 429 and 5xx are
retried with backoff honouring ``Retry-After``; 401/403 mean the key is wrong (the backend is
unusable: DeliveryError, nothing is marked); other 4xx refuse the request as a whole, which
is permanent for those messages but no recipient's fault (nothing is suppressed).
"""

from __future__ import annotations

import base64
import logging
import time
import urllib.error
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from typing import Any

from newsexchange.common.retry import Backoff, parse_retry_after
from newsexchange.config import Config
from newsexchange.errors import ConfigError, DeliveryError
from newsexchange.mail.base import OnSent
from newsexchange.mail.headers import header_text
from newsexchange.mail.message import OutgoingMessage, SendResult

__all__ = ["CUSTOM_ARG", "MAX_PERSONALIZATIONS", "SendgridMailer", "retry_after_seconds"]

# Named as before the move (delivery/sendgrid.py): the "logger" field of its lines is unchanged.
log = logging.getLogger("newsexchange.delivery.sendgrid")

MAX_PERSONALIZATIONS = 1000
CUSTOM_ARG = "nx_delivery_id"
# Headers SendGrid builds itself (or refuses in "headers"); everything else is carried over.
_RESERVED = {
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
    "content-type",
    "content-transfer-encoding",
    "mime-version",
    "date",
    "received",
    "dkim-signature",
    "x-sg-id",
    "x-sg-eid",
}


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (the common parser; ``now`` as a Unix time)."""
    when = None if now is None else datetime.fromtimestamp(now, UTC)
    return parse_retry_after(value, now=when)


class SendgridMailer:
    name = "sendgrid"
    personalizes = True  # fills the markers itself: wants the template + substitutions
    reports_each = False  # a request's messages are known accepted when it returns

    def __init__(
        self,
        config: Config,
        *,
        max_attempts: int = 4,
        max_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from sendgrid import SendGridAPIClient

        s = config.mail.sendgrid
        key = config.secret(s.api_key_env)
        if not key:
            raise ConfigError(
                f"mail.backend is sendgrid but the environment variable {s.api_key_env} "
                "(mail.sendgrid.api_key_env) is not set"
            )
        self.client = SendGridAPIClient(api_key=key, host=s.base_url.rstrip("/"))
        self.timeout = s.timeout
        self.reply_to = config.mail.reply_to
        self.max_attempts = max_attempts
        self.max_wait = max_wait
        self.sleep = sleep
        self.requests = 0

    # -- building requests ----------------------------------------------------------------

    @staticmethod
    def _bodies(msg: EmailMessage) -> tuple[str | None, str | None]:
        text = msg.get_body(("plain",))
        html = msg.get_body(("html",))
        return (
            text.get_content() if isinstance(text, EmailMessage) else None,
            html.get_content() if isinstance(html, EmailMessage) else None,
        )

    def build_request(self, group: Sequence[OutgoingMessage]) -> dict[str, Any]:
        """The v3 mail/send body for messages sharing one template (``group[0].message``)."""
        from sendgrid.helpers.mail import (
            Category,
            Content,
            From,
            Header,
            Mail,
            MimeType,
            ReplyTo,
        )

        template = group[0].message
        from_name, from_addr = parseaddr(str(template["From"]))
        mail = Mail()
        mail.from_email = From(from_addr, from_name or None)
        reply = template["Reply-To"] or self.reply_to
        if reply:
            rname, raddr = parseaddr(str(reply))
            mail.reply_to = ReplyTo(raddr, rname or None)
        mail.subject = str(template["Subject"] or "")
        text, html = self._bodies(template)
        # SendGrid wants text/plain first, then text/html.
        if text is not None:
            mail.add_content(Content(MimeType.text, text))
        if html is not None:
            mail.add_content(Content(MimeType.html, html))
        per_recipient = {k.lower() for out in group for k in out.headers} | {"message-id"}
        for key, value in template.items():
            if key.lower() in _RESERVED or key.lower() in per_recipient:
                continue
            mail.add_header(Header(key, str(value)))
        for cat in dict.fromkeys(c for out in group for c in out.categories):
            mail.add_category(Category(cat[:255]))
        personalizations = [self._personalization(out) for out in group]
        body: dict[str, Any] = mail.get()
        # Built directly rather than with Mail.add_personalization, which inserts at the
        # front (reversing the order) — keeping our order keeps requests reproducible.
        body["personalizations"] = [p.get() for p in personalizations]
        attachments = [_attachment(part) for part in template.iter_attachments()]
        if attachments:
            body["attachments"] = attachments
        return body

    @staticmethod
    def _personalization(out: OutgoingMessage) -> Any:
        """One recipient's ``personalizations`` entry: To, markers, headers, our delivery id."""
        from sendgrid.helpers.mail import CustomArg, Header, Personalization, Substitution, To

        p = Personalization()
        name = out.recipient_name
        if name is None and out.substitutions == {}:
            pairs = getaddresses([str(out.message["To"] or "")])
            name = pairs[0][0] if pairs else None
        p.add_to(To(out.recipient, header_text(name) or None))  # SendGrid writes To:
        for marker, value in out.substitutions.items():
            p.add_substitution(Substitution(marker, value))
        headers = dict(out.headers)
        if out.msgid:
            headers.setdefault("Message-ID", out.msgid)
        for k, v in headers.items():
            p.add_header(Header(k, v))
        if out.delivery_id is not None:
            p.add_custom_arg(CustomArg(CUSTOM_ARG, str(out.delivery_id)))
        return p

    @staticmethod
    def _groups(messages: Sequence[OutgoingMessage]) -> list[list[int]]:
        """Indexes of messages that can share a request: consecutive, same template object,
        personalized by substitutions; at most 1,000. Complete messages go one per request."""
        groups: list[list[int]] = []
        for i, out in enumerate(messages):
            last = groups[-1] if groups else None
            if (
                last is not None
                and out.substitutions
                and messages[last[0]].substitutions
                and messages[last[0]].message is out.message
                and len(last) < MAX_PERSONALIZATIONS
            ):
                last.append(i)
            else:
                groups.append([i])
        return groups

    # -- sending --------------------------------------------------------------------------

    def _post(self, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
        """One POST to /v3/mail/send; (status, headers, body text). Network errors → 0."""
        from python_http_client.exceptions import HTTPError

        self.requests += 1
        try:
            resp = self.client.client.mail.send.post(request_body=body, timeout=self.timeout)
            headers = {k.lower(): v for k, v in dict(resp.headers or {}).items()}
            return int(resp.status_code), headers, _decode(resp.body)
        except HTTPError as exc:
            headers = {k.lower(): v for k, v in dict(exc.headers or {}).items()}
            return int(exc.status_code), headers, _decode(exc.body)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            return 0, {}, f"{type(exc).__name__}: {exc}"

    def _send_group(self, group: list[OutgoingMessage]) -> list[SendResult]:
        body = self.build_request(group)
        # Within one send: 1 s, 2 s, 4 s … up to max_wait; a Retry-After replaces the formula
        # (SendGrid's 429 says exactly when the quota is back).
        backoff = Backoff(base=1.0, cap=self.max_wait)
        status, text = 0, ""
        headers: dict[str, str] = {}
        for attempt in range(1, self.max_attempts + 1):
            status, headers, text = self._post(body)
            if 200 <= status < 300:
                pid = headers.get("x-message-id")
                return [SendResult(True, provider_message_id=pid) for _ in group]
            if status in (401, 403):
                raise DeliveryError(
                    f"SendGrid refused the API key ({status}): {text[:200]}", permanent=True
                )
            if status and status != 429 and status < 500:
                # 400 (malformed), 413 (too large): retrying the same request will not help.
                err = f"SendGrid {status}: {text[:300]}"
                return [SendResult(False, permanent=True, error=err) for _ in group]
            wait = retry_after_seconds(headers.get("retry-after"))
            wait = backoff.delay(attempt) if wait is None else wait
            if attempt == self.max_attempts or wait > self.max_wait:
                break
            log.info(
                "sendgrid retry",
                extra={"status": status, "wait": round(wait, 2), "attempt": attempt},
            )
            self.sleep(wait)
        retry = retry_after_seconds(headers.get("retry-after"))
        err = f"SendGrid {status or 'unreachable'}: {text[:300]}"
        return [SendResult(False, permanent=False, error=err, retry_after=retry) for _ in group]

    def send(
        self, messages: Sequence[OutgoingMessage], *, on_sent: OnSent | None = None
    ) -> list[SendResult]:
        """One request per group of messages sharing a template. ``on_sent`` is not called
        (``reports_each`` is False): the results say what each request did."""
        results: list[SendResult | None] = [None] * len(messages)
        for idx in self._groups(messages):
            try:
                group_results = self._send_group([messages[i] for i in idx])
            except DeliveryError as exc:
                if not any(r is not None and r.ok for r in results):
                    raise
                # Earlier requests were accepted: report them, and this one as not sent.
                group_results = [SendResult(False, error=str(exc)) for _ in idx]
            for i, r in zip(idx, group_results, strict=True):
                results[i] = r
        return [r if r is not None else SendResult(False, error="not sent") for r in results]

    def close(self) -> None:
        pass


def _attachment(part: EmailMessage) -> dict[str, str]:
    """One ``attachments`` entry of the v3 request for a MIME attachment part."""
    data = part.get_payload(decode=True)
    raw = data if isinstance(data, bytes) else str(data or "").encode("utf-8")
    return {
        "content": base64.b64encode(raw).decode("ascii"),
        "type": part.get_content_type(),  # bare: the API refuses parameters here
        "filename": header_text(part.get_filename() or "attachment"),
        "disposition": "attachment",
    }


def _decode(body: Any) -> str:
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return "" if body is None else str(body)
