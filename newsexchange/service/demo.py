"""``service.demo``: the offline demo — the bundled samples loaded, and the period in
progress built as soon as its items are in (docs/operations.md)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from newsexchange.config import Config
from newsexchange.db import Database
from newsexchange.delivery.lists import import_rows, parse_csv
from newsexchange.digest import build_due
from newsexchange.translate.memory import import_memory

__all__ = ["prepare_demo", "step_demo"]

log = logging.getLogger("newsexchange.service")


def prepare_demo(config: Config, db: Database, *, now: datetime) -> dict[str, Any]:
    """``service.demo``: make the bundled samples usable offline (idempotent).

    - every list with a ``file:`` is imported from it (the sample CSVs under lists/; an
      import merges, so a restart changes nothing), so the approved demo digest has
      recipients;
    - the bundled translation memory ``samples/translation-memory.yaml`` (beside
      feeds.yaml) is imported, so the sample items translate without any provider.
    """
    out: dict[str, Any] = {"lists_imported": [], "memory_entries": 0}
    for list_id, lst in config.lists.items():
        if not lst.file:
            continue
        path = config.resolve(lst.file)
        if not path.exists():
            continue
        with db.session() as s:
            parsed = parse_csv(
                path.read_text(encoding="utf-8"), list_id=list_id, known_lists=config.lists
            )
            import_rows(s, parsed, list_id=list_id, now=now)
        out["lists_imported"].append(list_id)
    tm_file = config.resolve("samples/translation-memory.yaml")
    if tm_file.exists():
        with db.session() as s:
            out["memory_entries"] = import_memory(s, tm_file, now=now)
    return out


def step_demo(config: Config, db: Database, now: datetime, arg: str | None) -> dict[str, Any]:
    """``service.demo`` only: build the period *in progress*, so a first run of the offline
    demo shows a whole cycle without waiting for the 1st or the 16th (docs/operations.md)."""
    if not config.service.demo:
        return {"skipped": "service.demo is off"}
    report = build_due(config, db, now=now, exchange_id=arg, which="current")
    if report.built:
        log.info(
            "demo: digests built; approve them with the link in the approval mail "
            "(var/outbox/nx-approval.*.eml) or with: newsexchange approve ID",
            extra={"digests": report.ids},
        )
    return report.to_json()
