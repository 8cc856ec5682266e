"""Issue 5 checks over real HTTP: triggers invoked with curl change a real swarm; a `docker push` to
the bundled registry redeploys a subscribed project; wrong or rotated secrets behave as documented.
Issue 10 item 4 with the docker CLI: the registry refuses a push without `docker login` and into
another account's namespace, takes one into the caller's (and that fires the image-update trigger);
the nodes pull it with the cluster's node credential; a notification without a pusher fires nothing.

A real `opencs server` runs the control plane; the project is created through the cluster's
master_url with the cluster certificates, as the spec's Python example does (requests, cert=, verify=)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from opencs.providers.localnet import socket_path
from opencs.sdk import Client
from tests.clusterkit import destroy_everything, node_env, require_local_nodes
from tests.conftest import ServerProcess

PREFIX, SUBNET = "ocw", "10.227.0.0/24"
REGISTRY = "10.227.0.1:5000"

TEMPLATE = f"""
version: '3'
services:
  app:
    image: {REGISTRY}/default/app:v1
    command: sh -c 'cat /etc/release-note 2>/dev/null; exec sleep 3600'
    stop_grace_period: 1s
    deploy:
      update_config: {{monitor: 1s}}
"""


def curl(url: str) -> tuple[int, dict[str, Any]]:
    out = subprocess.run(["curl", "-s", "-o", "-", "-w", "\\n%{http_code}", url], capture_output=True, text=True,
                         timeout=150)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(body) if body.strip() else {}


def docker(sock: str, *args: str, ok: bool = True, **kw: Any) -> str:
    """The docker CLI; its credentials (docker login) in the test's own DOCKER_CONFIG."""
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    env["DOCKER_CONFIG"] = DOCKER_CONFIG[0]
    out = subprocess.run(["docker", "-H", sock, *args], capture_output=True, text=True, timeout=120, env=env, **kw)
    assert (out.returncode == 0) == ok, (out.stdout, out.stderr)
    return out.stdout.strip() if ok else out.stderr.strip()


DOCKER_CONFIG = [""]


class App:
    """The Application API through master_url, with the cluster's certificates."""

    def __init__(self, master_url: str, certs: Path) -> None:
        self.base = master_url
        self.s = requests.Session()
        self.s.trust_env = False  # REQUESTS_CA_BUNDLE would replace the cluster CA
        self.s.cert = (str(certs / "cert.pem"), str(certs / "key.pem"))
        self.s.verify = str(certs / "ca.pem")

    def __getattr__(self, method: str) -> Any:
        return lambda path, **kw: self.s.request(method.upper(), self.base + path, timeout=150, **kw)


def cluster_app(c: Any, cluster_id: str, certs: Path) -> App:
    """The cluster's Application API as its owner (the client certificates written into `certs`)."""
    certs.mkdir()
    for k, v in c.cluster_certs(cluster_id).items():
        (certs / f"{k}.pem").write_text(v)
    return App(c.describe_cluster(cluster_id)["master_url"], certs)


def wait_project(app: App, name: str, timeout: float = 150) -> dict[str, Any]:
    end = time.time() + timeout
    while time.time() < end:
        p = app.get(f"/projects/{name}").json()
        if p["current_state"] in ("running", "failed"):
            return p
        time.sleep(0.5)
    raise AssertionError(f"project {name} still {p['current_state']}")


def app_containers(app: App) -> dict[str, Any]:
    return app.get("/services/web_app").json()["containers"]


@pytest.fixture
def env(tmp_path: Path) -> Any:
    require_local_nodes()
    data = tmp_path / "data"
    srv = ServerProcess(data, env={**node_env(PREFIX, SUBNET), "OPENCS_MONITOR_INTERVAL": "0"})
    try:
        srv.start()
        DOCKER_CONFIG[0] = str(tmp_path / "docker-config")
        yield srv, tmp_path
    finally:
        srv.kill()
        destroy_everything(data, PREFIX, SUBNET)


@pytest.mark.docker
@pytest.mark.slow
def test_triggers_over_http_and_registry_push(env: Any) -> None:
    srv, tmp = env
    c = Client(f"http://{srv.endpoint}", srv.ak, srv.secret)
    out = c.create_cluster({"name": "trig", "size": 2})
    c.wait_task(out["task_id"], timeout=180)
    cid = out["cluster_id"]
    certs = tmp / "certs"
    certs.mkdir()
    for k, v in c.cluster_certs(cid).items():
        (certs / f"{k}.pem").write_text(v)
    app = App(c.describe_cluster(cid)["master_url"], certs)

    # an image of our own in the bundled registry, pushed from a node's engine
    node = next(n for n in c.cluster_nodes(cid)["nodes"] if n["role"] == "manager")
    sock = f"unix://{socket_path(srv.data_dir / 'nodes', node['instance_id'])}"
    docker(sock, "pull", "busybox")  # library/*: an anonymous token through the mirror
    docker(sock, "tag", "busybox", f"{REGISTRY}/default/app:v1")
    refused = docker(sock, "push", f"{REGISTRY}/default/app:v1", ok=False)
    assert "denied" in refused or "unauthorized" in refused, refused
    other = subprocess.run([str(Path(sys.executable).parent / "opencs"), "accounts", "create", "team-b",
                            "--data-dir", str(srv.data_dir)], capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr
    logged = docker(sock, "login", REGISTRY, "-u", srv.ak, "--password-stdin", input=srv.secret)
    assert "login succeeded" in logged.lower()
    docker(sock, "tag", "busybox", f"{REGISTRY}/team-b/app:v1")
    refused = docker(sock, "push", f"{REGISTRY}/team-b/app:v1", ok=False)  # another account's namespace
    assert "denied" in refused or "unauthorized" in refused, refused
    docker(sock, "push", f"{REGISTRY}/default/app:v1")

    r = app.post("/projects/", json={"name": "web", "template": TEMPLATE, "version": "1.0"})
    assert r.status_code == 201, r.text
    assert wait_project(app, "web")["current_state"] == "running"
    first = set(app_containers(app))
    assert len(first) == 1

    # scaling trigger: curl over real HTTP, waiting for the outcome
    sc = c.request("POST", f"/clusters/{cid}/triggers",
                   body={"cluster_id": cid, "project_id": "web", "action": "scaling", "service": "app"})
    hook = f"{sc['trigger_url']}&secret={sc['secret']}"
    code, body = curl(f"{hook}&type=scale_out&step=1&wait=true")
    assert code == 200 and body["state"] == "success", body
    assert len(app_containers(app)) == 2
    # only the replica count changed on the engine: the first container is untouched
    assert first <= set(app_containers(app))
    assert c.describe_task(body["task_id"])["outputs"]["actions"] == {"app": "scaled"}

    # wrong secret, bad step: nothing changes
    code, body = curl(f"{sc['trigger_url']}&secret={'0' * 64}&type=scale_out&step=1")
    assert code == 403 and body["Code"] == "InvalidTriggerSecret"
    code, body = curl(f"{hook}&type=scale_out&step=500")
    assert code == 400
    assert len(app_containers(app)) == 2

    # rotation: the URL stays; the old secret works during the grace period, not after a 0-grace rotation
    rot = c.request("POST", f"/clusters/{cid}/triggers/{sc['id']}/rotate", body={"grace_seconds": 300})
    assert rot["trigger_url"] == sc["trigger_url"]
    code, body = curl(f"{hook}&type=scale_in&step=1&wait=true")
    assert code == 200 and body["state"] == "success"
    assert len(app_containers(app)) == 1
    rot0 = c.request("POST", f"/clusters/{cid}/triggers/{sc['id']}/rotate", body={"grace_seconds": 0})
    code, _ = curl(f"{hook}&type=scale_out&step=1")
    assert code == 403
    assert len(app_containers(app)) == 1

    # the service removed behind opencs's back: scaling cannot just set its count, it deploys it again
    docker(sock, "service", "rm", "web_app")
    code, body = curl(f"{sc['trigger_url']}&secret={rot0['secret']}&type=scale_out&step=1&wait=true")
    assert code == 200 and body["state"] == "success", body
    assert c.describe_task(body["task_id"])["outputs"]["actions"] == {"app": "created"}
    assert len(app_containers(app)) == 2
    code, body = curl(f"{sc['trigger_url']}&secret={rot0['secret']}&type=scale_in&step=1&wait=true")
    assert code == 200 and len(app_containers(app)) == 1

    # redeploy trigger: new containers
    rd = c.request("POST", f"/clusters/{cid}/triggers",
                   body={"cluster_id": cid, "project_id": "web", "action": "redeploy", "image_update": True})
    before = set(app_containers(app))
    code, body = curl(f"{rd['trigger_url']}&secret={rd['secret']}&wait=true")
    assert code == 200 and body["state"] == "success", body
    after = set(app_containers(app))
    assert after and not (after & before), "redeploy kept the old containers"

    # a push of a new image under the same tag redeploys the subscribed project by itself
    cont = docker(sock, "create", "busybox", "sh")
    try:
        with open(tmp / "note", "w") as f:
            f.write("release 2\n")
        docker(sock, "cp", str(tmp / "note"), f"{cont}:/etc/release-note")
        docker(sock, "commit", cont, f"{REGISTRY}/default/app:v1")
    finally:
        docker(sock, "rm", cont)
    pushed_at = time.time()
    docker(sock, "push", f"{REGISTRY}/default/app:v1")
    new_digest = docker(sock, "inspect", "--format", "{{index .RepoDigests 0}}", f"{REGISTRY}/default/app:v1")
    new_digest = new_digest.split("@", 1)[1]
    end = time.time() + 60
    while time.time() < end:
        svc = app.get("/services/web_app").json()
        cs = svc["containers"]
        if cs and not (set(cs) & after) and all(x.get("running") for x in cs.values()):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"push did not redeploy: {svc}")
    elapsed = time.time() - pushed_at
    spec_image = docker(sock, "service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
                        "web_app")
    assert new_digest in spec_image, (new_digest, spec_image)
    print(f"push -> redeployed and running in {elapsed:.1f} s")
    assert elapsed < 30

    # a notification that names no pusher (what an anonymous push would send) redeploys nothing
    manifest = "application/vnd.docker.distribution.manifest.v2+json"
    note = {"events": [{"action": "push", "target": {"mediaType": manifest, "repository": "default/app", "tag": "v1"}}]}
    token = (srv.data_dir / "registry-notify.token").read_text().strip()
    r = requests.post(f"http://{srv.endpoint}/hook/registry", json=note, headers={"Authorization": f"Bearer {token}"},
                      timeout=30)
    assert r.status_code == 200 and r.json()["tasks"] == [], r.text
    # on the trail: the token requests (docker login included, the refused push) and the pushes
    trail = c.request("GET", "/audit", query={"limit": "1000"})["entries"]
    tokens = [e for e in trail if e["action"] == "cr:GetAuthorizationToken"]
    assert any(e["resource"] == "login" and e["access_key_id"] == srv.ak for e in tokens)
    assert any("team-b/app:-" in e["outcome"] for e in tokens), tokens  # asked for push, granted nothing
    pushes = [e["outcome"] for e in trail if e["action"] == "cr:PushRepository"]
    assert len(pushes) == 2 and all(o.startswith("pushed") for o in pushes) and "T-" in pushes[1], pushes
