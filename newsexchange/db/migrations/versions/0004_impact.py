"""impact: story clicks and pick-ups

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 03:55:35.213272
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import newsexchange.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "story_clicks",
        sa.Column("digest_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=True),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["digest_id"], ["digests.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("digest_id", "position"),
    )
    op.create_table(
        "pickups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest_id", sa.Integer(), nullable=False),
        sa.Column("story_item_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("found_at", newsexchange.db.UTCDateTime(), nullable=False),
        sa.Column("decided_at", newsexchange.db.UTCDateTime(), nullable=True),
        sa.Column("decided_by", sa.String(length=320), nullable=True),
        sa.ForeignKeyConstraint(["digest_id"], ["digests.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("digest_id", "story_item_id", "item_id"),
    )
    with op.batch_alter_table("pickups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pickups_digest_id"), ["digest_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_pickups_item_id"), ["item_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pickups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pickups_item_id"))
        batch_op.drop_index(batch_op.f("ix_pickups_digest_id"))

    op.drop_table("pickups")
    op.drop_table("story_clicks")
