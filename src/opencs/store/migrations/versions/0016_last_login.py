"""users.last_login: the last console sign-in with the user's password (RAM GetUser LastLoginDate)

Revision ID: 0016_last_login
Revises: 0015_login_profiles

A nullable column: existing users have never signed in with a password (login profiles are new).
"""

import sqlalchemy as sa
from alembic import op

revision = "0016_last_login"
down_revision = "0015_login_profiles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("last_login", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("last_login")
