"""Cost of the InfluxDB add-on (issue 12 item 2): what exporting one usage pass of N containers to
Debian's influxd costs the control plane, as CPU seconds per minute at a 15 s interval, on top of
the collection itself (bench/metrics.py).

    python bench/influxdb_export.py [--containers 200] [--nodes 4] [--passes 40]

A made-up snapshot of N containers on --nodes nodes (the export reads only the snapshot, never an
engine) whose CPU counters move each pass; influxd runs on loopback with a directory and port of
its own and is stopped by its PID. Each pass: `offer()` (the usage loop's side: points, the queue)
and `drain()` (the writer thread's: line protocol and the HTTP write), both timed as CPU of this
thread (time.thread_time) and wall; influxd's own CPU from /proc. Then the rows are counted back.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from opencs.engines.usage import ContainerUsage, NodeUsage, Usage  # noqa: E402
from opencs.services.influxdb_addon import InfluxExport  # noqa: E402
from opencs.services.usage import ClusterUsage, UsageSnapshot  # noqa: E402
from tests.monitoring.test_influxdb import INFLUXD, start_influxd  # noqa: E402


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def snapshot(t: float, n: int, nodes: int, url: str) -> UsageSnapshot:
    per = [[] for _ in range(nodes)]  # type: list[list[ContainerUsage]]
    for i in range(n):
        u = Usage(t * 0.01 * (i % 7), 50_000_000 + i, 40_000_000, 268_435_456, 1000 * i, 2000 * i, 0, 4096 * i)
        project = f"p{i % 10}"
        per[i % nodes].append(ContainerUsage(f"{i:064x}", f"{project}_svc.{i}.x", project, f"{project}_svc", u,
                                             url if i == 0 else ""))
    return UsageSnapshot(t, 0.1, [ClusterUsage("c-bench", [NodeUsage(f"i-{k}", None, c, address="127.0.0.1")
                                                          for k, c in enumerate(per)])])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--containers", type=int, default=200)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--passes", type=int, default=40)
    ap.add_argument("--interval", type=float, default=15.0)
    a = ap.parse_args()
    if not INFLUXD.exists():
        sys.exit("apt-get install influxdb (Debian's InfluxDB 1.x)")
    with tempfile.TemporaryDirectory(prefix="opencs-influx-bench-") as tmp:
        proc, port = start_influxd(Path(tmp) / "influxd", "127.0.0.1")
        try:
            url = f"http://127.0.0.1:{port}"
            ex = InfluxExport(queue_size=4)
            ex.offer(snapshot(time.time() - 3600, a.containers, a.nodes, url))
            ex.drain(5)  # makes the database; not counted
            offer_cpu, write_cpu, write_wall = [], [], []
            influx_before = proc_cpu(proc.pid)
            t0 = time.time() - a.passes * a.interval
            for k in range(a.passes):
                snap = snapshot(t0 + k * a.interval, a.containers, a.nodes, url)
                c = time.thread_time()
                ex.offer(snap)
                offer_cpu.append(time.thread_time() - c)
                c, w = time.thread_time(), time.perf_counter()
                assert ex.drain(5)
                write_cpu.append(time.thread_time() - c)
                write_wall.append(time.perf_counter() - w)
            influx_cpu = (proc_cpu(proc.pid) - influx_before) / a.passes
            ex.close()
            rows = httpx.get(f"{url}/query", params={"db": "telegraf", "q": 'SELECT count("usage_total") FROM '
                                                     '"docker_container_cpu"'}).json()
            count = rows["results"][0]["series"][0]["values"][0][1]
        finally:
            proc.terminate()
            proc.wait(15)
    per_min = 60 / a.interval
    points = a.containers * 4
    oc, wc = statistics.median(offer_cpu), statistics.median(write_cpu)
    print(f"{a.containers} containers on {a.nodes} nodes, {points} points a pass, {a.passes} passes; "
          f"{count} docker_container_cpu rows read back")
    print(f"control plane per pass (median): offer {oc * 1000:.1f} ms CPU (usage loop), write {wc * 1000:.1f} ms CPU, "
          f"{statistics.median(write_wall) * 1000:.1f} ms wall (writer thread)")
    print(f"at a {a.interval:.0f} s interval: {(oc + wc) * per_min:.3f} CPU s/min in the control plane "
          f"({(oc + wc) * per_min / 60 * 100:.2f} % of a core); influxd {influx_cpu * per_min:.3f} CPU s/min")


if __name__ == "__main__":
    main()
