"""What runs on the nodes: Docker Swarm, driven through each engine's API (docker SDK).

Every operation here is idempotent (safe to repeat after a crash): init on a node that already
manages a swarm, or join on a node that already belongs to it, does nothing.
"""

from __future__ import annotations

import logging
import time
from contextlib import closing, suppress
from dataclasses import dataclass
from typing import Any

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


def members(manager_host: str) -> list[Member]:
    with closing(client(manager_host)) as c:
        out = []
        for n in c.api.nodes():
            spec, status = n.get("Spec", {}), n.get("Status", {})
            out.append(
                Member(
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
            )
        return out


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
