"""scale out: the scheduler's job store, the shared rate limit, the work queue (PostgreSQL)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 03:00:00.000000

- ``apscheduler_jobs`` is created here, exactly as APScheduler's SQLAlchemyJobStore would
  create it on its first start (where it already exists, from a scheduler that ran before
  this migration, it is left as it is), so processes starting together never race on that
  CREATE and ``alembic check`` knows the table.
- ``rate_limits``: one row per mail backend, shared by every sender (common/pacing.py).
- On PostgreSQL, procrastinate's schema (its tables, types, functions and triggers, as the
  installed procrastinate ships it). Its later versions ship their own SQL migrations: a
  newsexchange release that raises procrastinate's major version adds a migration here that
  applies them (docs/operations.md, "The work queue").
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import newsexchange.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    bind = op.get_bind()
    if not sa.inspect(bind).has_table("apscheduler_jobs"):
        op.create_table(
            "apscheduler_jobs",
            sa.Column("id", sa.Unicode(length=191), nullable=False),
            sa.Column("next_run_time", sa.Float(precision=25), nullable=True),
            sa.Column("job_state", sa.LargeBinary(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        with op.batch_alter_table("apscheduler_jobs", schema=None) as batch_op:
            batch_op.create_index(
                batch_op.f("ix_apscheduler_jobs_next_run_time"), ["next_run_time"], unique=False
            )
    op.create_table(
        "rate_limits",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("next_free", newsexchange.db.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    if bind.dialect.name == "postgresql":
        exists = bind.exec_driver_sql("SELECT to_regclass('procrastinate_jobs')").scalar()
        if exists is None:
            try:
                from procrastinate.schema import SchemaManager
            except ImportError as exc:  # installed without the extra PostgreSQL needs
                raise RuntimeError(
                    "PostgreSQL needs the work queue: install newsexchange with its postgres "
                    "extra (pip install 'newsexchange[postgres]')"
                ) from exc

            # On the driver's own connection (the same one, in the same transaction): the
            # schema has literal % signs that a parameter-style pass would misread.
            with bind.connection.dbapi_connection.cursor() as cur:  # type: ignore[union-attr]
                cur.execute(SchemaManager.get_schema())


def downgrade() -> None:
    op.drop_table("rate_limits")
    # apscheduler_jobs and procrastinate's schema are kept: a scheduler or a worker of the
    # older release still uses them.
