"""Every control-plane SDK method against a real `opencs server` process (no task workers, so a
created cluster stays `launching` and nothing is built); the async client runs the same checks
(through tests/sdk/kit.py's Blocking). The Application API methods run against a real cluster in
tests/cli/test_cli_cluster.py."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from opencs.sdk import (
    AsyncClient,
    AuthError,
    BadRequestError,
    Client,
    ConflictError,
    NotFoundError,
    TaskTimeout,
    WaitTimeout,
)
from opencs.sdk.models import Accepted, Cluster, ClusterCerts, Task
from tests.conftest import ServerProcess
from tests.sdk.kit import both

INSTANCE = "i-" + "a" * 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("sdk-server") / "data", workers=0)
    try:
        yield srv.start(timeout=90)  # a loaded machine (CI runs everything at once) starts it slowly
    finally:
        srv.kill()


@pytest.fixture(params=["sync", "async"])
def cs(request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[Any]:
    yield from both(request.param, lambda: Client(server.url, server.ak, server.secret),
                    lambda: AsyncClient(server.url, server.ak, server.secret, scheme="acs3"))


def test_clusters_nodes_certs(cs: Any) -> None:
    assert cs.version().api_version == "2015-12-15"
    name = f"sdk-{secrets.token_hex(3)}"
    reply = cs.create_cluster({"name": name, "size": 1})
    assert isinstance(reply, Accepted) and reply.task_id.startswith("T-") and reply.request_id
    cid = reply.cluster_id
    cluster = cs.describe_cluster(cid)
    assert isinstance(cluster, Cluster) and (cluster.name, cluster.size, cluster.state) == (name, 1, "launching")
    assert cid in {c.cluster_id for c in cs.list_clusters()}
    page = cs.list_clusters_paged(1, 1)
    assert len(page.clusters) == 1 and page.page_info.total_count >= 1
    assert cid in {c.cluster_id for c in cs.iter_clusters(page_size=1)}  # every page
    assert cs.cluster_nodes(cid).nodes == [] and list(cs.iter_nodes(cid)) == []
    certs = cs.cluster_certs(cid)
    assert isinstance(certs, ClusterCerts) and "BEGIN" in certs.ca and "PRIVATE KEY" in certs.key
    assert certs.key not in repr(certs)

    # what a launching cluster refuses, with the error classes of the status
    with pytest.raises(ConflictError) as e:
        cs.scale_cluster(cid, {"size": 2})
    assert e.value.code == "ErrorClusterStateConflict" and e.value.request_id
    with pytest.raises(ConflictError):
        cs.delete_cluster(cid)
    with pytest.raises(NotFoundError):
        cs.attach_instances(cid, {"instances": [INSTANCE]})
    with pytest.raises(NotFoundError) as e:
        cs.remove_node(cid, "10.1.1.1", release_instance=True)
    assert e.value.code == "ErrorNodeNotFound"
    with pytest.raises(NotFoundError):
        cs.reset_node(cid, INSTANCE)
    with pytest.raises(ConflictError, match="no master_url"):
        cs.app(cid)

    # tasks: the create task stays pending (no workers)
    task = cs.describe_task(reply.task_id)
    assert isinstance(task, Task) and task.state == "pending" and task.cluster_id == cid and task.stages
    with pytest.raises(TaskTimeout):
        cs.wait_task(reply.task_id, timeout=0.2, poll=0.05)
    with pytest.raises(WaitTimeout):
        cs.wait_cluster(cid, timeout=0.2, poll=0.05)
    with pytest.raises(NotFoundError):
        cs.describe_cluster("c-nope")


def test_instances_images_triggers_audit_metrics(cs: Any, server: ServerProcess) -> None:
    assert any(i.value for i in cs.list_images().images)
    assert isinstance(cs.list_instances(), list) and cs.list_instances(free_only=True) == []
    assert cs.create_instances(1).task_id.startswith("T-")
    with pytest.raises(NotFoundError):
        cs.delete_instance(INSTANCE)
    with pytest.raises(BadRequestError) as e:
        cs.register_instance({"ssh": "nobody"})
    assert e.value.code == "InvalidTarget"

    cid = cs.create_cluster({"name": f"trig-{secrets.token_hex(3)}", "size": 1}).cluster_id
    with pytest.raises(NotFoundError) as e:
        cs.create_trigger(cid, "no-such-project")
    assert e.value.code == "ProjectNotFound"
    assert cs.list_triggers(cid) == [] and cs.list_triggers(cid, "web") == []
    with pytest.raises(NotFoundError):
        cs.rotate_trigger(cid, "abcdefghijklm", 10)
    with pytest.raises(NotFoundError):
        cs.delete_trigger(cid, "abcdefghijklm")
    with pytest.raises(BadRequestError) as e:
        cs.invoke_trigger(f"{server.url}/hook/trigger?triggerUrl=x", "secret")
    assert e.value.code == "InvalidTriggerUrl"

    actions = [a.action for a in cs.audit_log(limit=1000)]
    assert {"cs:CreateCluster", "cs:CreateTrigger", "cs:RegisterInstance"} <= set(actions)
    only = cs.audit_log(action="cs:CreateTrigger", limit=1)
    assert len(only) == 1 and only[0].action == "cs:CreateTrigger" and only[0].outcome and only[0].seq > 0
    assert "opencs_http_requests_total" in cs.metrics()


def test_certs_kubernetes_attach_routes(cs: Any) -> None:
    cid = cs.create_cluster({"name": f"k-{secrets.token_hex(3)}", "size": 1}).cluster_id
    certs = cs.cluster_certs(cid, minutes=60)
    assert certs.serial and certs.expiration and certs.key not in repr(certs)
    states = {c.serial: c for c in cs.cert_states(cid)}
    assert states[certs.serial].state == "valid" and states[certs.serial].user_name
    assert cs.revoke_cert(cid, certs.serial).state == "revoked"
    assert {c.serial: c.state for c in cs.cert_states(cid)}[certs.serial] == "revoked"
    again = cs.cluster_certs(cid).serial
    assert again in cs.revoke_my_certs(cid)
    with pytest.raises(NotFoundError):
        cs.cert_states("c-nope")

    # spec §6 on a launching Swarm cluster: each route answers with its error class
    with pytest.raises(ConflictError) as e:
        cs.kubeconfig(cid, minutes=60)
    assert e.value.code == "ErrorClusterStateConflict"
    with pytest.raises(BadRequestError, match="vswitch_ids"):
        cs.scale_out(cid, {"count": 1})
    for remove in (cs.remove_nodes, cs.delete_cluster_nodes):
        with pytest.raises(NotFoundError) as e:
            remove(cid, ["no-such-node"], release_node=True)
        assert e.value.code == "ErrorNodeNotFound"
    with pytest.raises(ConflictError, match="running cluster"):
        cs.attach_script(cid, {"role": "worker"})
    with pytest.raises(NotFoundError) as e:
        cs.create_trigger(cid, "no-such-project", signed=True)
    assert e.value.code == "ProjectNotFound"
    assert isinstance(cs.container_metrics(), str)


def test_webhook_headers_are_what_the_server_checks() -> None:
    from opencs.sdk.control import webhook_headers
    from opencs.services import webhooks

    secret = webhooks.new_secret()
    h = webhook_headers(secret, b"{}", msg_id="msg_1", timestamp=1700000000)
    assert h["webhook-signature"] == webhooks.sign(secret, "msg_1", 1700000000, b"{}")
    webhooks.verify([secret], webhooks.WebhookHeaders.of(webhook_headers(secret, b"")), b"")
    with pytest.raises(ValueError, match="whsec_"):
        webhook_headers("whsec_not base64!", b"")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_wrong_secret_is_an_auth_error(server: ServerProcess, kind: str) -> None:
    for c in both(kind, lambda: Client(server.url, server.ak, "wrong"),
                  lambda: AsyncClient(server.url, server.ak, "wrong")):
        with pytest.raises(AuthError) as e:
            c.list_clusters()
        assert e.value.status == 403 and e.value.code == "SignatureDoesNotMatch" and e.value.request_id


def test_meta_events_monitoring_alerts_attach_tokens_ram(cs: Any) -> None:
    """The methods of the routes added since: each against the real server (success, or its
    error class where this server cannot do more: no workers, no cluster running)."""
    assert cs.healthz() == {"status": "ok"} or cs.healthz()
    assert "/clusters" in cs.openapi()["paths"]
    assert cs.request("GET", "/version?x=1")["api_version"] == "2015-12-15"

    cid = cs.create_cluster({"name": f"ev-{secrets.token_hex(3)}", "size": 1}).cluster_id
    assert isinstance(cs.cluster_events(cid), list) and list(cs.iter_events(cid, page_size=1)) == \
        cs.cluster_events(cid, limit=1000)
    with pytest.raises(NotFoundError):
        cs.cluster_events("c-nope")
    with pytest.raises(NotFoundError):
        list(cs.follow_events("c-nope"))

    status = cs.monitoring_status()
    assert status.enabled is False and cid in status.clusters
    assert cs.disable_monitoring().enabled is False
    with pytest.raises(BadRequestError):
        cs.enable_monitoring(prometheus_port=80)  # 1024-65535: refused before anything starts
    assert cs.list_alert_rules(cid) == []
    with pytest.raises(NotFoundError) as e:
        cs.create_alert_rule(cid, {"project_id": "no-such-project", "service": "app",
                                   "scale_out": {"cpu_above": 50, "for": "20s", "step": 1}})
    assert e.value.code == "ServiceNotFound"
    with pytest.raises(BadRequestError):
        cs.create_alert_rule(cid, {"service": "app"})
    with pytest.raises(NotFoundError) as e:
        cs.delete_alert_rule(cid, "ar-abcdefghijkl")
    assert e.value.code == "AlertRuleNotFound"

    token = "t" * 32  # a token no attach line carries
    for call in (cs.attach_status, cs.attach_node_script, cs.attach_join):
        with pytest.raises(AuthError) as e:
            call(token)
        assert e.value.code == "AttachTokenInvalid"

    user = f"sdk{secrets.token_hex(3)}"
    created = cs.ram("CreateUser", {"UserName": user, "DisplayName": "SDK"})
    assert created["User"]["UserName"] == user and created.request_id
    assert user in {u["UserName"] for u in cs.ram("ListUsers")["Users"]["User"]}
    key = cs.ram("CreateAccessKey", {"UserName": user})["AccessKey"]
    assert key["AccessKeySecret"] and key["Status"] == "Active"
    cs.ram("DeleteAccessKey", {"UserName": user, "UserAccessKeyId": key["AccessKeyId"]})
    cs.ram("DeleteUser", {"UserName": user})
    with pytest.raises(NotFoundError):
        cs.ram("GetUser", {"UserName": user})
    with pytest.raises(NotFoundError) as e:
        cs.ram("NoSuchAction")
    assert e.value.code == "InvalidAction.NotFound"
