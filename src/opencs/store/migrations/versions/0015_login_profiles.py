"""login profiles: a RAM user's console logon (CreateLoginProfile), the Argon2id hash of its password

Revision ID: 0015_login_profiles
Revises: 0014_registry_passwords

A new table: existing users have no login profile and sign in to the console with an AccessKey
pair as before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015_login_profiles"
down_revision = "0014_registry_passwords"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_profiles",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("password_reset_required", sa.Boolean(), nullable=False),
        sa.Column("mfa_bind_required", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
    )


def downgrade() -> None:
    op.drop_table("login_profiles")
