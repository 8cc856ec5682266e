"""Issue 13 item 3 on a real one-node swarm, through the cluster's master_url: scale then update,
update then scale, two updates in a row and 20 redeploy triggers in 2 s — each request is answered
without a 409 while the one before still runs, and the swarm converges to the last request. Prints
the swarm service updates each case cost (opencs_engine_service_writes) and how long it took.

The triggers are fired through TriggerService.invoke, what the /hook/trigger route calls (the
control-plane HTTP server is not part of this runtime)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from opencs import metrics
from opencs.engines.swarm import client as engine_client
from opencs.services.nodes import NodeOps
from tests.appapi.test_projects import MasterUrl
from tests.clusterkit import create_cluster, node_runtime, write_certs

PREFIX, SUBNET = "ocds", "10.207.0.0/24"  # no other test uses them

TEMPLATE = """
version: '3'
services:
  web:
    image: busybox
    command: sleep {n}
    stop_grace_period: 1s
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, MasterUrl, str]]:
    d: Path = tmp_path_factory.mktemp("desired")
    with node_runtime(d / "d", prefix=PREFIX, subnet=SUBNET) as rt:
        cid = create_cluster(rt, 1)
        api = MasterUrl(rt.clusters.get(cid)["master_url"], write_certs(rt, cid, d / "certs"))
        yield rt, api, cid


def writes() -> float:
    return sum(metrics.REGISTRY.get_sample_value("opencs_engine_service_writes_total", {"op": op}) or 0.0
               for op in ("create", "update"))


def live(rt: Any, cid: str) -> dict[str, Any]:
    """The swarm's own spec of the project's service (not what opencs thinks)."""
    ip = NodeOps(rt).rows(cid)[0]
    with closing(engine_client(ip.docker_host)) as c:
        s = c.api.inspect_service("dw_web")["Spec"]
    return {"args": s["TaskTemplate"]["ContainerSpec"].get("Args"), "replicas": s["Mode"]["Replicated"]["Replicas"],
            "force": s["TaskTemplate"].get("ForceUpdate", 0)}


def accepted(r: Any) -> Any:
    assert r.status_code in (200, 202), (r.status_code, r.text)  # never a 409
    return r


def converged(api: MasterUrl, version: str, replicas: int, timeout: float = 120) -> dict[str, Any]:
    end = time.time() + timeout
    while True:
        p = api.get("/projects/dw").json()
        running = [c for c in next(s for s in p["services"] if s["name"] == "web")["containers"].values()
                   if c.get("running")]
        if p["current_state"] == "running" and p["version"] == version and len(running) == replicas:
            return p
        assert p["current_state"] != "failed", p
        assert time.time() < end, (p["current_state"], p["version"], len(running), p.get("message"))
        time.sleep(0.3)


def update(api: MasterUrl, n: int, version: str) -> Any:
    return accepted(api.post("/projects/dw/update", json={"template": TEMPLATE.format(n=n), "version": version}))


@pytest.mark.docker
@pytest.mark.slow
def test_the_last_request_wins_on_a_real_swarm(env: tuple[Any, MasterUrl, str]) -> None:
    rt, api, cid = env
    assert api.post("/projects/", json={"name": "dw", "template": TEMPLATE.format(n=1000)}).status_code == 201
    converged(api, "1.0", 1)
    scaler = rt.triggers.create(cid, "dw", "scaling", service="web")
    redeploy = rt.triggers.create(cid, "dw", "redeploy")
    figures: list[str] = []

    def case(name: str, version: str, replicas: int, args: list[str], run: Any) -> None:
        w0, t0 = writes(), time.time()
        run()
        answered = time.time() - t0
        converged(api, version, replicas)
        spec = live(rt, cid)
        assert spec["args"] == args and spec["replicas"] == replicas, spec
        figures.append(f"{name}: {writes() - w0:.0f} engine updates, answered in {answered:.2f}s, "
                       f"converged in {time.time() - t0:.1f}s")
        print(figures[-1])

    # scale then update: the update's template (and its replica count) wins
    case("scale then update", "2.0", 1, ["sleep", "1001"], lambda: (
        rt.triggers.invoke(scaler["token"], scaler["secret"], "scale_out", "2"),
        update(api, 1001, "2.0")))
    # update then scale: the update runs, the scale follows (the scale call answers once converged)
    case("update then scale", "3.0", 2, ["sleep", "1002"], lambda: (
        update(api, 1002, "3.0"),
        accepted(api.post("/services/dw_web/scale", json={"type": "scale_to", "value": 2}))))
    # two updates in a row: the second wins (the update resets the scale to the template's)
    case("two updates in a row", "5.0", 1, ["sleep", "1004"], lambda: (
        update(api, 1003, "4.0"), update(api, 1004, "5.0")))
    # 20 redeploy triggers in 2 s: one or two runs, each container recreated by the last
    before = live(rt, cid)["force"]
    tids: list[str] = []

    def burst() -> None:
        t0 = time.time()

        def call(i: int) -> str:  # call i starts at t0 + i/10 s, however long the others take
            time.sleep(max(0.0, t0 + i / 10 - time.time()))
            return str(rt.triggers.invoke(redeploy["token"], redeploy["secret"], None, None).task_id)

        with ThreadPoolExecutor(4) as pool:
            tids.extend(pool.map(call, range(20)))
        print(f"20 triggers sent in {time.time() - t0:.2f}s")

    case("20 triggers in 2 s", "5.0", 1, ["sleep", "1004"], burst)
    runs = live(rt, cid)["force"] - before
    print(f"20 triggers: {len(set(tids))} distinct task ids, {runs} redeploy runs reached the swarm")
    assert 1 <= runs <= 2 and len(set(tids)) <= 3, (runs, tids)
    final = rt.tasks.final(tids[-1])
    assert final.state == "success", final
    assert api.delete("/projects/dw").status_code == 200
