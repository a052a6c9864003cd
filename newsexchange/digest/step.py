"""The digest step as the service runs it: build each exchange's period that is due, once.

Which periods those are is decided by :mod:`newsexchange.digest.periods` (``due_periods``,
``current_period``, ``skip_reason``, all pure); this module only reads what they need (does
the digest exist, how many items has the period) and calls
:func:`newsexchange.digest.build.build_digest`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from newsexchange.config import Config, ExchangeSettings
from newsexchange.db import Database
from newsexchange.db.queries import digests as queries
from newsexchange.digest.build import BuildReport, build_digest
from newsexchange.digest.periods import (
    Period,
    current_period,
    due_periods,
    event_window,
    skip_reason,
)

__all__ = ["DueReport", "build_due"]

Which = Literal["due", "current"]


@dataclass
class DueReport:
    """The digests a :func:`build_due` run built, and the periods it left alone (why)."""

    built: list[BuildReport] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def ids(self) -> list[int]:
        return [r.id for r in self.built]

    def to_json(self) -> dict[str, Any]:
        return {
            "built": len(self.built),
            "digests": [r.to_json() for r in self.built],
            "skipped": self.skipped,
        }


def _todo(exchange: ExchangeSettings, config: Config, now: datetime, which: Which) -> list[Period]:
    if which == "current":
        return [current_period(exchange, config, now)]
    return list(due_periods(exchange, config, now))


def build_due(
    config: Config,
    db: Database,
    *,
    now: datetime,
    exchange_id: str | None = None,
    which: Which = "due",
) -> DueReport:
    """Build each exchange's (or ``exchange_id``'s) ``due`` period — the latest completed
    one — or, for the demo, the ``current`` one in progress, unless
    :func:`~newsexchange.digest.periods.skip_reason` says to leave it alone."""
    exchanges = [config.exchange(exchange_id)] if exchange_id else list(config.exchanges)
    report = DueReport()
    for ex in exchanges:
        for period in _todo(ex, config, now, which):
            with db.session() as s:
                state = queries.digest_state(s, ex.id, period.start)
                _, events_until = event_window(ex, config, period)
                items = queries.count_period_items(
                    s, ex.from_, period.starts_at, period.ends_at, events_until=events_until
                )
            why = skip_reason(state, items, in_progress=which == "current")
            if why is not None:
                report.skipped.append(
                    {"exchange": ex.id, "period": period.start.isoformat(), "reason": why}
                )
            else:
                report.built.append(
                    build_digest(db, config, ex.id, period_start=period.start, now=now)
                )
    return report
