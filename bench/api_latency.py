"""Signed GET /clusters (100 clusters in the store) against the unauthenticated /healthz of the
same server, in the same run, over one keep-alive connection each.

    python bench/api_latency.py [--requests 2000] [--database-url postgresql://...]

Requests are signed before the clock starts (each with its own nonce and Date, as the Tea SDK
sends them), so the figures are the server's cost plus the loopback round trip.
Targets (issue 2): p99 <= 10 ms and signed throughput >= 0.5 x the trivial route's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opencs.auth import signature as sig  # noqa: E402
from opencs.config import Settings  # noqa: E402
from opencs.runtime import open_runtime  # noqa: E402
from opencs.store.db import utcnow  # noqa: E402
from opencs.store.models import Cluster  # noqa: E402
from tests.conftest import ServerProcess, Signer  # noqa: E402


def seed(data: Path, database_url: str | None, n: int) -> None:
    rt = open_runtime(Settings(data_dir=data, database_url=database_url, workers=0, local_nodes=False))
    now = utcnow()
    with rt.db.session() as s:
        for i in range(n):
            s.add(Cluster(cluster_id=f"c{i:032x}", name=f"bench-{i}", state="running", size=3, region_id="local",
                          master_url=f"https://127.0.0.1:{17000 + i}", spec={}, created=now, updated=now))
    rt.close()


def run(client: httpx.Client, reqs: list[httpx.Request]) -> tuple[list[float], float]:
    lat = []
    t0 = time.perf_counter()
    for r in reqs:
        a = time.perf_counter()
        resp = client.send(r)
        lat.append(time.perf_counter() - a)
        assert resp.status_code == 200, resp.text
    return lat, time.perf_counter() - t0


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clusters", type=int, default=100)
    ap.add_argument("--database-url", default=None)
    args = ap.parse_args()
    db_url, drop = args.database_url, None
    if db_url:  # a database of its own, dropped afterwards: the seeded clusters must not stay
        import psycopg

        name = f"opencs_bench_{os.getpid()}"
        admin = db_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        db_url = admin.rsplit("/", 1)[0] + "/" + name

        def drop() -> None:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    try:
        _run(args, db_url)
    finally:
        if drop:
            drop()


def _run(args: argparse.Namespace, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        seed(data, database_url, args.clusters)
        srv = ServerProcess(data, database_url=database_url, env={"OPENCS_MONITOR_INTERVAL": "0"}, workers=0)
        srv.start()
        try:
            base = f"http://{srv.endpoint}"
            results = {}
            for scheme in (sig.ROA, sig.ACS3):
                signer = Signer(srv.ak, srv.secret, scheme=scheme)
                with httpx.Client(base_url=base, trust_env=False) as c:
                    assert len(c.get("/clusters", headers=signer.headers("GET", "/clusters", host=srv.endpoint))
                               .json()) == args.clusters
                    signed = [c.build_request("GET", "/clusters",
                                              headers=signer.headers("GET", "/clusters", host=srv.endpoint))
                              for _ in range(args.requests)]
                    results[f"signed GET /clusters ({'ROA' if scheme == sig.ROA else 'ACS3'})"] = run(c, signed)
            with httpx.Client(base_url=base, trust_env=False) as c:
                c.get("/healthz")
                results["trivial GET /healthz"] = run(c, [c.build_request("GET", "/healthz")
                                                          for _ in range(args.requests)])
        finally:
            srv.kill()
    base_rps = args.requests / results["trivial GET /healthz"][1]
    print(f"{args.requests} sequential requests each, one keep-alive connection, {args.clusters} clusters, "
          f"store: {'PostgreSQL' if database_url else 'SQLite'}")
    for name, (lat, total) in results.items():
        rps = args.requests / total
        print(f"{name:34s} p50 {pct(lat, .5):6.2f} ms  p99 {pct(lat, .99):6.2f} ms"
              f"  mean {statistics.mean(lat) * 1000:6.2f} ms  {rps:7.0f} req/s  ratio to trivial {rps / base_rps:4.2f}")


if __name__ == "__main__":
    main()
