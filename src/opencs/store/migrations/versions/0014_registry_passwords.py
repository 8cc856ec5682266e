"""registry passwords: the Argon2id hash of the password a user sets for `docker login`

Revision ID: 0014_registry_passwords
Revises: 0013_task_chains

Existing users have none: they log in with an AccessKey as before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014_registry_passwords"
down_revision = "0013_task_chains"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as b:
        b.add_column(sa.Column("registry_password", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as b:
        b.drop_column("registry_password")
