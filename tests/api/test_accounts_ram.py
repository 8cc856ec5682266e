"""Accounts, RAM users and policies against a real `opencs server` (issue 10 checks).

The official RAM SDKs (aliyun-python-sdk-ram with the RPC signature, alibabacloud-ram20150501 with
ACS3) manage users, keys and policies; the official CS SDKs see a restricted sub-user's and another
account's refusals, and the audit trail records them. Clusters are seeded as store rows (no nodes
needed): authorization runs before any engine work. Every route of both APIs tried by each identity,
on a real cluster: tests/api/test_access_matrix.py.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from opencs.sdk import Client, OpencsError
from tests.sdks import REGION, core_call, core_client, ram_call, ram_client, tea_client

pytestmark = pytest.mark.integration  # starts real server processes (not only in-process apps)

RAM_POLICY = {"Version": "1", "Statement": [
    {"Effect": "Allow", "Action": ["cs:DescribeClusters", "cs:GetClusterCerts"], "Resource": "acs:cs:*:*:cluster/A1"},
]}


def _cid(tag: str) -> str:
    return "c" + tag.lower().encode().hex().ljust(32, "0")


A1, A2, B1 = _cid("A1"), _cid("A2"), _cid("B1")
RAM_POLICY["Statement"][0]["Resource"] = f"acs:cs:*:*:cluster/{A1}"


def seed(data: Path) -> dict[str, str]:
    """Account B, and clusters A1, A2 (first account) and B1 (account B) with certificates."""
    from opencs.composition import build
    from opencs.config import Settings
    from opencs.pki.ca import CertAuthority
    from opencs.store.db import utcnow
    from opencs.store.models import Cluster
    from opencs.store.tenancy import ROOT_ACCOUNT_ID

    plane = build(Settings(data_dir=data, workers=0, local_nodes=False))
    b_account, b_ak, b_secret = plane.accounts.create_account("team-b")
    now = utcnow()
    with plane.db.session() as s:
        for cid, acct in ((A1, ROOT_ACCOUNT_ID), (A2, ROOT_ACCOUNT_ID), (B1, b_account)):
            ca = CertAuthority.create(f"ca-{cid}")
            s.add(Cluster(cluster_id=cid, name=f"n-{cid[:8]}-{acct[-3:]}", state="running", size=0, region_id="local",
                          account_id=acct, spec={}, created=now, updated=now, ca_cert_pem=ca.cert_pem,
                          ca_key_enc=plane.box.encrypt(ca.key_pem)))
    plane.close()
    return {"account": b_account, "ak": b_ak, "secret": b_secret}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import ServerProcess

    data = tmp_path_factory.mktemp("acct") / "data"
    b = seed(data)
    s = ServerProcess(data, env={"OPENCS_MONITOR_INTERVAL": "0"}, workers=0)
    s.start()
    try:
        yield s, b
    finally:
        s.kill()


def ram_tea(endpoint: str, ak: str, secret: str) -> Any:
    from alibabacloud_ram20150501.client import Client as RamClient
    from alibabacloud_tea_openapi.utils_models import Config

    return RamClient(Config(access_key_id=ak, access_key_secret=secret, region_id=REGION, endpoint=endpoint,
                            protocol="http", read_timeout=30000, connect_timeout=10000))


SECRETS: list[str] = []
ALICE: dict[str, str] = {}  # the sub-user's key that survives the first test


def test_sdk_core_ram_lifecycle(env: Any) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException

    srv, _ = env
    c = ram_client(srv.endpoint, srv.ak, srv.secret)
    u = ram_call(c, "CreateUser", UserName="alice", DisplayName="Alice")
    assert u["User"]["UserName"] == "alice" and u["User"]["UserId"] and u["RequestId"]
    with pytest.raises(ServerException) as e:
        ram_call(c, "CreateUser", UserName="alice")
    assert e.value.get_http_status() == 409 and e.value.get_error_code() == "EntityAlreadyExists.User"
    k = ram_call(c, "CreateAccessKey", UserName="alice")["AccessKey"]
    assert k["Status"] == "Active" and len(k["AccessKeySecret"]) >= 16
    SECRETS.append(k["AccessKeySecret"])
    k2 = ram_call(c, "CreateAccessKey", UserName="alice")["AccessKey"]  # rotation: both valid
    SECRETS.append(k2["AccessKeySecret"])
    with pytest.raises(ServerException) as e:
        ram_call(c, "CreateAccessKey", UserName="alice")
    assert e.value.get_error_code() == "LimitExceeded.User.AccessKey"
    p = ram_call(c, "CreatePolicy", PolicyName="view-a1", PolicyDocument=json.dumps(RAM_POLICY),
                 Description="A1 only")
    assert p["Policy"]["PolicyName"] == "view-a1" and p["Policy"]["PolicyType"] == "Custom"
    with pytest.raises(ServerException) as e:
        ram_call(c, "CreatePolicy", PolicyName="bad", PolicyDocument='{"Version": "1"}')
    assert e.value.get_error_code() == "MalformedPolicyDocument"
    ram_call(c, "AttachPolicyToUser", UserName="alice", PolicyName="view-a1", PolicyType="Custom")
    names = [x["UserName"] for x in ram_call(c, "ListUsers")["Users"]["User"]]
    assert "alice" in names and "owner" in names
    pols = ram_call(c, "ListPoliciesForUser", UserName="alice")["Policies"]["Policy"]
    assert [x["PolicyName"] for x in pols] == ["view-a1"]
    keys = ram_call(c, "ListAccessKeys", UserName="alice")["AccessKeys"]["AccessKey"]
    assert {x["AccessKeyId"] for x in keys} == {k["AccessKeyId"], k2["AccessKeyId"]}
    assert all("AccessKeySecret" not in x for x in keys)
    got = ram_call(c, "GetPolicy", PolicyName="view-a1", PolicyType="Custom")
    assert json.loads(got["DefaultPolicyVersion"]["PolicyDocument"]) == RAM_POLICY
    assert got["Policy"]["AttachmentCount"] == 1
    # both of alice's keys work; the second is disabled, then the first deleted
    for key in (k, k2):
        assert core_call(cs_core(srv, key["AccessKeyId"], key["AccessKeySecret"]), describe_clusters())
    ram_call(c, "UpdateAccessKey", UserName="alice", UserAccessKeyId=k2["AccessKeyId"], Status="Inactive")
    with pytest.raises(ServerException) as e:
        core_call(cs_core(srv, k2["AccessKeyId"], k2["AccessKeySecret"]), describe_clusters())
    assert e.value.get_http_status() in (401, 403)
    ram_call(c, "DeleteAccessKey", UserName="alice", UserAccessKeyId=k2["AccessKeyId"])
    ALICE.update(ak=k["AccessKeyId"], secret=k["AccessKeySecret"])
    # alice (sub-user, no ram: rights) cannot manage RAM
    with pytest.raises(ServerException) as e:
        ram_call(ram_client(srv.endpoint, k["AccessKeyId"], k["AccessKeySecret"]), "CreateUser", UserName="mallory")
    assert e.value.get_http_status() == 403 and e.value.get_error_code() == "NoPermission"


def cs_core(srv: Any, ak: str, secret: str) -> Any:
    return core_client(srv.endpoint, ak, secret)


def describe_clusters() -> Any:
    from aliyunsdkcs.request.v20151215.DescribeClustersRequest import DescribeClustersRequest

    return DescribeClustersRequest()


def test_tea_ram_lifecycle(env: Any) -> None:
    from alibabacloud_ram20150501 import models as m
    from Tea.exceptions import TeaException

    srv, _ = env
    c = ram_tea(srv.endpoint, srv.ak, srv.secret)
    u = c.create_user(m.CreateUserRequest(user_name="bob", comments="tea")).body
    assert u.user.user_name == "bob" and u.request_id
    key = c.create_access_key(m.CreateAccessKeyRequest(user_name="bob")).body.access_key
    assert key.status == "Active" and key.access_key_secret
    SECRETS.append(key.access_key_secret)
    doc = json.dumps({"Version": "1", "Statement": [{"Effect": "Deny", "Action": "cs:*", "Resource": "*"}]})
    assert c.create_policy(m.CreatePolicyRequest(policy_name="deny-all", policy_document=doc)).body.policy
    c.attach_policy_to_user(m.AttachPolicyToUserRequest(policy_type="Custom", policy_name="deny-all",
                                                        user_name="bob"))
    listed = c.list_policies_for_user(m.ListPoliciesForUserRequest(user_name="bob")).body.policies.policy
    assert [p.policy_name for p in listed] == ["deny-all"]
    assert "bob" in [x.user_name for x in c.list_users(m.ListUsersRequest()).body.users.user]
    assert c.get_user(m.GetUserRequest(user_name="bob")).body.user.comments == "tea"
    assert any(p.policy_name == "deny-all" for p in c.list_policies(m.ListPoliciesRequest()).body.policies.policy)
    got = c.get_policy(m.GetPolicyRequest(policy_name="deny-all", policy_type="Custom")).body
    assert got.policy.attachment_count == 1
    keys = c.list_access_keys(m.ListAccessKeysRequest(user_name="bob")).body.access_keys.access_key
    assert [k.access_key_id for k in keys] == [key.access_key_id]
    # deny wins: bob is refused even the list
    with pytest.raises(OpencsError) as e:
        Client(srv.url, key.access_key_id, key.access_key_secret, retries=0).list_clusters()
    assert e.value.status == 403 and e.value.code == "Forbidden.RAM"
    with pytest.raises(TeaException) as te:
        c.delete_user(m.DeleteUserRequest(user_name="bob"))
    assert te.value.code == "DeleteConflict.User.AccessKey"
    with pytest.raises(TeaException) as te:
        c.delete_policy(m.DeletePolicyRequest(policy_name="deny-all"))
    assert te.value.code == "DeleteConflict.Policy.User"
    c.update_access_key(m.UpdateAccessKeyRequest(user_name="bob", user_access_key_id=key.access_key_id,
                                                 status="Inactive"))
    c.detach_policy_from_user(m.DetachPolicyFromUserRequest(policy_type="Custom", policy_name="deny-all",
                                                            user_name="bob"))
    c.delete_access_key(m.DeleteAccessKeyRequest(user_name="bob", user_access_key_id=key.access_key_id))
    c.delete_policy(m.DeletePolicyRequest(policy_name="deny-all"))
    c.delete_user(m.DeleteUserRequest(user_name="bob"))
    with pytest.raises(TeaException) as te:
        c.get_user(m.GetUserRequest(user_name="bob"))
    assert te.value.code == "EntityNotExist.User" and te.value.statusCode == 404


def test_official_cs_sdks_see_only_their_rights(env: Any) -> None:
    from alibabacloud_cs20151215 import models
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcs.request.v20151215.DeleteClusterRequest import DeleteClusterRequest
    from aliyunsdkcs.request.v20151215.ScaleClusterRequest import ScaleClusterRequest
    from Tea.exceptions import TeaException

    srv, b = env
    if not ALICE:
        pytest.skip("needs test_sdk_core_ram_lifecycle")
    core = cs_core(srv, ALICE["ak"], ALICE["secret"])
    assert {c["cluster_id"] for c in core_call(core, describe_clusters())} == {A1}
    scale = ScaleClusterRequest()
    scale.set_ClusterId(A1)
    with pytest.raises(ServerException) as e:
        core_call(core, scale, {"size": 2})
    assert e.value.get_http_status() == 403 and e.value.get_error_code() == "Forbidden.RAM"
    assert len(e.value.get_request_id()) == 36
    delete = DeleteClusterRequest()
    delete.set_ClusterId(A1)
    with pytest.raises(ServerException) as e:
        core_call(core, delete)
    assert e.value.get_error_code() == "Forbidden.RAM"
    tea_b = tea_client(srv.endpoint, b["ak"], b["secret"])
    page = tea_b.describe_clusters_v1(models.DescribeClustersV1Request(page_size=50, page_number=1)).body
    assert {c.cluster_id for c in page.clusters} == {B1} and page.page_info.total_count == 1
    with pytest.raises(TeaException) as te:
        tea_b.delete_cluster(A1, models.DeleteClusterRequest())
    assert te.value.statusCode == 404 and te.value.code == "ErrorClusterNotFound"
    tea_alice = tea_client(srv.endpoint, ALICE["ak"], ALICE["secret"])
    with pytest.raises(TeaException) as te:
        tea_alice.create_cluster(models.CreateClusterRequest(name="x", cluster_type="swarm"))
    assert te.value.statusCode == 403 and te.value.code == "Forbidden.RAM" and te.value.data.get("RequestId")


def test_audit_trail_and_its_verification(env: Any) -> None:
    srv, b = env
    a = Client(srv.url, srv.ak, srv.secret, retries=0)
    entries = a.request("GET", "/audit", query={"limit": "1000"})["entries"]
    actions = {(e["action"], e["outcome"]) for e in entries}
    assert ("ram:CreateUser", "200") in actions and ("ram:CreateUser", "409") in actions
    assert any(e["action"] == "ram:CreateUser" and e["resource"] == "user/alice" for e in entries)
    assert any(act == "cs:ScaleCluster" and out.startswith("403") for act, out in actions)
    assert all(e["account_id"] == "1000000000000001" for e in entries)
    assert all(e["request_id"] and e["source"] == "127.0.0.1" for e in entries)
    mine = Client(srv.url, b["ak"], b["secret"], retries=0).request("GET", "/audit")["entries"]
    assert mine and all(e["account_id"] == b["account"] for e in mine)
    filtered = a.request("GET", "/audit", query={"action": "ram:CreatePolicy"})["entries"]
    assert filtered and {e["action"] for e in filtered} == {"ram:CreatePolicy"}

    cli = [sys.executable, "-m", "opencs.cli.main"]
    ok = subprocess.run([*cli, "audit", "verify", "--data-dir", str(srv.data_dir)], capture_output=True, text=True)
    assert ok.returncode == 0 and "intact" in ok.stdout, ok.stderr
    lines = subprocess.run([*cli, "audit", "--action", "ram:CreateUser", "--data-dir", str(srv.data_dir)],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines and all(json.loads(x)["action"] == "ram:CreateUser" for x in lines)
    with sqlite3.connect(srv.data_dir / "opencs.db") as db:
        db.execute("UPDATE audit_log SET outcome = '200 OK (edited)' WHERE seq = 3")
    bad = subprocess.run([*cli, "audit", "verify", "--data-dir", str(srv.data_dir)], capture_output=True, text=True)
    assert bad.returncode == 1 and "entry 3" in bad.stderr, bad.stderr
    with sqlite3.connect(srv.data_dir / "opencs.db") as db:
        db.execute("DELETE FROM audit_log WHERE seq IN (2, 3)")
    bad = subprocess.run([*cli, "audit", "verify", "--data-dir", str(srv.data_dir)], capture_output=True, text=True)
    assert bad.returncode == 1 and "entries 2..3 are missing" in bad.stderr, bad.stderr


def test_no_secret_in_the_server_log(env: Any) -> None:
    srv, b = env
    log = srv.log.read_text()
    assert log, "the server wrote no log"
    for secret in [srv.secret, b["secret"], *SECRETS]:
        assert secret not in log
    assert "PRIVATE KEY" not in log and not re.search(r"AccessKeySecret\W+\w{20,}", log)
