"""Operator alerts: tell a human when something has been wrong long enough to need one.

Three conditions, each mailed once to ``mail.operators`` (through the configured mailer):

- a source failing for a day (``sources.failing_since`` more than 24 hours ago);
- a translation provider down for an hour (``provider_usage.down_since`` over an hour ago);
- a digest held, or still awaiting approval past its deadline.

"Once" is kept by the ``alerts`` table: an alert's key names the condition *and the episode*
(the source's ``failing_since``, the digest's version), so the same failure is mailed once,
and a new failure of the same source after a recovery is mailed again. The decision of what
is alert-worthy is a pure function over plain rows (:func:`find_conditions`); the step
(:func:`check_alerts`) reads the rows, mails what is new and records it.

With no operators configured the alert is logged (once) instead, so it is never silent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

from sqlalchemy import select

from newsexchange.config import Config
from newsexchange.db import Alert, Database, Digest, ProviderUsage, Source
from newsexchange.mailheaders import header_text

log = logging.getLogger(__name__)

SOURCE_FAILING_FOR = timedelta(days=1)
PROVIDER_DOWN_FOR = timedelta(hours=1)


@dataclass(frozen=True)
class Condition:
    """One alert-worthy situation: ``key`` identifies it (and its episode) for once-only."""

    key: str
    subject: str
    body: str


@dataclass(frozen=True)
class SourceState:
    id: str
    url: str
    failing_since: datetime | None
    consecutive_failures: int
    last_error: str | None


@dataclass(frozen=True)
class ProviderState:
    provider: str
    down_since: datetime | None
    last_error: str | None


@dataclass(frozen=True)
class DigestState:
    id: int
    exchange_id: str
    period_start: str
    state: str
    version: int
    approval_requested_at: datetime | None
    deadline_hours: float
    reason: str | None


@dataclass
class AlertReport:
    checked: int = 0
    new: int = 0
    mailed: int = 0
    failed: int = 0
    alerts: list[str] = field(default_factory=list)  # keys of the new ones

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "new": self.new,
            "mailed": self.mailed,
            "failed": self.failed,
            "alerts": self.alerts,
        }


def _ago(now: datetime, then: datetime) -> str:
    hours = (now - then).total_seconds() / 3600
    return f"{hours:.0f} hours" if hours < 48 else f"{hours / 24:.1f} days"


def find_conditions(
    now: datetime,
    sources: list[SourceState],
    providers: list[ProviderState],
    digests: list[DigestState],
) -> list[Condition]:
    """What deserves an operator's attention now (pure: plain rows in, conditions out)."""
    out: list[Condition] = []
    for src in sources:
        if src.failing_since and now - src.failing_since >= SOURCE_FAILING_FOR:
            out.append(
                Condition(
                    key=f"source-failing:{src.id}:{src.failing_since.isoformat()}",
                    subject=f"Source {src.id} has been failing for {_ago(now, src.failing_since)}",
                    body=(
                        f"The source {src.id} ({src.url}) has failed every fetch since "
                        f"{src.failing_since:%Y-%m-%d %H:%M} UTC "
                        f"({src.consecutive_failures} attempts).\n\n"
                        f"Last error: {src.last_error or 'unknown'}\n\n"
                        "Other sources are not affected. Check the address in feeds.yaml "
                        f"(newsexchange fetch --source {src.id} shows the error), or set "
                        "enabled: false on the source until it is back."
                    ),
                )
            )
    for prov in providers:
        if prov.down_since and now - prov.down_since >= PROVIDER_DOWN_FOR:
            out.append(
                Condition(
                    key=f"provider-down:{prov.provider}:{prov.down_since.isoformat()}",
                    subject=(
                        f"Translation provider {prov.provider} has been down for "
                        f"{_ago(now, prov.down_since)}"
                    ),
                    body=(
                        f"The translation provider {prov.provider} has failed since "
                        f"{prov.down_since:%Y-%m-%d %H:%M} UTC.\n\n"
                        f"Last error: {prov.last_error or 'unknown'}\n\n"
                        "Items waiting for it stay pending and are retried; the next provider "
                        "in translation.providers is tried meanwhile. Check its key (the "
                        "*_env variable) and quota, or add another provider."
                    ),
                )
            )
    for d in digests:
        label = f"digest #{d.id} ({d.exchange_id}, period {d.period_start})"
        if d.state == "held":
            out.append(
                Condition(
                    key=f"digest-held:{d.id}:v{d.version}",
                    subject=f"Digest #{d.id} of {d.exchange_id} is held: not sent",
                    body=(
                        f"The {label} passed its approval deadline without the required "
                        f"approvals and is held; it will not be sent.\n\n"
                        f"{'Reason: ' + d.reason + chr(10) + chr(10) if d.reason else ''}"
                        f"An editor can still approve it (newsexchange approve {d.id}), or "
                        "it can be rebuilt (newsexchange digest build)."
                    ),
                )
            )
        elif (
            d.state == "awaiting_approval"
            and d.approval_requested_at is not None
            and now - d.approval_requested_at >= timedelta(hours=d.deadline_hours)
        ):
            out.append(
                Condition(
                    key=f"digest-overdue:{d.id}:v{d.version}",
                    subject=f"Digest #{d.id} of {d.exchange_id} is past its approval deadline",
                    body=(
                        f"The {label} was sent for approval on "
                        f"{d.approval_requested_at:%Y-%m-%d %H:%M} UTC and is still waiting "
                        f"after {_ago(now, d.approval_requested_at)} (deadline: "
                        f"{d.deadline_hours:.0f} hours). Remind the editors, or approve it by "
                        f"hand (newsexchange approve {d.id})."
                    ),
                )
            )
    return out


def _read_state(
    db: Database, config: Config
) -> tuple[list[SourceState], list[ProviderState], list[DigestState]]:
    configured = {s.id for s in config.sources if s.enabled}
    deadlines = {e.id: e.approval.deadline_hours for e in config.exchanges}
    with db.session() as s:
        sources = [
            SourceState(r.id, r.url, r.failing_since, r.consecutive_failures, r.last_error)
            for r in s.scalars(select(Source).where(Source.failing_since.is_not(None)))
            if r.id in configured
        ]
        latest: dict[str, ProviderState] = {}
        for p in s.scalars(
            select(ProviderUsage)
            .where(ProviderUsage.down_since.is_not(None))
            .order_by(ProviderUsage.day)
        ):
            latest[p.provider] = ProviderState(p.provider, p.down_since, p.last_error)
        digests = [
            DigestState(
                d.id,
                d.exchange_id,
                d.period_start.isoformat(),
                d.state,
                d.version,
                d.approval_requested_at,
                deadlines.get(d.exchange_id, 120.0),
                d.decided_reason,
            )
            for d in s.scalars(
                select(Digest).where(Digest.state.in_(("held", "awaiting_approval")))
            )
        ]
    return sources, list(latest.values()), digests


def _message(config: Config, cond: Condition, now: datetime) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = header_text(config.mail.from_)
    msg["To"] = ", ".join(config.mail.operators)
    # The subject names sources and exchanges from the config: cleaned like every header.
    msg["Subject"] = header_text(f"[newsexchange] {cond.subject}")
    msg["Date"] = format_datetime(now)
    _name, addr = parseaddr(config.mail.from_)
    domain = addr.rsplit("@", 1)[-1] if "@" in addr else "newsexchange.invalid"
    msg["Message-ID"] = make_msgid(idstring="alert", domain=domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to this
    msg.set_content(
        f"{cond.body}\n\n-- \nnewsexchange at {config.public_url}\n"
        f"(this alert is sent once per occurrence; see docs/operations.md)\n"
    )
    return msg


def check_alerts(db: Database, config: Config, *, now: datetime) -> AlertReport:
    """Mail each new alert condition to the operators, once (the step the service runs)."""
    from newsexchange.delivery.mailers import OutgoingMessage, get_mailer

    report = AlertReport()
    conditions = find_conditions(now, *_read_state(db, config))
    report.checked = len(conditions)
    with db.session() as s:
        known = set(s.scalars(select(Alert.key).where(Alert.key.in_([c.key for c in conditions]))))
    new = [c for c in conditions if c.key not in known]
    report.new = len(new)
    if not new:
        return report
    mailer = get_mailer(config) if config.mail.operators else None
    try:
        for cond in new:
            if mailer is not None:
                msg = _message(config, cond, now)
                outs = [OutgoingMessage(msg, rcpt) for rcpt in config.mail.operators]
                results = mailer.send(outs)
                if not any(r.ok for r in results):
                    report.failed += 1
                    log.error(
                        "operator alert could not be mailed",
                        extra={"alert": cond.key, "error": results[0].error if results else None},
                    )
                    continue  # not recorded: tried again at the next check
                report.mailed += 1
            log.warning(
                "operator alert",
                extra={
                    "alert": cond.key,
                    "subject": cond.subject,
                    "operators": len(config.mail.operators),
                },
            )
            with db.session() as s:
                s.merge(Alert(key=cond.key, sent_at=now, message=cond.subject))
                _mark_alerted(s, cond.key, now)
            report.alerts.append(cond.key)
    finally:
        if mailer is not None:
            mailer.close()
    return report


def _mark_alerted(session: Any, key: str, now: datetime) -> None:
    kind, _, rest = key.partition(":")
    name = rest.split(":", 1)[0]
    if kind == "source-failing":
        src = session.get(Source, name)
        if src is not None:
            src.alerted_at = now
    elif kind == "provider-down":
        for p in session.scalars(select(ProviderUsage).where(ProviderUsage.provider == name)):
            if p.down_since is not None:
                p.alerted_at = now
