"""The impact report of a digest, and of an exchange over a period (docs/impact.md defines
each count). Read-only: the pick-ups are found by :func:`~newsexchange.impact.pickups.
find_pickups`, the clicks counted by the redirect; this module only adds them up.

:func:`digest_impact` is the object ``newsexchange impact ID --json`` prints (the issue's
shape, exactly); :func:`period_impact` one row per digest for a funder's report, and
:func:`write_period_csv` those rows as CSV.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TextIO

from newsexchange.config import Config
from newsexchange.db import Digest, Session
from newsexchange.db.queries import clicks as click_queries
from newsexchange.db.queries import impact as queries
from newsexchange.digest.content import shown_content
from newsexchange.errors import DigestNotFound

__all__ = [
    "PERIOD_COLUMNS",
    "delivery_counts",
    "digest_impact",
    "period_impact",
    "write_period_csv",
]

#: The columns of :func:`period_impact`'s rows, in CSV order.
PERIOD_COLUMNS = (
    "digest",
    "exchange",
    "period_start",
    "period_end",
    "sent_at",
    "stories",
    "sent",
    "delivered",
    "bounced",
    "complained",
    "unsubscribed",
    "clicks",
    "stories_picked_up",
    "pickups",
    "outlets",
)


def delivery_counts(session: Session, digest: Digest) -> dict[str, int]:
    """sent, delivered, bounced, complained, unsubscribed of one digest (docs/impact.md):

    - sent: deliveries the mail backend gave a final answer for (``sent`` or ``failed``);
      pending, retrying, claimed and suppressed rows are not sent.
    - bounced: of those, the ones that did not arrive: refused for good at sending (SMTP),
      failed by a SendGrid ``bounce``/``dropped`` event, or recorded as ``blocked`` by one.
    - delivered: sent − bounced.
    - complained / unsubscribed: addresses of this digest with a ``complained`` /
      ``unsubscribed`` suppression made after this digest reached them and before any later
      digest did (a complaint is put down to the last mail the address got). Suppressions
      carry no digest id (the schema has none), hence this attribution.
    """
    rows = queries.deliveries_of(session, digest.id)
    sent = bounced = 0
    got_at: dict[str, datetime] = {}
    for email, _list_id, status, sent_at, last_error in rows:
        if status not in ("sent", "failed"):
            continue
        sent += 1
        if status == "failed" or (last_error or "").startswith("blocked:"):
            bounced += 1
        if sent_at is not None:
            got_at[email.lower()] = sent_at
    complained = unsubscribed = 0
    if got_at:
        first = min(got_at.values())
        later = queries.later_sends(session, got_at.keys(), after=first)
        lists = {email.lower(): li for email, li, *_ in rows}
        for sup in queries.suppressions_of(session, got_at.keys(), ("complained", "unsubscribed")):
            email = sup.email.lower()
            at = got_at.get(email)
            if at is None or sup.created_at < at:
                continue
            if any(at < other <= sup.created_at for other in later.get(email, [])):
                continue  # a later digest reached the address before it complained
            if sup.reason == "unsubscribed" and sup.list_id not in (None, lists.get(email)):
                continue  # left another list
            if sup.reason == "complained":
                complained += 1
            else:
                unsubscribed += 1
    return {
        "sent": sent,
        "delivered": sent - bounced,
        "bounced": bounced,
        "complained": complained,
        "unsubscribed": unsubscribed,
    }


def _iso(at: datetime | None) -> str | None:
    return at.astimezone(UTC).isoformat() if at is not None else None


def digest_impact(session: Session, config: Config, digest_id: int) -> dict[str, Any]:
    """The impact of one digest in the issue's JSON shape: counts, clicks, and per story
    (as the digest carried it) its clicks and every pick-up with its status."""
    digest = queries.digest_by_id(session, digest_id)
    if digest is None:
        raise DigestNotFound(digest_id)
    content = shown_content(session, config, digest)
    clicks = click_queries.clicks_of(session, digest.id)
    by_story: dict[int, list[dict[str, Any]]] = {}
    for p, item in queries.pickups_of(session, [digest.id]):
        by_story.setdefault(p.story_item_id, []).append(
            {
                "item_id": item.id,
                "source": item.source_id,
                "title": item.title,
                "url": item.link,
                "published_at": _iso(item.published_at),
                "score": float(p.score),
                "status": p.status,
                # beyond the shape: what an editor confirms or rejects by
                "id": p.id,
                "evidence": p.evidence or {},
            }
        )
    stories = [
        {
            "position": int(e["position"]),
            "item_id": int(e["item_id"]),
            "title": str(e.get("title") or ""),
            "clicks": clicks.get(int(e["position"]), 0),
            "pickups": by_story.get(int(e["item_id"]), []),
        }
        for e in sorted(content.get("items", []), key=lambda e: int(e["position"]))
    ]
    return {
        "digest": digest.id,
        "exchange": digest.exchange_id,
        **delivery_counts(session, digest),
        "clicks": click_queries.total_clicks(session, digest.id),
        "stories": stories,
    }


def period_impact(
    session: Session, config: Config, exchange_id: str, date_from: date, date_to: date
) -> list[dict[str, Any]]:
    """One row per digest of ``exchange_id`` sent from ``date_from`` to ``date_to``
    (inclusive, days in the exchange's time zone), with :data:`PERIOD_COLUMNS`. Only
    confirmed pick-ups count here: a suggestion is not yet a result to report.

    Raises :class:`~newsexchange.errors.ConfigError` for an unknown exchange."""
    exchange = config.exchange(exchange_id)
    tz = config.exchange_tz(exchange)
    start = datetime.combine(date_from, time(), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(date_to + timedelta(days=1), time(), tzinfo=tz).astimezone(UTC)
    digests = queries.exchange_digests_sent(session, exchange.id, start=start, end=end)
    confirmed: dict[int, list[tuple[int, str]]] = {}
    suggested: dict[int, int] = {}
    for p, item in queries.pickups_of(
        session, [d.id for d in digests], statuses=("confirmed", "suggested")
    ):
        if p.status == "confirmed":
            confirmed.setdefault(p.digest_id, []).append((p.story_item_id, item.source_id))
        else:
            suggested[p.digest_id] = suggested.get(p.digest_id, 0) + 1
    rows = []
    for d in digests:
        found = confirmed.get(d.id, [])
        content = shown_content(session, config, d)
        rows.append(
            {
                "digest": d.id,
                "exchange": d.exchange_id,
                "period_start": d.period_start.isoformat(),
                "period_end": d.period_end.isoformat(),
                "sent_at": _iso(d.sent_at),
                "stories": len(content.get("items", [])),
                **delivery_counts(session, d),
                "clicks": click_queries.total_clicks(session, d.id),
                "stories_picked_up": len({story for story, _ in found}),
                "pickups": len(found),
                "outlets": sorted({source for _, source in found}),
                # not in the CSV: suggestions are not results yet (the impact page shows
                # how many wait for an editor)
                "pickups_suggested": suggested.get(d.id, 0),
            }
        )
    return rows


def write_period_csv(rows: Sequence[dict[str, Any]], out: TextIO) -> None:
    """:func:`period_impact`'s rows as CSV with a header (outlets joined by ``;``)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(PERIOD_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                ";".join(row[c]) if c == "outlets" else ("" if row[c] is None else row[c])
                for c in PERIOD_COLUMNS
            ]
        )
