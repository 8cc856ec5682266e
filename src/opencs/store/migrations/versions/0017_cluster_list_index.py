"""clusters: an index in the list's order that holds what a list check reads; clusters and
instances by `updated` (the endpoint manager's change mark)

Revision ID: 0017_cluster_list_index
Revises: 0016_last_login

GET /clusters asks the store which rows changed since it rendered them ((cluster_id, updated) of
every live cluster, in the list's order) and GET /api/v1/clusters reads a page in that order: both
were a scan of the whole table, whose rows carry each cluster's CA and endpoint certificate. The
index covers those reads (state is in it for the `state != 'deleted'` filter) and the cluster ->
account map of the access checks. The endpoint manager asks each table's newest `updated` once a
second before it reads every cluster and node again.
"""

from alembic import op

revision = "0017_cluster_list_index"
down_revision = "0016_last_login"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_clusters_list", "clusters", ["created", "cluster_id", "state", "updated", "account_id"])
    op.create_index("ix_clusters_updated", "clusters", ["updated"])
    op.create_index("ix_instances_updated", "instances", ["updated"])


def downgrade() -> None:
    op.drop_index("ix_instances_updated", table_name="instances")
    op.drop_index("ix_clusters_updated", table_name="clusters")
    op.drop_index("ix_clusters_list", table_name="clusters")
