"""One real 2-node swarm (local nodes, prefix ``ocg``, subnet 10.226.0.0/24) with the router running,
shared by the routing and blue-green tests; the Application API runs in-process as in
tests/appapi/test_projects.py. Teardown: the runtime stops the router and its HAProxy by PID,
clusterkit destroys the nodes; HAProxy is stopped by PID once more in case the runtime never got
that far."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from opencs.routing.haproxy import HAProxy, find_binary
from opencs.store.models import Cluster
from tests.clusterkit import WithCluster, create_cluster, node_runtime

PREFIX, SUBNET = "ocg", "10.226.0.0/24"


def fetch(port: int, host: str, path: str = "/", timeout: float = 10.0) -> tuple[int, str]:
    """One HTTP/1.1 request on a fresh connection (what curl does): (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body.decode(errors="replace").strip()


class Hammer:
    """Requests in a loop from a few threads; counts bodies and records every failure."""

    def __init__(self, port: int, host: str, threads: int = 3) -> None:
        self.port, self.host = port, host
        self.bodies: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = fetch(self.port, self.host)
                ok = status == 200
            except OSError as e:
                ok, body = False, repr(e)
                status = 0
            with self._lock:
                if ok:
                    self.bodies[body.split("-", 1)[0]] += 1
                else:
                    self.failures.append(f"{status} {body[:80]}")

    @property
    def total(self) -> int:
        return sum(self.bodies.values()) + len(self.failures)

    def __enter__(self) -> Hammer:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


class Env:
    def __init__(self, rt: Any, cid: str, api: TestClient) -> None:
        self.rt, self.cid, self.api = rt, cid, api

    def routing_port(self, timeout: float = 30) -> int:
        end = time.time() + timeout
        while True:
            with self.rt.db.session() as s:
                spec = s.get(Cluster, self.cid).spec or {}
            if spec.get("routing_url"):
                assert spec["routing_url"] == f"http://127.0.0.1:{spec['routing_port']}"
                return int(spec["routing_port"])
            assert time.time() < end, "no routing_url"
            time.sleep(0.2)

    def project(self, name: str) -> dict[str, Any]:
        r = self.api.get(f"/projects/{name}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def wait_task(self, tid: str, timeout: float = 120) -> Any:
        row = self.rt.tasks.wait(tid, timeout)
        assert row.state in ("success", "fail"), f"task {tid} still {row.state}"
        return row

    def wait_running(self, name: str, timeout: float = 90) -> dict[str, Any]:
        end = time.time() + timeout
        while True:
            p = self.project(name)
            done = not p["task_id"] or self.rt.tasks.get(p["task_id"]).state not in ("pending", "running")
            if done and p["current_state"] == "running" and all(s["current_state"] == "running"
                                                                 for s in p["services"]):
                return p
            assert p["current_state"] != "failed", p
            assert time.time() < end, f"{name} not running: {p['current_state']}"
            time.sleep(0.3)


@pytest.fixture(scope="package")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if find_binary() is None:
        pytest.skip("no haproxy (apt-get install haproxy)")
    from opencs.appapi.app import create_appapi_app

    d: Path = tmp_path_factory.mktemp("routing")
    try:
        with node_runtime(d / "d", prefix=PREFIX, subnet=SUBNET, appapi=False) as rt:
            assert rt.router is not None
            cid = create_cluster(rt, 2)
            with TestClient(WithCluster(create_appapi_app(rt.projects), cid)) as api:
                yield Env(rt, cid, api)
    finally:
        HAProxy(d / "d" / "router").stop()  # by the PID it recorded; a no-op when the runtime did it
