"""Load (issue 13, item 5): 50 concurrent clients for 60 s against real servers with real nodes.

    flock /tmp/opencs-itest.lock python bench/load.py [--clients 50] [--duration 60] [--think 0.05]
        [--database-url postgresql://...] [--only sqlite,pg1,pg2x2]

The same workload runs, one after the other in this run, against:
  sqlite  one `opencs server` (2 task workers) on SQLite;
  pg1     one `opencs server` (2 task workers) on PostgreSQL: the single-process baseline;
  pg2x2   on PostgreSQL, the `opencs server` of pg1 plus a second API process and two worker
          processes (2 threads each; the server itself runs none), the clients spread over both APIs.

The extra processes are `opencs server --workers 0` and `opencs worker`, as a user runs them: the
singleton duties (master_url, the router, ...) go to whichever process holds their lease. (Before
duties were leased, c266890, the bench started stripped-down processes without loops instead.)

Clients (each a coroutine, signed with the SDK, no retries, closed loop with --think seconds
between calls):
  * 2 cluster clients, each cycling its own one-node cluster: create -> scale to 2 -> scale to 1 ->
    delete (each waits for the task);
  * 2 project clients on the shared one-node cluster (its master_url, mTLS): deploy a project,
    scale its service 1 -> 2, delete it;
  * 1 trigger client: a scaling trigger of a project on the shared cluster, called, its task
    followed, alternately scale_out and scale_in;
  * the rest read: GET /clusters, /clusters/{id}, /clusters/{id}/nodes, /tasks/{id}.
Errors: any reply other than the expected status, a failed task or a timeout.
Targets: SQLite 0 errors and signed reads p99 <= 50 ms; pg2x2 0 errors and more throughput than pg1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opencs.sdk import AsyncAppClient, AsyncClient, Client, OpencsError  # noqa: E402
from tests.clusterkit import destroy_everything, node_env  # noqa: E402
from tests.conftest import ServerProcess, free_port  # noqa: E402

PREFIX, SUBNET = "oly", "10.251.0.0/24"
APP = """
version: '3'
services:
  idle:  # one small container per replica: the bench loads the control plane, not the node
    image: busybox
    command: sleep 1d
    stop_grace_period: 1s
"""
READS = ("GET /clusters", "GET /clusters/{id}", "GET /clusters/{id}/nodes", "GET /tasks/{id}")


_HZ = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process so far; 0 once it is gone."""
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    f = st[st.rfind(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / _HZ


def _machine_cpu() -> tuple[float, float]:
    """(all CPU seconds, busy CPU seconds) of the machine so far, from /proc/stat."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(v) / _HZ, (sum(v) - v[3] - v[4]) / _HZ


def _postgres_pids() -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if (p / "comm").read_text().strip() == "postgres":
                    pids.append(int(p.name))
            except OSError:
                pass
    return pids


@dataclass
class CpuWindow:
    """CPU used in the window by each process of the configuration, the bench, PostgreSQL's backends
    and the whole machine (2 cores shared with the nodes and other work): where the time went."""

    procs: dict[str, int]
    start: dict[str, float] = field(default_factory=dict)
    used: dict[str, float] = field(default_factory=dict)
    t0: float = 0.0
    seconds: float = 0.0
    machine0: tuple[float, float] = (0.0, 0.0)
    cores: float = 0.0
    busy: float = 0.0
    pg0: dict[int, float] = field(default_factory=dict)

    def begin(self) -> None:
        self.t0, self.machine0 = time.monotonic(), _machine_cpu()
        self.start = {k: _proc_cpu(p) for k, p in self.procs.items()}
        self.pg0 = {p: _proc_cpu(p) for p in _postgres_pids()}

    def end(self) -> None:
        self.seconds = time.monotonic() - self.t0
        self.used = {k: (_proc_cpu(p) - self.start[k]) / self.seconds for k, p in self.procs.items()}
        self.used["postgres"] = sum(_proc_cpu(p) - self.pg0.get(p, 0.0) for p in _postgres_pids()) / self.seconds
        total, busy = _machine_cpu()
        self.cores = (total - self.machine0[0]) / self.seconds
        self.busy = (busy - self.machine0[1]) / self.seconds


@dataclass
class Stats:
    end: float = 0.0  # time.monotonic() when the window closes
    cpu: CpuWindow | None = None
    lat: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    in_window: int = 0  # calls that ended inside the window (the throughput)

    async def timed(self, op: str, coro: Any) -> Any:
        """The call's outcome, or None after recording an error; every call's latency is kept."""
        t = time.perf_counter()
        try:
            out = await coro
        except (OpencsError, httpx.HTTPError, TimeoutError, AssertionError) as e:
            self.errors[op].append(f"{type(e).__name__}: {e}"[:300])
            out = None
        self.lat[op].append(time.perf_counter() - t)
        if time.monotonic() <= self.end and not op.endswith(")"):  # waits are no calls of their own
            self.in_window += 1
        return out


# ---------------------------------------------------------------- processes

class Extra:
    """A second API or a worker process sharing the first server's data dir and database."""

    def __init__(self, first: ServerProcess, kind: str, workers: int = 2) -> None:
        self.kind, self.port, self.first = kind, free_port(), first
        self.log = first.data_dir.parent / f"{kind}-{self.port}.log"
        data, db = str(first.data_dir), first.database_url or ""
        if kind == "api":
            cmd = ["-m", "opencs.cli.main", "server", "--port", str(self.port), "--data-dir", data,
                   "--database-url", db, "--workers", "0"]
        else:
            cmd = ["-m", "opencs.cli.main", "worker", "--data-dir", data, "--database-url", db,
                   "--workers", str(workers)]
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen([sys.executable, *cmd], env=first.env, stdout=f, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self) -> None:
        if self.kind != "api":
            return
        end = time.time() + 120  # a busy 2-core machine takes its time to import and migrate
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited:\n{self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"second API did not answer:\n{self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# ---------------------------------------------------------------- clients

async def wait_task(c: AsyncClient, tid: str, timeout: float = 300) -> bool:
    t = await c.wait_task(tid, timeout=timeout, poll=0.3)
    assert t.state == "success", f"task {tid} {t.state}"
    return True


async def finish(st: Stats, op: str, c: AsyncClient, tid: str) -> bool:
    """Follow the task of `op` to its end; its duration is the op's "(task)" figure."""
    return bool(await st.timed(f"{op} (task)", wait_task(c, tid)))


async def cluster_client(k: int, c: AsyncClient, st: Stats, think: float) -> None:
    n = 0
    while time.monotonic() < st.end:
        n += 1
        out = await st.timed("cluster create", c.create_cluster({"name": f"load-{k}-{n}", "size": 1}))
        if out is None:
            await asyncio.sleep(1)
            continue
        ok = await finish(st, "cluster create", c, out.task_id)
        for size in (2, 1):
            if not ok:
                break
            await asyncio.sleep(think)
            acc = await st.timed("cluster scale", c.scale_cluster(out.cluster_id, {"size": size}))
            ok = acc is not None and await finish(st, "cluster scale", c, acc.task_id)
        acc = await st.timed("cluster delete", c.delete_cluster(out.cluster_id))
        if acc is not None:
            await finish(st, "cluster delete", c, acc.task_id)
        await asyncio.sleep(think)


async def project_client(k: int, app: AsyncAppClient, st: Stats, think: float) -> None:
    n = 0
    while time.monotonic() < st.end:
        n += 1
        name = f"load{k}n{n}"
        if await st.timed("project deploy", app.create_project(name, APP)) is None:
            await asyncio.sleep(1)
            continue
        await st.timed("project deploy (until running)", app.wait_project(name, timeout=120, poll=0.3))
        await asyncio.sleep(think)
        await st.timed("project scale", app.scale_service(f"{name}_idle", 2))
        await st.timed("project scale (until 2 running)",
                           app.wait_service(f"{name}_idle", containers=2, timeout=120, poll=0.3))
        await asyncio.sleep(think)
        await st.timed("project delete", app.delete_project(name, force=True))


async def trigger_client(c: AsyncClient, hook: tuple[str, str], st: Stats, think: float) -> None:
    i = 0
    while time.monotonic() < st.end:
        kind = "scale_out" if i % 2 == 0 else "scale_in"
        i += 1
        inv = await st.timed("trigger call", c.invoke_trigger(hook[0], hook[1], type=kind, step=1))
        if inv is not None and inv.task_id:
            await finish(st, "trigger call", c, inv.task_id)
        await asyncio.sleep(think)


async def reader(c: AsyncClient, cid: str, tid: str, st: Stats, think: float) -> None:
    paths = {"GET /clusters": "/clusters", "GET /clusters/{id}": f"/clusters/{cid}",
             "GET /clusters/{id}/nodes": f"/clusters/{cid}/nodes", "GET /tasks/{id}": f"/tasks/{tid}"}
    rnd = random.Random(id(c))
    while time.monotonic() < st.end:
        op = rnd.choice(READS)
        await st.timed(op, c.request("GET", paths[op]))
        if think:
            await asyncio.sleep(rnd.expovariate(1 / think))


# ---------------------------------------------------------------- one configuration

def setup_shared(url: str, ak: str, secret: str, tmp: Path) -> dict[str, Any]:
    """The shared one-node cluster, its certificates, a project with a scaling trigger."""
    c = Client(url, ak, secret, timeout=120)
    out = c.create_cluster({"name": "load-shared", "size": 1})
    c.wait_task(out["task_id"], timeout=300)
    cid = out["cluster_id"]
    end = time.time() + 30
    while not (master := c.describe_cluster(cid)["master_url"]):
        assert time.time() < end, "no master_url"
        time.sleep(0.3)
    certs = dict(c.cluster_certs(cid).items())
    from opencs.sdk import AppClient

    with AppClient(master, certs, timeout=120) as app:
        app.create_project("trig", APP)
        app.wait_project("trig", timeout=180, poll=0.3)
    trig = c.create_trigger(cid, "trig", "scaling", service="idle")
    c.close()
    return {"cid": cid, "tid": out["task_id"], "master": master, "certs": certs,
            "hook": (trig.trigger_url, trig.secret)}


async def drive(apis: list[str], ak: str, secret: str, shared: dict[str, Any], args: argparse.Namespace,
                cpu: CpuWindow) -> Stats:
    st = Stats(end=time.monotonic() + args.duration, cpu=cpu)
    cpu.begin()

    async def close_window() -> None:
        await asyncio.sleep(max(0.0, st.end - time.monotonic()))
        cpu.end()
    # each client its own connection pool, as separate clients have: one httpx pool shared by 50
    # clients scans all its connections on every request (httpcore), 4.4 ms of this process's CPU
    # per call against 0.8 ms with a pool each (measured), and the bench then timed itself
    https: list[httpx.AsyncClient] = []

    def client(k: int) -> AsyncClient:
        https.append(httpx.AsyncClient(timeout=120, trust_env=False))
        return AsyncClient(apis[k % len(apis)], ak, secret, retries=0, timeout=120, http_client=https[-1])

    app = AsyncAppClient(shared["master"], shared["certs"], retries=0, timeout=120)
    think = args.think
    jobs = [cluster_client(k, client(k), st, think) for k in range(2)]
    jobs += [project_client(k, app, st, think) for k in range(2)]
    jobs.append(trigger_client(client(0), shared["hook"], st, think))
    n_readers = args.clients - len(jobs)
    jobs += [reader(client(k), shared["cid"], shared["tid"], st, think) for k in range(n_readers)]
    jobs.append(close_window())
    await asyncio.gather(*jobs)  # the readers stop at the window's end, the others end their cycle
    await app.aclose()
    for h in https:
        await h.aclose()
    return st


def run_config(name: str, args: argparse.Namespace, tmp: Path) -> Stats:
    data = tmp / name / "data"
    db = None if name == "sqlite" else args.db_url
    first = ServerProcess(data, database_url=db, env={**node_env(PREFIX, SUBNET)}, workers=2 if name != "pg2x2" else 0)
    extras: list[Extra] = []
    try:
        first.start(timeout=60)
        apis = [first.url]
        if name == "pg2x2":
            extras = [Extra(first, "api"), Extra(first, "worker"), Extra(first, "worker")]
            for e in extras:
                e.wait()
            apis.append(extras[0].url)
        shared = setup_shared(first.url, first.ak, first.secret, tmp)
        print(f"[{name}] shared cluster ready; load {os.getloadavg()[0]:.1f}; driving {args.clients} clients "
              f"for {args.duration:.0f} s over {len(apis)} API process(es)", flush=True)
        assert first.proc is not None
        procs = {"server" if name != "pg2x2" else "server (API)": first.proc.pid, "bench": os.getpid()}
        procs.update({f"{e.kind} {i}": e.proc.pid for i, e in enumerate(extras, 1)})
        st = asyncio.run(drive(apis, first.ak, first.secret, shared, args, CpuWindow(procs)))
        # let the last tasks finish before the teardown, so that nothing is left half-made
        time.sleep(2)
        if any(st.errors.values()):  # the processes' logs outlive the run's temporary directory
            keep = Path(tempfile.mkdtemp(prefix=f"opencs-load-logs-{name}-"))
            for log in [first.log, *(e.log for e in extras)]:
                shutil.copy(log, keep / log.name)
            print(f"[{name}] errors: the processes' logs are kept in {keep}", flush=True)
        return st
    finally:
        for e in extras:
            e.kill()
        first.kill()
        destroy_everything(data, PREFIX, SUBNET)
        if db:
            _reset_pg(db)


def _reset_pg(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def _make_db(admin: str) -> tuple[str, Any]:
    import psycopg

    name = f"opencs_load_{os.getpid()}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    return admin.rsplit("/", 1)[0] + "/" + name, drop


# ---------------------------------------------------------------- report

def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))] * 1000 if xs else float("nan")


def report_one(name: str, st: Stats, la: tuple[float, ...], args: argparse.Namespace) -> None:
    """One configuration's table, printed as soon as it ran (a later one may fail)."""
    errs = sum(len(v) for v in st.errors.values())
    reads = [x for op in READS for x in st.lat[op]]
    print(f"\n== {name}: {args.clients} clients, {args.duration:.0f} s, {st.in_window} calls in the window "
          f"({st.in_window / args.duration:.1f}/s), {errs} errors; load average {la[0]:.1f} {la[1]:.1f} "
          f"{la[2]:.1f} (2 cores)")
    print(f"   {'operation':34s} {'calls':>6s} {'errors':>6s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} "
          f"{'max ms':>8s}")
    for op in sorted(st.lat):
        xs = st.lat[op]
        print(f"   {op:34s} {len(xs):6d} {len(st.errors[op]):6d} {pct(xs, .5):8.1f} {pct(xs, .9):8.1f} "
              f"{pct(xs, .99):8.1f} {max(xs) * 1000:8.1f}")
    print(f"   {'signed reads, all':34s} {len(reads):6d} {sum(len(st.errors[o]) for o in READS):6d} "
          f"{pct(reads, .5):8.1f} {pct(reads, .9):8.1f} {pct(reads, .99):8.1f}")
    if st.cpu is not None and st.cpu.seconds:
        c = st.cpu
        per = ", ".join(f"{k} {100 * v:.0f}%" for k, v in c.used.items())
        print(f"   CPU in the window (% of one core): {per}; machine busy {c.busy:.2f} of {c.cores:.2f} cores")
    for op, es in st.errors.items():
        for e in es[:3]:
            print(f"   error {op}: {e}")
    sys.stdout.flush()


def report(results: dict[str, Stats], args: argparse.Namespace) -> None:
    print()
    if "sqlite" in results:
        st = results["sqlite"]
        reads = [x for op in READS for x in st.lat[op]]
        errs = sum(len(v) for v in st.errors.values())
        print(f"check: SQLite {errs} errors (target 0: {'met' if errs == 0 else 'MISSED'}); signed reads p99 "
              f"{pct(reads, .99):.1f} ms (<= 50: {'met' if pct(reads, .99) <= 50 else 'MISSED'})")
    if "pg1" in results and "pg2x2" in results:
        r1, r2 = (results[k].in_window / args.duration for k in ("pg1", "pg2x2"))
        errs = sum(len(v) for v in results["pg2x2"].errors.values())
        print(f"check: PostgreSQL 2 API + 2 workers {errs} errors (target 0: {'met' if errs == 0 else 'MISSED'}); "
              f"throughput {r2:.1f}/s vs one process {r1:.1f}/s = {r2 / r1:.2f}x "
              f"(> 1: {'met' if r2 > r1 else 'MISSED'})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--think", type=float, default=0.05, help="mean seconds between a client's calls")
    ap.add_argument("--database-url", default=os.environ.get("OPENCS_TEST_PG_URL", ""))
    ap.add_argument("--only", default="sqlite,pg1,pg2x2")
    args = ap.parse_args()
    configs = args.only.split(",")
    drop = None
    if any(c.startswith("pg") for c in configs):
        if not args.database_url:
            raise SystemExit("PostgreSQL runs need --database-url (or OPENCS_TEST_PG_URL)")
        args.db_url, drop = _make_db(args.database_url.replace("postgresql+psycopg://", "postgresql://"))
    results: dict[str, Stats] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="opencs-load-") as tmp:
            for name in configs:
                results[name] = run_config(name, args, Path(tmp))
                report_one(name, results[name], os.getloadavg(), args)
    finally:
        if drop:
            drop()
    report(results, args)


if __name__ == "__main__":
    main()
