"""Real Docker engine replies, recorded once from a real swarm, replayed at scale (bench/scale.py).

    flock /tmp/opencs-itest.lock python bench/engine_replay.py record   # rewrites bench/fixtures/swarm-engine.json

`record` makes a 2-node cluster of real local nodes (its own prefix and subnet), runs a service of
4 `sleep` containers on it and keeps what the manager's and the worker's dockerd answer to
GET /_ping, /info, /nodes, /services, /tasks and /containers/json, ids and addresses as they came.

`ReplayEngine` serves those shapes for any number of nodes over one HTTP port: node `i-…` is
`tcp://127.0.0.1:<port>/n/<i-…>` (the Docker SDK keeps a base URL's path), its /info and /nodes
are the recorded ones with the node's own id, name and address put in, and its /containers/json is
the recorded container list repeated to `containers` entries with fresh ids. Bodies are made per
request from the templates, so 300,000 containers cost no memory here.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import sys
import tempfile
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "swarm-engine.json"
PREFIX, SUBNET = "osr", "10.254.0.0/24"
ROUTES = ("/_ping", "/info", "/nodes", "/services", "/tasks", "/containers/json")


def record(out: Path = FIXTURE) -> None:
    import subprocess
    import time

    from opencs.engines.swarm import client
    from tests.clusterkit import create_cluster, node_runtime

    with tempfile.TemporaryDirectory(prefix="opencs-record-") as d, \
            node_runtime(Path(d) / "data", PREFIX, SUBNET, workers=2, usage_interval=0) as rt:
        cid = create_cluster(rt, 2, name="record", timeout=300)
        rows = rt.instance_repo.of_cluster(cid)
        mgr = next(r for r in rows if r.role == "manager")
        wrk = next(r for r in rows if r.role != "manager")
        subprocess.run(["docker", "-H", mgr.docker_host, "service", "create", "--detach", "--name", "rec_idle",
                        "--label", "com.docker.stack.namespace=rec", "--container-label",
                        "com.docker.stack.namespace=rec", "--replicas", "4", "--stop-grace-period", "1s",
                        "busybox", "sleep", "1d"], check=True, capture_output=True, timeout=120)
        for _ in range(120):
            out_ = subprocess.run(["docker", "-H", mgr.docker_host, "service", "ls", "--format", "{{.Replicas}}"],
                                  capture_output=True, text=True).stdout.strip()
            if out_ == "4/4":
                break
            time.sleep(1)
        got: dict[str, Any] = {}
        for role, r in (("manager", mgr), ("worker", wrk)):
            with closing(client(r.docker_host)) as c:
                api = c.api
                got[role] = {"_ip": r.private_ip}
                for path in ROUTES:
                    if role == "worker" and path in ("/nodes", "/services", "/tasks"):
                        continue  # a worker's engine refuses the swarm's routes
                    resp = api.get(api._url(path), params={"all": 1} if path == "/containers/json" else None)
                    resp.raise_for_status()
                    got[role][path] = resp.text if path == "/_ping" else resp.json()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    print(f"recorded {out} ({out.stat().st_size} bytes)")


def _hex(seed: str, n: int = 64) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:n]


class ReplayEngine:
    """The recorded replies for `nodes`: {instance id: (swarm node id, ip, role)}; a thread with its
    own asyncio loop serves them on 127.0.0.1 (raw HTTP/1.1 with keep-alive: the server's cost
    must stay small next to the control plane's)."""

    def __init__(self, nodes: dict[str, tuple[str, str, str]], containers: int = 30,
                 fixture: Path = FIXTURE) -> None:
        rec = json.loads(fixture.read_text())
        self.rec = rec
        self.nodes = nodes
        self.containers = containers
        self.port = 0
        self.requests = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        m = rec["manager"]
        self._node_tpl = next(n for n in m["/nodes"] if n.get("ManagerStatus"))
        self._info_tpl = m["/info"]
        self._ctr_tpl = [c for c in m["/containers/json"]] or rec["worker"]["/containers/json"]

    def docker_host(self, instance_id: str) -> str:
        return f"tcp://127.0.0.1:{self.port}/n/{instance_id}"

    # ------------------------------------------------------------ bodies

    def node_json(self, iid: str) -> dict[str, Any]:
        nid, ip, role = self.nodes[iid]
        n = copy.deepcopy(self._node_tpl)
        n["ID"] = nid
        n["Description"]["Hostname"] = iid
        n["Status"]["Addr"] = ip
        n["Spec"]["Role"] = role
        if role == "manager":
            n["ManagerStatus"] = {"Leader": True, "Reachability": "reachable", "Addr": f"{ip}:2377"}
        else:
            n.pop("ManagerStatus", None)
        return n

    def body(self, iid: str, route: str) -> bytes | None:
        if iid not in self.nodes:
            return None
        if route == "/_ping":
            return b"OK"
        nid, ip, role = self.nodes[iid]
        if route == "/info":
            info = copy.deepcopy(self._info_tpl)
            info["Name"], info["ID"] = iid, _hex(iid, 36)
            sw = info.get("Swarm") or {}
            sw["NodeID"], sw["NodeAddr"], sw["ControlAvailable"] = nid, ip, role == "manager"
            info["Containers"] = info["ContainersRunning"] = self.containers
            return json.dumps(info).encode()
        if route == "/nodes":  # a one-node swarm per cluster here: the manager lists itself
            return json.dumps([self.node_json(iid)]).encode()
        if route in ("/services", "/tasks"):
            return json.dumps(self.rec["manager"][route]).encode()
        if route == "/containers/json":
            out = []
            for k in range(self.containers):
                c = copy.deepcopy(self._ctr_tpl[k % len(self._ctr_tpl)])
                c["Id"] = _hex(f"{iid}/{k}")
                c["Names"] = [f"/rec_idle.{k + 1}.{_hex(iid + str(k), 25)}"]
                out.append(c)
            return json.dumps(out).encode()
        return None

    # ------------------------------------------------------------ serving

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode()
                _, target, _ = line.split(" ", 2)
                length = 0
                for h in head.split(b"\r\n")[1:]:
                    if h.lower().startswith(b"content-length:"):
                        length = int(h.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                path = target.split("?", 1)[0]
                self.requests += 1
                body, status = None, "404 Not Found"
                parts = path.split("/")  # "", "n", iid, ["v1.41"], route...
                if len(parts) >= 4 and parts[1] == "n":
                    rest = "/" + "/".join(parts[3:])
                    if rest.startswith("/v1."):
                        rest = "/" + rest.split("/", 2)[2]
                    body = self.body(parts[2], rest)
                if body is not None:
                    status = "200 OK"
                else:
                    body = b'{"message":"not recorded"}'
                ctype = b"text/plain" if body == b"OK" else b"application/json"
                writer.write(b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + ctype
                             + b"\r\nApi-Version: 1.41\r\nContent-Length: " + str(len(body)).encode()
                             + b"\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def start(self) -> ReplayEngine:
        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024))
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=main, name="replay-engine", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)


def serve(level: int, containers: int) -> None:
    """`serve N CONTAINERS`: the nodes of bench/scale.py's level N until killed; prints the port."""
    from scale import node_map

    eng = ReplayEngine(node_map(level), containers).start()
    print(f"replay engine on port {eng.port}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    if sys.argv[1:] == ["record"]:
        record()
    elif sys.argv[1:2] == ["serve"]:
        serve(int(sys.argv[2]), int(sys.argv[3]))
    else:
        raise SystemExit(__doc__)
