"""The swarm driver's health query as the monitor makes it: the member rows it is given (no store
read), the first running manager that answers, one kept connection per engine. No dockerd."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from opencs.engines import swarm
from opencs.engines.swarm.driver import SwarmDriver
from opencs.store.models import InstanceRow


class _NoBook:
    def of_cluster(self, cluster_id: str) -> list[InstanceRow]:
        raise AssertionError("member_health must not read the store")

    def get(self, instance_id: str) -> InstanceRow | None:
        raise AssertionError

    def set_membership(self, instance_id: str, role: str, member_id: str) -> None:
        raise AssertionError


def _row(iid: str, role: str, state: str = "running") -> InstanceRow:
    now = datetime.now(UTC)
    return InstanceRow(instance_id=iid, provider="local", cluster_id="c1", role=role, state=state,
                       docker_host=f"tcp://127.0.0.1:1/n/{iid}", swarm_node_id=f"n-{iid}", created=now, updated=now)


def _member(node_id: str, state: str) -> swarm.Member:
    return swarm.Member(node_id, node_id, "", "worker", state, "active", False, "", {})


def test_member_health_uses_the_rows_given_and_the_first_manager_that_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def members(host: str, clients: Any = None) -> list[swarm.Member]:
        asked.append(host)
        assert isinstance(clients, swarm.EngineConnections)  # the monitor's kept connections
        if host.endswith("m1"):
            raise OSError("engine down")
        return [_member("n-m2", "ready"), _member("n-w1", "down")]

    monkeypatch.setattr(swarm, "members", members)
    d = SwarmDriver(_NoBook())
    rows = [_row("w1", "worker"), _row("m0", "manager", state="stopped"), _row("m1", "manager"), _row("m2", "manager")]
    got = d.member_health("c1", rows)
    assert asked == ["tcp://127.0.0.1:1/n/m1", "tcp://127.0.0.1:1/n/m2"]  # stopped m0 skipped, m1 failed
    assert got is not None and {k: v.state for k, v in got.items()} == {"n-m2": "ready", "n-w1": "down"}
    monkeypatch.setattr(swarm, "members", lambda host, clients=None: (_ for _ in ()).throw(OSError("down")))
    assert d.member_health("c1", rows) is None


class _Engine(BaseHTTPRequestHandler):
    """A dockerd stand-in: GET /v1.41/nodes with keep-alive; counts the connections it accepted."""

    protocol_version = "HTTP/1.1"
    connections = 0
    status = 200

    def setup(self) -> None:
        type(self).connections += 1
        super().setup()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps([{"ID": "n1", "Status": {"State": "ready"}, "Spec": {"Role": "manager"}}]).encode()
        self.send_response(self.status if self.path.endswith("/v1.41/nodes") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def engine() -> Iterator[tuple[str, type[_Engine], ThreadingHTTPServer]]:
    handler = type("Engine", (_Engine,), {"connections": 0, "status": 200})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"tcp://127.0.0.1:{srv.server_address[1]}/pre", handler, srv
    finally:
        srv.shutdown()
        srv.server_close()


def test_engine_connections_keep_one_connection_and_recover(engine: tuple[str, type[_Engine], Any]) -> None:
    host, handler, _ = engine
    conns = swarm.EngineConnections(limit=4)
    for _ in range(5):
        assert [m.state for m in swarm.members(host, conns)] == ["ready"]
    assert handler.connections == 1  # one keep-alive connection for five queries
    conns._idle[host][0].sock.close()  # type: ignore[union-attr]  # the engine dropped it (a restart)
    assert [m.node_id for m in swarm.members(host, conns)] == ["n1"]  # retried once on a new one
    assert handler.connections == 2
    handler.status = 500
    with pytest.raises(swarm.SwarmError, match="500"):
        swarm.members(host, conns)
    assert host not in conns._idle  # a connection that failed is never kept
    conns.close()


def test_engine_connections_keep_at_most_limit(engine: tuple[str, type[_Engine], Any]) -> None:
    host, handler, _ = engine
    conns = swarm.EngineConnections(limit=2)
    for name in ("a", "b", "c", "b"):
        swarm.members(f"{host}/{name}", conns)
    assert list(conns._idle) == [f"{host}/c", f"{host}/b"]  # the oldest (a) was closed
    assert handler.connections == 3
    assert conns._connect("unix:///run/x.sock") is not None and conns._connect("ssh://h") is None
    conns.close()
