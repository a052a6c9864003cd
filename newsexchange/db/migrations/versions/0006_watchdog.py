"""source watchdog: when a source was first fetched; items indexed by source and first sight

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import newsexchange.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("watched_since", newsexchange.db.UTCDateTime(), nullable=True)
        )
    # A source fetched before this migration has been watched at least since its first item;
    # one without items since its last success (later than the truth: never flagged too early).
    op.execute(
        "UPDATE sources SET watched_since = COALESCE("
        "(SELECT MIN(items.first_seen_at) FROM items WHERE items.source_id = sources.id), "
        "last_success_at)"
    )
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_items_source_first_seen", ["source_id", "first_seen_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index("ix_items_source_first_seen")
    with op.batch_alter_table("sources", schema=None) as batch_op:
        batch_op.drop_column("watched_since")
