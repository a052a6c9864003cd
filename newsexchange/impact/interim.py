"""STAND-IN, replaced at merge: the data of the impact pages until ``impact/report.py``
(``digest_impact``, ``period_impact``) and ``impact/pickups.py`` (``confirm``, ``reject``)
land from the helper who builds them. Same signatures and the same shapes (issue 14's JSON
for one digest; one row per digest for a period), so that at merge ``web/impact.py``
imports those instead and this module and ``db/queries/impact_pages.py`` are deleted.

What was assumed of them (and is all the pages read):

- ``digest_impact(session, config, digest_id) -> dict``: ``digest, exchange, sent,
  delivered, bounced, complained, unsubscribed, clicks, stories: [{position, item_id,
  title, clicks, pickups: [{item_id, source, title, url, published_at, score, status}]}]``;
  the pages also read a pick-up's ``id`` (to confirm it) and ``evidence`` when present.
- ``period_impact(session, config, exchange_id, date_from, date_to) -> list[dict]``: per
  sent digest ``digest, period_start, period_end, exchange, stories, pickups_confirmed,
  pickups_suggested, clicks, sent, delivered`` (dates as ISO strings).
- ``confirm(session, pickup_id, editor, now)`` / ``reject(...)``: set the status, who and
  when; a pick-up that does not exist raises ``LookupError``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from newsexchange.config import Config
from newsexchange.db import Digest, Pickup, Session
from newsexchange.db.queries import approvals as approval_queries
from newsexchange.db.queries import impact_pages as queries

__all__ = ["confirm", "digest_impact", "period_impact", "reject"]


def _mail_counts(session: Session, digest: Digest) -> dict[str, int]:
    by_status = approval_queries.delivery_counts(session, digest.id)
    emails = approval_queries.delivery_emails(session, digest.id)
    since = digest.approved_at or digest.created_at
    sups = approval_queries.suppressions_since(session, since)

    def hit(reason: str) -> int:
        return len({x.email.lower() for x in sups if x.reason == reason} & emails)

    sent = by_status.get("sent", 0)
    bounced = hit("bounced")
    return {
        "sent": sent,
        "delivered": max(sent - bounced, 0),
        "bounced": bounced,
        "complained": hit("complained"),
        "unsubscribed": hit("unsubscribed"),
    }


def digest_impact(session: Session, config: Config, digest_id: int) -> dict[str, Any]:
    digest = session.get(Digest, digest_id)
    if digest is None:
        raise LookupError(f"no digest {digest_id}")
    clicks = {c.position: c.clicks for c in queries.story_clicks(session, digest_id)}
    pickups: dict[int, list[dict[str, Any]]] = {}
    for p, item in queries.pickups_with_items(session, digest_id):
        pickups.setdefault(p.story_item_id, []).append(
            {
                "id": p.id,
                "item_id": item.id,
                "source": item.source_id,
                "title": item.title,
                "url": item.link or "",
                "published_at": item.published_at.isoformat(),
                "score": float(p.score),
                "status": p.status,
                "evidence": p.evidence or {},
            }
        )
    stories = [
        {
            "position": entry.position,
            "item_id": item.id,
            "title": item.title,
            "clicks": clicks.get(entry.position, 0),
            "pickups": pickups.get(item.id, []),
        }
        for entry, item in queries.digest_stories(session, digest_id)
    ]
    return {
        "digest": digest.id,
        "exchange": digest.exchange_id,
        **_mail_counts(session, digest),
        "clicks": sum(clicks.values()),
        "stories": stories,
    }


def period_impact(
    session: Session, config: Config, exchange_id: str, date_from: date, date_to: date
) -> list[dict[str, Any]]:
    rows = []
    for digest in queries.sent_digests_between(session, exchange_id, date_from, date_to):
        one = digest_impact(session, config, digest.id)
        found = [p for s in one["stories"] for p in s["pickups"]]
        rows.append(
            {
                "digest": digest.id,
                "period_start": digest.period_start.isoformat(),
                "period_end": digest.period_end.isoformat(),
                "exchange": exchange_id,
                "stories": len(one["stories"]),
                "pickups_confirmed": sum(p["status"] == "confirmed" for p in found),
                "pickups_suggested": sum(p["status"] == "suggested" for p in found),
                "clicks": one["clicks"],
                "sent": one["sent"],
                "delivered": one["delivered"],
            }
        )
    return rows


def _decide(session: Session, pickup_id: int, editor: str, now: datetime, status: str) -> None:
    pickup = session.get(Pickup, pickup_id)
    if pickup is None:
        raise LookupError(f"no pick-up {pickup_id}")
    pickup.status = status
    pickup.decided_by = editor
    pickup.decided_at = now
    session.flush()


def confirm(session: Session, pickup_id: int, editor: str, now: datetime) -> None:
    _decide(session, pickup_id, editor, now, "confirmed")


def reject(session: Session, pickup_id: int, editor: str, now: datetime) -> None:
    _decide(session, pickup_id, editor, now, "rejected")
