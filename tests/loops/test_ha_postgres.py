"""High availability on PostgreSQL (issue 13 item 2): 2 `opencs server` and 2 `opencs worker`
processes on one database and one data dir; kill -9 during a cluster create (the task's runner),
a project deploy (the master_url holder, then the deploy's runner) and a blue-green update (the
router holder, the release's runner, and every process not killed yet). Every task completes, no
node is created twice, master_url and routed traffic recover within 10 s (the gaps are printed),
and nothing is left that the store does not know.

The lean subset of bench/ha.py, which kills each of the 4 processes in each of the 3 operations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from opencs.routing.haproxy import find_binary
from opencs.sdk import AppClient
from tests.clusterkit import destroy_everything, require_local_nodes
from tests.loops import hakit
from tests.loops.hakit import Fleet, Probe, fetch

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.slow]

PREFIX, SUBNET = "oha", "10.204.0.0/24"  # no other test uses them
MAX_GAP = 10.0


def template(version: str) -> str:
    return f"""
version: '3'
services:
  web:
    image: busybox
    command: sh -c "mkdir -p /w && echo {version} > /w/index.html && exec httpd -f -p 8080 -h /w"
    stop_grace_period: 1s
    labels:
      aliyun.routing.port_8080: http://ha.test
"""


@pytest.fixture
def fleet(tmp_path: Path, pg_url: str) -> Iterator[Fleet]:
    require_local_nodes()
    if find_binary() is None:
        pytest.skip("no haproxy (apt-get install haproxy)")
    f = Fleet(tmp_path, pg_url, PREFIX, SUBNET)
    try:
        f.start_all()
        yield f
    finally:
        f.close()
        destroy_everything(f.data, PREFIX, SUBNET)


def kill_and_restart(fleet: Fleet, name: str, why: str) -> None:
    fleet.kill9(name)
    print(f"kill -9 {name} ({why})")
    fleet.start(name)


def gaps(phase: str, probes: list[Probe]) -> None:
    for p in probes:
        g = p.gap()
        print(f"{phase}: {p.name} longest gap {g:.2f}s ({p.failures} failed probes)")
        assert g < MAX_GAP, f"{phase}: {p.name} was unreachable for {g:.1f}s"
        p.window()


def test_kill9_of_each_process_during_create_deploy_and_blue_green(fleet: Fleet) -> None:
    api = fleet.api()
    probes: list[Probe] = []
    try:
        # ---- cluster create: kill -9 the process running the task while it provisions the node
        out = api.create_cluster({"name": "ha", "size": 1})
        cid, tid = out["cluster_id"], out["task_id"]
        runner = fleet.wait_owned(tid, "provision_instances")
        assert runner is not None
        kill_and_restart(fleet, runner, "running the cluster create")
        api = fleet.api()
        t = api.wait_task(tid, timeout=300)
        assert t.state.lower() == "success"
        assert fleet.task(tid).attempts >= 2  # resumed by another process
        cl = api.describe_cluster(cid)
        assert cl.state == "running" and cl.size == 1
        assert len(fleet.instances()) == 1  # no node made twice

        # master_url is served by whichever process holds the endpoints lease
        certs = api.cluster_certs(cid)
        master_url = cl.master_url
        probes.append(hakit.master_url_probe(master_url, certs).start())
        app = AppClient(master_url, certs, retries=8, backoff=1.0)

        # ---- project deploy: kill -9 the master_url holder (it serves the request's app too),
        # then the deploy's runner if another process runs it
        app.create_project("web", template("v1"), version="1")
        holder = fleet.wait_holder("endpoints")
        kill_and_restart(fleet, holder, "holding master_url")
        p = app.get_project("web")
        if p.task_id and (runner := fleet.task_owner(p.task_id)) is not None and runner not in fleet.killed:
            kill_and_restart(fleet, runner, "running the deploy")
        app.wait_project("web", timeout=180)
        api = fleet.api()
        cl = api.describe_cluster(cid)
        assert cl.master_url == master_url  # the new holder bound the recorded port
        port = int(cl.routing_url.rsplit(":", 1)[1])
        assert fetch(port, "ha.test")[1] == "v1"
        probes.append(hakit.routed_probe(port, "ha.test").start())
        gaps("deploy", probes)

        # ---- blue-green update: kill -9 the router holder, the release's runner, and every
        # process not killed so far
        acc = app.update_project("web", template("v2"), version="2", blue_green=True, weights={"old": 50, "new": 50})
        holder = fleet.wait_holder("router")
        kill_and_restart(fleet, holder, "holding the router")
        if (runner := fleet.task_owner(acc.task_id)) is not None and runner not in fleet.killed:
            kill_and_restart(fleet, runner, "running the blue-green release")
        api = fleet.api()
        t = api.wait_task(acc.task_id, timeout=180)
        assert t.state.lower() == "success"
        got = {fetch(port, "ha.test")[1] for _ in range(40)}
        assert got == {"v1", "v2"}, got
        acc = app.confirm_update("web")
        for name in [n for n in (*hakit.SERVERS, *hakit.WORKERS) if n not in fleet.killed]:
            kill_and_restart(fleet, name, "not killed yet")
        api = fleet.api()
        assert api.wait_task(acc.task_id, timeout=180).state.lower() == "success"
        assert {fetch(port, "ha.test")[1] for _ in range(20)} == {"v2"}
        gaps("blue-green", probes)
        assert set(fleet.killed) == {*hakit.SERVERS, *hakit.WORKERS}

        # ---- nothing left that the store does not know
        assert fleet.active_tasks() == []
        assert len(fleet.instances()) == 1
        left_provider_agrees(fleet)
        services = sorted(s.id for s in app.list_services())
        assert services == ["web_web"], services
    except BaseException:
        print(fleet.errors())
        raise
    finally:
        for pr in probes:
            pr.stop()


def left_provider_agrees(fleet: Fleet) -> None:
    """The provider's machines are the store's instances, and one HAProxy serves (the recorded one)."""
    from opencs.engines.swarm.node import DockerEngine
    from opencs.procs import cmdline
    from opencs.providers.local import LocalProvider
    from opencs.routing.haproxy import HAProxy

    prov = LocalProvider(fleet.data / "nodes", bridge=f"{PREFIX}0", subnet=SUBNET, prefix=PREFIX,
                         runtime=DockerEngine())
    assert {i.instance_id for i in prov.list()} == set(fleet.instances())
    cfg = str(fleet.data / "router")
    haproxies = [pid for pid in (int(d) for d in os.listdir("/proc") if d.isdigit())
                 if any("haproxy" in a for a in cmdline(pid)[:1]) and any(cfg in a for a in cmdline(pid))]
    recorded = HAProxy(fleet.data / "router").recorded_pid()
    assert recorded is not None and recorded in haproxies, (recorded, haproxies)
    for pid in haproxies:  # the master and its workers, nothing else
        assert pid == recorded or _ppid(pid) == recorded, (pid, recorded)


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0
