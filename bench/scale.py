"""Scale (issue 13, item 6): the store and engines of 100, 1,000 and 10,000 one-node clusters, 30
containers per node (1,000 nodes and 30,000 containers is the 2015 Swarm scale test), and what the
control plane costs at each size.

    python bench/scale.py [--levels 100,1000,10000] [--containers 30] [--requests 500] [--database-url ...]

Per level, in the same run:
  * the store is seeded with N swarm clusters (state running, each with its CA) and N manager nodes;
  * an engine process (bench/engine_replay.py) answers for every node with the replies recorded
    from a real dockerd (bench/fixtures/swarm-engine.json): /_ping, /info, /nodes, /containers/json;
  * a real `opencs` control plane process (the API, the health monitor, the endpoint manager,
    the real swarm driver; machines are the fake provider's whose inspect pings the node's engine, as
    the local provider's does) times one first pass and then --passes reconcile passes of the health
    monitor and of the endpoint manager (master_url listeners), and reports its RSS;
  * signed GET /clusters, GET /clusters/{id}/nodes and the paged GET /api/v1/clusters are timed
    against the unauthenticated /healthz of the same server, in interleaved rounds, while the
    loops run (monitor every 3 s, endpoints every 1 s).

The router (HAProxy) and the usage and container-event collectors are off: they are measured by
bench/trigger.py and bench/metrics.py. Targets: at 10,000 clusters GET /clusters p99 <= 50 ms; a
reconcile pass over 1,000 nodes <= 1 s; control plane memory at 1,000 nodes <= 500 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from engine_replay import _hex  # noqa: E402

from opencs.auth import signature as sig  # noqa: E402
from tests.conftest import ServerProcess, Signer  # noqa: E402


def node_map(n: int) -> dict[str, tuple[str, str, str]]:
    """instance id -> (swarm node id, address, role): one manager per cluster."""
    return {f"i-scale{k:013d}": (_hex(f"node{k}", 25), f"10.{100 + k // 65536}.{k // 256 % 256}.{k % 256}", "manager")
            for k in range(n)}


def cluster_id(k: int) -> str:
    return f"c{k:032x}"


# ---------------------------------------------------------------- the control plane process

def seed(rt: Any, nodes: dict[str, tuple[str, str, str]], engine_port: int) -> None:
    from sqlalchemy import insert

    from opencs.pki.ca import CertAuthority
    from opencs.store.db import utcnow
    from opencs.store.models import Cluster, InstanceRow
    from opencs.store.tenancy import ROOT_ACCOUNT_ID

    ca = CertAuthority.create("scale-ca")  # one CA for all: N key pairs would only slow the seeding
    ca_key = rt.box.encrypt(ca.key_pem)
    now = utcnow()
    clusters, rows = [], []
    for k, (iid, (nid, ip, role)) in enumerate(nodes.items()):
        cid = cluster_id(k)
        clusters.append(dict(cluster_id=cid, name=f"scale-{k}", cluster_type="swarm", account_id=ROOT_ACCOUNT_ID,
                             state="running", size=1, region_id="local", network_mode="vpc",
                             instance_type="ecs.n1.small", subnet_cidr="172.18.0.0/16",
                             spec={"name": f"scale-{k}", "size": 1, "instance_type": "ecs.n1.small"},
                             ca_cert_pem=ca.cert_pem, ca_key_enc=ca_key, created=now, updated=now))
        rows.append(dict(instance_id=iid, provider="local", account_id=ROOT_ACCOUNT_ID, cluster_id=cid,
                         private_ip=ip, role=role, state="running", health="healthy",
                         docker_host=f"tcp://127.0.0.1:{engine_port}/n/{iid}", swarm_node_id=nid,
                         details={"tcp_endpoint": f"tcp://{ip}:2376", "hostname": iid}, created=now, updated=now))
    with rt.db.session() as s:
        for i in range(0, len(clusters), 1000):
            s.execute(insert(Cluster), clusters[i:i + 1000])
            s.execute(insert(InstanceRow), rows[i:i + 1000])


def replay_provider(nodes: dict[str, tuple[str, str, str]], engine_port: int) -> Any:
    """The fake provider's machines; inspect pings the node's engine on a new connection, as the
    local provider does per node (opencs.engines.swarm.node.ping_unix, here over TCP)."""
    import socket

    from opencs.providers.base import Instance, InstanceState
    from opencs.providers.fake import FakeProvider

    def ping(instance_id: str) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", engine_port), timeout=1) as s:
                s.sendall(f"GET /n/{instance_id}/_ping HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
                buf = b""
                while chunk := s.recv(4096):
                    buf += chunk
                    if buf.endswith(b"OK"):
                        break
        except OSError:
            return False
        return b" 200 " in buf.split(b"\r\n", 1)[0] and buf.endswith(b"OK")

    class ReplayProvider(FakeProvider):
        def inspect(self, instance_id: str) -> Instance:
            inst = super().inspect(instance_id)
            inst.state = InstanceState.RUNNING if ping(instance_id) else InstanceState.UNHEALTHY
            return inst

    prov = ReplayProvider()
    for iid, (_nid, ip, _role) in nodes.items():
        prov.instances[iid] = Instance(iid, "local", ip, InstanceState.RUNNING,
                                       docker_host=f"tcp://127.0.0.1:{engine_port}/n/{iid}", hostname=iid)
    return prov


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    got = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            got[k] = int(v.split()[0]) / 1024
    return got["VmRSS"], got["VmHWM"]


def timed(f: Any, n: int) -> list[tuple[float, float]]:
    """(wall, CPU of this process) seconds of n calls of f."""
    out = []
    for _ in range(n):
        t, c = time.perf_counter(), time.process_time()
        f()
        out.append((time.perf_counter() - t, time.process_time() - c))
    return out


def serve(args: argparse.Namespace) -> None:
    """Child process: seed, time the loops' passes, write them to --out, then serve the API."""
    import uvicorn

    from opencs.api.app import create_app
    from opencs.cli.server_cmd import bootstrap_credentials
    from opencs.composition import build, endpoint_manager
    from opencs.config import Settings
    from opencs.loops.health import HealthLoop

    nodes = node_map(args.level)
    lo = 20000
    settings = Settings(data_dir=args.data, database_url=args.database_url, workers=0, local_nodes=False,
                        monitor_interval=0, usage_interval=0, container_events_interval=0, routing=False,
                        appapi=False, appapi_port_range=(lo, lo + args.level + 100), max_cluster_size=1000)
    rt = build(settings)
    bootstrap_credentials(rt)
    t0 = time.perf_counter()
    seed(rt, nodes, args.engine_port)
    seeded = time.perf_counter() - t0
    rt.providers["local"] = replay_provider(nodes, args.engine_port)
    out: dict[str, Any] = {"seed_s": seeded, "rss_seeded": rss_mb()}
    first = timed(rt.health.refresh, 1)
    out["monitor_first"], out["monitor"] = first[0][0], timed(rt.health.refresh, args.passes)
    bad = [r.health for r in rt.instance_repo.all() if r.health != "healthy"]
    out["unhealthy"] = len(bad)
    out["unhealthy_sample"] = bad[:3]
    manager = endpoint_manager(rt)
    t = time.perf_counter()
    manager.start(timeout=3600)  # returns after its first pass: N certificates issued, N listeners
    out["endpoints_first"] = time.perf_counter() - t
    out["endpoints"] = timed(manager.sync, args.passes)
    out["listeners"] = len(manager.clusters)
    out["rss_loops"] = rss_mb()
    rt.loops.extend([manager, HealthLoop(rt.health, 3.0)])
    rt.loops[-1].start()
    args.out.write_text(json.dumps(out))
    try:
        uvicorn.run(create_app(rt), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    finally:
        rt.close()


# ---------------------------------------------------------------- the bench

LIST = "GET /clusters (gzip accepted)"


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))] * 1000


def measure_routes(srv: ServerProcess, n: int, rounds: int = 5) -> dict[str, list[float]]:
    signer = Signer(srv.ak, srv.secret, scheme=sig.ROA)
    nodes_path = f"/clusters/{cluster_id(0)}/nodes"
    # httpx asks for gzip, as opencs's SDK and CLI do; aliyun-python-sdk-core asks for identity and
    # the Tea SDK sends no Accept-Encoding: they get the plain body
    plain = {"Accept-Encoding": "identity"}
    kinds: dict[str, tuple[str, dict[str, str] | None, bool, dict[str, str]]] = {
        "GET /clusters (gzip accepted)": ("/clusters", None, True, {}),
        "GET /clusters (identity)": ("/clusters", None, True, plain),
        "GET /clusters/{id}/nodes": (nodes_path, None, True, {}),
        "GET /api/v1/clusters (page 1 of 10)": ("/api/v1/clusters", {"page_number": "1", "page_size": "10"}, True, {}),
        "GET /healthz (unsigned baseline)": ("/healthz", None, False, {}),
    }
    out: dict[str, list[float]] = {k: [] for k in kinds}
    with httpx.Client(base_url=srv.url, trust_env=False, timeout=60) as c:
        for name, (path, q, signed, extra) in kinds.items():  # warm up: connection, caches
            h = signer.headers("GET", path, q, host=srv.endpoint) if signed else {}
            r = c.get(path, params=q, headers={**h, **extra})
            assert r.status_code == 200, (name, r.status_code, r.text[:300])
        per = max(1, n // rounds)
        for _ in range(rounds):
            for name, (path, q, signed, extra) in kinds.items():
                reqs = [c.build_request("GET", path, params=q, headers={
                    **(signer.headers("GET", path, q, host=srv.endpoint) if signed else {}), **extra})
                    for _ in range(per)]
                for r in reqs:
                    t = time.perf_counter()
                    resp = c.send(r)
                    out[name].append(time.perf_counter() - t)
                    assert resp.status_code == 200, resp.text[:300]
    return out


def run_level(level: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    data = tmp / f"data-{level}"
    engine = subprocess.Popen([sys.executable, str(ROOT / "bench" / "engine_replay.py"), "serve", str(level),
                               str(args.containers)], stdout=subprocess.PIPE, text=True)
    try:
        assert engine.stdout is not None
        engine_port = int(engine.stdout.readline().split()[-1])
        result = tmp / f"result-{level}.json"
        srv = ServerProcess(data, database_url=args.database_url, workers=0)
        srv.log = tmp / f"server-{level}.log"
        cmd = [sys.executable, __file__, "serve", "--level", str(level), "--data", str(data), "--port", str(srv.port),
               "--engine-port", str(engine_port), "--out", str(result), "--passes", str(args.passes)]
        if args.database_url:
            cmd += ["--database-url", args.database_url]
        with open(srv.log, "ab") as logf:
            srv.proc = subprocess.Popen(cmd, env=srv.env, stdout=logf, stderr=subprocess.STDOUT)
        try:
            while not result.exists():
                if srv.proc.poll() is not None:
                    raise RuntimeError(f"control plane exited:\n{srv.log.read_text()[-3000:]}")
                time.sleep(0.5)
            out = json.loads(result.read_text())
            end = time.time() + 60
            while True:
                try:
                    if httpx.get(f"{srv.url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    if time.time() > end:
                        raise
                time.sleep(0.2)
            out["routes"] = measure_routes(srv, args.requests)
            out["rss_end"] = rss_mb(srv.proc.pid)
            with httpx.Client(base_url=srv.url, trust_env=False) as c:
                resp = c.get("/clusters", headers=Signer(srv.ak, srv.secret).headers(
                    "GET", "/clusters", host=srv.endpoint))
            out["list_bytes"] = len(resp.content)
            out["list_wire_bytes"] = resp.num_bytes_downloaded  # gzipped when the server compressed it
            out["engine_rss"] = rss_mb(engine.pid)[0]
            return out
        finally:
            srv.kill()
    finally:
        engine.kill()
        engine.wait(10)
        if args.database_url:
            _reset_pg(args.database_url)


def _reset_pg(url: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def med(xs: list[list[float]], i: int) -> float:
    """Median of the i-th figure (0 wall, 1 CPU) of the passes."""
    return sorted(x[i] for x in xs)[len(xs) // 2]


def report(results: dict[int, dict[str, Any]], args: argparse.Namespace) -> None:
    levels = sorted(results)
    load = os.getloadavg()
    store = "PostgreSQL" if args.database_url else "SQLite"
    print(f"\none-node swarm clusters, {args.containers} containers per node, store {store}, "
          f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (2 cores)")
    head = f"{'':44s}" + "".join(f"{f'{n:,} clusters':>18s}" for n in levels)
    print(head)

    def row(label: str, f: Any) -> None:
        print(f"{label:44s}" + "".join(f"{f(results[n]):>18s}" for n in levels))

    row("nodes / containers", lambda r: f"{r['n']:,} / {r['n'] * args.containers:,}")
    row("health monitor pass, first (s)", lambda r: f"{r['monitor_first']:.3f}")
    row("health monitor pass, median wall / CPU (s)",
        lambda r: f"{med(r['monitor'], 0):.3f} / {med(r['monitor'], 1):.3f}")
    row("nodes reported unhealthy", lambda r: f"{r['unhealthy']}")
    row("endpoint manager, first pass (s)", lambda r: f"{r['endpoints_first']:.2f}")
    row("endpoint manager pass, median wall / CPU (s)",
        lambda r: f"{med(r['endpoints'], 0):.3f} / {med(r['endpoints'], 1):.3f}")
    row("master_url listeners", lambda r: f"{r['listeners']:,}")
    for name in results[levels[0]]["routes"]:
        row(f"{name} p50 / p99 (ms)",
            lambda r, k=name: f"{pct(r['routes'][k], .5):.2f} / {pct(r['routes'][k], .99):.2f}")
    base = "GET /healthz (unsigned baseline)"
    row("GET /clusters (gzip) p99 / /healthz p99",
        lambda r: f"{pct(r['routes'][LIST], .99) / pct(r['routes'][base], .99):.1f}x")
    row("GET /clusters body / gzipped (MB)",
        lambda r: f"{r['list_bytes'] / 1e6:.2f} / {r.get('list_wire_bytes', 0) / 1e6:.2f}")
    row("control plane RSS after passes (MiB)", lambda r: f"{r['rss_loops'][0]:.0f}")
    row("control plane RSS end / peak (MiB)", lambda r: f"{r['rss_end'][0]:.0f} / {r['rss_end'][1]:.0f}")
    row("replay engine RSS (MiB, not counted)", lambda r: f"{r['engine_rss']:.0f}")
    checks = []
    if 10000 in results:
        for name in (LIST, "GET /clusters (identity)"):
            p = pct(results[10000]["routes"][name], .99)
            checks.append(f"{name} p99 at 10,000 clusters {p:.1f} ms (<= 50: {'met' if p <= 50 else 'MISSED'})")
    if 1000 in results:
        m, e = med(results[1000]["monitor"], 0), med(results[1000]["endpoints"], 0)
        checks.append(f"reconcile pass over 1,000 nodes: monitor {m:.3f} s "
                      f"(CPU {med(results[1000]['monitor'], 1):.3f} s), endpoints {e:.3f} s "
                      f"(<= 1 s: {'met' if max(m, e) <= 1 else 'MISSED'})")
        mem = results[1000]["rss_end"][1]
        checks.append(f"control plane peak RSS at 1,000 nodes {mem:.0f} MiB "
                      f"(<= 500: {'met' if mem <= 500 else 'MISSED'})")
    for c in checks:
        print("check: " + c)


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    sv = sub.add_parser("serve")
    sv.add_argument("--level", type=int, required=True)
    sv.add_argument("--data", type=Path, required=True)
    sv.add_argument("--port", type=int, required=True)
    sv.add_argument("--engine-port", type=int, required=True)
    sv.add_argument("--out", type=Path, required=True)
    sv.add_argument("--passes", type=int, default=5)
    sv.add_argument("--database-url", default=None)
    ap.add_argument("--levels", default="100,1000,10000")
    ap.add_argument("--containers", type=int, default=30)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    if args.cmd == "serve":
        return serve(args)
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="opencs-scale-") as tmp:
        for level in (int(x) for x in args.levels.split(",")):
            t = time.time()
            results[level] = {**run_level(level, args, Path(tmp)), "n": level}
            print(f"level {level:,}: done in {time.time() - t:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    report(results, args)


if __name__ == "__main__":
    main()
