"""High availability on PostgreSQL (issue 13 item 2), the full matrix: 2 `opencs server` + 2 `opencs
worker` processes on one database and one data dir; for each of a cluster create, a project deploy
and a blue-green update, each of the 4 processes is killed (-9) in turn during the operation and
started again. Printed per run: what the victim held (duties, the task), how long until another
process held its duties (from the lease table), the longest gap of master_url (GET /_ping over
mutual TLS) and of routed traffic (HTTP through HAProxy), how long the victim took to serve again
once restarted, and the task's outcome. Then a stalled router holder (SIGSTOP: its PID lives, so the
lease is taken over only when it expires) measures the takeover of a holder on another host.

    OPENCS_TEST_PG_URL=postgresql://opencs:opencs@127.0.0.1:5432/opencs \\
        flock /tmp/opencs-itest.lock python bench/ha.py [--ops create,deploy,bluegreen]

Needs root, dockerd, docker-registry, haproxy and a PostgreSQL role that may create databases.
Targets: every task succeeds, one node per 1-node cluster, each gap < 10 s.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from opencs.sdk import AppClient  # noqa: E402
from opencs.store.models import InstanceRow  # noqa: E402
from tests.clusterkit import destroy_everything  # noqa: E402
from tests.loops.hakit import SERVERS, WORKERS, Fleet, Probe, fetch, master_url_probe, routed_probe  # noqa: E402
from tests.loops.test_ha_postgres import template  # noqa: E402

PREFIX, SUBNET = "ohb", "10.205.0.0/24"  # not the test's (oha): both may exist on one host
DUTIES = ("endpoints", "router", "health", "monitoring", "container-events")


def held_by(fleet: Fleet, name: str) -> list[str]:
    return [d for d in DUTIES if fleet.holder(d) == name]


def takeover(fleet: Fleet, duties: list[str], timeout: float = 30.0) -> float:
    """Seconds from now until every one of `duties` is held by a live process."""
    t0 = time.monotonic()
    while any(fleet.holder(d) is None for d in duties):
        if time.monotonic() - t0 > timeout:
            return float("inf")
        time.sleep(0.05)
    return time.monotonic() - t0


def kill(fleet: Fleet, victim: str, task_id: str | None) -> dict[str, Any]:
    duties = held_by(fleet, victim)
    ran = task_id is not None and fleet.task_owner(task_id) == victim
    fleet.kill9(victim)
    took = takeover(fleet, duties)
    restart = fleet.start(victim)
    return {"held": duties, "ran_task": ran, "takeover": took, "restart": restart}


def cluster_instances(fleet: Fleet, cid: str) -> int:
    with fleet.db.session() as s:
        return s.query(InstanceRow).filter(InstanceRow.cluster_id == cid).count()


def run_create(fleet: Fleet, victim: str, n: int) -> tuple[dict[str, Any], str]:
    api = fleet.api()
    out = api.create_cluster({"name": f"hb{n}", "size": 1})
    fleet.wait_owned(out["task_id"], "provision_instances")
    info = kill(fleet, victim, out["task_id"])
    api = fleet.api()
    state = fleet.api().wait_task(out["task_id"], timeout=300).state
    nodes = cluster_instances(fleet, out["cluster_id"])
    assert nodes == 1, f"{nodes} nodes"
    api.wait_task(api.delete_cluster(out["cluster_id"])["task_id"], timeout=180)
    return info, f"{state}, {nodes} node"


def run_deploy(fleet: Fleet, app: AppClient, victim: str, n: int) -> tuple[dict[str, Any], str]:
    name = f"d{n}"
    app.create_project(name, template("d").replace("http://ha.test", f"http://{name}.test"), version="1")
    info = kill(fleet, victim, app.get_project(name).task_id or None)
    p = app.wait_project(name, timeout=180)
    app.delete_project(name)
    return info, p.current_state


def run_bluegreen(fleet: Fleet, app: AppClient, victim: str, n: int) -> tuple[dict[str, Any], str]:
    acc = app.update_project("web", template(f"v{n + 2}"), version=str(n + 2), blue_green=True,
                             weights={"old": 50, "new": 50})
    info = kill(fleet, victim, acc.task_id)
    api = fleet.api()
    state = api.wait_task(acc.task_id, timeout=180).state
    api.wait_task(app.confirm_update("web").task_id, timeout=180)
    return info, state


def fresh_database(base: str) -> str:
    name = "opencs_ha_" + secrets.token_hex(4)
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return f"{base.rsplit('/', 1)[0]}/{name}"


def drop_database(base: str, url: str) -> None:
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", default="create,deploy,bluegreen")
    ap.add_argument("--pg-url", default=os.environ.get("OPENCS_TEST_PG_URL", ""))
    args = ap.parse_args()
    if not args.pg_url:
        print("set OPENCS_TEST_PG_URL or --pg-url", file=sys.stderr)
        return 2
    pg = fresh_database(args.pg_url)
    tmp = Path(tempfile.mkdtemp(prefix="opencs-bench-ha-"))
    fleet = Fleet(tmp, pg, PREFIX, SUBNET)
    probes: list[Probe] = []
    rows: list[tuple[str, str, dict[str, Any], float, float, str]] = []
    try:
        fleet.start_all()
        api = fleet.api()
        out = api.create_cluster({"name": "ha", "size": 1})
        api.wait_task(out["task_id"], timeout=300)
        cid = out["cluster_id"]
        cl, certs = api.describe_cluster(cid), api.cluster_certs(cid)
        app = AppClient(cl.master_url, certs, retries=8, backoff=1.0)
        app.create_project("web", template("v1"), version="1")
        app.wait_project("web", timeout=180)
        port = int(fleet.api().describe_cluster(cid).routing_url.rsplit(":", 1)[1])
        while fetch(port, "ha.test")[0] != 200:
            time.sleep(0.2)
        probes = [master_url_probe(cl.master_url, certs).start(), routed_probe(port, "ha.test").start()]
        n = 0
        for op in args.ops.split(","):
            for victim in (*SERVERS, *WORKERS):
                n += 1
                for p in probes:
                    p.window()
                if op == "create":
                    info, outcome = run_create(fleet, victim, n)
                elif op == "deploy":
                    info, outcome = run_deploy(fleet, app, victim, n)
                else:
                    info, outcome = run_bluegreen(fleet, app, victim, n)
                time.sleep(1.0)  # let a probe see the recovery
                row = (op, victim, info, probes[0].gap(), probes[1].gap(), outcome)
                rows.append(row)
                print(f"{op:9} kill -9 {victim:8} held {','.join(info['held']) or '-':32} "
                      f"ran task {'yes' if info['ran_task'] else 'no ':3}  takeover {info['takeover']:5.2f}s  "
                      f"master_url gap {row[3]:5.2f}s  routing gap {row[4]:5.2f}s  "
                      f"restart {info['restart']:5.2f}s  -> {outcome}", flush=True)
        # a stalled router holder: its PID lives, so the lease goes only when it expires (as across hosts)
        for p in probes:
            p.window()
        victim = fleet.wait_holder("router")
        os.kill(fleet.pid(victim), signal.SIGSTOP)
        took = takeover_from(fleet, "router", victim)
        os.kill(fleet.pid(victim), signal.SIGCONT)
        print(f"SIGSTOP of the router holder {victim}: router lease taken over in {took:.2f}s "
              f"(routing gap {probes[1].gap():.2f}s: HAProxy kept serving)")
        fleet.kill9(victim)
        fleet.start(victim)
        worst_m, worst_r = max(r[3] for r in rows), max(r[4] for r in rows)
        slowest = max(r[2]["restart"] for r in rows)
        print(f"worst master_url gap {worst_m:.2f}s, worst routing gap {worst_r:.2f}s, slowest restart "
              f"{slowest:.2f}s over {len(rows)} kills")
        return 0 if worst_m < 10 and worst_r < 10 else 1
    finally:
        for p in probes:
            p.stop()
        fleet.close()
        destroy_everything(fleet.data, PREFIX, SUBNET)
        drop_database(args.pg_url, pg)


def takeover_from(fleet: Fleet, duty: str, victim: str, timeout: float = 60.0) -> float:
    t0 = time.monotonic()
    while fleet.holder(duty) in (None, victim):
        if time.monotonic() - t0 > timeout:
            return float("inf")
        time.sleep(0.05)
    return time.monotonic() - t0


if __name__ == "__main__":
    raise SystemExit(main())
