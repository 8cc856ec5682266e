"""task chains: a task queued behind another (`after`) and the task that supersedes one (`superseded_by`)

Revision ID: 0013_task_chains
Revises: 0012_leases

A mutation of a project or cluster while its task runs is queued behind that task instead of
refused; the running task stops at its next stage boundary (issue 13 item 3).
"""

import sqlalchemy as sa
from alembic import op

revision = "0013_task_chains"
down_revision = "0012_leases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as b:
        b.add_column(sa.Column("after", sa.String(length=40), nullable=True))
        b.add_column(sa.Column("superseded_by", sa.String(length=40), nullable=True))
        b.create_index(b.f("ix_tasks_after"), ["after"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tasks") as b:
        b.drop_index(b.f("ix_tasks_after"))
        b.drop_column("superseded_by")
        b.drop_column("after")
