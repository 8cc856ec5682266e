"""accounts, RAM users, policies, the audit log; resources get an owning account

Revision ID: 0004_accounts
Revises: 0003

A single-tenant store upgrades in place: the first account (fixed ids, see opencs.store.tenancy)
is created with its owner, every existing cluster and instance goes to it and every existing
AccessKey becomes a key of its owner.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004_accounts"
down_revision = "0003"
branch_labels = None
depends_on = None

ROOT_ACCOUNT_ID = "1000000000000001"  # = opencs.store.tenancy (migrations do not import the app)
ROOT_OWNER_USER_ID = "2000000000000001"


def upgrade() -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    accounts = op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
        sa.UniqueConstraint("name"),
    )
    users = op.create_table(
        "users",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column("comments", sa.String(length=255), nullable=False),
        sa.Column("is_owner", sa.Boolean(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id"),
        sa.UniqueConstraint("account_id", "user_name", name="ux_users_account_name"),
    )
    op.create_index("ix_users_account_id", "users", ["account_id"])
    op.create_table(
        "policies",
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("policy_name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "policy_name"),
    )
    op.create_table(
        "policy_attachments",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("policy_name", sa.String(length=128), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("attached", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "policy_name"),
    )
    op.create_index("ix_policy_attachments_account_id", "policy_attachments", ["account_id"])
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("access_key_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=128), nullable=False),
        sa.Column("resource", sa.String(length=512), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_audit_log_account_id", "audit_log", ["account_id"])
    op.bulk_insert(accounts, [{"account_id": ROOT_ACCOUNT_ID, "name": "default", "created": now}])
    op.bulk_insert(users, [{"user_id": ROOT_OWNER_USER_ID, "account_id": ROOT_ACCOUNT_ID, "user_name": "owner",
                            "display_name": "owner", "comments": "the first account's owner", "is_owner": True,
                            "created": now, "updated": now}])
    for table in ("clusters", "instances"):
        with op.batch_alter_table(table, schema=None) as b:
            b.add_column(sa.Column("account_id", sa.String(length=32), nullable=False,
                                   server_default=ROOT_ACCOUNT_ID))
            b.create_index(f"ix_{table}_account_id", ["account_id"], unique=False)
    with op.batch_alter_table("access_keys", schema=None) as b:
        b.add_column(sa.Column("user_id", sa.String(length=32), nullable=False, server_default=ROOT_OWNER_USER_ID))
        b.create_index("ix_access_keys_user_id", ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("access_keys", schema=None) as b:
        b.drop_index("ix_access_keys_user_id")
        b.drop_column("user_id")
    for table in ("clusters", "instances"):
        with op.batch_alter_table(table, schema=None) as b:
            b.drop_index(f"ix_{table}_account_id")
            b.drop_column("account_id")
    for t in ("audit_log", "policy_attachments", "policies", "users", "accounts"):
        op.drop_table(t)
