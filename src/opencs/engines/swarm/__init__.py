"""What runs on the nodes: Docker Swarm, driven through each engine's API (docker SDK).

Every operation here is idempotent (safe to repeat after a crash): init on a node that already
manages a swarm, or join on a node that already belongs to it, does nothing.
"""

from __future__ import annotations

import http.client
import json
import logging
import resource
import socket
import threading
import time
from collections import OrderedDict
from contextlib import closing, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import docker
from docker.errors import APIError, DockerException

log = logging.getLogger("opencs.swarm")

API_VERSION = "1.41"  # Debian's engine 20.10
# overlays stay off the node network (spec: "subnet_cidr" is the containers' address block)
DEFAULT_ADDR_POOL = "10.200.0.0/16"


class SwarmError(Exception):
    pass


@dataclass(frozen=True)
class Member:
    node_id: str
    hostname: str
    addr: str
    role: str  # manager | worker
    state: str  # ready | down | unknown | disconnected
    availability: str  # active | pause | drain
    leader: bool
    reachability: str  # managers: reachable | unreachable | unknown; "" for workers
    engine_labels: dict[str, str]


def client(docker_host: str, timeout: int = 30) -> docker.DockerClient:
    c = docker.DockerClient(base_url=docker_host, version=API_VERSION, timeout=timeout)
    c.api.trust_env = False  # REQUESTS_CA_BUNDLE in this environment would override our CA
    return c


def _swarm_info(c: docker.DockerClient) -> dict[str, Any]:
    return dict(c.info().get("Swarm") or {})


def local_state(docker_host: str) -> dict[str, Any]:
    """The node's own view: LocalNodeState (inactive|pending|active|error|locked), NodeID, cluster id."""
    with closing(client(docker_host)) as c:
        s = _swarm_info(c)
        return {
            "state": s.get("LocalNodeState", "inactive"),
            "node_id": s.get("NodeID", ""),
            "swarm_id": (s.get("Cluster") or {}).get("ID", ""),
            "is_manager": bool(s.get("ControlAvailable")),
        }


def init(docker_host: str, advertise_ip: str, heartbeat_s: int = 2) -> str:
    """Create the swarm on its first manager; returns the swarm id."""
    with closing(client(docker_host)) as c:
        s = _swarm_info(c)
        if s.get("LocalNodeState") == "active":
            return str((s.get("Cluster") or {}).get("ID", ""))
        spec = c.api.create_swarm_spec(
            dispatcher_heartbeat_period=heartbeat_s * 10**9,  # notice a dead node in seconds
            task_history_retention_limit=2,
        )
        c.api.init_swarm(
            advertise_addr=advertise_ip,
            listen_addr=f"{advertise_ip}:2377",
            default_addr_pool=[DEFAULT_ADDR_POOL],
            subnet_size=24,
            swarm_spec=spec,
        )
        return str((_swarm_info(c).get("Cluster") or {}).get("ID", ""))


def join_tokens(manager_host: str) -> dict[str, str]:
    with closing(client(manager_host)) as c:
        t = c.api.inspect_swarm()["JoinTokens"]
        return {"worker": t["Worker"], "manager": t["Manager"]}


def join(docker_host: str, advertise_ip: str, manager_addrs: list[str], token: str, swarm_id: str) -> str:
    """Join a node (idempotent); returns its node id."""
    with closing(client(docker_host)) as c:
        s = _swarm_info(c)
        if s.get("LocalNodeState") == "active":
            if (s.get("Cluster") or {}).get("ID", swarm_id) == swarm_id or not s.get("ControlAvailable"):
                return str(s.get("NodeID", ""))
            raise SwarmError(f"node {advertise_ip} already belongs to another swarm")
        if s.get("LocalNodeState") in ("pending", "error"):
            c.api.leave_swarm(force=True)
        c.api.join_swarm(
            remote_addrs=[f"{a}:2377" for a in manager_addrs],
            join_token=token,
            listen_addr=f"{advertise_ip}:2377",
            advertise_addr=advertise_ip,
        )
        return str(_swarm_info(c).get("NodeID", ""))


def leave(docker_host: str) -> None:
    try:
        with closing(client(docker_host, timeout=10)) as c:
            if _swarm_info(c).get("LocalNodeState", "inactive") != "inactive":
                c.api.leave_swarm(force=True)
    except (DockerException, OSError) as e:
        log.info("leave on %s: %s (engine gone?)", docker_host, e)


class EngineConnections:
    """One kept HTTP/1.1 connection per engine address (unix:// or tcp://) for a loop that asks the
    same engines every few seconds: a health query costs a tenth of the CPU of a Docker SDK call
    (client, session and connection made per call), which at 1,000 clusters per monitor pass is
    the difference between 0.2 and 2 CPU seconds. A connection serves one thread at a time; one that
    failed is closed, never kept. At most `limit` are kept (default: an eighth of the open-files
    limit); other addresses (ssh://, https) go through the Docker SDK."""

    def __init__(self, limit: int | None = None, timeout: float = 10.0) -> None:
        if limit is None:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            limit = max(64, (soft if soft > 0 else 1024) // 8)
        self.limit, self.timeout = limit, timeout
        self._idle: OrderedDict[str, tuple[http.client.HTTPConnection, str]] = OrderedDict()
        self._lock = threading.Lock()

    def _connect(self, docker_host: str) -> tuple[http.client.HTTPConnection, str] | None:
        """A new connection and the path prefix, or None for an address this class does not speak."""
        if docker_host.startswith("unix://"):
            return _UnixConnection(docker_host.removeprefix("unix://"), self.timeout), ""
        if docker_host.startswith("tcp://"):
            u = urlsplit("http://" + docker_host.removeprefix("tcp://"))
            return http.client.HTTPConnection(u.hostname or "", u.port or 2375, timeout=self.timeout), u.path
        return None

    def get_json(self, docker_host: str, path: str) -> Any:
        """GET /v<API_VERSION><path> of the engine at `docker_host`, decoded; SwarmError unless 200."""
        with self._lock:
            kept = self._idle.pop(docker_host, None)
        if kept is not None:
            try:
                return self._get(docker_host, kept, path)
            except (http.client.HTTPException, OSError):
                pass  # the engine closed the kept connection meanwhile (a restart): once more on a new one
        fresh = self._connect(docker_host)
        if fresh is None:
            with closing(client(docker_host)) as c:
                resp = c.api.get(c.api._url(path))
                resp.raise_for_status()
                return resp.json()
        return self._get(docker_host, fresh, path)

    def _get(self, docker_host: str, kept: tuple[http.client.HTTPConnection, str], path: str) -> Any:
        conn, prefix = kept
        try:
            conn.request("GET", f"{prefix}/v{API_VERSION}{path}", headers={"Host": "docker"})
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise SwarmError(f"GET {path} on {docker_host}: {resp.status} {body[:200]!r}")
            out = json.loads(body)
        except BaseException:
            conn.close()
            raise
        with self._lock:
            if docker_host in self._idle or resp.will_close:  # another thread put one back, or no keep-alive
                conn.close()
            else:
                self._idle[docker_host] = kept
                while len(self._idle) > self.limit:
                    self._idle.popitem(last=False)[1][0].close()
        return out

    def close(self) -> None:
        with self._lock:
            while self._idle:
                self._idle.popitem()[1][0].close()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except BaseException:
            s.close()
            raise
        self.sock = s


def _member(n: dict[str, Any]) -> Member:
    spec, status = n.get("Spec", {}), n.get("Status", {})
    return Member(
        node_id=n["ID"],
        hostname=n.get("Description", {}).get("Hostname", ""),
        addr=status.get("Addr", ""),
        role=spec.get("Role", ""),
        state=status.get("State", "unknown"),
        availability=spec.get("Availability", ""),
        leader=bool(n.get("ManagerStatus", {}).get("Leader")),
        reachability=n.get("ManagerStatus", {}).get("Reachability", ""),
        engine_labels=n.get("Description", {}).get("Engine", {}).get("Labels", {}) or {},
    )


def members(manager_host: str, connections: EngineConnections | None = None) -> list[Member]:
    """The swarm's nodes as `manager_host` sees them (through `connections`' kept one if given)."""
    if connections is not None:
        return [_member(n) for n in connections.get_json(manager_host, "/nodes")]
    with closing(client(manager_host)) as c:
        return [_member(n) for n in c.api.nodes()]


def _update_node(c: docker.DockerClient, node_id: str, **changes: str) -> None:
    for _ in range(5):  # the version check races with the dispatcher's own updates
        n = c.api.inspect_node(node_id)
        spec = dict(n["Spec"])
        spec.update({k.capitalize(): v for k, v in changes.items()})
        try:
            c.api.update_node(node_id, n["Version"]["Index"], spec)
            return
        except APIError as e:
            if "update out of sequence" not in str(e):
                raise
            time.sleep(0.2)
    raise SwarmError(f"could not update node {node_id}")


def set_role(manager_host: str, node_id: str, role: str) -> None:
    with closing(client(manager_host)) as c:
        _update_node(c, node_id, role=role)


def drain(manager_host: str, node_id: str) -> None:
    with closing(client(manager_host)) as c:
        _update_node(c, node_id, availability="drain")


def remove(manager_host: str, node_id: str) -> None:
    """`docker node rm --force` (idempotent)."""
    with closing(client(manager_host)) as c, suppress(docker.errors.NotFound):
        c.api.remove_node(node_id, force=True)


def wait_ready(manager_host: str, node_ids: list[str], timeout: float = 30.0) -> None:
    end = time.time() + timeout
    pending: set[str] = set(node_ids)
    while pending:
        ready = {m.node_id for m in members(manager_host) if m.state == "ready"}
        pending -= ready
        if not pending:
            return
        if time.time() > end:
            raise SwarmError(f"nodes not ready after {timeout:.0f}s: {sorted(pending)}")
        time.sleep(0.1)


def wait_managers(manager_host: str, node_ids: list[str], timeout: float = 30.0) -> None:
    """A promotion is done when the node takes part in raft (reachable), not when the API accepts it."""
    end = time.time() + timeout
    while True:
        ok = {m.node_id for m in members(manager_host) if m.role == "manager" and m.reachability == "reachable"}
        missing = set(node_ids) - ok
        if not missing:
            return
        if time.time() > end:
            raise SwarmError(f"managers not reachable after {timeout:.0f}s: {sorted(missing)}")
        time.sleep(0.1)
