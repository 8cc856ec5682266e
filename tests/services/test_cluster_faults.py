"""Issue 3 under stress: kill -9 of the control plane during create, scale and delete; state
conflicts; a dead worker engine. Afterwards the provider's inventory and the store agree."""

from __future__ import annotations

import os
import signal
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from opencs.providers.localnet import socket_path
from opencs.sdk import Client
from opencs.sdk.errors import OpencsError
from tests.clusterkit import destroy_everything, node_env, require_local_nodes
from tests.conftest import ServerProcess

PREFIX, SUBNET = "ocr", "10.221.0.0/24"


class Srv:
    """A server subprocess that can be killed and restarted on the same data dir and key."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.proc: ServerProcess | None = None
        self.ak = self.secret = ""

    def start(self) -> Client:
        p = ServerProcess(self.data, env={**node_env(PREFIX, SUBNET), "OPENCS_MONITOR_INTERVAL": "1",
                                          "OPENCS_TASK_LEASE_SECONDS": "5"})
        if self.ak:
            p.ak, p.secret = self.ak, self.secret
            p.env.update(OPENCS_BOOTSTRAP_ACCESS_KEY_ID=self.ak, OPENCS_BOOTSTRAP_ACCESS_KEY_SECRET=self.secret)
        self.ak, self.secret = p.ak, p.secret
        self.proc = p.start()
        return Client(f"http://{p.endpoint}", p.ak, p.secret)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill(signal.SIGKILL)


@pytest.fixture
def srv(tmp_path: Path) -> Any:
    require_local_nodes()
    s = Srv(tmp_path / "data")
    try:
        yield s
    finally:
        if s.proc:
            s.proc.kill()
        destroy_everything(tmp_path / "data", PREFIX, SUBNET)


def inventory_agrees(data: Path) -> None:
    """Every instance the provider has is in the store and vice versa; all are running."""
    from opencs.composition import build
    from opencs.config import Settings
    from opencs.engines.swarm.node import DockerEngine
    from opencs.providers.local import LocalProvider

    prov = LocalProvider(data / "nodes", bridge=f"{PREFIX}0", subnet=SUBNET, prefix=PREFIX, runtime=DockerEngine())
    rt = build(Settings(data_dir=data, workers=0, local_nodes=False))
    try:
        from sqlalchemy import select

        from opencs.store.models import InstanceRow

        with rt.db.session() as s:
            stored = {r.instance_id: r.state for r in s.scalars(select(InstanceRow))}
    finally:
        rt.close()
    provided = {i.instance_id: str(i.state) for i in prov.list()}
    assert set(stored) == set(provided), (stored, provided)
    assert set(provided.values()) <= {"running"}, provided


def kill_when(client: Client, task_id: str, stage: str, srv: Srv, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        t = client.describe_task(task_id)
        if t["current_stage"] == stage or t["state"] in ("success", "fail"):
            break
        time.sleep(0.02)
    srv.kill9()


@pytest.mark.docker
@pytest.mark.slow
def test_kill9_during_create_scale_delete(srv: Srv) -> None:
    c = srv.start()
    out = c.create_cluster({"name": "k9", "size": 2})
    kill_when(c, out["task_id"], "provision_instances", srv)
    c = srv.start()
    t = c.wait_task(out["task_id"], timeout=180)
    assert t["state"] == "success"
    cl = c.describe_cluster(out["cluster_id"])
    assert cl["state"] == "running" and cl["size"] == 2
    inventory_agrees(srv.data)

    out2 = c.scale_cluster(out["cluster_id"], {"size": 3})
    kill_when(c, out2["task_id"], "scale", srv)
    c = srv.start()
    t = c.wait_task(out2["task_id"], timeout=180)
    cl = c.describe_cluster(out["cluster_id"])
    assert cl["state"] == "running" and cl["size"] == 3, (t, cl)
    nodes = c.cluster_nodes(out["cluster_id"])["nodes"]
    assert len(nodes) == 3 and all(n["role"] for n in nodes)
    inventory_agrees(srv.data)

    out3 = c.delete_cluster(out["cluster_id"])
    kill_when(c, out3["task_id"], "release_instances", srv)
    c = srv.start()
    t = c.wait_task(out3["task_id"], timeout=180)
    assert t["state"] == "success"
    with pytest.raises(OpencsError) as e:
        c.describe_cluster(out["cluster_id"])
    assert e.value.status == 404
    inventory_agrees(srv.data)


@pytest.mark.docker
@pytest.mark.slow
def test_conflicts_and_a_dead_worker(srv: Srv) -> None:
    c = srv.start()
    out = c.create_cluster({"name": "conf", "size": 2})
    # while it is launching, membership changes are refused
    with pytest.raises(OpencsError) as e:
        c.scale_cluster(out["cluster_id"], {"size": 3})
    assert e.value.status == 409 and e.value.code == "ErrorClusterStateConflict"
    c.wait_task(out["task_id"], timeout=180)
    cid = out["cluster_id"]

    with pytest.raises(OpencsError) as e:  # duplicate name
        c.create_cluster({"name": "conf", "size": 1})
    assert e.value.status == 409 and e.value.code == "ErrorClusterNameExists"

    nodes = c.cluster_nodes(cid)["nodes"]
    manager = next(n for n in nodes if n["role"] == "manager")
    worker = next(n for n in nodes if n["role"] == "worker")
    with pytest.raises(OpencsError) as e:  # the only manager
        c.remove_node(cid, manager["ip_address"][0])
    assert e.value.status == 409 and e.value.code == "ErrorLastManager"
    with pytest.raises(OpencsError) as e:  # unknown node
        c.remove_node(cid, "10.221.0.250")
    assert e.value.status == 404

    # attaching an instance that already belongs to a cluster
    with pytest.raises(OpencsError) as e:
        c.attach_instances(cid, {"instances": [worker["instance_id"]]})
    assert e.value.status == 409 and e.value.code == "ErrorInstanceBusy"
    assert c.describe_cluster(cid)["state"] == "running"

    # a service with a task on every node; then the worker's engine dies (kill -9 of dockerd)
    from opencs.composition import build
    from opencs.config import Settings

    rt = build(Settings(data_dir=srv.data, workers=0, **{"local_prefix": PREFIX,
                                                                 "local_bridge": f"{PREFIX}0", "local_subnet": SUBNET}))
    try:
        inst = rt.providers["local"].inspect(worker["instance_id"])
        pid = inst.details["pid"]
    finally:
        rt.close()
    import docker

    from opencs.engines.swarm import client as engine

    mgr_host = f"unix://{socket_path(srv.data / 'nodes', manager['instance_id'])}"
    with closing(engine(mgr_host)) as d:
        # two replicas: swarm's spread strategy puts one on each node
        d.services.create("busybox", ["sleep", "3600"], name="spread", mode=docker.types.ServiceMode("replicated", 2),
                          endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"))
        end = time.time() + 90
        while time.time() < end:
            running = [t for t in d.api.tasks(filters={"service": "spread", "desired-state": "running"})
                       if t["Status"]["State"] == "running"]
            if len(running) == 2:
                break
            time.sleep(0.3)
        assert len(running) == 2 and len({t["NodeID"] for t in running}) == 2
        os.kill(pid, signal.SIGKILL)
        # the monitor reports it; swarm moves the task to the manager
        end = time.time() + 60
        health = ""
        while time.time() < end:
            n = next(n for n in c.cluster_nodes(cid)["nodes"] if n["instance_id"] == worker["instance_id"])
            health = n["health"]
            if health.startswith("unhealthy"):
                break
            time.sleep(0.3)
        assert health.startswith("unhealthy"), health
        end = time.time() + 60
        while time.time() < end:
            tasks = [t for t in d.api.tasks(filters={"service": "spread", "desired-state": "running"})
                     if t["Status"]["State"] == "running"]
            if len(tasks) == 2 and all(t["NodeID"] == next(m.attrs["ID"] for m in d.nodes.list()
                                                          if m.attrs["Spec"]["Role"] == "manager") for t in tasks):
                break
            time.sleep(0.5)
        assert len(tasks) == 2, "swarm did not reschedule the dead worker's task"
