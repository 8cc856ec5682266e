"""Cost of collecting container and node usage (issue 12, item 2): CPU seconds per minute at a 15 s
interval for N containers on 4 nodes, against the same control plane idle, in the same run.

    flock /tmp/opencs-itest.lock python bench/metrics.py [--containers 200] [--nodes 4] [--window 60]

A control plane (in this process: its loops, task workers and API objects) makes a real cluster of
local nodes and one swarm service of N `sleep` containers. Then, in the same run:

  idle       the control plane with its loops but no usage collector, for --window seconds
  collecting the same with the usage loop at --interval, for --window seconds

CPU is this process's (getrusage) plus the engines' own (the nodes' cgroups minus their containers:
dockerd, containerd, shims), so an engine that works harder to answer is counted too. The difference
is the collector's cost; it is also measured directly as the CPU of back-to-back passes, and the
engines' stats API (`docker stats --no-stream`, the alternative source) is timed on a sample of the
containers for comparison. Target: <= 3 CPU s/min (5 % of a core).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opencs.composition import ControlPlane  # noqa: E402
from opencs.engines import cgroupv1  # noqa: E402
from opencs.engines.swarm import client as engine  # noqa: E402
from opencs.engines.swarm.usage import SwarmUsageReader  # noqa: E402
from opencs.engines.usage import NodeRef  # noqa: E402
from opencs.loops.usage import UsageLoop  # noqa: E402
from opencs.services.usage import UsageService  # noqa: E402
from opencs.store.repos.clusters import ClusterRepo  # noqa: E402
from tests.clusterkit import create_cluster, node_runtime  # noqa: E402

PREFIX, SUBNET = "ocn", "10.246.0.0/24"


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def engines_cpu(cgroups: list[str]) -> float:
    """CPU seconds of the nodes' own processes: each node's group minus its containers' groups."""
    total = 0.0
    for cg in cgroups:
        top = cgroupv1.CGROUP_ROOT / "cpuacct" / cg
        total += int((top / "cpuacct.usage").read_text()) / 1e9
        for child in top.iterdir():
            if child.is_dir():
                total -= int((child / "cpuacct.usage").read_text()) / 1e9
    return total


def window(seconds: float, cgroups: list[str]) -> tuple[float, float]:
    """(this process, engines) CPU seconds per minute over `seconds`."""
    p0, e0, t0 = own_cpu(), engines_cpu(cgroups), time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    return (own_cpu() - p0) * 60 / dt, (engines_cpu(cgroups) - e0) * 60 / dt


def start_containers(sock: str, n: int, timeout: float) -> float:
    t0 = time.monotonic()
    subprocess.run(["docker", "-H", sock, "service", "create", "--detach", "--name", "bench_idle",
                    "--label", "com.docker.stack.namespace=bench",
                    "--container-label", "com.docker.stack.namespace=bench",
                    "--replicas", str(n), "--restart-condition", "none", "--stop-grace-period", "1s",
                    "busybox", "sleep", "1d"], check=True, capture_output=True, timeout=120)
    while time.monotonic() - t0 < timeout:
        out = subprocess.run(["docker", "-H", sock, "service", "ls", "--filter", "name=bench_idle",
                              "--format", "{{.Replicas}}"], capture_output=True, text=True).stdout.strip()
        if out == f"{n}/{n}":
            return time.monotonic() - t0
        time.sleep(2)
    raise SystemExit(f"only {out} containers running after {timeout:.0f} s")


def stats_api_sample(refs: list[NodeRef], k: int, cgroups: list[str]) -> tuple[float, float, float]:
    """Per container through the engine's stats API: (our CPU s, engine CPU s, wall s)."""
    reader = SwarmUsageReader()
    ref = refs[0]
    remote = NodeRef(ref.instance_id, ref.endpoint, None)  # no cgroup: the reader asks the engine
    with closing(engine(ref.endpoint)) as c:
        ids = [x["Id"] for x in c.api.containers()][:k]
    p0, e0, w0 = own_cpu(), engines_cpu(cgroups), time.monotonic()
    with closing(engine(ref.endpoint)) as c:
        for cid in ids:
            reader._container(c, remote, {"Id": cid, "Labels": {}}, local=False)
    n = max(1, len(ids))
    return (own_cpu() - p0) / n, (engines_cpu(cgroups) - e0) / n, (time.monotonic() - w0) / n


def measure(rt: ControlPlane, args: argparse.Namespace) -> None:
    cid = create_cluster(rt, args.nodes, name="bench-metrics", timeout=300)
    rows = rt.instance_repo.of_cluster(cid)
    cgroups = [r.details["cgroup"] for r in rows]
    refs = [NodeRef(r.instance_id, r.docker_host, r.details["cgroup"]) for r in rows]
    manager = next(r for r in rows if r.role == "manager")
    took = start_containers(manager.docker_host, args.containers, args.start_timeout)
    print(f"{args.containers} containers running on {args.nodes} nodes after {took:.0f} s")
    time.sleep(10)  # let the start-up settle

    usage = UsageService(ClusterRepo(rt.db), rt.instance_repo, {"swarm": SwarmUsageReader()})
    passes, p0 = 10, own_cpu()
    e0 = engines_cpu(cgroups)
    for _ in range(passes):
        snap = usage.collect()
    per_pass, engine_pass = (own_cpu() - p0) / passes, (engines_cpu(cgroups) - e0) / passes
    seen = sum(len(n.containers) for c in snap.clusters for n in c.nodes)
    print(f"one pass: {seen} containers + {len(refs)} nodes, {snap.duration * 1000:.0f} ms wall, "
          f"{per_pass * 1000:.0f} ms CPU here + {engine_pass * 1000:.0f} ms in the engines")
    direct = (per_pass + engine_pass) * 60 / args.interval
    print(f"direct: {direct:.2f} CPU s/min at a {args.interval:.0f} s interval ({direct / 60 * 100:.2f} % of a core)")

    idle_p, idle_e = window(args.window, cgroups)
    loop = UsageLoop(usage, args.interval)
    loop.start()
    try:
        col_p, col_e = window(args.window, cgroups)
    finally:
        loop.stop()
    delta = (col_p + col_e) - (idle_p + idle_e)
    print(f"idle control plane:       {idle_p:.2f} CPU s/min here + {idle_e:.2f} in the engines")
    print(f"collecting every {args.interval:.0f} s:    {col_p:.2f} CPU s/min here + {col_e:.2f} in the engines")
    print(f"difference: {delta:.2f} CPU s/min ({delta / 60 * 100:.2f} % of a core; target <= 5 %)")

    cpu_here, cpu_engine, wall = stats_api_sample(refs, 10, cgroups)
    per_min = (cpu_here + cpu_engine) * seen * 60 / args.interval
    print(f"engine stats API instead: {cpu_here * 1000:.1f} ms CPU here + {cpu_engine * 1000:.1f} ms in the engine "
          f"and {wall:.2f} s wall per container -> {per_min:.1f} CPU s/min for {seen} containers "
          f"and {wall * seen:.0f} s per pass one by one")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=200)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--interval", type=float, default=15.0)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--start-timeout", type=float, default=900.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="opencs-bench-metrics-") as d, \
            node_runtime(Path(d) / "data", PREFIX, SUBNET, workers=2, usage_interval=0) as rt:
        measure(rt, args)


if __name__ == "__main__":
    main()
