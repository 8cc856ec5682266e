"""Per-user cluster certificates (opencs.services.cluster_certs) on a real store: who a serial belongs
to, and every reason it stops counting. Migration 0007 keeps the single cluster certificate of an
upgraded data dir working (as the owner's)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from opencs.pki.ca import CertAuthority, load_cert, serial_hex, verify_chain
from opencs.services.cluster_certs import CertificateRefused
from opencs.store.db import MIGRATIONS, Database, utcnow
from opencs.store.models import Cluster, ClusterCert
from opencs.store.tenancy import ROOT_ACCOUNT_ID


@pytest.fixture
def plane(tmp_path: Path) -> Any:
    from opencs.composition import build
    from opencs.config import Settings

    rt = build(Settings(data_dir=tmp_path / "d", workers=0, local_nodes=False))
    ca = CertAuthority.create("opencs cluster c1")
    now = utcnow()
    with rt.db.session() as s:
        s.add(Cluster(cluster_id="c1", name="one", state="running", size=0, spec={}, created=now, updated=now,
                      account_id=ROOT_ACCOUNT_ID, ca_cert_pem=ca.cert_pem, ca_key_enc=rt.box.encrypt(ca.key_pem)))
    try:
        yield rt
    finally:
        rt.close()


def _refusal(plane: Any, serial: str) -> str:
    with pytest.raises(CertificateRefused) as e:
        plane.cluster_certs.identify("c1", serial)
    return e.value.code


def test_owner_and_sub_user_certificates(plane: Any) -> None:
    acct = plane.accounts
    owner = acct.principal(plane.keys.create("owner key")[0])
    ours = plane.cluster_certs.issue("c1", owner)
    assert verify_chain(ours.cert_pem, ours.ca_pem)  # the cluster CA: the nodes trust it
    assert plane.cluster_certs.identify("c1", ours.serial).user_name == "owner"
    acct.create_user(ROOT_ACCOUNT_ID, "dev")
    info, _secret = acct.create_key(ROOT_ACCOUNT_ID, "dev")
    dev = acct.principal(info.access_key_id)
    theirs = plane.cluster_certs.issue("c1", dev, dt.timedelta(minutes=5))
    assert not verify_chain(theirs.cert_pem, theirs.ca_pem)  # not the nodes' CA
    cas = plane.cluster_certs.client_cas("c1")
    assert len(cas) == 2 and verify_chain(theirs.cert_pem, cas[1])
    assert plane.cluster_certs.client_cas("c1") == cas  # made once
    left = load_cert(theirs.cert_pem).not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=4) < left <= dt.timedelta(minutes=5)
    who = plane.cluster_certs.identify("c1", theirs.serial)
    assert (who.user_name, who.access_key_id, who.is_owner) == ("dev", info.access_key_id, False)
    with pytest.raises(CertificateRefused):
        plane.cluster_certs.identify("c2", theirs.serial)  # another cluster's endpoint

    acct.set_key_status(ROOT_ACCOUNT_ID, "dev", info.access_key_id, False)
    assert _refusal(plane, theirs.serial) == "CertificateKeyInactive"
    acct.set_key_status(ROOT_ACCOUNT_ID, "dev", info.access_key_id, True)
    assert plane.cluster_certs.identify("c1", theirs.serial).user_name == "dev"
    acct.delete_key(ROOT_ACCOUNT_ID, "dev", info.access_key_id)
    assert _refusal(plane, theirs.serial) == "CertificateKeyInactive"
    acct.delete_user(ROOT_ACCOUNT_ID, "dev")
    assert _refusal(plane, theirs.serial) == "CertificateUserDeleted"

    out = plane.cluster_certs.revoke("c1", ours.serial, owner)
    assert out["state"] == "revoked" and out["revoked"]
    assert _refusal(plane, ours.serial) == "CertificateRevoked"
    assert _refusal(plane, "abc123") == "CertificateUnknown"


def test_a_certificate_of_a_password_session_counts_while_its_login_profile_does(plane: Any) -> None:
    acct = plane.accounts
    acct.create_user(ROOT_ACCOUNT_ID, "web")
    plane.login_profiles.create(ROOT_ACCOUNT_ID, "web", "Web-pass12", False, False)
    user = acct.user(ROOT_ACCOUNT_ID, "web")
    issued = plane.cluster_certs.issue("c1", acct.user_principal(user))  # the console, signed in with it
    who = plane.cluster_certs.identify("c1", issued.serial)
    assert (who.user_name, who.access_key_id, who.is_owner) == ("web", "", False)
    plane.login_profiles.delete(ROOT_ACCOUNT_ID, "web")
    assert _refusal(plane, issued.serial) == "CertificateKeyInactive"


def test_expiry_and_the_owner_without_a_key(plane: Any) -> None:
    short = plane.cluster_certs.issue("c1", lifetime=dt.timedelta(seconds=1))  # the operator's: the owner's
    assert plane.cluster_certs.identify("c1", short.serial).is_owner
    time.sleep(1.2)
    assert _refusal(plane, short.serial) == "CertificateExpired"
    assert [s["state"] for s in plane.cluster_certs.states("c1")] == ["expired"]


def _upgrade(db: Database, rev: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, rev)


def test_migration_records_the_legacy_cluster_certificate(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    _upgrade(db, "0006")
    ca = CertAuthority.create("legacy")
    legacy = ca.issue_client("opencs-user-c9")
    with db.engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO clusters (cluster_id, name, cluster_type, account_id, state, size, region_id, network_mode,"
            " vpc_id, vswitch_id, subnet_cidr, instance_type, master_url, agent_version, external_loadbalancer_id,"
            " security_group_id, spec, ca_cert_pem, client_cert_pem, created, updated) VALUES ('c9', 'old', 'swarm',"
            " :acct, 'running', 1, 'local', 'vpc', '', '', '', '', '', '', '', '', '{}', :ca, :cert,"
            " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"), {"acct": ROOT_ACCOUNT_ID, "ca": ca.cert_pem,
                                                                "cert": legacy.cert_pem})
    _upgrade(db, "head")
    with db.session() as s:
        (row,) = s.scalars(sa.select(ClusterCert)).all()
        assert (row.serial, row.cluster_id, row.user_name, row.access_key_id) == (
            serial_hex(legacy.cert_pem), "c9", "owner", "")
        assert row.not_after == load_cert(legacy.cert_pem).not_valid_after_utc.replace(tzinfo=None)
    db.close()
