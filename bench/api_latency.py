"""Signed GET /clusters (100 clusters in the store) against the unauthenticated /healthz of the
same server, in the same run, over one keep-alive connection each.

    python bench/api_latency.py [--requests 2000] [--database-url postgresql://...] [--https]

Requests are signed before the clock starts (each with its own nonce and Date, as the Tea SDK
sends them), so the figures are the server's cost plus the loopback round trip.
Targets (issue 2): p99 <= 10 ms and signed throughput >= 0.5 x the trivial route's.

--https (issue 14): the same signed GET /clusters over HTTPS (a server with the generated
certificate, one keep-alive TLS connection) against plain HTTP to a second server on the same data,
both measured in this run in alternating rounds; prints p50/p99 of each and the HTTPS/HTTP ratios.
Target: p99 <= 10 ms over HTTPS.

--policy (issue 10): a second account owns a tenth of the clusters (so every list is cut to the
caller's own) and a sub-user of the first account holds a policy allowing cs:Describe* on its
clusters; signed GET /clusters is measured as the owner and as the sub-user (policy evaluated and
the list filtered per cluster), against /healthz in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opencs.auth import signature as sig  # noqa: E402
from opencs.composition import build  # noqa: E402
from opencs.config import Settings  # noqa: E402
from opencs.store.db import utcnow  # noqa: E402
from opencs.store.models import Cluster  # noqa: E402
from tests.conftest import ServerProcess, Signer  # noqa: E402


def seed(data: Path, database_url: str | None, n: int, policy: bool = False) -> tuple[str, str] | None:
    """The clusters; with `policy`, a second account owning every tenth and a sub-user's key (returned)."""
    rt = build(Settings(data_dir=data, database_url=database_url, workers=0, local_nodes=False))
    other = rt.accounts.create_account("bench-other")[0] if policy else None
    now = utcnow()
    with rt.db.session() as s:
        for i in range(n):
            extra = {"account_id": other} if other and i % 10 == 9 else {}
            s.add(Cluster(cluster_id=f"c{i:032x}", name=f"bench-{i}", state="running", size=3, region_id="local",
                          master_url=f"https://127.0.0.1:{17000 + i}", spec={}, created=now, updated=now, **extra))
    sub = None
    if policy:
        from opencs.store.tenancy import ROOT_ACCOUNT_ID

        rt.accounts.create_user(ROOT_ACCOUNT_ID, "viewer")
        doc = json.dumps({"Version": "1", "Statement": [
            {"Effect": "Allow", "Action": "cs:Describe*", "Resource": "acs:cs:*:*:cluster/*"}]})
        rt.accounts.create_policy(ROOT_ACCOUNT_ID, "viewer", doc)
        rt.accounts.attach(ROOT_ACCOUNT_ID, "viewer", "viewer")
        info, secret = rt.accounts.create_key(ROOT_ACCOUNT_ID, "viewer")
        sub = (info.access_key_id, secret)
    rt.close()
    return sub


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
    ap.add_argument("--https", action="store_true", help="HTTPS against plain HTTP (see above)")
    ap.add_argument("--rounds", type=int, default=6, help="alternating rounds of the kinds measured")
    ap.add_argument("--policy", action="store_true", help="two accounts and a sub-user with a policy (see above)")
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
        (_run_https if args.https else _run)(args, db_url)
    finally:
        if drop:
            drop()


def _run(args: argparse.Namespace, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        sub = seed(data, database_url, args.clusters, args.policy)
        srv = ServerProcess(data, database_url=database_url, env={"OPENCS_MONITOR_INTERVAL": "0"}, workers=0)
        srv.start()
        mine = args.clusters - args.clusters // 10 if args.policy else args.clusters
        try:
            base = f"http://{srv.endpoint}"
            who = [("", srv.ak, srv.secret, sig.ROA), ("", srv.ak, srv.secret, sig.ACS3)]
            if sub:
                who = [("owner, ", srv.ak, srv.secret, sig.ROA), ("sub-user, ", *sub, sig.ROA)]
            kinds: dict[str, tuple[httpx.Client, list[httpx.Request]]] = {}
            for label, ak, secret, scheme in who:
                signer = Signer(ak, secret, scheme=scheme)
                c = httpx.Client(base_url=base, trust_env=False)
                got = c.get("/clusters", headers=signer.headers("GET", "/clusters", host=srv.endpoint)).json()
                assert len(got) == mine, got
                kinds[f"signed GET /clusters ({label}{'ROA' if scheme == sig.ROA else 'ACS3'})"] = (c, [
                    c.build_request("GET", "/clusters", headers=signer.headers("GET", "/clusters", host=srv.endpoint))
                    for _ in range(args.requests)])
            c = httpx.Client(base_url=base, trust_env=False)
            c.get("/healthz")
            kinds["trivial GET /healthz"] = (c, [c.build_request("GET", "/healthz") for _ in range(args.requests)])
            # interleaved rounds: a shared machine's load drifts, and each kind should see the same drift
            results: dict[str, tuple[list[float], float]] = {k: ([], 0.0) for k in kinds}
            step = -(-args.requests // args.rounds)
            for i in range(0, args.requests, step):
                for name, (c, reqs) in kinds.items():
                    lat, total = run(c, reqs[i:i + step])
                    results[name] = (results[name][0] + lat, results[name][1] + total)
            for c, _ in kinds.values():
                c.close()
        finally:
            srv.kill()
    base_rps = args.requests / results["trivial GET /healthz"][1]
    print(f"{args.requests} sequential requests each in {args.rounds} interleaved rounds, one keep-alive connection "
          f"per kind, {args.clusters} clusters, "
          f"store: {'PostgreSQL' if database_url else 'SQLite'}")
    for name, (lat, total) in results.items():
        rps = args.requests / total
        print(f"{name:42s} p50 {pct(lat, .5):6.2f} ms  p99 {pct(lat, .99):6.2f} ms"
              f"  mean {statistics.mean(lat) * 1000:6.2f} ms  {rps:7.0f} req/s  ratio to trivial {rps / base_rps:4.2f}")


def _run_https(args: argparse.Namespace, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        seed(data, database_url, args.clusters)
        env = {"OPENCS_MONITOR_INTERVAL": "0"}
        plain = ServerProcess(data, database_url=database_url, env=env, workers=0)
        # the same AccessKey and data; its own port, HTTPS with the data dir's generated certificate
        tls = ServerProcess(data, database_url=database_url, workers=0, args=["--tls"], scheme="https",
                            env={**env, "OPENCS_BOOTSTRAP_ACCESS_KEY_ID": plain.ak,
                                 "OPENCS_BOOTSTRAP_ACCESS_KEY_SECRET": plain.secret})
        results: dict[str, tuple[list[float], float]] = {"HTTP": ([], 0.0), "HTTPS": ([], 0.0)}
        try:
            plain.start()
            tls.start()
            signer = Signer(plain.ak, plain.secret, scheme=sig.ROA)
            sides = {"HTTP": plain, "HTTPS": tls}
            clients = {k: httpx.Client(base_url=s.url, verify=s.verify(), trust_env=False) for k, s in sides.items()}
            per_round = max(1, args.requests // args.rounds)
            for name, c in clients.items():  # warm up: connection (TLS handshake) and caches
                for _ in range(20):
                    c.get("/clusters", headers=signer.headers("GET", "/clusters", host=sides[name].endpoint))
            for r in range(args.rounds):
                for name in (("HTTP", "HTTPS") if r % 2 == 0 else ("HTTPS", "HTTP")):
                    c, srv = clients[name], sides[name]
                    reqs = [c.build_request("GET", "/clusters", headers=signer.headers("GET", "/clusters",
                                                                                     host=srv.endpoint))
                            for _ in range(per_round)]
                    lat, total = run(c, reqs)
                    results[name] = (results[name][0] + lat, results[name][1] + total)
            for c in clients.values():
                c.close()
        finally:
            tls.kill()
            plain.kill()
    n = per_round * args.rounds
    print(f"signed GET /clusters (ROA), {args.clusters} clusters, {n} sequential requests per side in "
          f"{args.rounds} alternating rounds, one keep-alive connection each, "
          f"store: {'PostgreSQL' if database_url else 'SQLite'}; HTTP/1.1 (uvicorn has no HTTP/2)")
    for name, (lat, total) in results.items():
        print(f"{name:6s} p50 {pct(lat, .5):6.2f} ms  p99 {pct(lat, .99):6.2f} ms  mean "
              f"{statistics.mean(lat) * 1000:6.2f} ms  {n / total:7.0f} req/s")
    (h, ht), (s_, st) = results["HTTP"], results["HTTPS"]
    print(f"HTTPS / HTTP: p50 {pct(s_, .5) / pct(h, .5):4.2f}x  p99 {pct(s_, .99) / pct(h, .99):4.2f}x  "
          f"throughput {ht / st:4.2f}x   (target: HTTPS p99 <= 10 ms: {'met' if pct(s_, .99) <= 10 else 'MISSED'})")


if __name__ == "__main__":
    main()
