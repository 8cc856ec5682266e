"""alert rules: scaling rules attached to services, rendered as Prometheus rules (issue 12)

Revision ID: 0010_alert_rules
Revises: 0009_attach_tokens
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_alert_rules"
down_revision = "0009_attach_tokens"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("rule_id", sa.String(length=40), nullable=False),
        sa.Column("cluster_id", sa.String(length=40), nullable=False),
        sa.Column("project", sa.String(length=64), nullable=False),
        sa.Column("service", sa.String(length=128), nullable=False),
        sa.Column("trigger_id", sa.String(length=40), nullable=False),
        sa.Column("secret_enc", sa.Text(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("rule_id"),
    )
    with op.batch_alter_table("alert_rules") as b:
        b.create_index(b.f("ix_alert_rules_cluster_id"), ["cluster_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("alert_rules") as b:
        b.drop_index(b.f("ix_alert_rules_cluster_id"))
    op.drop_table("alert_rules")
