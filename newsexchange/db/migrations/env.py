"""Alembic environment: migrations run on start through ``newsexchange.db.migrate``.

By hand: ``alembic -c newsexchange/db/migrations/alembic.ini -x url=sqlite:///var/newsexchange.db upgrade head``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from newsexchange.db.engine import include_name
from newsexchange.db.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("pass -x url=DATABASE_URL")
    engine = create_engine(url)
    with engine.begin() as conn:
        _run(conn)


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        include_name=include_name,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline mode is not supported; run against a database")
run_migrations_online()
