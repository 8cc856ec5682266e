"""Time from POST /clusters (size 3) to `running`, against the raw local-nodes recipe bringing up
and joining the same three nodes in the same run; idle RSS per node and of the control plane.

    python bench/cluster_create.py [--runs 3]

Needs root, dockerd and docker-registry. The raw baseline runs the reference scripts in
../shared/notes/local-nodes (node-up.sh, docker swarm init/join, teardown.sh) with their own
bridge and subnet. Targets (issue 3): <= 3 s and <= 1.5x raw.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opencs.providers.local import LocalProvider  # noqa: E402
from opencs.sdk import Client  # noqa: E402
from tests.clusterkit import destroy_everything, node_env  # noqa: E402
from tests.conftest import ServerProcess  # noqa: E402

RECIPE = ROOT.parent / "shared" / "notes" / "local-nodes"
PREFIX, SUBNET = "ocp", "10.223.0.0/24"


def rss_kb(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def raw_recipe(tmp: Path) -> float:
    env = {**os.environ, "FX_ROOT": str(tmp / "fx"), "FX_BRIDGE": "fzb0", "FX_NET": "10.224.0"}
    sock = lambda i: f"unix://{tmp}/fx/n{i}/docker.sock"  # noqa: E731
    dk = lambda i, *a: subprocess.run(["docker", "-H", sock(i), *a], env=env, check=True,  # noqa: E731
                                      capture_output=True, text=True).stdout.strip()
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda i: subprocess.run(["sh", str(RECIPE / "node-up.sh"), str(i)], env=env, check=True,
                                                   capture_output=True), [1, 2, 3]))
        dk(1, "swarm", "init", "--advertise-addr", "10.224.0.11", "--listen-addr", "10.224.0.11:2377")
        tok_m = dk(1, "swarm", "join-token", "-q", "manager")
        for i in (2, 3):
            dk(i, "swarm", "join", "--advertise-addr", f"10.224.0.{10 + i}", "--listen-addr",
               f"10.224.0.{10 + i}:2377", "--token", tok_m, "10.224.0.11:2377")
        while dk(1, "node", "ls", "--format", "{{.Status}} {{.ManagerStatus}}").count("Ready") < 3:
            time.sleep(0.05)
        return time.perf_counter() - t0
    finally:
        subprocess.run(["sh", str(RECIPE / "teardown.sh")], env={**env, "FX_FAST": "1"}, capture_output=True)


def opencs_run(client: Client, n: int) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = client.create_cluster({"name": f"bench-{n}", "size": 3})
    while True:
        t = client.describe_task(out["task_id"])
        if t["state"] in ("success", "fail"):
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - t0
    assert t["state"] == "success", t
    return elapsed, out["cluster_id"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0 or not (RECIPE / "node-up.sh").exists():
        sys.exit("needs root and ../shared/notes/local-nodes")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        srv = ServerProcess(data, env={**node_env(PREFIX, SUBNET), "OPENCS_MONITOR_INTERVAL": "0"})
        srv.start()
        try:
            client = Client(f"http://{srv.endpoint}", srv.ak, srv.secret)
            # warm-up: starts the bundled registry and seeds it (once per control plane)
            _, cid = opencs_run(client, 0)
            client.wait_task(client.delete_cluster(cid)["task_id"], timeout=120)
            ours, raw = [], []
            for n in range(1, args.runs + 1):
                raw.append(raw_recipe(Path(tmp)))
                t, cid = opencs_run(client, n)
                ours.append(t)
                if n == args.runs:  # measure idle memory on the last cluster before deleting it
                    time.sleep(3)
                    nodes = client.cluster_nodes(cid)["nodes"]
                    prov = LocalProvider(data / "nodes", bridge=f"{PREFIX}0", subnet=SUBNET, prefix=PREFIX)
                    per_node = [prov.node_rss_bytes(n["instance_id"]) / 2**20 for n in nodes]
                    cp_rss = rss_kb([srv.proc.pid]) / 1024 if srv.proc else 0
                client.wait_task(client.delete_cluster(cid)["task_id"], timeout=120)
        finally:
            srv.kill()
            destroy_everything(data, PREFIX, SUBNET)
    m_ours, m_raw = statistics.median(ours), statistics.median(raw)
    print(f"size-3 cluster, {args.runs} runs each (median)")
    print(f"opencs POST /clusters -> running : {m_ours:5.2f} s   runs {', '.join(f'{x:.2f}' for x in ours)}")
    print(f"raw recipe (node-up x3 + swarm) : {m_raw:5.2f} s   runs {', '.join(f'{x:.2f}' for x in raw)}")
    print(f"ratio opencs / raw              : {m_ours / m_raw:5.2f}   (targets: <= 3 s, <= 1.5x)")
    print(f"idle RSS per node (all processes of its cgroup): {', '.join(f'{x:.0f}' for x in per_node)} MiB")
    print(f"control plane RSS (opencs server process): {cp_rss:.0f} MiB")


if __name__ == "__main__":
    main()
