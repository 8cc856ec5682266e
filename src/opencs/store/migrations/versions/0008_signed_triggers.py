"""signed triggers: a Standard Webhooks signing secret (encrypted) beside the trigger's secret hash

Revision ID: 0008_signed_triggers
Revises: 0007_cluster_certs

Existing triggers stay unsigned: their URL and secret work as before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_signed_triggers"
down_revision = "0007_cluster_certs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("triggers") as b:
        b.add_column(sa.Column("signed", sa.Boolean(), nullable=False, server_default=sa.false()))
        b.add_column(sa.Column("signing_secret_enc", sa.Text(), nullable=True))
        b.add_column(sa.Column("previous_signing_secret_enc", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("triggers") as b:
        b.drop_column("previous_signing_secret_enc")
        b.drop_column("signing_secret_enc")
        b.drop_column("signed")
