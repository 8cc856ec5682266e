"""per-user cluster client certificates, recorded by serial; a second CA for sub-users' certificates

Revision ID: 0007_cluster_certs
Revises: 0006

The one client certificate a cluster had so far (clusters.client_cert_pem, handed to whoever called
GET /clusters/{id}/certs) is recorded as a certificate of the cluster's account owner, so that it
keeps working on master_url after the upgrade and can be revoked by its serial.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from cryptography import x509

revision = "0007_cluster_certs"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("clusters", sa.Column("user_ca_cert_pem", sa.Text(), nullable=True))
    op.add_column("clusters", sa.Column("user_ca_key_enc", sa.Text(), nullable=True))
    certs = op.create_table(
        "cluster_certs",
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("cluster_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("user_name", sa.String(length=64), nullable=False),
        sa.Column("access_key_id", sa.String(length=64), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("not_after", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("serial"),
    )
    for col in ("cluster_id", "account_id", "user_id"):
        op.create_index(f"ix_cluster_certs_{col}", "cluster_certs", [col])
    conn = op.get_bind()
    clusters = sa.table("clusters", sa.column("cluster_id", sa.String), sa.column("account_id", sa.String),
                        sa.column("client_cert_pem", sa.Text), sa.column("state", sa.String))
    users = sa.table("users", sa.column("user_id", sa.String), sa.column("account_id", sa.String),
                     sa.column("user_name", sa.String), sa.column("is_owner", sa.Boolean))
    owners = {r.account_id: r for r in conn.execute(
        sa.select(users.c.account_id, users.c.user_id, users.c.user_name).where(users.c.is_owner.is_(True)))}
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = conn.execute(sa.select(clusters.c.cluster_id, clusters.c.account_id, clusters.c.client_cert_pem)
                        .where(clusters.c.client_cert_pem.is_not(None), clusters.c.state != "deleted")).all()
    for r in rows:
        owner = owners.get(r.account_id)
        try:
            cert = x509.load_pem_x509_certificate(r.client_cert_pem.encode("ascii"))
        except ValueError:
            continue  # not a certificate: nothing master_url could accept either
        if owner is None:
            continue
        conn.execute(certs.insert().values(
            serial=format(cert.serial_number, "x"), cluster_id=r.cluster_id, account_id=r.account_id,
            user_id=owner.user_id, user_name=owner.user_name, access_key_id="", created=now,
            not_after=cert.not_valid_after_utc.replace(tzinfo=None), revoked_at=None, revoked_by=""))


def downgrade() -> None:
    for col in ("cluster_id", "account_id", "user_id"):
        op.drop_index(f"ix_cluster_certs_{col}", table_name="cluster_certs")
    op.drop_table("cluster_certs")
    with op.batch_alter_table("clusters") as b:
        b.drop_column("user_ca_key_enc")
        b.drop_column("user_ca_cert_pem")
