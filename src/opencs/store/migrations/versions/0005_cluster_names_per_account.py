"""cluster names are unique within an account (another account's names must not show through a 409)

Revision ID: 0005_cluster_names
Revises: 0004_accounts
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_cluster_names"
down_revision = "0004_accounts"
branch_labels = None
depends_on = None

_LIVE = sa.text("state != 'deleted'")


def upgrade() -> None:
    with op.batch_alter_table("clusters", schema=None) as b:
        b.drop_index("ux_clusters_live_name", sqlite_where=_LIVE, postgresql_where=_LIVE)
        b.create_index("ux_clusters_live_name", ["account_id", "name"], unique=True, sqlite_where=_LIVE,
                       postgresql_where=_LIVE)


def downgrade() -> None:
    with op.batch_alter_table("clusters", schema=None) as b:
        b.drop_index("ux_clusters_live_name", sqlite_where=_LIVE, postgresql_where=_LIVE)
        b.create_index("ux_clusters_live_name", ["name"], unique=True, sqlite_where=_LIVE, postgresql_where=_LIVE)
