"""What the operator alerts read (failing sources, providers down, digests held or overdue)
and the ``alerts`` table that keeps each alert to one mail."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from newsexchange.db.tables import Alert, Digest, ProviderUsage, Source

__all__ = [
    "digests_in",
    "failing_sources",
    "forget_alerts",
    "known_keys",
    "mark_provider_alerted",
    "mark_source_alerted",
    "providers_down",
    "record_alert",
    "sent_with_prefix",
]


def failing_sources(s: Session) -> list[Source]:
    """The sources whose fetches are failing now."""
    return list(s.scalars(select(Source).where(Source.failing_since.is_not(None))))


def providers_down(s: Session) -> list[ProviderUsage]:
    """The usage rows of providers marked down, oldest day first (so the last row of each
    provider is its latest)."""
    return list(
        s.scalars(
            select(ProviderUsage)
            .where(ProviderUsage.down_since.is_not(None))
            .order_by(ProviderUsage.day)
        )
    )


def digests_in(s: Session, states: Collection[str]) -> list[Digest]:
    return list(s.scalars(select(Digest).where(Digest.state.in_(tuple(states)))))


def known_keys(s: Session, keys: Collection[str]) -> set[str]:
    """Which of ``keys`` were alerted already."""
    return set(s.scalars(select(Alert.key).where(Alert.key.in_(list(keys)))))


def sent_with_prefix(s: Session, prefix: str) -> dict[str, datetime]:
    """The alerts whose key starts with ``prefix``, and when each was mailed."""
    q = select(Alert.key, Alert.sent_at).where(Alert.key.startswith(prefix, autoescape=True))
    return {key: sent_at for key, sent_at in s.execute(q)}


def forget_alerts(s: Session, keys: Collection[str]) -> None:
    """Delete the alerts ``keys`` (their condition cleared: mailed again if it returns)."""
    if keys:
        s.execute(delete(Alert).where(Alert.key.in_(list(keys))))


def record_alert(s: Session, key: str, *, sent_at: datetime, message: str) -> None:
    s.merge(Alert(key=key, sent_at=sent_at, message=message))


def mark_source_alerted(s: Session, source_id: str, now: datetime) -> None:
    src = s.get(Source, source_id)
    if src is not None:
        src.alerted_at = now


def mark_provider_alerted(s: Session, provider: str, now: datetime) -> None:
    """Mark every usage row of ``provider`` that is down as alerted."""
    for p in s.scalars(select(ProviderUsage).where(ProviderUsage.provider == provider)):
        if p.down_since is not None:
            p.alerted_at = now
