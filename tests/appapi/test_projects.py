"""The Application API's projects, services and volumes against a real 2-node swarm (local nodes).

Every call goes through the cluster's master_url (the mTLS frontend in front of the Application API)
with requests and the cluster certificates, as the spec's Python example does. Every container the API lists is looked
up on the engine of the node it names.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from opencs.engines.swarm import client as engine_client
from opencs.services.nodes import NodeOps
from tests.clusterkit import create_cluster, node_runtime, write_certs

WEB_WORKER = """
version: '3'
services:
  web:
    image: busybox
    command: httpd -f -p 8080 -h /www
    ports: ["8080:8080"]
    stop_grace_period: 1s
    labels:
      aliyun.scale: "2"
      aliyun.routing.port_8080: web
    depends_on: [store]
    deploy:
      update_config: {monitor: 1s}
  worker:
    image: busybox
    command: sh -c 'echo ${GREETING:-hi}; exec sleep 3600'
    stop_grace_period: 1s
    environment:
      PASSWORD: ${PWD}
    labels:
      aliyun.scale: "2"
    deploy:
      update_config: {monitor: 1s, order: start-first}
  store:
    image: busybox
    command: sh -c 'date >> /data/log; exec sleep 3600'
    stop_grace_period: 1s
    volumes: ["data:/data"]
    deploy:
      placement: {constraints: [node.role == manager]}
      update_config: {monitor: 1s}
volumes:
  data: {}
"""


class Env:
    def __init__(self, rt: Any, cid: str, api: Any) -> None:
        self.rt, self.cid, self.api = rt, cid, api
        rows = NodeOps(rt).rows(cid)
        self.engines = {r.private_ip: r.docker_host for r in rows}
        self.manager_ip = next(r.private_ip for r in rows if r.role == "manager")

    def engine(self, ip: str) -> Any:
        return closing(engine_client(self.engines[ip]))

    def project(self, name: str) -> dict[str, Any]:
        r = self.api.get(f"/projects/{name}")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/json")
        return r.json()  # type: ignore[no-any-return]

    def wait(self, name: str, state: str = "running", timeout: float = 90) -> dict[str, Any]:
        end = time.time() + timeout
        while True:
            p = self.project(name)
            if p["current_state"] == state and all(s["current_state"] in ("running", "stopped")
                                                   for s in p["services"]):
                return p
            assert p["current_state"] != "failed", p
            assert time.time() < end, f"{name} not {state} after {timeout}s: {p['current_state']} " + str(
                [(s["name"], s["current_state"]) for s in p["services"]])
            time.sleep(0.3)

    def check_containers(self, p: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Every listed container exists on the engine of the node the API names, as described."""
        seen: dict[str, dict[str, Any]] = {}
        for s in p["services"]:
            for cid, info in s["containers"].items():
                assert info["node"] in self.engines, info
                with self.engine(info["node"]) as c:
                    ins = c.api.inspect_container(cid)
                assert ins["Name"] == info["name"]
                assert ins["State"]["Running"] is info["running"]
                assert ins["Config"]["Labels"]["com.docker.stack.namespace"] == p["name"]
                assert ins["Config"]["Labels"]["com.docker.swarm.service.name"] == s["id"]
                nets = ins["NetworkSettings"]["Networks"]
                assert info["ip"] == nets[f"{p['name']}_default"]["IPAddress"]
                seen[cid] = {**info, "service": s["name"]}
        return seen

    def stack_leftovers(self, name: str) -> list[str]:
        left = []
        for ip in self.engines:
            with self.engine(ip) as c:
                flt = {"label": f"com.docker.stack.namespace={name}"}
                left += [f"{ip} container {x['Names']}" for x in c.api.containers(all=True, filters=flt)]
                left += [f"{ip} volume {v['Name']}" for v in c.api.volumes(filters=flt).get("Volumes") or []]
                if ip == self.manager_ip:
                    left += [f"service {s['Spec']['Name']}" for s in c.api.services(filters=flt)]
                    left += [f"network {n['Name']}" for n in c.api.networks(filters=flt)]
        return left


class MasterUrl:
    """The spec's Python example (§10.2): requests with cert= and verify= against the cluster's
    master_url — the real mTLS endpoint in front of the Application API."""

    def __init__(self, master_url: str, certs: Path) -> None:
        self.base = master_url
        self.s = requests.Session()
        self.s.trust_env = False  # REQUESTS_CA_BUNDLE in this environment would replace the cluster CA

        self.kw = {"cert": (str(certs / "cert.pem"), str(certs / "key.pem")), "verify": str(certs / "ca.pem"),
                   "timeout": 300}

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        return self.s.request(method, self.base + path, **{**self.kw, **kw})

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return self.request("POST", path, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    d: Path = tmp_path_factory.mktemp("appapi")
    with node_runtime(d / "d", prefix="ocb", subnet="10.217.0.0/24") as rt:
        cid = create_cluster(rt, 2)
        master_url = rt.clusters.get(cid)["master_url"]
        assert master_url.startswith("https://"), master_url
        yield Env(rt, cid, MasterUrl(master_url, write_certs(rt, cid, d / "certs")))


def by_service(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in p["services"]}


@pytest.mark.docker
@pytest.mark.slow
def test_project_life_cycle(env: Env) -> None:
    api = env.api
    t0 = time.time()
    # ---- create: 201 + Location, a durable task, honest states
    r = api.post("/projects/", json={"name": "shop", "template": WEB_WORKER, "version": "1.0",
                                     "description": "a test application",
                                     "environment": {"PWD": "secret-pw", "GREETING": "hello"}})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/projects/shop" and r.content == b""
    p = env.project("shop")
    assert p["desired_state"] == "running"
    assert p["current_state"] in ("creating", "running")
    assert p["environment"] == {"PWD": "secret-pw", "GREETING": "hello", "COMPOSE_PROJECT_NAME": "shop"}
    p = env.wait("shop")
    assert p["version"] == "1.0" and p["description"] == "a test application" and p["template"] == WEB_WORKER
    svcs = by_service(p)
    assert [s["name"] for s in p["services"]] == ["store", "worker", "web"]  # dependency levels: store, worker | web
    web = svcs["web"]
    assert web["id"] == "shop_web" and web["project"] == "shop"
    assert web["extensions"]["scale"] == 2 and web["extensions"]["routing.port_8080"] == "web"
    assert web["definition"]["image"] == "busybox" and web["definition"]["ports"] == ["8080:8080"]
    assert svcs["worker"]["definition"]["environment"] == {"PASSWORD": "secret-pw"}  # interpolated
    cont = env.check_containers(p)
    assert {c["node"] for c in web["containers"].values()} == set(env.engines)  # running on both nodes
    assert all(c["running"] and c["status"] == "running" and c["health"] == "success"
               for c in cont.values())
    assert [c["node"] for c in svcs["store"]["containers"].values()] == [env.manager_ip]
    for ip in env.engines:  # host-mode published port, no routing mesh needed
        assert httpx.get(f"http://{ip}:8080/", timeout=5, trust_env=False).text.startswith("hello from")
    # the stack is what `docker stack ls/ps` shows, with the routing labels on the service
    with env.engine(env.manager_ip) as c:
        s = c.api.inspect_service("shop_web")
        assert s["Spec"]["Labels"]["com.docker.stack.namespace"] == "shop"
        assert s["Spec"]["Labels"]["aliyun.routing.port_8080"] == "web"
        assert s["Spec"]["EndpointSpec"]["Mode"] == "dnsrr"  # no IPVS in this kernel
        assert s["Spec"]["EndpointSpec"]["Ports"][0]["PublishMode"] == "host"
    print(f"created in {time.time() - t0:.1f}s")

    # ---- list: q filter, services/containers switches
    lst = api.get("/projects", params={"q": "sho"}).json()
    assert [x["name"] for x in lst] == ["shop"] and lst[0]["services"]
    assert api.get("/projects/", params={"q": "nothing"}).json() == []
    lst = api.get("/projects/", params={"services": "false"}).json()
    assert lst[0]["services"] == []
    lst = api.get("/projects/", params={"containers": "0"}).json()
    assert all(s["containers"] == {} for s in lst[0]["services"])
    assert api.get("/projects/", params={"services": "maybe"}).status_code == 400

    # ---- services
    lst = api.get("/services/", params={"q": "work"}).json()
    assert [s["id"] for s in lst] == ["shop_worker"]
    assert api.get("/services/shop_web").json()["containers"].keys() == web["containers"].keys()
    assert api.get("/services/shop_nope").status_code == 404
    # scale: host-mode port → one per node; the worker goes to 3
    r = api.post("/services/shop_web/scale", json={"type": "scale_to", "value": 3})
    assert r.status_code == 400 and "one container per node" in r.json()["Message"], r.text
    r = api.post("/services/shop_worker/scale", json={"type": "scale_to", "value": 3})
    assert r.status_code == 200, r.text
    p = env.wait("shop")
    assert len(by_service(p)["worker"]["containers"]) == 3
    assert by_service(p)["worker"]["extensions"]["scale"] == 3
    env.check_containers(p)
    # service stop/start
    assert api.post("/services/shop_worker/stop", params={"t": 1}).status_code == 200
    s = api.get("/services/shop_worker").json()
    assert s["desired_state"] == "stopped" and s["current_state"] == "stopped" and s["containers"] == {}
    assert api.post("/services/shop_worker/start").status_code == 200
    s = api.get("/services/shop_worker").json()
    assert s["current_state"] == "running" and len(s["containers"]) == 3  # the scale is remembered

    # ---- stop / start the project (reverse / dependency order)
    assert api.post("/projects/shop/stop", params={"t": 1}).status_code == 200
    p = env.project("shop")
    assert p["desired_state"] == "stopped" and p["current_state"] == "stopped"
    assert all(s["containers"] == {} for s in p["services"])
    for ip in env.engines:
        with env.engine(ip) as c:
            assert not c.api.containers(filters={"label": "com.docker.stack.namespace=shop"})  # none running
    assert api.post("/projects/shop/start").status_code == 200
    p = env.wait("shop")
    assert p["desired_state"] == "running" and len(by_service(p)["worker"]["containers"]) == 3
    before = env.check_containers(p)

    # ---- kill: the signal reaches every container on its own node; the swarm replaces them
    r = api.post("/services/shop_worker/kill", params={"signal": "SIGKILL"})
    assert r.status_code == 200, r.text
    assert api.post("/projects/shop/kill", params={"signal": "NOPE"}).status_code == 400
    assert api.post("/projects/shop/kill").status_code == 200  # default KILL, every service
    for cid, info in before.items():
        with env.engine(info["node"]) as c:
            deadline = time.time() + 10
            while True:
                try:
                    st = c.api.inspect_container(cid)["State"]
                except Exception:
                    break  # already removed by the swarm: it was killed
                if not st["Running"]:
                    assert st["ExitCode"] == 137, (info, st)
                    break
                assert time.time() < deadline, f"{cid} still running after kill"
                time.sleep(0.2)
    p = env.wait("shop")
    after = env.check_containers(p)
    assert not set(after) & set(before)

    # ---- update: same version → 409; bad blue-green weights → 400; a new version rolls only what changed
    r = api.post("/projects/shop/update", json={"template": WEB_WORKER, "version": "1.0"})
    assert r.status_code == 409 and r.json()["Code"] == "VersionConflict"
    r = api.post("/projects/shop/update", json={"template": WEB_WORKER, "version": "3.0",
                                               "update_method": "blue-green", "weights": {"old": 101}})
    assert r.status_code == 400 and r.json()["Code"] == "InvalidParameter.Weights"
    r = api.post("/projects/shop/confirm-update", params={"force": "true"})
    assert r.status_code == 409 and r.json()["Code"] == "NoBlueGreenRelease"
    r = api.post("/projects/shop/update", json={"template": WEB_WORKER.replace("sleep 3600", "sleep 3601", 1),
                                               "version": "2.0",
                                               "environment": {"PWD": "new-pw", "GREETING": "hello"}})
    assert r.status_code == 202 and r.content == b""
    p = env.project("shop")
    assert p["version"] == "2.0" and p["current_state"] in ("updating", "running")
    p = env.wait("shop")
    upd = env.check_containers(p)
    svcs = by_service(p)
    assert svcs["worker"]["definition"]["environment"] == {"PASSWORD": "new-pw"}
    assert svcs["worker"]["extensions"]["scale"] == 2  # the template's scale again
    web_before = {k for k, v in after.items() if v["service"] == "web"}
    assert {k for k, v in upd.items() if v["service"] == "web"} == web_before  # unchanged: left alone
    assert not {k for k, v in upd.items() if v["service"] == "worker"} & set(after)  # rolled
    with env.engine(env.manager_ip) as c:
        cmd = c.api.inspect_service("shop_worker")["Spec"]["TaskTemplate"]["ContainerSpec"]["Args"]
        assert cmd[-1] == "echo hello; exec sleep 3601"

    # ---- redeploy: every container recreated, named volume data kept
    assert api.post("/projects/shop/redeploy").status_code == 200
    assert env.project("shop")["current_state"] in ("redeploying", "running")
    p = env.wait("shop")
    red = env.check_containers(p)
    assert not set(red) & set(upd)
    store = next(k for k, v in red.items() if v["service"] == "store")
    with env.engine(env.manager_ip) as c:
        ex = c.api.exec_create(store, ["cat", "/data/log"])
        lines = c.api.exec_start(ex).decode().strip().splitlines()
    assert len(lines) >= 4, lines  # create, start, update and redeploy each appended a line
    with env.engine(env.manager_ip) as c:
        img = c.api.inspect_service("shop_web")["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        assert img.startswith("busybox@sha256:")  # redeploy resolved the newest image

    # ---- what triggers use: a scale as a durable task, the images of the project
    assert env.rt.projects.trigger_images(env.cid, "shop") == ["busybox"]
    tid = env.rt.projects.trigger_scale(env.cid, "shop", "worker", 1)
    assert env.rt.tasks.wait(tid, 60).state == "success"
    assert len(by_service(env.wait("shop"))["worker"]["containers"]) == 3

    # ---- delete with volumes: nothing of the stack remains on any node
    r = api.delete("/projects/shop", params={"v": "true"})
    assert r.status_code == 200, r.text
    assert api.get("/projects/shop").status_code == 404
    assert env.stack_leftovers("shop") == []
    print(f"life cycle done in {time.time() - t0:.1f}s")


@pytest.mark.docker
@pytest.mark.slow
def test_bad_templates_leave_nothing(env: Env) -> None:
    api = env.api

    def bad(body: dict[str, Any], status: int, *needles: str) -> None:
        r = api.post("/projects/", json=body)
        assert r.status_code == status, r.text
        err = r.json()
        assert set(err) == {"Code", "Message", "RequestId"}
        assert len(err["RequestId"]) == 36 and err["RequestId"] == r.headers["x-acs-request-id"]
        for n in needles:
            assert n in err["Message"], err
        name = body.get("name")
        if isinstance(name, str) and name:
            assert api.get(f"/projects/{name}").status_code == 404
            assert env.stack_leftovers(name) == []

    bad({"name": "-bad", "template": "web:\n  image: busybox"}, 400, "project name")
    bad({"name": "a" * 65, "template": "web:\n  image: busybox"}, 400, "project name")
    bad({"name": "x_y", "template": "web:\n  image: busybox"}, 400, "project name")
    bad({"name": "nt"}, 400, "template")
    bad({"name": "yaml", "template": "web: [\n"}, 400, "invalid YAML", "line")
    bad({"name": "schema", "template": "version: '2'\nservices:\n  web:\n    image: busybox\n    ports: ['80:x']"},
        400, "services.web.ports[0]")
    bad({"name": "typo", "template": "web:\n  imgae: busybox"}, 400, "web.imgae", "did you mean 'image'")
    bad({"name": "novar", "template": "web:\n  image: ${IMG:?set IMG}"}, 400, "IMG")
    bad({"name": "noimage", "template": "web:\n  image: busybox:does-not-exist\n  command: sleep 1"},
        400, "busybox:does-not-exist", "services.web.image")
    bad({"name": "cycle", "template": "a:\n  image: busybox\n  links: [b]\nb:\n  image: busybox\n  links: [a]"},
        400, "circular")
    # a host port another project publishes
    r = api.post("/projects/", json={"name": "holder", "template":
                                     "web:\n  image: busybox\n  command: httpd -f -p 9090\n  ports: ['9090:9090']"})
    assert r.status_code == 201, r.text
    bad({"name": "clash", "template": "web:\n  image: busybox\n  ports: ['9090:80']"}, 409, "9090", "holder")
    env.wait("holder")
    r = api.post("/projects/", json={"name": "holder", "template": "web:\n  image: busybox"})
    assert r.status_code == 409 and r.json()["Code"] == "ProjectExists"

    # containers that cannot run: the create fails honestly and, as asked, removes what it made
    crash = ("version: '3'\nservices:\n  web:\n    image: busybox\n    command: sh -c 'exit 3'\n"
             "    volumes: ['data:/d']\n    deploy:\n      restart_policy: {delay: 200ms}\nvolumes:\n  data: {}\n")
    r = api.post("/projects/", json={"name": "crash", "template": crash, "rollback_on_failure": True})
    assert r.status_code == 201, r.text
    deadline = time.time() + 60
    while (p := env.project("crash"))["current_state"] != "failed":
        assert p["current_state"] == "creating", (p, env.rt.tasks.describe(env.rt.tasks.get(p["task_id"])))
        assert time.time() < deadline, env.rt.tasks.describe(env.rt.tasks.get(p["task_id"]))
        time.sleep(0.3)
    assert "exit code 3" in p["message"] and "removed" in p["message"], p
    assert env.stack_leftovers("crash") == []
    assert api.delete("/projects/crash").status_code == 200

    # an update whose containers cannot run rolls back to the previous release
    r = api.post("/projects/holder/update", json={"version": "2", "template": crash.replace("data:/d", "/d")
                                                  .replace("volumes:\n  data: {}\n", "")})
    assert r.status_code == 202, r.text
    # (a stop now would be accepted and supersede the update: tests/appapi/test_desired_state_e2e.py)
    deadline = time.time() + 90
    while (p := env.project("holder"))["current_state"] == "updating":
        assert time.time() < deadline, p
        time.sleep(0.3)
    assert p["current_state"] == "running" and p["version"] == "1.0", p
    assert "rolled back" in p["message"] and "9090" in p["template"]
    env.check_containers(p)
    assert api.delete("/projects/holder").status_code == 200
    assert env.stack_leftovers("holder") == []
    assert api.get("/projects/nope").json()["Code"] == "ProjectNotFound"
    assert api.post("/projects/nope/start").status_code == 404


@pytest.mark.docker
@pytest.mark.slow
def test_volumes(env: Env) -> None:
    api = env.api
    # local: on every node, used by a project as an external volume, data survives replacement
    r = api.post("/volumes/create", json={"name": "shared", "driver": "local"})
    assert r.status_code == 201, r.text
    v = r.json()
    assert v["Name"] == "shared" and v["Driver"] == "local" and v["Labels"] is None and v["Mountpoint"]
    lst = api.get("/volumes").json()["Volumes"]
    mine = [x for x in lst if x["Name"] == "shared"]
    assert len({x["Node"] for x in mine}) == len(env.engines) and all(x["Refs"] == [] for x in mine)
    assert api.post("/volumes/create", json={"name": "shared", "driver": "local"}).status_code == 409
    tpl = """
version: '3'
services:
  app:
    image: busybox
    command: sh -c 'hostname >> /v/who; exec sleep 3600'
    stop_grace_period: 1s
    volumes: ["shared:/v"]
    deploy:
      placement: {constraints: [node.role == manager]}
volumes:
  shared: {external: true}
"""
    assert api.post("/projects/", json={"name": "vol", "template": tpl}).status_code == 201
    p = env.wait("vol")
    first = next(iter(by_service(p)["app"]["containers"]))
    got = api.get("/volumes/shared").json()
    assert [ref["ID"] for ref in got["Refs"]] == [first]
    r = api.delete("/volumes/shared")
    assert r.status_code == 409 and "in use" in r.json()["Message"]
    assert api.post("/services/vol_app/kill").status_code == 200  # the swarm replaces the container
    deadline = time.time() + 60
    while True:
        p = env.project("vol")
        conts = by_service(p)["app"]["containers"]
        if conts and first not in conts and all(c["running"] for c in conts.values()):
            break
        assert time.time() < deadline, p
        time.sleep(0.3)
    second = next(iter(conts))
    with env.engine(env.manager_ip) as c:
        ex = c.api.exec_create(second, ["cat", "/v/who"])
        who = c.api.exec_start(ex).decode().split()
    assert len(who) == 2 and who[0] != who[1]  # written by the first container, kept for the second
    assert api.delete("/projects/vol", params={"v": "1"}).status_code == 200
    with env.engine(env.manager_ip) as c:  # an external volume is not the project's to delete
        assert c.api.inspect_volume("shared")["Name"] == "shared"
    assert api.delete("/volumes/shared").status_code == 204
    assert api.get("/volumes/shared").status_code == 404
    for ip in env.engines:
        with env.engine(ip) as c:
            assert not [x for x in c.api.volumes().get("Volumes") or [] if x["Name"] == "shared"]

    # nas: the engine gets the NFS options of Docker's local driver; this kernel cannot mount NFS
    ip = env.manager_ip.rsplit(".", 1)[0] + ".1"
    r = api.post("/volumes/create", json={"name": "nasvolume", "driver": "nas", "driverOpts": {
        "diskid": "1234556", "host": ip, "path": "/abc", "mode": "755"}})
    assert r.status_code == 412, r.text
    err = r.json()
    assert err["Code"] == "VolumeMountFailed"
    assert f"addr={ip}" in err["Message"] and "nfsvers=4.0" in err["Message"] and ":/abc" in err["Message"]
    assert "no such device" in err["Message"] and "NFS client" in err["Message"]
    assert api.get("/volumes/nasvolume").status_code == 404  # nothing pretends to be mounted
    r = api.post("/volumes/create", json={"name": "nas2", "driver": "nas", "driverOpts": {"path": "/abc"}})
    assert r.status_code == 400 and "driverOpts.host" in r.json()["Message"]
    # ossfs: validated, then the engines say they have no ossfs volume plugin
    r = api.post("/volumes/create", json={"name": "oss", "driver": "ossfs", "driverOpts": {
        "bucket": "Bad_Bucket", "ak_id": "a", "ak_secret": "b", "url": "oss-cn-hangzhou.aliyuncs.com"}})
    assert r.status_code == 400 and "bucket" in r.json()["Message"]
    r = api.post("/volumes/create", json={"name": "ossvolume", "driver": "ossfs", "driverOpts": {
        "bucket": "aliyun-docker", "ak_id": "id", "ak_secret": "s3cret", "url": "oss-cn-hangzhou.aliyuncs.com",
        "no_stat_cache": "true", "other_opts": "-o allow_other -o default_permission=666"}})
    assert r.status_code == 412, r.text
    assert r.json()["Code"] == "VolumeDriverUnavailable" and 'plugin "ossfs" not found' in r.json()["Message"]
    assert "s3cret" not in r.text
    assert api.post("/volumes/create", json={"name": "x", "driver": "ceph"}).status_code == 400
    assert api.delete("/volumes/never-made").status_code == 404


def test_project_rows_and_desired_state_wins(runtime: Any) -> None:
    """The store side on SQLite and PostgreSQL: rows, the compare-and-set that keeps one task chain per
    project (a call folds into the pending task, a delete follows and supersedes it), views without an
    engine."""
    from opencs.errors import Conflict
    from opencs.store.db import utcnow
    from opencs.store.models import Project, Task

    ps = runtime.projects
    now = utcnow()
    with runtime.db.session() as s:
        s.add(Project(cluster_id="c1", name="p", description="d", version="1.0", template="web:\n  image: x",
                      environment={"A": "1"}, latest_image=False, desired_state="running", current_state="running",
                      created=now, updated=now))
    tid = ps.begin("c1", "p", "project_stop", {"timeout": 1},
                   mutate=lambda r, _a: {"desired_state": "stopped", "current_state": "stopping"})
    assert ps.begin("c1", "p", "project_stop", {"timeout": 2}, mutate=lambda r, _a: {}) == tid  # folded
    assert runtime.tasks.get(tid).params["timeout"] == 2
    removal = ps.begin("c1", "p", "project_remove", {"volumes": False, "force": True},
                       mutate=lambda r, _a: {"current_state": "removing"})
    row = ps.get_row("c1", "p")
    assert row.task_id == removal != tid and row.current_state == "removing" and row.desired_state == "stopped"
    task = runtime.tasks.get(removal)
    assert task.task_type == "project_remove" and task.target_type == "project" and task.target_id == "p"
    assert task.after == tid and runtime.tasks.get(tid).superseded_by == removal
    assert removal not in runtime.tasks.repo.claimable(time.time() + 60)  # queued behind the stop
    assert ps.begin("c1", "p", "project_remove", {}, mutate=lambda r, _a: {}) == removal  # a repeated delete
    with pytest.raises(Conflict) as ei:
        ps.begin("c1", "p", "project_stop", {"timeout": 1}, mutate=lambda r, _a: {})
    assert ei.value.code == "ProjectDeleting"
    with runtime.db.session() as s:
        for t in s.query(Task).all():
            t.state = "success"
    ps.begin("c1", "p", "project_stop", {"timeout": 1}, mutate=lambda r, _a: {})  # idle again
    view = ps.project_view(ps.get_row("c1", "p"), None, services=False, containers=False)
    assert view["name"] == "p" and view["environment"] == {"A": "1"} and view["services"] == []
    assert view["created"].endswith("Z")
