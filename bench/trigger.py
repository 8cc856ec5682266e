"""Trigger call -> engine update issued, p50/p99 over 100 calls (target p99 <= 50 ms), and the
router's overhead against a direct request to a task, as a ratio.

    python bench/trigger.py [--calls 100] [--requests 1000]

A real opencs server with a 2-node cluster and a project whose service is routed by domain. The
moment the engine received the update comes from the manager engine's own event stream
(`service update` events, their timeNano), so no polling interval is in the figure. Each call waits
for the previous scale task to end, so that each figure is one trigger's own (calls in a burst would
fold into one run: README, "Changes while a task runs").
"""

from __future__ import annotations

import argparse
import queue
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

import httpx
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from opencs.engines.swarm import client as engine  # noqa: E402
from opencs.providers.localnet import socket_path  # noqa: E402
from opencs.sdk import Client  # noqa: E402
from tests.clusterkit import destroy_everything, node_env  # noqa: E402
from tests.conftest import ServerProcess  # noqa: E402

PREFIX, SUBNET = "ocj", "10.247.0.0/24"
TEMPLATE = """
version: '3'
services:
  web:
    image: busybox
    command: sh -c 'mkdir -p /w && echo hello > /w/index.html && exec httpd -f -p 8080 -h /w'
    stop_grace_period: 1s
    labels:
      aliyun.routing.port_8080: http://web.bench
  worker:
    image: busybox
    command: sleep 3600
    stop_grace_period: 1s
"""


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]


def timed(client: httpx.Client, url: str, headers: dict[str, str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        a = time.perf_counter()
        r = client.get(url, headers=headers)
        out.append((time.perf_counter() - a) * 1000)
        assert r.status_code == 200 and r.text.strip() == "hello", r.text
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--requests", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        srv = ServerProcess(data, env={**node_env(PREFIX, SUBNET), "OPENCS_MONITOR_INTERVAL": "0"})
        srv.start()
        try:
            c = Client(f"http://{srv.endpoint}", srv.ak, srv.secret)
            out = c.create_cluster({"name": "bench-trigger", "size": 2})
            c.wait_task(out["task_id"], timeout=300)
            cid = out["cluster_id"]
            mgr = next(n for n in c.cluster_nodes(cid)["nodes"] if n["role"] == "manager")
            sock = f"unix://{socket_path(data / 'nodes', mgr['instance_id'])}"
            certs = Path(tmp) / "certs"
            certs.mkdir()
            for k, v in c.cluster_certs(cid).items():
                (certs / f"{k}.pem").write_text(v)
            s = requests.Session()
            s.trust_env = False
            s.cert, s.verify = (str(certs / "cert.pem"), str(certs / "key.pem")), str(certs / "ca.pem")
            master = c.describe_cluster(cid)["master_url"]
            r0 = s.post(f"{master}/projects/", json={"name": "app", "template": TEMPLATE}, timeout=300)
            assert r0.status_code == 201, r0.text
            end = time.time() + 180
            while s.get(f"{master}/projects/app", timeout=60).json()["current_state"] != "running":
                assert time.time() < end, "project did not start"
                time.sleep(0.3)

            # ---- trigger call -> engine update issued
            trig = c.request("POST", f"/clusters/{cid}/triggers",
                             body={"cluster_id": cid, "project_id": "app", "action": "scaling", "service": "worker"})
            hook = f"{trig['trigger_url']}&secret={trig['secret']}"
            events: queue.Queue[float] = queue.Queue()
            stop = threading.Event()

            def listen() -> None:
                with closing(engine(sock, timeout=3600)) as d:
                    stream = d.events(decode=True, filters={"type": "service", "event": "update"})
                    for ev in stream:
                        if stop.is_set():
                            break
                        if ev.get("Actor", {}).get("Attributes", {}).get("name") == "app_worker":
                            events.put(ev["timeNano"] / 1e9)

            threading.Thread(target=listen, daemon=True).start()
            time.sleep(0.5)
            issued, answered = [], []
            with httpx.Client(trust_env=False, timeout=30) as h:
                for i in range(args.calls):
                    kind = "scale_out" if i % 2 == 0 else "scale_in"
                    while not events.empty():
                        events.get_nowait()
                    t0 = time.time()
                    r = h.get(f"{hook}&type={kind}&step=1")
                    answered.append((time.time() - t0) * 1000)
                    assert r.status_code == 202, r.text
                    issued.append((events.get(timeout=30) - t0) * 1000)
                    c.wait_task(r.json()["task_id"], timeout=120, poll=0.05)
            stop.set()

            # ---- router overhead: through HAProxy by Host vs straight to the task
            with closing(engine(sock)) as d:
                tasks = [t for t in d.api.tasks(filters={"service": "app_web", "desired-state": "running"})
                         if t["Status"]["State"] == "running"]
                node = d.api.inspect_node(tasks[0]["NodeID"])
                port = tasks[0]["Status"]["PortStatus"]["Ports"][0]["PublishedPort"]
            direct = f"http://{node['Status']['Addr']}:{port}/"
            routing_url = c.describe_cluster(cid)["routing_url"]
            with httpx.Client(trust_env=False, timeout=10) as h:
                timed(h, direct, {}, 50)
                timed(h, routing_url + "/", {"Host": "web.bench"}, 50)  # warm both paths
                d_lat = timed(h, direct, {}, args.requests)
                r_lat = timed(h, routing_url + "/", {"Host": "web.bench"}, args.requests)
        finally:
            srv.kill()
            destroy_everything(data, PREFIX, SUBNET)
    print(f"scaling trigger, {args.calls} calls (GET /hook/trigger, no wait)")
    print(f"  call -> engine update issued : p50 {pct(issued, .5):6.1f} ms  p99 {pct(issued, .99):6.1f} ms"
          "   (target p99 <= 50 ms)")
    print(f"  call -> 202 reply            : p50 {pct(answered, .5):6.1f} ms  p99 {pct(answered, .99):6.1f} ms")
    print(f"router, {args.requests} sequential keep-alive GETs each")
    print(f"  direct to the task           : p50 {pct(d_lat, .5):6.2f} ms  p99 {pct(d_lat, .99):6.2f} ms")
    print(f"  through HAProxy (Host header): p50 {pct(r_lat, .5):6.2f} ms  p99 {pct(r_lat, .99):6.2f} ms")
    print(f"  overhead ratio (p50)         : {pct(r_lat, .5) / pct(d_lat, .5):6.2f}")


if __name__ == "__main__":
    main()
