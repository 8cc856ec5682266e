"""Issue 12's first check, end to end on a real 2-node swarm: a scaling rule on a service becomes a
Prometheus rule; busy loops inside the service's containers drive its CPU up; Prometheus fires,
Alertmanager calls the service's scaling trigger and the replicas grow; when the load stops they
shrink back to the minimum. The rule is the check's (`cpu > 50 % for 20 s` -> scale out by 2;
`< 10 % for 30 s` -> scale in by 1, minimum 1); scrape and evaluation intervals are short (1 s) so
that the durations are what the run waits for (about two and a half minutes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencs.monitoring.stack import ALERTMANAGER, PROMETHEUS, MonitoringStack
from opencs.providers.localnet import socket_path
from opencs.sdk import Client
from opencs.sdk.errors import BadRequestError
from tests.appapi.test_triggers_e2e import App, cluster_app, wait_project
from tests.clusterkit import node_server
from tests.conftest import ServerProcess, Signer

pytestmark = pytest.mark.integration
PREFIX, SUBNET = "ocm", "10.229.0.0/24"
TEMPLATE = """
version: '3'
services:
  app:
    image: busybox
    command: sh -c 'echo started; exec sleep 3600'
    stop_grace_period: 1s
"""
HOG = """
version: '3'
services:
  hog:
    image: busybox
    command: sh -c 'sleep 1; tail /dev/zero'
    deploy:
      resources: {limits: {memory: 16M}}
      restart_policy: {condition: none}
"""
LOAD_SECONDS = 120  # at most: the test stops the load (STOP) once the replicas grew
STOP = "/tmp/stop-load"
BUSY = f"timeout {LOAD_SECONDS} sh -c 'while [ ! -e {STOP} ]; do :; done'"
SERVICE_LABEL = "com.docker.swarm.service.name"


@pytest.fixture
def server(tmp_path: Path) -> Any:
    if not (PROMETHEUS.exists() and ALERTMANAGER.exists()):
        pytest.skip("apt-get install prometheus prometheus-alertmanager")
    data = tmp_path / "data"
    env = {"OPENCS_MONITOR_INTERVAL": "0", "OPENCS_USAGE_INTERVAL": "1", "OPENCS_MONITORING_INTERVAL": "1",
           "OPENCS_CONTAINER_EVENTS_INTERVAL": "0.5"}
    with node_server(data, PREFIX, SUBNET, env) as srv:
        try:
            yield srv, tmp_path
        finally:
            srv.kill()  # first, so that it cannot start the stack again
            MonitoringStack(data / "monitoring").stop()  # by the PIDs it recorded


def containers(app: App) -> dict[str, Any]:
    return {k: v for k, v in app.get("/services/web_app").json()["containers"].items() if v.get("running")}


def wait_count(app: App, want: int, timeout: float) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if len(containers(app)) == want:
            return time.monotonic()
        time.sleep(0.5)
    raise AssertionError(f"web_app has {len(containers(app))} running containers, not {want}")


def load(socks: list[str]) -> tuple[list[subprocess.Popen[bytes]], list[tuple[str, str]]]:
    """Two busy loops in every container of web_app now running, until STOP exists (or LOAD_SECONDS)."""
    procs, loaded = [], []
    for sock in socks:
        ids = subprocess.run(["docker", "-H", sock, "ps", "-q", "--filter", f"label={SERVICE_LABEL}=web_app"],
                             capture_output=True, text=True, check=True).stdout.split()
        for cid in ids:
            loaded.append((sock, cid))
            procs.append(subprocess.Popen(
                ["docker", "-H", sock, "exec", cid, "sh", "-c", f"rm -f {STOP}; {BUSY} & {BUSY}; wait"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    assert procs, "no container to load"
    return procs, loaded


def unload(procs: list[subprocess.Popen[bytes]], loaded: list[tuple[str, str]]) -> None:
    for sock, cid in loaded:
        subprocess.run(["docker", "-H", sock, "exec", cid, "touch", STOP], capture_output=True, timeout=30)
    for p in procs:
        p.wait(LOAD_SECONDS + 30)


@pytest.mark.docker
@pytest.mark.slow
def test_cpu_alert_scales_out_then_in(server: Any) -> None:
    srv, tmp = server
    c = Client(srv.url, srv.ak, srv.secret)
    out = c.create_cluster({"name": "mon", "size": 2})
    c.wait_task(out["task_id"], timeout=180)
    cid = out["cluster_id"]
    app = cluster_app(c, cid, tmp / "certs")
    r = app.post("/projects/", json={"name": "web", "template": TEMPLATE, "version": "1.0"})
    assert r.status_code == 201, r.text
    assert wait_project(app, "web")["current_state"] == "running"

    # bad rules are refused before anything is made
    with pytest.raises(BadRequestError) as bad:
        c.request("POST", f"/clusters/{cid}/alerts", body={"project_id": "web", "service": "app"})
    assert "scale_out" in bad.value.message

    rule = c.request("POST", f"/clusters/{cid}/alerts", body={
        "project_id": "web", "service": "app", "min_replicas": 1, "max_replicas": 5, "cooldown": "8s",
        "scale_out": {"cpu_above": 50, "for": "20s", "step": 2},
        "scale_in": {"cpu_below": 10, "for": "30s", "step": 1}})
    # `opencs monitoring enable`, the real command against the real server
    env = {**os.environ, "OPENCS_ENDPOINT": srv.url, "OPENCS_ACCESS_KEY_ID": srv.ak,
           "OPENCS_ACCESS_KEY_SECRET": srv.secret, "HOME": str(tmp)}
    cli = subprocess.run([sys.executable, "-m", "opencs.cli.main", "monitoring", "enable"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert cli.returncode == 0, cli.stderr
    status = json.loads(cli.stdout)
    assert status["prometheus"]["running"] and status["alertmanager"]["running"], status
    assert status["clusters"] == [cid] and status["alert_rules"] == 1
    prom = status["prometheus"]["url"]

    # the rule is a Prometheus rule, the cluster a scrape target with the containers' figures
    end = time.monotonic() + 30
    while time.monotonic() < end:
        groups = httpx.get(f"{prom}/api/v1/rules").json()["data"]["groups"]
        series = httpx.get(f"{prom}/api/v1/query", params={
            "query": f'opencs_container_cpu_usage_seconds_total{{aliyun_cluster="{cid}",aliyun_service_id="web_app"}}'
        }).json()["data"]["result"]
        if groups and series:
            break
        time.sleep(0.5)
    assert {r["labels"]["opencs_rule"] for g in groups for r in g["rules"]} == {rule["id"]}
    assert series and series[0]["metric"]["aliyun_project"] == "web"

    nodes = c.cluster_nodes(cid)["nodes"]
    socks = [f"unix://{socket_path(srv.data_dir / 'nodes', n['instance_id'])}" for n in nodes]
    started = time.monotonic()
    procs, loaded = load(socks)
    try:
        grown = wait_count(app, 3, 100)
        print(f"load start -> 3 replicas running in {grown - started:.1f} s (load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    finally:
        unload(procs, loaded)
    stopped = time.monotonic()
    assert len(containers(app)) == 3  # no scale-in before the idle CPU lasted 30 s
    wait_count(app, 2, 90)
    shrunk = wait_count(app, 1, 90)
    print(f"load end -> back to 1 replica in {shrunk - stopped:.1f} s")
    time.sleep(3)
    assert len(containers(app)) == 1  # never below min_replicas
    triggers = c.request("GET", f"/clusters/{cid}/triggers")
    assert [t["last_invoked"] for t in triggers if t["id"] == rule["trigger_id"]] != [None]

    check_events(c, srv, app, cid, socks)
    check_logs(app, socks)

    # deleting the rule deletes its trigger and the Prometheus rule
    c.request("DELETE", f"/clusters/{cid}/alerts/{rule['id']}")
    assert rule["trigger_id"] not in [t["id"] for t in c.request("GET", f"/clusters/{cid}/triggers")]
    end = time.monotonic() + 15
    while httpx.get(f"{prom}/api/v1/rules").json()["data"]["groups"][0]["rules"] and time.monotonic() < end:
        time.sleep(0.5)
    assert not httpx.get(f"{prom}/api/v1/rules").json()["data"]["groups"][0]["rules"]
    assert c.request("POST", "/monitoring/disable")["enabled"] is False


def running_container(socks: list[str]) -> tuple[str, str]:
    """(node socket, id) of a running web_app container (the newest, if one is still stopping)."""
    found = [(s, i) for s in socks for i in subprocess.run(
        ["docker", "-H", s, "ps", "-q", "--filter", f"label={SERVICE_LABEL}=web_app", "--filter", "status=running"],
        capture_output=True, text=True, check=True).stdout.split()]
    assert found, "no running web_app container"
    return found[0]


def events(c: Client, cid: str, **q: str) -> list[dict[str, Any]]:
    return list(c.request("GET", f"/clusters/{cid}/events", query=q)["events"])


def check_events(c: Client, srv: ServerProcess, app: App, cid: str, socks: list[str]) -> None:
    """Issue 12 item 4 on the same cluster: each scaling decision with its cause, the tasks' stages,
    a killed container with its exit reason (followed as server-sent events), an OOM kill."""
    scaling = events(c, cid, kind="scaling")
    assert [e["reason"] for e in scaling][:1] == ["ScaleOut"] and "ScaleIn" in [e["reason"] for e in scaling]
    assert all("alert OpencsScale" in e["message"] and "cpu " in e["message"] for e in scaling), scaling
    assert any(e["reason"] == "StageSuccess" and "project_scale" in e["message"]
               for e in events(c, cid, kind="task", project="web"))

    last = max([e["id"] for e in events(c, cid)] or [0])
    path, query = f"/clusters/{cid}/events", {"follow": "true", "kind": "container", "after": str(last)}
    headers = Signer(srv.ak, srv.secret).headers("GET", path, query, host=srv.endpoint)
    victim = running_container(socks)
    with httpx.stream("GET", srv.url + path, params=query, headers=headers, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert next(lines).startswith(":")
        killed = time.monotonic()
        subprocess.run(["docker", "-H", victim[0], "kill", victim[1]], check=True, capture_output=True)
        for line in lines:
            if line.startswith("data: "):
                got = json.loads(line[6:])
                break
    seen = time.monotonic() - killed
    print(f"container killed -> its event streamed in {seen:.2f} s")
    assert got["reason"] == "ContainerDied" and "killed by SIGKILL" in got["message"] and got["project"] == "web"
    assert seen < 3

    r2 = app.post("/projects/", json={"name": "oom", "template": HOG, "version": "1.0"})
    assert r2.status_code == 201, r2.text
    end = time.monotonic() + 60
    while time.monotonic() < end:
        oom = [e for e in events(c, cid, kind="container", project="oom") if e["reason"] == "ContainerOOMKilled"]
        if oom:
            break
        time.sleep(1)
    assert oom and "OOM killer" in oom[0]["message"], events(c, cid, kind="container")


def check_logs(app: App, socks: list[str]) -> None:
    """Issue 12 item 5: a project's logs through the engines' log APIs, prefixed by container; a
    followed service log shows a new line within a second."""
    end = time.monotonic() + 20
    while time.monotonic() < end:  # the container check_events killed is started again by the swarm
        names = [v["name"] for v in containers(app).values()]
        if len(names) == 1:
            break
        time.sleep(0.5)
    r = app.get("/projects/web/logs", params={"timestamps": "true", "tail": "all"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    mine = [ln for ln in r.text.splitlines() if ln.startswith(names[0])]
    assert mine and mine[-1].split(" | ", 1)[1].split(" ", 1)[1] == "started", r.text
    assert app.get("/projects/web/logs", params={"tail": "x"}).status_code == 400
    assert app.get("/services/web_nope/logs").status_code == 404

    sock, cid = running_container(socks)
    with app.get("/services/web_app/logs", params={"follow": "true", "tail": "0"}, stream=True) as r:
        assert r.status_code == 200
        said = time.monotonic()
        subprocess.run(["docker", "-H", sock, "exec", cid, "sh", "-c", "echo marker-42 > /proc/1/fd/1"], check=True)
        for line in r.iter_lines(decode_unicode=True):
            if line and "marker-42" in line:
                break
    seen = time.monotonic() - said
    print(f"a new log line streamed in {seen:.2f} s")
    assert line.split(" | ", 1) == [names[0].ljust(len(names[0])), "marker-42"]
    assert seen < 1.5
