"""Simple routing through HAProxy: the pure parts, then a real project on a real 2-node swarm reached
by Host header through the cluster's routing_url while it scales and HAProxy reloads."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path

import pytest

from opencs.compose import Options, build_stack
from opencs.engines.swarm import client as engine_client
from opencs.routing.haproxy import HAProxy, find_binary, parse_show_proc
from opencs.routing.router import Backend, Endpoint, Frontend, parse_domains, render, weigh
from tests.routing.conftest import Env, Hammer, fetch

pytestmark = pytest.mark.integration  # runs HAProxy

WEB = """
version: '3'
services:
  web:
    image: busybox
    command: sh -c "mkdir -p /w && echo v1-$$(hostname) > /w/index.html && exec httpd -f -p 8080 -h /w"
    stop_grace_period: 1s
    labels:
      aliyun.routing.port_8080: http://web.test;www.web.test
"""


# ---------------------------------------------------------------- pure parts


def test_parse_domains() -> None:
    assert parse_domains("http://Web.Test;www.web.test/path", "c1") == ["web.test", "www.web.test"]
    assert parse_domains("https://a.example.com:8443, b.example.com", "c1") == ["a.example.com", "b.example.com"]
    assert parse_domains("web", "cABC") == ["web.cabc.opencs.local"]  # a bare prefix (spec §13)
    assert parse_domains("tcp://x.example.com;bad_name.test;;", "c1") == []


def test_weights_split_by_release() -> None:
    eps = [Endpoint(f"b{i}", "10.0.0.1", 30000 + i, "p", "p_web", "blue") for i in range(3)] + \
          [Endpoint("g0", "10.0.0.2", 31000, "p", "p_web-new", "green")]
    servers = {s.name: s.weight for s in weigh(eps, {"p": {"blue": 80, "green": 20}})}
    blue = sum(w for n, w in servers.items() if n.startswith("t_b"))
    assert abs(blue / (blue + servers["t_g0"]) - 0.8) < 0.01
    drained = {s.name: s.weight for s in weigh(eps, {"p": {"blue": 100, "green": 0}})}
    assert drained["t_g0"] == 0 and all(w == 256 for n, w in drained.items() if n != "t_g0")
    plain = weigh(eps[:3], {})
    assert {s.weight for s in plain} == {256}


def test_rendered_config_is_valid(tmp_path: Path) -> None:
    if find_binary() is None:
        pytest.skip("no haproxy")
    fe = Frontend("cX", 18999, [Backend("web.test", weigh([Endpoint("t1", "10.0.0.1", 8080, "p", "p_web", "blue")],
                                                          {})), Backend("empty.test", [])])
    text = render([fe], "127.0.0.1")
    assert "use_backend be_cX_1 if { var(txn.host) -m str web.test }" in text
    assert "server t_t1 10.0.0.1:8080 weight 256 check" in text
    HAProxy(tmp_path).check(text)  # haproxy -c accepts it
    assert render([fe], "127.0.0.1") == text  # deterministic: no reload without a change


def test_show_proc_parsing() -> None:
    text = ("#<PID>          <type>          <reloads>       <uptime>        <version>\n"
            "100             master          3 [failed: 1]   0d00h00m09s     2.6.12\n"
            "# workers\n130             worker          0               0d00h00m01s     2.6.12\n"
            "# old workers\n120             worker          1               0d00h00m04s     2.6.12\n# programs\n")
    info = parse_show_proc(text)
    assert (info.master_pid, info.reloads, info.failed, info.workers, info.old_workers) == (100, 3, 1, [130], [120])


def test_haproxy_adopted_and_stopped_when_its_owner_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Started by PID, adopted by a second manager of the same directory, and the master-managed
    watcher stops an HAProxy whose owning control plane died and never came back."""
    import subprocess

    from opencs.routing import router

    if find_binary() is None:
        pytest.skip("no haproxy")
    monkeypatch.setattr(router, "OWNER_GRACE", 5)
    d = tmp_path / "router"
    d.mkdir()
    (d / "owner-watch.sh").write_text(router.WATCH_SCRIPT)
    owner = subprocess.Popen(["sleep", "600"])
    try:
        start = Path(f"/proc/{owner.pid}/stat").read_text().rpartition(")")[2].split()[19]
        (d / "owner").write_text(f"{owner.pid} {start}\n")
        fe = Frontend("cW", 18998, [])
        text = render([fe], "127.0.0.1", (str(d / "owner-watch.sh"), str(d / "owner")))
        h = HAProxy(d)
        assert h.apply(text) == "started"
        pid = h.recorded_pid()
        assert pid and fetch(18998, "x")[0] == 404
        again = HAProxy(d)  # e.g. a restarted control plane
        assert again.recorded_pid() == pid and again.apply(text) == "unchanged"
        time.sleep(6)
        assert again.recorded_pid() == pid  # the owner lives: nothing happens
        owner.kill()
        owner.wait()
        end = time.time() + 20
        while h.recorded_pid() is not None:
            assert time.time() < end, h.log_tail()
            time.sleep(0.2)
        assert "control plane owning this haproxy is gone" in h.log_tail()
    finally:
        if owner.poll() is None:
            owner.kill()
        HAProxy(d).stop()


def test_routed_port_is_published_in_host_mode() -> None:
    m = build_stack("p", WEB, {}, Options(ipvs=False))
    assert m.services["web"].spec["EndpointSpec"]["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 8080, "PublishMode": "host"}]  # the engine picks the port per task
    assert m.services["web"].published == []  # no fixed port: more containers than nodes are fine


# ---------------------------------------------------------------- real swarm


@pytest.mark.docker
@pytest.mark.slow
def test_routing_follows_the_swarm_without_failing_requests(env: Env) -> None:
    api = env.api
    t0 = time.time()
    r = api.post("/projects/", json={"name": "web", "template": WEB})
    assert r.status_code == 201, r.text
    p = env.wait_running("web")
    port = env.routing_port()
    status, body = fetch(port, "web.test")
    assert status == 200 and body.startswith("v1-"), body  # through HAProxy, by Host header
    assert fetch(port, "WWW.web.test:80")[0] == 200  # second domain; port-less, case-insensitive match
    assert fetch(port, "other.test")[0] == 404
    # the backend is the task on its node, at the port the engine published for it
    fe = env.rt.router.frontend(env.cid)
    servers = {b.domain: b.servers for b in fe.backends}["web.test"]
    (cid, info), = p["services"][0]["containers"].items()
    assert [s.addr for s in servers] == [info["node"]]
    with closing(engine_client(env.rt.projects.engine(env.cid).manager())) as c:
        task = c.api.tasks(filters={"service": "web_web", "desired-state": "running"})[0]
    published = task["Status"]["PortStatus"]["Ports"][0]["PublishedPort"]
    assert servers[0].port == published and published != 8080
    print(f"routed in {time.time() - t0:.1f}s")

    # scale out and back in while requests keep coming, and reload HAProxy a few more times
    haproxy = env.rt.router.haproxy
    reloads0 = haproxy.show_proc().reloads
    with Hammer(port, "web.test") as h:
        r = api.post("/services/web_web/scale", json={"type": "scale_to", "value": 3})
        assert r.status_code == 200, r.text
        fe = env.rt.router.frontend(env.cid)
        assert len({b.domain: b.servers for b in fe.backends}["web.test"]) == 3  # sync()ed by the scale
        seen: set[str] = set()
        end = time.time() + 20
        while len(seen) < 3:
            seen.add(fetch(port, "web.test")[1])
            assert time.time() < end, seen
        for _ in range(5):
            haproxy.reload()
            time.sleep(0.2)
        r = api.post("/services/web_web/scale", json={"type": "scale_to", "value": 1})
        assert r.status_code == 200, r.text
        time.sleep(2)
    fe = env.rt.router.frontend(env.cid)
    assert len({b.domain: b.servers for b in fe.backends}["web.test"]) == 1
    reloads = haproxy.show_proc().reloads - reloads0
    print(f"{h.total} requests during scale 1->3->1 and {reloads} reloads: {len(h.failures)} failed")
    assert reloads >= 7 and h.total > 200
    assert h.failures == [], h.failures[:5]
    assert len(seen) == 3  # three containers answered

    # the project goes: so does its route
    assert api.delete("/projects/web").status_code == 200
    assert fetch(port, "web.test")[0] == 404
