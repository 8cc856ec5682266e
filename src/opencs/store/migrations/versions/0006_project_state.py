"""project state: the untyped projects.extra dict becomes projects.state (opencs.store.project_state)

Revision ID: 0006
Revises: 0005_cluster_names

Existing rows are carried over: every key ProjectState knows is copied from extra into state (the
model ignores keys it does not know when it reads the column). Downgrade copies it back.
"""

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005_cluster_names"
branch_labels = None
depends_on = None

KEYS = ("scale", "stopped", "images", "warnings", "last_error", "update_method", "previous_environment",
        "previous_images", "previous_latest_image", "blue_green", "blue_green_last")


def _load(value: Any) -> dict[str, Any]:
    if isinstance(value, str):  # SQLite hands JSON back as text through a plain select
        value = json.loads(value or "null")
    return dict(value or {})


def upgrade() -> None:
    op.add_column("projects", sa.Column("state", sa.JSON(), nullable=True))
    projects = sa.table("projects", sa.column("cluster_id", sa.String), sa.column("name", sa.String),
                        sa.column("extra", sa.JSON), sa.column("state", sa.JSON))
    conn = op.get_bind()
    for row in conn.execute(sa.select(projects.c.cluster_id, projects.c.name, projects.c.extra)).all():
        extra = _load(row.extra)
        state = {k: extra[k] for k in KEYS if extra.get(k) is not None}
        conn.execute(projects.update().where(projects.c.cluster_id == row.cluster_id, projects.c.name == row.name)
                     .values(state=state))
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("extra")


def downgrade() -> None:
    op.add_column("projects", sa.Column("extra", sa.JSON(), nullable=True))
    projects = sa.table("projects", sa.column("cluster_id", sa.String), sa.column("name", sa.String),
                        sa.column("extra", sa.JSON), sa.column("state", sa.JSON))
    conn = op.get_bind()
    for row in conn.execute(sa.select(projects.c.cluster_id, projects.c.name, projects.c.state)).all():
        conn.execute(projects.update().where(projects.c.cluster_id == row.cluster_id, projects.c.name == row.name)
                     .values(extra=_load(row.state)))
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("state")
