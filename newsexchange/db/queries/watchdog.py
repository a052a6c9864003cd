"""What the source watchdog reads (``ingest/watchdog.py``): each source's fetch state and
newest item, and each source's most recent items — two grouped statements for all sources,
never one per source (there may be a thousand), both served by the index
``ix_items_source_first_seen`` (migration 0006). ``benchmarks/watchdog.py`` measures them.

Also the questions ``check --sources`` asks before it reads anything: does the database
exist, and is its schema current (``check`` must not create or migrate a database)?
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from newsexchange.db.engine import HEAD_REVISION, MIGRATIONS_DIR, Database
from newsexchange.db.tables import Item, Source

__all__ = [
    "SUMMARY_CHARS",
    "database_problem",
    "head_revision",
    "recent_items",
    "source_activity",
]

#: How much of an item's summary the watchdog reads: a place is named in the title or the
#: lead, and a thousand sources × 50 full texts (1,500 characters each) would be 75 MB.
SUMMARY_CHARS = 600


def source_activity(s: Session) -> dict[str, dict[str, Any]]:
    """Per stored source: ``watched_since``, ``failing_since``, ``last_success_at`` and
    ``last_new_at`` (its newest item's ``first_seen_at``, None without items)."""
    newest = (
        select(Item.source_id, func.max(Item.first_seen_at).label("last_new_at"))
        .group_by(Item.source_id)
        .subquery()
    )
    q = select(
        Source.id,
        Source.watched_since,
        Source.failing_since,
        Source.last_success_at,
        newest.c.last_new_at,
    ).outerjoin(newest, newest.c.source_id == Source.id)
    out: dict[str, dict[str, Any]] = {}
    for row in s.execute(q):
        # MAX() keeps its argument's type, so last_new_at comes back an aware UTC datetime.
        out[row.id] = {
            "watched_since": row.watched_since,
            "failing_since": row.failing_since,
            "last_success_at": row.last_success_at,
            "last_new_at": row.last_new_at,
        }
    return out


def recent_items(
    s: Session, *, since: datetime, per_source: int
) -> list[tuple[str, str, str, str | None, bool]]:
    """Each source's newest ``per_source`` items first seen since ``since``, newest first:
    ``(source_id, title, summary start, detected_language, language_mismatch)``."""
    ranked = (
        select(
            Item.source_id,
            Item.title,
            func.substr(Item.summary_text, 1, SUMMARY_CHARS).label("summary"),
            Item.detected_language,
            Item.language_mismatch,
            func.row_number()
            .over(
                partition_by=Item.source_id,
                order_by=(Item.first_seen_at.desc(), Item.id.desc()),
            )
            .label("n"),
        )
        .where(Item.first_seen_at >= since)
        .subquery()
    )
    q = (
        select(
            ranked.c.source_id,
            ranked.c.title,
            ranked.c.summary,
            ranked.c.detected_language,
            ranked.c.language_mismatch,
        )
        .where(ranked.c.n <= per_source)
        .order_by(ranked.c.source_id, ranked.c.n)
    )
    return [
        (
            r.source_id,
            r.title or "",
            r.summary or "",
            r.detected_language,
            bool(r.language_mismatch),
        )
        for r in s.execute(q)
    ]


def head_revision() -> str:
    """The newest migration this code knows (what a current database is at)."""
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    return head or ""


def database_problem(url: str, *, busy_timeout: float = 30.0) -> str | None:
    """Why the database at ``url`` cannot be read as it is (None: it can): absent, not
    reachable, never migrated, or behind this code. Creates and migrates nothing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if path in ("", ":memory:") or path.startswith("file:"):
            return None if path.startswith("file:") else "an in-memory database holds nothing"
        if not Path(path).exists():
            return (
                f"the database {path} does not exist: nothing was fetched yet "
                "(newsexchange fetch, or the service, creates it)"
            )
    db = Database(url, run_migrations=False, busy_timeout=busy_timeout)
    try:
        with db.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return "the database has no schema yet (run newsexchange migrate)"
            current = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except Exception as exc:  # whatever the driver raises, the answer is "cannot read it"
        return f"the database cannot be read: {type(exc).__name__}: {exc}".splitlines()[0]
    finally:
        db.dispose()
    head = HEAD_REVISION  # not head_revision(): a current schema is told without Alembic
    if current != head:
        return (
            f"the database schema is at revision {current}, this version needs {head} "
            "(run newsexchange migrate)"
        )
    return None
