"""Which digest periods the service builds, and building them (the ``digest`` and ``demo``
jobs).

The decision of which period is worth building belongs to the digest step; until it has its
own (``digest/periods.py``), the service's rule lives here, reading through
:mod:`newsexchange.db.queries.jobs`.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

from newsexchange.config import Config
from newsexchange.db import Database
from newsexchange.db.queries import jobs as queries
from newsexchange.digest import build_digest, periods
from newsexchange.service.reports import report_json

__all__ = ["build_periods"]

log = logging.getLogger("newsexchange.service")


def build_periods(
    config: Config,
    db: Database,
    now: datetime,
    which: Literal["due", "current"],
    exchange_id: str | None,
) -> dict[str, Any]:
    """Build each exchange's ``due`` (latest completed) or ``current`` period, once.

    A period is built by the service once: when its digest exists already (in any state) it
    is left to the editors (``newsexchange digest build`` rebuilds by hand). A due period is
    built even when it has no item: the approvals step then tells the editors once that it has
    nothing to send and why, instead of asking them to approve it (digest/sendable.py). The
    period in progress (the demo) is built only when it has items.
    """
    exchanges = [config.exchange(exchange_id)] if exchange_id else list(config.exchanges)
    built: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for ex in exchanges:
        if which == "current":
            todo = [periods.current_period(ex, config, now)]
        else:
            todo = list(periods.due_periods(ex, config, now))
        for period in todo:
            with db.session() as s:
                state = queries.digest_state(s, ex.id, period.start)
                items = queries.items_published(
                    s, ex.from_, starts_at=period.starts_at, ends_at=period.ends_at
                )
            where = {"exchange": ex.id, "period": period.start.isoformat()}
            if state is not None:
                skipped.append({**where, "reason": f"already built ({state})"})
            elif not items and which == "current":
                skipped.append({**where, "reason": "no items in the period"})
            else:
                report = build_digest(db, config, ex.id, period_start=period.start, now=now)
                built.append(report_json(report))
    return {"built": len(built), "digests": built, "skipped": skipped}
