"""Issue 13, item 1 on real servers: two `opencs server`s with separate data dirs on one host, with
the default automatic host claims (only the pool they allocate from, `omu`/10.212.0.0/22, is this
test's), each creating a 2-node cluster and deploying a routed project at the same time. Both
succeed; a third server given the first one's subnet refuses to start; a SIGTERM stops the first
one's registry and router but keeps its nodes, and a restart brings them back; `opencs teardown` of
the first leaves the second serving; after both teardowns the host is as it was (links, addresses,
routes, netns, ruleset, listeners, processes, cgroups).

    flock /tmp/opencs-itest.lock .venv/bin/python -m pytest -s tests/providers/test_two_servers.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from opencs.procs import alive
from opencs.providers import hostclaims
from opencs.sdk import Client
from tests.clusterkit import master_session, require_local_nodes
from tests.conftest import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]

POOL = {"OPENCS_LOCAL_POOL_PREFIX": "omu", "OPENCS_LOCAL_POOL_SUBNET": "10.212.0.0/22"}
SIZE = int(os.environ.get("OPENCS_TEST_TWO_SERVERS_SIZE", "2"))


def template(tag: str) -> str:
    return f"""version: '3'
services:
  web:
    image: busybox
    command: sh -c "mkdir -p /w && echo {tag} > /w/index.html && exec httpd -f -p 8080 -h /w"
    stop_grace_period: 1s
    labels:
      aliyun.routing.port_8080: http://web
"""


def _lines(*cmd: str) -> set[str]:
    if shutil.which(cmd[0]) is None:  # nft is not installed everywhere (iptables-save covers the rules then)
        return set()
    return set(subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.splitlines())


def host_state(tmp: Path) -> dict[str, set[str]]:
    """What the check compares before and after. Listeners: the ports a data dir can claim and
    the pool's addresses (other programs' ephemeral ports come and go); processes: ours, by data dir."""
    claimable = re.compile(r"[:.](5\d{3}|1[78]\d{3})\s|10\.212\.")
    cgroups = {f"{h.name}/{e.name}" for h in Path("/sys/fs/cgroup").iterdir() if h.is_dir()
               for e in os.scandir(h) if e.is_dir()}
    procs = {f"{p.name} {' '.join(a)}" for p in Path("/proc").iterdir() if p.name.isdigit()
             if (a := _cmdline(p)) and str(tmp) in " ".join(a)}
    return {
        "links": {re.sub(r"^\d+: ", "", ln) for ln in _lines("ip", "-o", "link")},
        "addrs": {re.sub(r"^\d+: ", "", ln) for ln in _lines("ip", "-o", "addr")},
        "routes": _lines("ip", "route", "show", "table", "all"),
        "netns": _lines("ip", "netns"),
        "iptables": _lines("iptables-save") - {ln for ln in _lines("iptables-save") if ln.startswith(("#", ":"))},
        "nft": _lines("nft", "list", "ruleset"),
        "listening": {ln for ln in _lines("ss", "-Hltn") if claimable.search(ln + " ")},
        "processes": procs,
        "cgroups": cgroups,
        "run/opencs": {p.name for p in Path("/run/opencs").iterdir()} if Path("/run/opencs").is_dir() else set(),
    }


def _cmdline(p: Path) -> list[str]:
    try:
        return [a for a in (p / "cmdline").read_text(errors="replace").split("\0") if a]
    except OSError:
        return []


def opencs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opencs.cli.main", *args], capture_output=True, text=True,
                          timeout=300)


def routed(url: str, cid: str) -> str:
    # the label's bare `web` is web.<cluster id>.opencs.local (opencs.routing.parse_domains)
    return requests.get(url, headers={"Host": f"web.{cid.lower()}.opencs.local"}, timeout=5).text.strip()


def deploy(srv: ServerProcess, tag: str, tmp: Path) -> dict[str, Any]:
    """A SIZE-node cluster and a routed project on it; what it took."""
    t0 = time.monotonic()
    c = Client(srv.url, srv.ak, srv.secret)
    out = c.create_cluster({"name": tag, "size": SIZE})
    c.wait_task(out["task_id"], timeout=300)
    created = time.monotonic() - t0
    cid = out["cluster_id"]
    murl = c.describe_cluster(cid)["master_url"]
    app = master_session(murl, c.request("GET", f"/clusters/{cid}/certs"), tmp / f"certs-{tag}")
    r = app.post(f"{murl}/projects/", json={"name": "web", "template": template(tag)}, timeout=120)
    assert r.status_code == 201, r.text
    end, got = time.time() + 120, ""
    while app.get(f"{murl}/projects/web", timeout=30).json()["current_state"] != "running":
        assert time.time() < end, "project not running in 120 s"
        time.sleep(0.3)
    end = time.time() + 60
    while not (rurl := c.describe_cluster(cid).get("routing_url")) or (got := _try(rurl, cid)) != tag:
        assert time.time() < end, f"routing_url {rurl!r} does not serve {tag}: {got!r}"
        time.sleep(0.3)
    return {"cid": cid, "routing_url": rurl, "create_s": created, "total_s": time.monotonic() - t0}


def _try(url: str, cid: str) -> str:
    try:
        return routed(url, cid)
    except requests.RequestException:
        return ""


def _teardown(srv: ServerProcess) -> None:
    """By the data dir's own ids: `opencs teardown` (after the server is gone)."""
    srv.kill()
    if srv.data_dir.is_dir():
        out = opencs("teardown", "--data-dir", str(srv.data_dir))
        assert out.returncode == 0, out.stderr


def test_two_servers_share_one_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_local_nodes()
    for k in ("OPENCS_LOCAL_PREFIX", "OPENCS_LOCAL_BRIDGE", "OPENCS_LOCAL_SUBNET", "OPENCS_REGISTRY_PORT"):
        monkeypatch.delenv(k, raising=False)
    before = host_state(tmp_path)
    env = {**POOL, "OPENCS_MONITOR_INTERVAL": "0", "OPENCS_USAGE_INTERVAL": "0"}
    a, b = ServerProcess(tmp_path / "a", env=env), ServerProcess(tmp_path / "b", env=env)
    try:
        with ThreadPoolExecutor(2) as pool:  # allocated at the same time
            list(pool.map(lambda s: s.start(timeout=120), (a, b)))
        ca, cb = hostclaims.recorded(a.data_dir), hostclaims.recorded(b.data_dir)
        assert ca is not None and cb is not None and not ca.conflicts(cb)
        print(f"\nclaims: a {ca.prefix} {ca.bridge} {ca.subnet} registry :{ca.registry_port} appapi {ca.appapi_ports}"
              f" routing {ca.routing_ports}; b {cb.prefix} {cb.bridge} {cb.subnet} registry :{cb.registry_port}"
              f" appapi {cb.appapi_ports} routing {cb.routing_ports}")

        # a setting that collides with a's claim: a clear error at start-up, not a runtime failure
        c = ServerProcess(tmp_path / "c", env={**env, "OPENCS_LOCAL_SUBNET": ca.subnet})
        with pytest.raises(RuntimeError, match=rf"collides with data dir {a.data_dir}.*subnet"):
            c.start(timeout=120)

        t0 = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            da, db = pool.map(lambda s: deploy(s[0], s[1], tmp_path), ((a, "alpha"), (b, "bravo")))
        print(f"{SIZE}-node cluster + routed project, side by side: a create {da['create_s']:.1f} s total "
              f"{da['total_s']:.1f} s; b create {db['create_s']:.1f} s total {db['total_s']:.1f} s; "
              f"wall {time.monotonic() - t0:.1f} s")

        # SIGTERM: the nodes keep running, the registry and the router stop with the server
        reg_pid = int((a.data_dir / "registry" / "registry.pid").read_text())
        node_pids = [int(p.read_text()) for p in (a.data_dir / "nodes").glob("i-*/engine.pid")]
        assert len(node_pids) == SIZE
        a.stop()
        assert not alive(reg_pid) and not (a.data_dir / "registry" / "registry.pid").exists()
        assert not (a.data_dir / "router" / "haproxy.pid").exists() or not _try(da["routing_url"], da["cid"])
        assert all(alive(p) for p in node_pids)
        # a restart brings them back: the same claims, the registry at once (it has local nodes), the routes
        t1 = time.monotonic()
        a.start(timeout=120)
        assert hostclaims.recorded(a.data_dir) == ca
        end = time.time() + 60
        while _try(da["routing_url"], da["cid"]) != "alpha" or not (a.data_dir / "registry" / "registry.pid").exists():
            assert time.time() < end, "the restarted server did not bring back its registry and routes"
            time.sleep(0.3)
        print(f"restart of a: registry and routing_url back in {time.monotonic() - t1:.1f} s")
        assert all(alive(p) for p in node_pids)  # adopted, not rebooted
        a.stop()

        t1 = time.monotonic()
        out = opencs("teardown", "--data-dir", str(a.data_dir))
        assert out.returncode == 0, out.stderr
        print(f"teardown of a: {time.monotonic() - t1:.1f} s, {len(json.loads(out.stdout)['destroyed_nodes'])} nodes")
        assert not any(alive(p) for p in node_pids)
        assert hostclaims.recorded(a.data_dir) is None
        # b is intact: its nodes, its registry, its routed project
        assert routed(db["routing_url"], db["cid"]) == "bravo"
        cl = Client(b.url, b.ak, b.secret)
        assert cl.describe_cluster(db["cid"])["state"] == "running"
        assert json.loads(Path(b.data_dir, "host-claims.json").read_text())["bridge"] == cb.bridge
        assert Path("/sys/class/net", cb.bridge).exists() and not Path("/sys/class/net", ca.bridge).exists()

        b.stop()
        out = opencs("teardown", "--data-dir", str(b.data_dir))
        assert out.returncode == 0, out.stderr
    finally:
        for s in (a, b):
            _teardown(s)
    after = host_state(tmp_path)
    diff = {k: {"gone": sorted(before[k] - after[k]), "new": sorted(after[k] - before[k])}
            for k in before if before[k] != after[k]}
    assert not diff, f"the host is not as it was: {json.dumps(diff, indent=1)}"
