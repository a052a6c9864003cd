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

And the source watchdog's findings (``ingest/watchdog.py``: off-region, stale, wrong
language), mailed to the editors of the exchanges that read the source's region and to the
operators. A finding has no episode stamp of its own, so its key is the source and the
finding (``watchdog:stale:karjalainen``): mailed once; when the finding has cleared its row
is forgotten, so a finding that comes back is mailed again; one still standing after
:data:`WATCHDOG_REMIND_AFTER` is mailed once more as a reminder. A watchdog that cannot run
(an unreadable glossary) is logged and leaves the other alerts and its own rows alone.

With no operators configured the alert is logged (once) instead, so it is never silent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

from newsexchange.config import Config
from newsexchange.db import Database, Session
from newsexchange.db.queries import alerts as queries
from newsexchange.digest.states import DigestState as S
from newsexchange.errors import NewsExchangeError
from newsexchange.ingest.watchdog import Finding, watch_sources
from newsexchange.mail import OutgoingMessage, get_mailer
from newsexchange.mail.headers import header_text

__all__ = [
    "PROVIDER_DOWN_FOR",
    "SOURCE_FAILING_FOR",
    "WATCHDOG_REMIND_AFTER",
    "AlertReport",
    "Condition",
    "DigestState",
    "ProviderState",
    "SourceState",
    "check_alerts",
    "find_conditions",
    "watchdog_conditions",
]

log = logging.getLogger(__name__)

SOURCE_FAILING_FOR = timedelta(days=1)
PROVIDER_DOWN_FOR = timedelta(hours=1)
#: A watchdog finding still standing this long after its mail is mailed again.
WATCHDOG_REMIND_AFTER = timedelta(days=30)
#: The prefix of the watchdog's alert keys (``Finding.key``).
WATCHDOG = "watchdog:"


@dataclass(frozen=True)
class Condition:
    """One alert-worthy situation: ``key`` identifies it (and its episode) for once-only."""

    key: str
    subject: str
    body: str
    #: Who gets it; empty: the operators.
    to: tuple[str, ...] = ()


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
    return [
        *(c for src in sources if (c := _source_failing(now, src))),
        *(c for prov in providers if (c := _provider_down(now, prov))),
        *(c for d in digests if (c := _digest_stuck(now, d))),
    ]


def _source_failing(now: datetime, src: SourceState) -> Condition | None:
    if not src.failing_since or now - src.failing_since < SOURCE_FAILING_FOR:
        return None
    return Condition(
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


def _provider_down(now: datetime, prov: ProviderState) -> Condition | None:
    if not prov.down_since or now - prov.down_since < PROVIDER_DOWN_FOR:
        return None
    return Condition(
        key=f"provider-down:{prov.provider}:{prov.down_since.isoformat()}",
        subject=(
            f"Translation provider {prov.provider} has been down for {_ago(now, prov.down_since)}"
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


def _digest_stuck(now: datetime, d: DigestState) -> Condition | None:
    """A digest held, or still awaiting approval past its deadline."""
    label = f"digest #{d.id} ({d.exchange_id}, period {d.period_start})"
    if d.state == S.HELD:
        return Condition(
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
    if (
        d.state == S.AWAITING_APPROVAL
        and d.approval_requested_at is not None
        and now - d.approval_requested_at >= timedelta(hours=d.deadline_hours)
    ):
        return Condition(
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
    return None


_FINDING_SUBJECT = {
    "off-region": "Source {id} does not seem to write about {region}",
    "stale": "Source {id} has published nothing new for {days} days",
    "language": "Source {id} does not publish in {language}",
}


def watchdog_conditions(config: Config, findings: list[Finding]) -> list[Condition]:
    """The watchdog's findings as alerts, to the editors of each exchange reading the
    source's region and to the operators (pure)."""
    by_id = {s.id: s for s in config.sources}
    out = []
    for f in findings:
        src = by_id.get(f.source_id)
        if not f.alerted or src is None:
            continue
        editors = [e for ex in config.exchanges if src.region in ex.from_ for e in ex.editors]
        to = tuple(dict.fromkeys([*editors, *config.mail.operators]))
        subject = _FINDING_SUBJECT[f.kind].format(
            id=src.id,
            region=config.regions[src.region].name if src.region in config.regions else src.region,
            days=f.evidence.get("days", src.stale_days),
            language=src.language,
        )
        out.append(
            Condition(
                key=f.key,
                subject=subject,
                body=(
                    f"The source watchdog, reading what {src.id} ({src.url}) published:\n\n"
                    f"  {f.message}\n\n"
                    "If the address in feeds.yaml points at the wrong feed (another region's "
                    "topic, an abandoned page), correct it; if the source is right, its "
                    "stale_days or its region's places: in feeds.yaml may need a change. "
                    "newsexchange check --sources shows every finding. This is mailed once; "
                    "again if it clears and comes back, or still stands in "
                    f"{WATCHDOG_REMIND_AFTER.days} days."
                ),
                to=to,
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
            for r in queries.failing_sources(s)
            if r.id in configured
        ]
        latest: dict[str, ProviderState] = {}
        for p in queries.providers_down(s):
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
            for d in queries.digests_in(s, (S.HELD, S.AWAITING_APPROVAL))
        ]
    return sources, list(latest.values()), digests


def _message(config: Config, cond: Condition, now: datetime) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = header_text(config.mail.from_)
    msg["To"] = ", ".join(cond.to or config.mail.operators)
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


def _watchdog(db: Database, config: Config, now: datetime) -> list[Condition] | None:
    """The watchdog's alerts now; None when it could not run (logged, nothing cleared)."""
    try:
        return watchdog_conditions(config, watch_sources(db, config, now=now).findings)
    except NewsExchangeError as exc:
        log.error("source watchdog could not run", extra={"error": str(exc)})
        return None


def check_alerts(db: Database, config: Config, *, now: datetime) -> AlertReport:
    """Mail each new alert condition to the operators, once (the step the service runs)."""
    report = AlertReport()
    conditions = find_conditions(now, *_read_state(db, config))
    watchdog = _watchdog(db, config, now)
    conditions += watchdog or []
    report.checked = len(conditions)
    with db.session() as s:
        known = queries.known_keys(s, [c.key for c in conditions if not c.key.startswith(WATCHDOG)])
        sent = queries.sent_with_prefix(s, WATCHDOG)
        if watchdog is not None:
            # A finding that cleared is forgotten, so that it is mailed again if it returns.
            current = {c.key for c in watchdog}
            queries.forget_alerts(s, [k for k in sent if k not in current])
    for key, sent_at in sent.items():
        if now - sent_at < WATCHDOG_REMIND_AFTER:
            known.add(key)  # older: mailed again, as a reminder
    new = [c for c in conditions if c.key not in known]
    report.new = len(new)
    if not new:
        return report
    mailer = get_mailer(config) if any(c.to or config.mail.operators for c in new) else None
    try:
        for cond in new:
            rcpts = list(cond.to or config.mail.operators)
            if mailer is not None and rcpts:
                msg = _message(config, cond, now)
                outs = [OutgoingMessage(msg, rcpt) for rcpt in rcpts]
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
                    "recipients": len(rcpts),
                },
            )
            with db.session() as s:
                queries.record_alert(s, cond.key, sent_at=now, message=cond.subject)
                _mark_alerted(s, cond.key, now)
            report.alerts.append(cond.key)
    finally:
        if mailer is not None:
            mailer.close()
    return report


def _mark_alerted(session: Session, key: str, now: datetime) -> None:
    """Note on the source or provider of ``key`` that its failure was alerted."""
    kind, _, rest = key.partition(":")
    name = rest.split(":", 1)[0]
    if kind == "source-failing":
        queries.mark_source_alerted(session, name, now)
    elif kind == "provider-down":
        queries.mark_provider_alerted(session, name, now)
