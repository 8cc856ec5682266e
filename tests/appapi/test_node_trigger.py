"""Issue 12 item 3 with the default server (listening on 127.0.0.1): the trigger URL it hands out
names the nodes' bridge, and a container on a node that calls it with busybox's wget scales the
service (opencs.loops.node_api serves the node-facing paths there; the rest of the API is not)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from opencs.providers.localnet import socket_path
from opencs.sdk import Client
from tests.appapi.test_triggers_e2e import cluster_app, wait_project
from tests.clusterkit import node_server
from tests.monitoring.test_influxdb import docker

pytestmark = pytest.mark.integration
PREFIX, SUBNET = "otr", "10.253.0.0/24"
GATEWAY = "10.253.0.1"
TEMPLATE = """
version: '2'
services:
  app:
    image: busybox
    command: sleep 3600
    stop_grace_period: 1s
"""


@pytest.fixture
def server(tmp_path: Path) -> Any:
    env = {"OPENCS_MONITOR_INTERVAL": "0", "OPENCS_USAGE_INTERVAL": "0", "OPENCS_CONTAINER_EVENTS_INTERVAL": "0"}
    with node_server(tmp_path / "data", PREFIX, SUBNET, env) as srv:
        yield srv, tmp_path


@pytest.mark.docker
@pytest.mark.slow
def test_a_container_on_a_node_fires_its_trigger(server: Any) -> None:
    srv, tmp = server
    assert srv.host == "127.0.0.1"  # the default: the API itself is on loopback only
    c = Client(srv.url, srv.ak, srv.secret)
    out = c.create_cluster({"name": "nodetrig", "size": 1})
    c.wait_task(out["task_id"], timeout=180)
    cid = out["cluster_id"]
    app = cluster_app(c, cid, tmp / "certs")
    r = app.post("/projects/", json={"name": "web", "template": TEMPLATE, "version": "1.0"})
    assert r.status_code == 201, r.text
    assert wait_project(app, "web")["current_state"] == "running"

    trig = c.request("POST", f"/clusters/{cid}/triggers",
                     body={"cluster_id": cid, "project_id": "web", "action": "scaling", "service": "app"})
    assert trig["trigger_url"].startswith(f"http://{GATEWAY}:{srv.port}/hook/trigger?"), trig["trigger_url"]

    (node,) = c.cluster_nodes(cid)["nodes"]
    sock = f"unix://{socket_path(srv.data_dir / 'nodes', node['instance_id'])}"
    cfg = tmp / "docker-config"
    hook = f"{trig['trigger_url']}&secret={trig['secret']}&type=scale_out&step=1&wait=true"
    start = time.monotonic()
    body = docker(sock, "run", "--rm", "busybox", "wget", "-qO-", hook, config=cfg)
    took = time.monotonic() - start
    reply = json.loads(body)
    assert reply["state"] == "success", reply
    assert len(app.get("/services/web_app").json()["containers"]) == 2
    print(f"\ncontainer -> trigger -> 2 replicas: {took:.1f} s (docker run included)")

    # the bridge serves the nodes' paths only: the signed API is not there
    probe = docker(sock, "run", "--rm", "busybox", "sh", "-c",
                   f"wget -qO- http://{GATEWAY}:{srv.port}/clusters 2>&1; true", config=cfg)
    assert "404" in probe, probe
