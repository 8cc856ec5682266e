"""console sessions and failed sign-ins in the store, shared by every API process on the database

Revision ID: 0018_console_state
Revises: 0017_cluster_list_index

Two new tables; the console kept both in each process's memory before, so there is nothing to carry
over (everyone signed in before the upgrade signs in again, as after any restart of old versions).
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_console_state"
down_revision = "0017_cluster_list_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("sid_hash", sa.String(length=64), nullable=False),
        sa.Column("access_key_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("stamp", sa.String(length=64), nullable=False),
        sa.Column("must_reset", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("sid_hash"),
    )
    op.create_index("ix_console_sessions_expires", "console_sessions", ["expires"])
    op.create_table(
        "failed_signins",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_failed_signins_at", "failed_signins", ["at"])
    op.create_index("ix_failed_signins_key_hash_at", "failed_signins", ["key_hash", "at"])


def downgrade() -> None:
    op.drop_table("failed_signins")
    op.drop_table("console_sessions")
