"""events: an item's start, end, time zone and place; when its full text was fetched

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 07:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import newsexchange.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.alter_column("event_at", new_column_name="event_start")
        batch_op.add_column(sa.Column("event_end", newsexchange.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("event_timezone", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("all_day", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch_op.add_column(sa.Column("place_venue", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("place_town", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("fulltext_at", newsexchange.db.UTCDateTime(), nullable=True))
    # A batch cannot index a column it renames: SQLite's copy-and-move takes the index after.
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_items_event_start"), ["event_start"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_items_event_start"))
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_column("fulltext_at")
        batch_op.drop_column("place_town")
        batch_op.drop_column("place_venue")
        batch_op.drop_column("all_day")
        batch_op.drop_column("event_timezone")
        batch_op.drop_column("event_end")
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.alter_column("event_start", new_column_name="event_at")
