"""events of clusters and projects (issue 12 item 4)

Revision ID: 0011_events
Revises: 0010_alert_rules
"""

import sqlalchemy as sa
from alembic import op

revision = "0011_events"
down_revision = "0010_alert_rules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("event_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cluster_id", sa.String(length=40), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    with op.batch_alter_table("events") as b:
        b.create_index(b.f("ix_events_cluster_id"), ["cluster_id"], unique=False)
        b.create_index(b.f("ix_events_at"), ["at"], unique=False)


def downgrade() -> None:
    op.drop_table("events")
