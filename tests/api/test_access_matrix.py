"""Issue 10's matrix: every route of both APIs, tried by three identities against a real server and
a real one-node swarm.

The identities are account A's owner, `alice` (a sub-user of A whose only policy allows `cs:Describe*`
and `cs:GetClusterCerts` on A's cluster A1) and account B's owner. The signed routes are called
through aliyun-python-sdk-cs's request classes where the SDK has one for the route, and through
sdk-core's signed ROA CommonRequest otherwise; the RAM API through aliyun-python-sdk-ram. The
Application API is called on A1's master_url with each identity's own certificate from
`GET /clusters/{id}/certs`. Expected: an allowed call answers 2xx; a refused one 403 with the
RAM code and a RequestId; another account's resource 404 exactly as a nonexistent one; and no
refused call changes anything (the owners read the state back before and after).

The route tables (MATRIX, APP_MATRIX) must name every route the applications serve: a route added
without its row fails `test_every_route_has_a_row`.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from opencs.api.app import PUBLIC_PATHS, create_app
from opencs.appapi.app import create_appapi_app
from opencs.monitoring.stack import MonitoringStack
from tests.cli.test_inventory import NOT_AN_API, _NoServices, routes
from tests.clusterkit import node_server
from tests.sdks import core_client, ram_call, ram_client, roa_call

pytestmark = [pytest.mark.integration, pytest.mark.docker]

PREFIX, SUBNET = "omx", "10.218.0.0/24"
GHOST = "c" + "f" * 32  # a cluster id nobody has
GHOST_TASK = "T-" + "f" * 24
TEMPLATE = "version: '3'\nservices:\n  app:\n    image: busybox\n    command: sleep 3600\n    stop_grace_period: 1s\n"
ALICE_POLICY = {"Version": "1", "Statement": [{"Effect": "Allow", "Action": ["cs:Describe*", "cs:GetClusterCerts"],
                                               "Resource": "acs:cs:*:*:cluster/{a1}"}]}
OK = "2xx"


@dataclass
class Outcome:
    status: int | str  # "2xx" for a reply the SDK accepted
    code: str = ""
    message: str = ""
    request_id: str = ""
    body: Any = None

    def key(self, ids: dict[str, str]) -> tuple[Any, ...]:
        """What must be equal between another account's resource and a nonexistent one."""
        msg = self.message.replace(self.request_id, "<request id>") if self.request_id else self.message
        for real, label in ids.items():
            msg = msg.replace(real, label)
        return self.status, self.code, msg


@dataclass
class World:
    srv: Any
    tmp: Path
    a1: str = ""
    a2: str = ""  # a second cluster of A (a store row, no nodes): outside alice's policy
    b1: str = ""  # B's cluster (a store row, no nodes): B's certificates come from its CA
    b: dict[str, str] = field(default_factory=dict)
    alice: dict[str, str] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)  # task, trigger, rule, serial, node ip of A1
    certs: dict[str, Path] = field(default_factory=dict)  # identity -> dir of ca/cert/key for A1 (B: for B1)
    master: str = ""

    def key_of(self, who: str) -> tuple[str, str]:
        keys = {"A": (self.srv.ak, self.srv.secret), "B": (self.b["ak"], self.b["secret"])}
        return keys[who] if who in keys else (self.alice["ak"], self.alice["secret"])


# ---------------------------------------------------------------------------------------------- calls


def signed(w: World, who: str, route: str, args: dict[str, Any]) -> Outcome:
    """One signed call of `route` ("METHOD /template") as `who`, through the official SDK."""
    from aliyunsdkcore.acs_exception.exceptions import ServerException

    method, pattern = route.split(" ", 1)
    if pattern == "/":
        return _ram(w, who, method, args)
    client = core_client(w.srv.endpoint, *w.key_of(who))
    path = {k: v for k, v in args.items() if k not in ("body", "query")}
    try:
        body = roa_call(client, method, pattern, path, args.get("body"), args.get("query"), SDK_CLASSES.get(route))
    except ServerException as e:
        return Outcome(e.get_http_status(), e.get_error_code(), e.get_error_msg(), e.get_request_id() or "")
    return Outcome(OK, body=body)


def _ram(w: World, who: str, method: str, args: dict[str, Any]) -> Outcome:
    """The RAM API: GET / through aliyun-python-sdk-ram (sdk-core's RPC GET), POST / through
    alibabacloud-ram20150501 (the Tea SDK's ACS3 POST)."""
    from aliyunsdkcore.acs_exception.exceptions import ServerException

    ak, secret = w.key_of(who)
    if method == "GET":
        try:
            return Outcome(OK, body=ram_call(ram_client(w.srv.endpoint, ak, secret), args["action"],
                                             **args.get("params", {})))
        except ServerException as e:
            return Outcome(e.get_http_status(), e.get_error_code(), e.get_error_msg(), e.get_request_id() or "")
    from alibabacloud_ram20150501 import models as m
    from alibabacloud_ram20150501.client import Client as RamClient
    from alibabacloud_tea_openapi.utils_models import Config
    from Tea.exceptions import TeaException

    tea = RamClient(Config(access_key_id=ak, access_key_secret=secret, region_id="cn-beijing",
                           endpoint=w.srv.endpoint, protocol="http", read_timeout=30000, connect_timeout=10000))
    name = re.sub(r"(?<!^)([A-Z])", r"_\1", args["action"]).lower()
    try:
        reply = getattr(tea, name)(getattr(m, f"{args['action']}Request")(**args.get("tea", {})))
    except TeaException as e:
        data = e.data or {}
        return Outcome(e.statusCode, e.code or "", e.message or "", str(data.get("RequestId", "")))
    return Outcome(OK, body=reply.body.to_map())


# The route's request class in aliyun-python-sdk-cs 4.8.1 (its method and URI pattern are checked
# against the route); a route without one goes through sdk-core's CommonRequest.
SDK_CLASSES = {
    "GET /clusters": "DescribeClustersRequest",
    "GET /api/v1/clusters": "DescribeClustersV1Request",
    "POST /clusters": "CreateClusterRequest",
    "GET /clusters/{cluster_id}": "DescribeClusterDetailRequest",
    "PUT /clusters/{cluster_id}": "ScaleClusterRequest",
    "DELETE /clusters/{cluster_id}": "DeleteClusterRequest",
    "POST /clusters/{cluster_id}/attach": "AttachInstancesRequest",
    "GET /clusters/{cluster_id}/nodes": "DescribeClusterNodesRequest",
    "POST /clusters/{cluster_id}/nodes": "DeleteClusterNodesRequest",
    "GET /k8s/{cluster_id}/user_config": "DescribeClusterUserKubeconfigRequest",
    "POST /api/v2/clusters/{cluster_id}": "ScaleOutClusterRequest",
    "POST /api/v2/clusters/{cluster_id}/nodes/remove": "RemoveClusterNodesRequest",
    "POST /clusters/{cluster_id}/attachscript": "DescribeClusterAttachScriptsRequest",
}


# ---------------------------------------------------------------------------------------------- the matrix

Expect = str | tuple[int, str]  # OK, or (status, code) of an answer given after authorization


@dataclass(frozen=True)
class Row:
    """How each identity fares on one signed route.

    args(w, cluster, task): the call's path values, body and query against that cluster (task); the
        refused calls name real things of A (A1's first node, its trigger, ...).
    owner: A's owner on A's resource (A1 unless owner_args names another); OK or the answer the route
        gives after admitting the call (then a comment says why not a 2xx). A task it starts must
        succeed, and `then` reads what it made (the node it added) for the next rows.
    alice: OK, "deny" or the answer past admission, on A1 (on A2 every cluster route is "deny", on
        B1 the same as on a nonexistent cluster).
    b: "absent" (A's resource answers B exactly as a nonexistent one), "deny" (403, on A's and on a
        nonexistent one alike), or OK/(status, code) on B's own (b_args, else B1).
    sub: a path value naming a thing inside the cluster: B's own cluster with A's must be absent too.
    """

    args: Callable[[World, str, str], dict[str, Any]]
    owner: Expect
    alice: Expect
    b: Expect
    owner_args: Callable[[World], dict[str, Any]] | None = None
    b_args: Callable[[World], dict[str, Any]] | None = None
    sub: str = ""
    then: Callable[[World], None] | None = None


def _c(extra: dict[str, Any] | None = None) -> Callable[[World, str, str], dict[str, Any]]:
    return lambda w, cid, tid: {"cluster_id": cid, **(extra or {})}


def _none(w: World, cid: str, tid: str) -> dict[str, Any]:
    return {}


def _on_a1(**extra: Callable[[World], Any]) -> Callable[[World], dict[str, Any]]:
    """The owner's call on A1, with values read from the world when it is made."""
    return lambda w: {"cluster_id": w.a1, **{k: f(w) for k, f in extra.items()}}


def _new_node(w: World) -> None:
    """After a node was added to A1: remember it as "node" (id, ip)."""
    nodes = _owner(w).request("GET", f"/clusters/{w.a1}/nodes")["nodes"]
    (new,) = [n for n in nodes if n["instance_id"] != w.ids["node1"]]
    w.ids["node"], w.ids["node_ip"] = new["instance_id"], new["ip_address"][0]


def _free_instance(w: World) -> None:
    """After POST /instances: remember the free machine it made (for DELETE /instances)."""
    free = [i for i in _owner(w).request("GET", "/instances") if not i.get("cluster_id")]
    w.ids["free"] = free[0]["instance_id"]


NODE_NAMES = {"vswitch_ids": ["vsw-omx"], "worker_data_disk": False, "worker_instance_types": ["ecs.n1.small"]}
# A's owner walks A1's second node through every node route, each a real task (2-10 s on this host):
# scale out (node 2), reset it, remove it by IP keeping the machine, attach it again, remove it with
# DeleteClusterNodes keeping the machine, delete that machine; scale to 2 (a new node), remove it with
# RemoveClusterNodes releasing it. The refused calls name A1's first node, which stays throughout.
MATRIX: dict[str, Row] = {
    "GET /version": Row(_none, OK, "deny", OK),
    "GET /images": Row(_none, OK, "deny", OK),
    "GET /clusters": Row(_none, OK, OK, OK),
    "GET /api/v1/clusters": Row(lambda w, c, t: {"query": {"page_size": "50"}}, OK, OK, OK),
    "GET /clusters/{cluster_id}": Row(_c(), OK, OK, "absent"),
    # A's owner creates a cluster in the fixture (A1, through CreateClusterRequest); one more here
    # would only repeat it, so here a size of 0 proves admission (and creates nothing); B's likewise
    "POST /clusters": Row(lambda w, c, t: {"body": {"name": "m", "size": 0}}, (400, "InvalidParameter"),
                          "deny", (400, "InvalidParameter")),
    "GET /clusters/{cluster_id}/nodes": Row(_c(), OK, OK, "absent"),
    "POST /api/v2/clusters/{cluster_id}": Row(_c({"body": {"count": 1, **NODE_NAMES}}), OK, "deny", "absent",
                                              then=_new_node),
    "POST /clusters/{cluster_id}/instances/{instance_id}/reset": Row(
        lambda w, c, t: {"cluster_id": c, "instance_id": w.ids["node1"], "body": {}}, OK, "deny", "absent",
        owner_args=_on_a1(instance_id=lambda w: w.ids["node"], body=lambda w: {})),
    "DELETE /clusters/{cluster_id}/ip/{ip}": Row(
        lambda w, c, t: {"cluster_id": c, "ip": w.ids["node1_ip"]}, OK, "deny", "absent",
        owner_args=_on_a1(ip=lambda w: w.ids["node_ip"])),
    # the machine pool is the operator's (the first account's owner): B is refused, not told "absent"
    "POST /clusters/{cluster_id}/attach": Row(
        lambda w, c, t: {"cluster_id": c, "body": {"instances": [w.ids["node1"]]}}, OK, "deny", "deny",
        owner_args=_on_a1(body=lambda w: {"instances": [w.ids["node"]]})),
    "POST /clusters/{cluster_id}/nodes": Row(
        lambda w, c, t: {"cluster_id": c, "body": {"nodes": [w.ids["node1"]]}}, OK, "deny", "absent",
        owner_args=_on_a1(body=lambda w: {"nodes": [w.ids["node"]], "release_node": False})),
    "GET /instances": Row(_none, OK, "deny", "deny"),
    "DELETE /instances/{instance_id}": Row(lambda w, c, t: {"instance_id": w.ids["node1"]}, OK, "deny", "deny",
                                           owner_args=lambda w: {"instance_id": w.ids["node"]}),
    "PUT /clusters/{cluster_id}": Row(_c({"body": {"size": 2}}), OK, "deny", "absent", then=_new_node),
    "POST /api/v2/clusters/{cluster_id}/nodes/remove": Row(
        lambda w, c, t: {"cluster_id": c, "body": {"nodes": [w.ids["node1"]]}}, OK, "deny", "absent",
        owner_args=_on_a1(body=lambda w: {"nodes": [w.ids["node"]], "release_node": True})),
    "POST /instances": Row(lambda w, c, t: {"body": {"count": 1}}, OK, "deny", "deny", then=_free_instance),
    # registering an SSH host needs one: a body without its address proves admission
    "POST /instances/register": Row(lambda w, c, t: {"body": {}}, (400, "InvalidParameter"), "deny", "deny"),
    "GET /clusters/{cluster_id}/certs": Row(_c(), OK, OK, "absent"),
    "GET /clusters/{cluster_id}/certs/states": Row(_c(), OK, "deny", "absent"),
    "DELETE /clusters/{cluster_id}/certs/{serial}": Row(lambda w, c, t: {"cluster_id": c, "serial": w.ids["serial"]},
                                                        OK, "deny", "absent", sub="serial"),
    # all of the caller's certificates: the owner's on A2 (issued in the fixture), so A1's stay valid
    "DELETE /clusters/{cluster_id}/certs": Row(_c(), OK, "deny", "absent",
                                               owner_args=lambda w: {"cluster_id": w.a2}),
    # a kubeconfig of a Swarm cluster: admitted (cs:Describe* covers it), then refused by the cluster type
    "GET /k8s/{cluster_id}/user_config": Row(_c(), (400, "ErrorClusterTypeMismatch"),
                                             (400, "ErrorClusterTypeMismatch"), "absent"),
    "POST /clusters/{cluster_id}/attachscript": Row(_c({"body": {}}), OK, OK, "absent"),
    "POST /clusters/{cluster_id}/triggers": Row(_c({"body": {"project_id": "web", "action": "redeploy"}}), OK, "deny",
                                                "absent"),
    "GET /clusters/{cluster_id}/triggers": Row(_c(), OK, OK, "absent"),
    "POST /clusters/{cluster_id}/triggers/{trigger_id}/rotate": Row(
        lambda w, c, t: {"cluster_id": c, "trigger_id": w.ids["trigger"], "body": {}}, OK, "deny", "absent",
        sub="trigger_id"),
    "DELETE /clusters/{cluster_id}/triggers/{trigger_id}": Row(
        lambda w, c, t: {"cluster_id": c, "trigger_id": w.ids["trigger"]}, OK, "deny", "absent", sub="trigger_id"),
    "POST /clusters/{cluster_id}/alerts": Row(
        _c({"body": {"project_id": "web", "service": "app", "scale_out": {"cpu_above": 90}}}), OK, "deny", "absent"),
    "GET /clusters/{cluster_id}/alerts": Row(_c(), OK, OK, "absent"),
    "DELETE /clusters/{cluster_id}/alerts/{rule_id}": Row(
        lambda w, c, t: {"cluster_id": c, "rule_id": w.ids["rule"]}, OK, "deny", "absent", sub="rule_id"),
    "GET /clusters/{cluster_id}/events": Row(_c(), OK, OK, "absent"),
    "GET /tasks/{task_id}": Row(lambda w, c, t: {"task_id": t}, OK, "deny", "absent"),
    # the control plane's monitoring stack is the operator's too: A's owner starts and stops it
    "GET /monitoring": Row(_none, OK, "deny", "deny"),
    "POST /monitoring/enable": Row(lambda w, c, t: {"body": {}}, OK, "deny", "deny"),
    "POST /monitoring/disable": Row(_none, OK, "deny", "deny"),
    "GET /audit": Row(_none, OK, "deny", OK),
    "PUT /users": Row(lambda w, c, t: {"body": {"User": {"Password": "Omx-pass-1"}}}, OK, "deny", OK),
    "POST /users": Row(lambda w, c, t: {"body": {"User": {"Password": "Omx-pass-2"}}}, OK, "deny", OK),
    # the RAM API: A's owner manages its users, alice none, B's owner does not see A's (a 404 as for none)
    "GET /": Row(lambda w, c, t: {"action": "DeleteUser", "params": {"UserName": "carol"}}, OK, "deny", "absent"),
    "POST /": Row(lambda w, c, t: {"action": "GetUser", "tea": {"user_name": "alice"}}, OK, "deny", "absent"),
    # last: A's owner deletes A2 (no nodes: a short task)
    "DELETE /clusters/{cluster_id}": Row(_c(), OK, "deny", "absent", owner_args=lambda w: {"cluster_id": w.a2}),
}



@dataclass(frozen=True)
class AppRow:
    """One Application API route: its path on the module's project "web" (service web_app, volume
    omxvol), whether alice's certificate may call it, and what A's owner's answers (OK unless a
    comment says why not). owner_path/owner_body: where the owner's call differs (what it makes or
    removes is its own, "web2" / "omxvol2")."""

    path: str
    alice: str
    owner: Expect = OK
    body: dict[str, Any] | None = None
    owner_path: str = ""
    owner_body: dict[str, Any] | None = None
    prepare: Callable[[requests.Session, World], None] | None = None  # before the owner's call


def _release(version: str) -> Callable[[requests.Session, World], None]:
    """Start a blue-green release of "web" (the new version beside the old) and wait until both serve."""

    def start(s: requests.Session, w: World) -> None:
        body = {"update_method": "blue-green", "template": TEMPLATE.replace("3600", f"360{version}"),
                "version": version}
        r = s.post(f"{w.master}/projects/web/update", json=body, timeout=60)
        assert r.status_code == 202, r.text
        _owner(w).wait_task(r.json()["task_id"], timeout=120)

    return start


APP_MATRIX: dict[str, AppRow] = {
    "GET /projects": AppRow("/projects/", OK),
    "GET /projects/{name}": AppRow("/projects/web", OK),
    "GET /projects/{name}/logs": AppRow("/projects/web/logs", OK),
    "GET /services": AppRow("/services/", OK),
    "GET /services/{service_id}": AppRow("/services/web_app", OK),
    "GET /services/{service_id}/logs": AppRow("/services/web_app/logs", OK),
    "GET /volumes": AppRow("/volumes", OK),
    "GET /volumes/{name}": AppRow("/volumes/omxvol", OK),
    "POST /volumes/create": AppRow("/volumes/create", "deny", body={"name": "omxvol3"},
                                   owner_body={"name": "omxvol2"}),
    "DELETE /volumes/{name}": AppRow("/volumes/omxvol", "deny", owner_path="/volumes/omxvol2"),
    "POST /services/{service_id}/scale": AppRow("/services/web_app/scale", "deny",
                                                body={"type": "scale_to", "value": 2}),
    "POST /services/{service_id}/stop": AppRow("/services/web_app/stop", "deny"),
    "POST /services/{service_id}/start": AppRow("/services/web_app/start", "deny"),
    "POST /services/{service_id}/kill": AppRow("/services/web_app/kill", "deny"),
    "POST /projects/{name}/stop": AppRow("/projects/web/stop", "deny"),
    "POST /projects/{name}/start": AppRow("/projects/web/start", "deny"),
    "POST /projects/{name}/kill": AppRow("/projects/web/kill", "deny"),
    "POST /projects/{name}/redeploy": AppRow("/projects/web/redeploy", "deny"),
    "POST /projects/{name}/update": AppRow("/projects/web/update", "deny",
                                           body={"template": TEMPLATE.replace("3600", "3601"), "version": "2"}),
    # a blue-green release (version 3 beside 2) confirmed, then another (4 beside 3) rolled back
    "POST /projects/{name}/confirm-update": AppRow("/projects/web/confirm-update?force=true", "deny",
                                                   prepare=_release("3")),
    "POST /projects/{name}/rollback-update": AppRow("/projects/web/rollback-update?force=true", "deny",
                                                    prepare=_release("4")),
    "POST /projects": AppRow("/projects/", "deny", body={"name": "web3", "template": TEMPLATE},
                             owner_body={"name": "web2", "template": TEMPLATE}),
    "DELETE /projects/{name}": AppRow("/projects/web", "deny", owner_path="/projects/web2"),
}


def test_every_route_has_a_row() -> None:
    """The matrix names every signed route the API serves (the unsigned ones excepted) and every
    Application API route; a new route without a row fails here."""
    served = routes(create_app(_NoServices()))  # type: ignore[arg-type]

    def public(route: str) -> bool:
        path = re.sub(r"\{\w+\}", "x", route.split(" ", 1)[1])
        return path in PUBLIC_PATHS or any(path.startswith(p) for p in PUBLIC_PATHS if p.endswith("/"))

    signed_routes = {r for r in served - NOT_AN_API if not public(r)}
    assert signed_routes == set(MATRIX)
    assert routes(create_appapi_app(None)) == set(APP_MATRIX)  # type: ignore[arg-type]
    assert set(SDK_CLASSES) <= set(MATRIX)


# ---------------------------------------------------------------------------------------------- the world


def seed(data: Path) -> dict[str, str]:
    """Account B, and two clusters without nodes as store rows: A2 (account A) and B1 (account B),
    each with its CA, so that certificates of B1 are real ones of another cluster's CA."""
    from opencs.composition import build
    from opencs.config import Settings
    from opencs.pki.ca import CertAuthority
    from opencs.store.db import utcnow
    from opencs.store.models import Cluster
    from opencs.store.tenancy import ROOT_ACCOUNT_ID

    plane = build(Settings(data_dir=data, workers=0, local_nodes=False))
    try:
        b_account, b_ak, b_secret = plane.accounts.create_account("team-b")
        now, out = utcnow(), {"account": b_account, "ak": b_ak, "secret": b_secret}
        with plane.db.session() as s:
            for tag, acct in (("a2", ROOT_ACCOUNT_ID), ("b1", b_account)):
                cid = "c" + tag.encode().hex().ljust(32, "0")
                ca = CertAuthority.create(f"ca-{cid}")
                s.add(Cluster(cluster_id=cid, name=f"matrix-{tag}", state="running", size=0, region_id="local",
                              account_id=acct, spec={}, created=now, updated=now, ca_cert_pem=ca.cert_pem,
                              ca_key_enc=plane.box.encrypt(ca.key_pem)))
                out[tag] = cid
    finally:
        plane.close()
    return out


def _owner(w: World, who: str = "A") -> Any:
    from opencs.sdk import Client

    ak, secret = w.key_of(who)
    return Client(w.srv.url, ak, secret, retries=0)


def _certs(w: World, who: str, cid: str, name: str) -> Path:
    out = signed(w, who, "GET /clusters/{cluster_id}/certs", {"cluster_id": cid})
    assert out.status == OK, out
    d = w.tmp / name
    d.mkdir(exist_ok=True)
    for k in ("ca", "cert", "key"):
        (d / f"{k}.pem").write_text(out.body[k])
    (d / "key.pem").chmod(0o600)
    return d


def _app(certs: Path) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would replace the cluster CA
    s.cert, s.verify = (str(certs / "cert.pem"), str(certs / "key.pem")), str(certs / "ca.pem")
    return s


def _settled(s: requests.Session, w: World, name: str, timeout: float = 120) -> dict[str, Any]:
    end = time.time() + timeout
    while True:
        p = s.get(f"{w.master}/projects/{name}", timeout=30).json()
        if p.get("current_state") in ("running", "failed", "stopped"):
            return dict(p)
        assert time.time() < end, p
        time.sleep(0.5)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("matrix")
    seeded = seed(tmp / "data")
    try:
        yield from _world(tmp, seeded)
    finally:
        MonitoringStack(tmp / "data" / "monitoring").stop()  # by the PIDs it recorded, if a call started it


def _world(tmp: Path, seeded: dict[str, str]) -> Iterator[World]:
    with node_server(tmp / "data", PREFIX, SUBNET, env={"OPENCS_MONITOR_INTERVAL": "0"}) as srv:
        w = World(srv, tmp, a2=seeded["a2"], b1=seeded["b1"],
                  b={k: seeded[k] for k in ("account", "ak", "secret")})
        made = roa_call(core_client(srv.endpoint, srv.ak, srv.secret), "POST", "/clusters", {},
                        {"name": "matrix", "size": 1}, request_class="CreateClusterRequest")
        w.a1, w.ids["task"] = made["cluster_id"], made["task_id"]
        _owner(w).wait_task(w.ids["task"], timeout=180)
        (node,) = _owner(w).request("GET", f"/clusters/{w.a1}/nodes")["nodes"]
        w.ids["node1"], w.ids["node1_ip"] = node["instance_id"], node["ip_address"][0]
        ram = ram_client(srv.endpoint, srv.ak, srv.secret)
        for user in ("alice", "carol"):
            ram_call(ram, "CreateUser", UserName=user)
        key = ram_call(ram, "CreateAccessKey", UserName="alice")["AccessKey"]
        w.alice = {"ak": key["AccessKeyId"], "secret": key["AccessKeySecret"]}
        doc = json.dumps(ALICE_POLICY).replace("{a1}", w.a1)
        ram_call(ram, "CreatePolicy", PolicyName="describe-a1", PolicyDocument=doc)
        ram_call(ram, "AttachPolicyToUser", UserName="alice", PolicyName="describe-a1", PolicyType="Custom")
        w.certs = {"A": _certs(w, "A", w.a1, "a"), "alice": _certs(w, "alice", w.a1, "alice"),
                   "B": _certs(w, "B", w.b1, "b")}
        spare = signed(w, "A", "GET /clusters/{cluster_id}/certs", {"cluster_id": w.a1})
        w.ids["serial"] = spare.body["serial"]
        assert signed(w, "A", "GET /clusters/{cluster_id}/certs", {"cluster_id": w.a2}).status == OK
        w.master = _owner(w).request("GET", f"/clusters/{w.a1}")["master_url"]
        owner = _app(w.certs["A"])
        r = owner.post(f"{w.master}/projects/", json={"name": "web", "template": TEMPLATE, "version": "1"},
                       timeout=120)
        assert r.status_code == 201, r.text
        assert _settled(owner, w, "web")["current_state"] == "running"
        assert owner.post(f"{w.master}/volumes/create", json={"name": "omxvol"}, timeout=60).status_code == 201
        t = _owner(w).request("POST", f"/clusters/{w.a1}/triggers", body={"project_id": "web", "action": "redeploy"})
        w.ids["trigger"] = t["id"]
        rule = _owner(w).request("POST", f"/clusters/{w.a1}/alerts",
                                 body={"project_id": "web", "service": "app", "scale_out": {"cpu_above": 95}})
        w.ids["rule"] = rule["id"]
        yield w


# ---------------------------------------------------------------------------------------------- state


def _strip(doc: Any) -> Any:
    """A reply without what changes by itself (request ids)."""
    if isinstance(doc, dict):
        return {k: _strip(v) for k, v in doc.items() if k.lower() not in ("request_id", "requestid")}
    if isinstance(doc, list):
        return [_strip(x) for x in doc]
    return doc


def state(w: World) -> dict[str, Any]:
    """Everything a refused call could have changed, read back by the two owners."""
    a, b = _owner(w), _owner(w, "B")
    ram_a, ram_b = ram_client(w.srv.endpoint, w.srv.ak, w.srv.secret), ram_client(w.srv.endpoint, w.b["ak"],
                                                                                   w.b["secret"])
    out: dict[str, Any] = {"A clusters": a.request("GET", "/clusters"), "B clusters": b.request("GET", "/clusters"),
                           "instances": a.request("GET", "/instances"), "monitoring": a.request("GET", "/monitoring")}
    for cid in sorted(c["cluster_id"] for c in out["A clusters"]):
        for what in ("", "/nodes", "/triggers", "/alerts", "/certs/states"):
            if cid == w.a2 and what in ("/triggers", "/alerts"):
                continue
            out[f"{cid}{what}"] = a.request("GET", f"/clusters/{cid}{what}")
    out["B1"] = b.request("GET", f"/clusters/{w.b1}")
    out["A users"] = ram_call(ram_a, "ListUsers")["Users"]
    out["B users"] = ram_call(ram_b, "ListUsers")["Users"]
    out["alice"] = [ram_call(ram_a, f"List{x}", UserName="alice") for x in ("AccessKeys", "PoliciesForUser")]
    out["policies"] = ram_call(ram_a, "ListPolicies")["Policies"]
    app = _app(w.certs["A"])
    for path in ("/projects/", "/services/", "/volumes"):
        out[f"app {path}"] = app.get(f"{w.master}{path}", timeout=30).json()
    out["docker networks"] = sorted(n["Name"] for n in app.get(f"{w.master}/v1.41/networks", timeout=30).json())
    return _strip(out)


def _diff(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [k for k in before if before[k] != after.get(k)]


# ---------------------------------------------------------------------------------------------- signed API


def _as_expected(got: Outcome, want: Expect) -> bool:
    return got.status == OK if want == OK else (got.status, got.code) == want


def _refused(got: Outcome, route: str) -> str:
    """'' when `got` is a proper RAM refusal: 403, the RAM code, a RequestId."""
    code = "NoPermission" if route.endswith(" /") else "Forbidden.RAM"
    if got.status == 403 and got.code == code and len(got.request_id) >= 16:
        return ""
    return f"{got.status} {got.code} {got.message!r} rid={got.request_id!r}"


def _ghost_args(w: World, row: Row, route: str) -> dict[str, Any]:
    """The row's call against things that do not exist."""
    args = row.args(w, GHOST, GHOST_TASK)
    if route.endswith(" /"):  # the RAM API names users
        args = json.loads(json.dumps(args).replace('"carol"', '"nobody"').replace('"alice"', '"nobody"'))
    return args


def test_signed_routes_per_identity(world: World) -> None:
    w = world
    ids = {w.a1: "<cluster>", w.a2: "<cluster>", w.b1: "<cluster>", GHOST: "<cluster>",
           w.ids["task"]: "<task>", GHOST_TASK: "<task>", "alice": "<user>", "carol": "<user>", "nobody": "<user>"}
    wrong: list[str] = []
    before = state(w)

    # 1. every refusal, before anything is allowed to change
    for route, row in MATRIX.items():
        mine = row.args(w, w.a1, w.ids["task"])
        if row.alice == "deny" and (why := _refused(signed(w, "alice", route, mine), route)):
            wrong.append(f"{route} alice on A1: {why}")
        if "{cluster_id}" in route:
            if why := _refused(signed(w, "alice", route, row.args(w, w.a2, "")), route):
                wrong.append(f"{route} alice on A2 (not in her policy): {why}")
            foreign, ghost = (signed(w, "alice", route, row.args(w, cid, "")) for cid in (w.b1, GHOST))
            if foreign.key(ids) != ghost.key(ids) or not foreign.request_id:
                wrong.append(f"{route} alice on B1 {foreign.key(ids)} != on a nonexistent cluster {ghost.key(ids)}")
        if row.b in ("absent", "deny"):
            foreign, ghost = signed(w, "B", route, mine), signed(w, "B", route, _ghost_args(w, row, route))
            if foreign.key(ids) != ghost.key(ids) or not foreign.request_id:
                wrong.append(f"{route} B on A's {foreign.key(ids)} != on a nonexistent one {ghost.key(ids)}")
            elif row.b == "absent" and foreign.status != 404:
                wrong.append(f"{route} B on A's: {foreign.key(ids)}, not a 404")
            elif row.b == "deny" and (why := _refused(foreign, route)):
                wrong.append(f"{route} B: {why}")
            if "body" in mine and "{cluster_id}" in route:  # a body the route refuses: still nothing told apart
                foreign, ghost = (signed(w, "B", route, {**a, "body": ["no object"]})
                                  for a in (mine, _ghost_args(w, row, route)))
                if foreign.key(ids) != ghost.key(ids):
                    wrong.append(f"{route} B with a bad body on A's {foreign.key(ids)} != on none {ghost.key(ids)}")
        if row.sub:  # B's own cluster, with the name of A's thing inside A1
            theirs = signed(w, "B", route, {**mine, "cluster_id": w.b1})
            none = signed(w, "B", route, {**mine, "cluster_id": w.b1, row.sub: "f" * len(str(mine[row.sub]))})
            if theirs.key(ids | {str(mine[row.sub]): "<sub>"}) != none.key({**ids, "f" * len(str(mine[row.sub])):
                                                                              "<sub>"}) or theirs.status != 404:
                wrong.append(f"{route} B on B1 with A's {row.sub}: {theirs.key(ids)} vs a nonexistent {none.key(ids)}")
    if changed := _diff(before, state(w)):
        wrong.append(f"the refused calls changed {changed}")

    # 2. what each may do: alice on A1, B's owner on its own, then A's owner (last: the changes)
    for who, mine in (("A", {w.a1, w.a2}), ("alice", {w.a1}), ("B", {w.b1})):  # lists: one's own only
        for route in ("GET /clusters", "GET /api/v1/clusters"):
            body = signed(w, who, route, MATRIX[route].args(w, "", "")).body
            seen = {c["cluster_id"] for c in (body["clusters"] if isinstance(body, dict) else body)}
            if seen != mine:
                wrong.append(f"{route} {who} sees {seen}")
    for route, row in MATRIX.items():
        if row.alice != "deny":
            got = signed(w, "alice", route, row.args(w, w.a1, w.ids["task"]))
            if not _as_expected(got, row.alice):
                wrong.append(f"{route} alice: {got.status} {got.code} {got.message!r}, expected {row.alice}")
        if row.b not in ("absent", "deny"):
            got = signed(w, "B", route, row.b_args(w) if row.b_args else row.args(w, w.b1, ""))
            if not _as_expected(got, row.b):
                wrong.append(f"{route} B on its own: {got.status} {got.code} {got.message!r}, expected {row.b}")
    for route, row in MATRIX.items():
        got = signed(w, "A", route, row.owner_args(w) if row.owner_args else row.args(w, w.a1, w.ids["task"]))
        if not _as_expected(got, row.owner):
            wrong.append(f"{route} A: {got.status} {got.code} {got.message!r}, expected {row.owner}")
            continue
        task = got.body.get("task_id") if isinstance(got.body, dict) else None
        if task:
            try:
                _owner(w).wait_task(task, timeout=180)
            except Exception as e:  # TaskFailed, TaskTimeout: the route's change did not happen
                wrong.append(f"{route} A: its task {task}: {e!r}")
                continue
        if row.then is not None:
            row.then(w)
    a = _owner(w)
    nodes = a.request("GET", f"/clusters/{w.a1}/nodes")["nodes"]
    assert [n["instance_id"] for n in nodes] == [w.ids["node1"]], "A1 is not back to its first node"
    assert {c["cluster_id"] for c in a.request("GET", "/clusters")} == {w.a1}, "A2 was not deleted"
    users = ram_call(ram_client(w.srv.endpoint, w.srv.ak, w.srv.secret), "ListUsers")["Users"]["User"]
    assert "carol" not in {u["UserName"] for u in users}
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------------------------------------- master_url

# Beside the routes: the Docker API master_url passes on to the swarm's manager. Reading it is
# cs:DescribeDockerApi (within alice's cs:Describe*), changing it cs:InvokeDockerApi (not granted).
DOCKER: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("GET", "/v1.41/networks", None, OK),
    ("POST", "/v1.41/networks/create", {"Name": "omxnet", "Driver": "overlay"}, "deny"),
    ("DELETE", "/v1.41/networks/omxnet", None, "deny"),
]


def _app_call(s: requests.Session, w: World, route: str, path: str, body: dict[str, Any] | None) -> requests.Response:
    method = route.split(" ", 1)[0]
    return s.request(method, f"{w.master}{path}", json=body, timeout=120)


def test_application_api_per_identity(world: World) -> None:
    w = world
    wrong: list[str] = []
    # B's certificate is of B's cluster's CA: A1's master_url refuses it at the handshake, on every route
    b = _app(w.certs["B"])
    b.verify = str(w.certs["A"] / "ca.pem")  # B trusts A1's server certificate; A1 still does not trust B
    calls = [(route, row.path, row.body, row.alice) for route, row in APP_MATRIX.items()]
    calls += [(f"{method} {path}", path, body, alice) for method, path, body, alice in DOCKER]
    for route, path, body, _ in calls:
        try:
            r = _app_call(b, w, route, path, body)
            wrong.append(f"{route} B's certificate: answered {r.status_code}")
        except (requests.exceptions.SSLError, requests.exceptions.ConnectionError):
            pass

    before = state(w)
    alice = _app(w.certs["alice"])
    for route, path, body, expect in calls:
        r = _app_call(alice, w, route, path, body)
        if expect == OK and not 200 <= r.status_code < 300:
            wrong.append(f"{route} alice: {r.status_code} {r.text[:200]}")
        if expect == "deny":
            doc = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            if (r.status_code, doc.get("Code")) != (403, "Forbidden.RAM") or not doc.get("RequestId"):
                wrong.append(f"{route} alice: {r.status_code} {r.text[:200]}")
    if changed := _diff(before, state(w)):
        wrong.append(f"the refused calls changed {changed}")

    owner = _app(w.certs["A"])
    for route, row in APP_MATRIX.items():
        if row.prepare is not None:
            row.prepare(owner, w)
        r = _app_call(owner, w, route, row.owner_path or row.path, row.owner_body or row.body)
        doc = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        got: Expect = OK if 200 <= r.status_code < 300 else (r.status_code, str(doc.get("Code", "")))
        if got != row.owner:
            wrong.append(f"{route} A: {r.status_code} {r.text[:200]}, expected {row.owner}")
        if route.startswith("POST /projects/{name}"):
            if isinstance(doc, dict) and doc.get("task_id"):
                _owner(w).wait_task(doc["task_id"], timeout=120)
            _settled(owner, w, "web")
    for method, path, body, _ in DOCKER:
        r = owner.request(method, f"{w.master}{path}", json=body, timeout=60)
        if not 200 <= r.status_code < 300:
            wrong.append(f"{method} {path} A: {r.status_code} {r.text[:200]}")
    assert not wrong, "\n".join(wrong)
    web = _settled(owner, w, "web")  # 2 rolled out, 3 released and confirmed, 4 released and rolled back
    assert web["version"] == "3" and web["current_state"] == "running", web
    assert owner.get(f"{w.master}/projects/web2", timeout=30).status_code == 404
    assert owner.get(f"{w.master}/volumes/omxvol2", timeout=30).status_code == 404
