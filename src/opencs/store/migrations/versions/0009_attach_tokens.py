"""attach scripts: single-use join tokens of clusters (spec §6.10), kept as hashes

Revision ID: 0009_attach_tokens
Revises: 0008_signed_triggers
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_attach_tokens"
down_revision = "0008_signed_triggers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attach_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("cluster_id", sa.String(40), nullable=False, index=True),
        sa.Column("account_id", sa.String(32), nullable=False, index=True),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("expires", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
        sa.Column("instance_id", sa.String(40), nullable=False, server_default=""),
        sa.Column("task_id", sa.String(40), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("attach_tokens")
