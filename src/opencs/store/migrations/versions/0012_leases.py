"""leases of singleton duties with fencing tokens (issue 13 item 2)

Revision ID: 0012_leases
Revises: 0011_events
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_leases"
down_revision = "0011_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("duty", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("token", sa.Integer(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.Column("passed", sa.Float(), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("acquired", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("duty"),
    )


def downgrade() -> None:
    op.drop_table("leases")
