"""Issue 13, item 7 on a real one-node swarm: a project mixing a long-running service, a one-shot
service that exits 0 and a service that exits 1 at once reports, within 30 s, a terminal state whose
per-service detail matches what the containers did, with the failing service's exit code and last
log line in the message; its restarts are bounded and its exited container is kept for inspection.
A service that dies two seconds after it started fails its project the same way; an external
network the cluster lacks is a 400 before anything is created."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from opencs.engines.swarm import client as engine_client
from opencs.services.nodes import NodeOps
from tests.appapi.test_projects import MasterUrl
from tests.clusterkit import create_cluster, node_runtime, write_certs

MIXED = """
version: '3'
services:
  web:
    image: busybox
    command: sleep 3600
    stop_grace_period: 1s
  once:
    image: busybox
    command: echo hello
    restart: ""
  bad:
    image: busybox
    command: sh -c 'echo starting; echo boom; exit 1'
"""
LATE = """
version: '3'
services:
  late:
    image: busybox
    command: sh -c 'echo up; sleep 2; echo late-crash; exit 1'
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, MasterUrl, str]]:
    d: Path = tmp_path_factory.mktemp("exits")
    with node_runtime(d / "d", prefix="oce", subnet="10.237.0.0/24") as rt:
        cid = create_cluster(rt, 1)
        api = MasterUrl(rt.clusters.get(cid)["master_url"], write_certs(rt, cid, d / "certs"))
        yield rt, api, cid


def services(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in p["services"]}


@pytest.mark.docker
@pytest.mark.slow
def test_containers_that_exit_get_honest_states(env: tuple[Any, MasterUrl, str]) -> None:
    rt, api, cid = env
    r = api.post("/projects/", json={"name": "net", "template": "version: '3'\nservices:\n  web:\n    image: busybox\n"
                                     "    networks: [front]\nnetworks:\n  front: {external: true}\n"})
    assert r.status_code == 400 and r.json()["Code"] == "NetworkNotFound", r.text
    assert api.get("/projects/net").status_code == 404

    t0 = time.time()
    for name, template in (("mix", MIXED), ("late", LATE)):
        r = api.post("/projects/", json={"name": name, "template": template})
        assert r.status_code == 201, r.text
    want = {"web": "running", "once": "completed", "bad": "failed"}
    while True:
        p = api.get("/projects/mix").json()
        got = {n: s["current_state"] for n, s in services(p).items()}
        if p["current_state"] == "failed" and got == want:
            break
        assert time.time() - t0 < 30, (p["current_state"], got, p.get("message"))
        time.sleep(0.5)
    print(f"mixed project terminal in {time.time() - t0:.1f}s: {p['current_state']} {got}")
    assert "service bad: exit code 1" in p["message"] and "boom" in p["message"], p["message"]
    bad = services(p)["bad"]
    assert "exit code 1" in bad["message"] and "boom" in bad["message"]
    once = services(p)["once"]
    assert [c["status"] for c in once["containers"].values()] == ["exited"]
    [(kept, info)] = bad["containers"].items()
    assert info["running"] is False and info["status"] == "exited"

    ip = NodeOps(rt).rows(cid)[0]
    with closing(engine_client(ip.docker_host)) as c:  # the crash loop was bounded, its container kept
        failed = [t for t in c.api.tasks(filters={"service": "mix_bad"}) if t["Status"]["State"] == "failed"]
        assert len(failed) == 3, [t["Status"] for t in failed]
        assert c.api.inspect_container(kept)["State"]["ExitCode"] == 1
        assert b"boom" in c.api.logs(kept)
        time.sleep(6)  # longer than the restart delay: no new attempt
        assert len([t for t in c.api.tasks(filters={"service": "mix_bad"})]) == 3

    # a service that dies two seconds after it started: failed after its bounded restarts too
    while (p := api.get("/projects/late").json())["current_state"] != "failed":
        assert time.time() - t0 < 60, (p["current_state"], services(p)["late"]["current_state"])
        time.sleep(0.5)
    print(f"late crash failed after {time.time() - t0:.1f}s: {p.get('message')}")
    assert services(p)["late"]["current_state"] == "failed"
    assert "exit code 1" in p["message"] and "late-crash" in p["message"], p
    for name in ("mix", "late"):
        assert api.delete(f"/projects/{name}").status_code == 200
