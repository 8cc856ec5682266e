"""Blue-green releases (spec §10.13–10.15) on a real 2-node swarm: the new version runs beside the
old one, HAProxy splits the requests by the configured weights, confirm/rollback switch all traffic
without a single failed request, and a new version that fails its health check rolls back by itself."""

from __future__ import annotations

import time
from collections import Counter
from contextlib import closing
from typing import Any

import pytest

from opencs.engines.swarm import client as engine_client
from tests.routing.conftest import Env, Hammer, fetch


def template(version: str, *, healthy: bool = True) -> str:
    check = "wget -q -O /dev/null http://127.0.0.1:8080/" if healthy else "false"
    return f"""
version: '3'
services:
  web:
    image: busybox
    command: sh -c "mkdir -p /w && echo {version}-$$(hostname) > /w/index.html && exec httpd -f -p 8080 -h /w"
    stop_grace_period: 1s
    labels:
      aliyun.scale: "2"
      aliyun.routing.port_8080: http://bg.test
    healthcheck:
      test: ["CMD-SHELL", "{check}"]
      interval: 1s
      timeout: 2s
      retries: 2
"""


def test_new_version_stack_and_weights() -> None:
    from opencs.compose import Options, build_stack
    from opencs.errors import BadRequest
    from opencs.services.projects.bluegreen import green_model, parse_weights

    tpl = template("v2") + "    ports: ['8080:8080']\n    volumes: ['data:/data']\nvolumes:\n  data: {}\n"
    blue = build_stack("shop", tpl, {}, Options(ipvs=False))
    gm = green_model(blue)
    g, b = gm.services["web"], blue.services["web"]
    assert (g.full_name, g.spec["Name"], b.full_name) == ("shop_web-new", "shop_web-new", "shop_web")
    assert g.spec["Labels"]["opencs.release"] == "green" and "opencs.release" not in b.spec["Labels"]
    assert g.spec["Labels"]["aliyun.routing.port_8080"] == "http://bg.test"  # routed like the old version
    assert g.spec["EndpointSpec"]["Ports"] == [{"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}]
    assert g.published == [] and b.published == [(8080, "tcp", "host")]  # the old version keeps 8080
    assert [n["Target"] for n in g.spec["TaskTemplate"]["Networks"]] == ["shop_default-new"]
    assert g.spec["TaskTemplate"]["ContainerSpec"]["Mounts"][0]["Source"] == "shop_data"  # data is shared
    assert gm.networks["default"].name == "shop_default-new" and blue.networks["default"].name == "shop_default"
    assert parse_weights(None) == {"old": 50, "new": 50}
    assert parse_weights({"new": 20}) == {"old": 80, "new": 20} == parse_weights({"old": "80", "new": 20})
    for bad in ({"old": 60, "new": 60}, {"new": 101}, {"blue": 1}, [50, 50], {"old": True}):
        with pytest.raises(BadRequest):
            parse_weights(bad)


def split(port: int, n: int = 200) -> Counter[str]:
    c: Counter[str] = Counter()
    for _ in range(n):
        status, body = fetch(port, "bg.test")
        assert status == 200, (status, body)
        c[body.split("-", 1)[0]] += 1
    return c


def swarm_services(env: Env) -> list[str]:
    with closing(engine_client(env.rt.projects.engine(env.cid).manager())) as c:
        return sorted(s["Spec"]["Name"] for s in c.api.services(filters={"label": "com.docker.stack.namespace=bg"}))


def wait_release(env: Env, tid: str, timeout: float = 120) -> dict[str, Any]:
    row = env.wait_task(tid, timeout)
    assert row.state == "success", (row.error_code, row.error_message)
    return env.project("bg")


@pytest.mark.docker
@pytest.mark.slow
def test_blue_green_release_confirm_rollback_and_health_gate(env: Env) -> None:
    api = env.api
    t0 = time.time()
    assert api.post("/projects/", json={"name": "bg", "template": template("v1"), "version": "1"}).status_code == 201
    env.wait_running("bg")
    port = env.routing_port()
    assert split(port, 20) == Counter(v1=20)

    # ---- validation: version required and new; one release at a time; weights sum to 100
    bg = {"update_method": "blue-green", "template": template("v2")}
    r = api.post("/projects/bg/update", json=bg)
    assert r.status_code == 400 and r.json()["Code"] == "InvalidParameter.Version"
    r = api.post("/projects/bg/update", json={**bg, "version": "1"})
    assert r.status_code == 409 and r.json()["Code"] == "VersionConflict"
    r = api.post("/projects/bg/update", json={**bg, "version": "2", "weights": {"old": 70, "new": 20}})
    assert r.status_code == 400 and r.json()["Code"] == "InvalidParameter.Weights"
    assert api.post("/projects/bg/confirm-update", params={"force": "true"}).json()["Code"] == "NoBlueGreenRelease"

    # ---- release 2 beside 1 at 80/20
    r = api.post("/projects/bg/update", json={**bg, "version": "2", "weights": {"old": 80, "new": 20}})
    assert r.status_code == 202, r.text
    tid = r.json()["task_id"]
    r = api.post("/projects/bg/update", json={**bg, "version": "3"})
    assert r.status_code == 409 and r.json()["Code"] in ("BlueGreenInProgress", "ProjectBusy")
    p = wait_release(env, tid)
    rel = p["blue_green"]
    assert (rel["state"], rel["old_version"], rel["new_version"], rel["weights"]) == \
        ("serving", "1", "2", {"old": 80, "new": 20})
    assert p["version"] == "1" and p["current_state"] == "running"
    old_c = p["services"][0]["containers"]
    new_c = rel["services"][0]["containers"]
    assert rel["services"][0]["id"] == "bg_web-new" and rel["services"][0]["release"] == "new"
    assert len(old_c) == 2 and len(new_c) == 2 and all(c["running"] for c in [*old_c.values(), *new_c.values()])
    assert swarm_services(env) == ["bg_web", "bg_web-new"]
    print(f"release serving after {time.time() - t0:.1f}s")
    got = split(port)
    print(f"80/20 split of 200 requests: {dict(got)}")
    assert got["v1"] + got["v2"] == 200 and abs(got["v2"] / 200 - 0.20) <= 0.10
    # other operations wait for the release; the split can change while both serve
    r = api.post("/projects/bg/update", json={"template": template("v9"), "version": "9"})
    assert r.status_code == 409 and r.json()["Code"] == "BlueGreenInProgress"
    r = api.post("/projects/bg/confirm-update", params={"force": "false"})
    assert r.status_code == 409 and r.json()["Code"] == "WeightsNotShifted"  # the user's weights stand
    r = api.post("/projects/bg/update", json={"update_method": "blue-green", "weights": {"new": 50}})
    assert r.status_code == 202, r.text
    wait_release(env, r.json()["task_id"], 30)
    got = split(port)
    print(f"50/50 split of 200 requests: {dict(got)}")
    assert abs(got["v2"] / 200 - 0.50) <= 0.10

    # ---- confirm (force): every request reaches version 2, none fails during the switch
    t1 = time.time()
    with Hammer(port, "bg.test") as h:
        r = api.post("/projects/bg/confirm-update", params={"force": "true"})
        assert r.status_code == 202, r.text
        p = wait_release(env, r.json()["task_id"])
    print(f"confirm in {time.time() - t1:.1f}s: {h.total} requests during the switch, "
          f"{len(h.failures)} failed, by version {dict(h.bodies)}")
    assert h.failures == [] and h.total > 50
    assert split(port, 50) == Counter(v2=50)
    assert p["version"] == "2" and p["blue_green"]["state"] == "confirmed"
    assert swarm_services(env) == ["bg_web"]  # the confirmed version keeps the project's service names
    assert len(p["services"][0]["containers"]) == 2

    # ---- release 3 at 50/50, then roll back: every request reaches version 2 again
    r = api.post("/projects/bg/update", json={**bg, "template": template("v3"), "version": "3"})
    assert r.status_code == 202, r.text
    wait_release(env, r.json()["task_id"])
    got = split(port, 100)
    assert got["v2"] > 25 and got["v3"] > 25, got
    t1 = time.time()
    with Hammer(port, "bg.test") as h:
        r = api.post("/projects/bg/rollback-update", params={"force": "true"})
        assert r.status_code == 202, r.text
        p = wait_release(env, r.json()["task_id"])
    print(f"rollback in {time.time() - t1:.1f}s: {h.total} requests during the switch, "
          f"{len(h.failures)} failed, by version {dict(h.bodies)}")
    assert h.failures == [] and h.total > 50
    assert split(port, 50) == Counter(v2=50)
    assert p["version"] == "2" and p["blue_green"]["state"] == "rolled_back"
    assert swarm_services(env) == ["bg_web"]

    # ---- release 4 fails its health check: rolled back by itself, requests never fail
    t1 = time.time()
    with Hammer(port, "bg.test") as h:
        r = api.post("/projects/bg/update", json={**bg, "template": template("v4", healthy=False), "version": "4",
                                                  "weights": {"old": 0, "new": 100}, "health_timeout": 60})
        assert r.status_code == 202, r.text
        row = env.wait_task(r.json()["task_id"], 120)
    assert row.state == "fail" and "rolled back" in (row.error_message or ""), row.error_message
    p = env.project("bg")
    print(f"health gate rolled back in {time.time() - t1:.1f}s ({h.total} requests, {len(h.failures)} failed): "
          f"{p['blue_green']['message']}")
    assert p["blue_green"]["state"] == "rolled_back" and "health" in p["blue_green"]["message"]
    assert p["version"] == "2" and "failed its health gate" in p["message"]
    assert h.failures == [] and set(h.bodies) == {"v2"}
    assert swarm_services(env) == ["bg_web"]
    assert api.delete("/projects/bg").status_code == 200
    print(f"blue-green test done in {time.time() - t0:.1f}s")
