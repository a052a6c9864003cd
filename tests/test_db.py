"""The schema: migrations match the models, times stay UTC, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from newsexchange.db import Base, Database, Source


def test_migrations_create_exactly_the_models(any_db_url: str) -> None:
    db = Database(any_db_url)
    try:
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], "models changed without a migration: run scripts/regen-initial-migration"
    finally:
        db.dispose()


def test_times_are_stored_in_utc_and_come_back_aware(any_db_url: str) -> None:
    db = Database(any_db_url)
    try:
        helsinki = timezone(timedelta(hours=2))
        with db.session() as s:
            s.add(
                Source(
                    id="a",
                    config_url="u",
                    url="u",
                    last_fetched_at=datetime(2026, 11, 1, 12, 0, tzinfo=helsinki),
                )
            )
        with db.session() as s:
            src = s.scalars(select(Source)).one()
            assert src.last_fetched_at == datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
            assert src.last_fetched_at.tzinfo is not None
    finally:
        db.dispose()


def test_naive_datetimes_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path}/x.db")
    try:
        with pytest.raises(Exception, match="naive datetime"), db.session() as s:
            s.add(Source(id="a", config_url="u", url="u", last_fetched_at=datetime(2026, 1, 1)))
            s.flush()
    finally:
        db.dispose()
