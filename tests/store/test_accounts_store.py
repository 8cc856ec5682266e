"""Accounts in the store: the in-place upgrade of a single-tenant store, accounts and the policy rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from opencs.services.policies import MalformedPolicy, decide, parse_document
from opencs.store.db import MIGRATIONS, Database, migrate
from opencs.store.tenancy import ROOT_ACCOUNT_ID, ROOT_OWNER_USER_ID


def _upgrade(db: Database, to: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, to)


def test_single_tenant_store_upgrades_in_place(tmp_path: Path, database_url: str | None) -> None:
    from opencs.composition import build
    from opencs.config import Settings

    url = database_url or f"sqlite:///{tmp_path / 'opencs.db'}"
    db = Database(url)
    _upgrade(db, "0003")  # the previous head, with rows as a single-tenant server left them
    with db.engine.begin() as c:
        c.execute(text("INSERT INTO access_keys (access_key_id, secret_enc, description, status, is_admin, created)"
                       " VALUES ('LTAIold1', 'enc', 'old', 'active', true, '2026-01-01 00:00:00'),"
                       " ('LTAIold2', 'enc', 'old', 'disabled', false, '2026-01-02 00:00:00')"))
        c.execute(text("INSERT INTO clusters (cluster_id, name, cluster_type, state, size, region_id, network_mode,"
                       " vpc_id, vswitch_id, subnet_cidr, instance_type, master_url, agent_version,"
                       " external_loadbalancer_id, security_group_id, spec, created, updated) VALUES"
                       " ('cold', 'old', 'swarm', 'running', 3, 'local', 'vpc', '', '', '', '', '', '', '', '', '{}',"
                       " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
        c.execute(text("INSERT INTO instances (instance_id, provider, cluster_id, private_ip, role, state, health,"
                       " docker_host, swarm_node_id, details, created, updated) VALUES ('i-old', 'local', 'cold',"
                       " '10.0.0.2', 'manager', 'running', 'ok', '', '', '{}', '2026-01-01 00:00:00',"
                       " '2026-01-01 00:00:00')"))
    migrate(db.engine)
    with db.engine.connect() as c:
        assert c.execute(text("SELECT account_id, name FROM accounts")).all() == [(ROOT_ACCOUNT_ID, "default")]
        assert c.execute(text("SELECT account_id FROM clusters WHERE cluster_id = 'cold'")).scalar() == ROOT_ACCOUNT_ID
        assert c.execute(text("SELECT account_id FROM instances")).scalar() == ROOT_ACCOUNT_ID
        keys = c.execute(text("SELECT access_key_id, user_id, status FROM access_keys ORDER BY 1")).all()
        assert keys == [("LTAIold1", ROOT_OWNER_USER_ID, "active"), ("LTAIold2", ROOT_OWNER_USER_ID, "disabled")]
        assert c.execute(text("SELECT name, size FROM clusters")).all() == [("old", 3)]  # nothing lost
    db.close()
    plane = build(Settings(data_dir=tmp_path / "d", database_url=url, workers=0, local_nodes=False))
    try:
        who = plane.accounts.principal("LTAIold1")
        assert who is not None and who.is_owner and who.account_id == ROOT_ACCOUNT_ID
        acct, ak, secret = plane.accounts.create_account("team-b")
        assert acct != ROOT_ACCOUNT_ID and plane.keys.active_secret(ak) == secret
        b = plane.accounts.principal(ak)
        assert b is not None and b.is_owner and b.account_id == acct
        with plane.db.engine.connect() as c:  # stored encrypted, never in clear
            enc = c.execute(text("SELECT secret_enc FROM access_keys WHERE access_key_id = :k"), {"k": ak}).scalar()
        assert secret not in enc
        with pytest.raises(Exception, match="exists already"):
            plane.accounts.create_account("team-b")
    finally:
        plane.close()


def _doc(*stmts: dict[str, Any]) -> str:
    return json.dumps({"Version": "1", "Statement": list(stmts)})


def test_policy_rules() -> None:
    allow = parse_document(_doc({"Effect": "Allow", "Action": ["cs:Describe*", "cs:GetClusterCerts"],
                                 "Resource": "acs:cs:*:*:cluster/c1"}))
    r1, r2 = "acs:cs:local:1:cluster/c1", "acs:cs:local:1:cluster/c2"
    assert decide(allow, ["cs:DescribeClusterDetail"], r1, {})
    assert decide(allow, ["cs:describeclusterdetail"], r1, {})  # actions ignore case
    assert not decide(allow, ["cs:DescribeClusterDetail"], r2, {})
    assert not decide(allow, ["cs:ScaleCluster"], r1, {})  # implicit deny
    both = allow + parse_document(_doc({"Effect": "Deny", "Action": "cs:*", "Resource": "*"}))
    assert not decide(both, ["cs:DescribeClusterDetail"], r1, {})  # deny wins
    cond = parse_document(_doc({"Effect": "Allow", "Action": "cs:*", "Resource": "*",
                                "Condition": {"IpAddress": {"acs:SourceIp": ["10.0.0.0/8"]}}}))
    assert decide(cond, ["cs:ScaleCluster"], r1, {"acs:sourceip": "10.1.2.3"})
    assert not decide(cond, ["cs:ScaleCluster"], r1, {"acs:sourceip": "192.168.1.1"})
    assert decide(parse_document(_doc({"Effect": "Allow", "Action": "cs:Scale?luster", "Resource": "*"})),
                  ["cs:ScaleCluster"], r1, {})
    for bad in ("", "{", '{"Version": "2", "Statement": []}', _doc({"Effect": "Maybe", "Action": "*", "Resource": "*"}),
                _doc({"Effect": "Allow", "Resource": "*"}),
                _doc({"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"Nope": {"a": "b"}}})):
        with pytest.raises(MalformedPolicy):
            parse_document(bad)


def test_a_new_cluster_belongs_to_the_callers_account(client: Any, runtime: Any) -> None:
    from opencs.sdk import Client, OpencsError

    b_account, b_ak, b_secret = runtime.accounts.create_account("team-b")
    a_ak, a_secret = runtime.keys.create("owner A")
    b = Client("http://testserver", b_ak, b_secret, http_client=client, retries=0)
    a = Client("http://testserver", a_ak, a_secret, http_client=client, retries=0)
    try:
        cid = b.create_cluster({"name": "b-one", "size": 1, "instance_type": "ecs.n1.small"})["cluster_id"]
    except OpencsError as e:
        pytest.skip(f"no node provider here: {e.code}")
    with runtime.db.engine.connect() as c:
        owner = c.execute(text("SELECT account_id FROM clusters WHERE cluster_id = :c"), {"c": cid}).scalar()
    assert owner == b_account
    # names are B's own: A may use the same one (no 409 telling A what B named its clusters), B not twice
    a_cid = a.create_cluster({"name": "b-one", "size": 1, "instance_type": "ecs.n1.small"})["cluster_id"]
    assert a_cid != cid
    with pytest.raises(OpencsError) as e:
        b.create_cluster({"name": "b-one", "size": 1, "instance_type": "ecs.n1.small"})
    assert (e.value.status, e.value.code) == (409, "ErrorClusterNameExists")
    assert [x["cluster_id"] for x in b.list_clusters()] == [cid]
    seen_by_a = {x["cluster_id"] for x in a.list_clusters()}
    assert cid not in seen_by_a and a_cid in seen_by_a
    with pytest.raises(OpencsError) as e:
        a.describe_cluster(cid)
    assert (e.value.status, e.value.code) == (404, "ErrorClusterNotFound")
    with pytest.raises(OpencsError) as e:
        a.delete_cluster(cid)
    assert e.value.status == 404
