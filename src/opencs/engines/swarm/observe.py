"""What a Swarm cluster's applications look like now: services and tasks from a manager, containers
from each node's own engine, and the states the Application API reports for them."""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from docker.errors import DockerException

from opencs.compose.normalize import NAMESPACE_LABEL
from opencs.engines.swarm import client, exits

STOPPED_CONSTRAINT = "node.labels.opencs.stopped==true"  # matches no node: a stopped global service
FAILED_TASK_STATES = ("failed", "rejected", "orphaned")


def stack_services(c: Any, project: str | None) -> list[dict[str, Any]]:
    flt = f"{NAMESPACE_LABEL}={project}" if project else NAMESPACE_LABEL
    return list(c.api.services(filters={"label": flt}))



@dataclass
class NodeInfo:
    node_id: str
    ip: str
    docker_host: str
    hostname: str = ""
    state: str = "unknown"


@dataclass
class Snapshot:
    """One consistent-enough look at a cluster: services and tasks from a manager, containers from
    every node's own engine (only when asked)."""

    services: list[dict[str, Any]]
    tasks: list[dict[str, Any]]
    nodes: dict[str, NodeInfo]
    containers: dict[str, dict[str, dict[str, Any]]] | None  # node id → container id → summary
    unreachable: dict[str, str] = field(default_factory=dict)  # node id → error

    def service(self, full_name: str) -> dict[str, Any] | None:
        for s in self.services:
            if s["Spec"]["Name"] == full_name:
                return s
        return None

    def tasks_of(self, service_id: str) -> list[dict[str, Any]]:
        return [t for t in self.tasks if t.get("ServiceID") == service_id]


def _parallel(fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
        return list(pool.map(fn, items))


def node_containers(docker_host: str, project: str | None) -> dict[str, dict[str, Any]]:
    flt = f"{NAMESPACE_LABEL}={project}" if project else NAMESPACE_LABEL
    with closing(client(docker_host, timeout=10)) as c:
        return {x["Id"]: x for x in c.api.containers(all=True, filters={"label": flt})}


def snapshot(manager_host: str, nodes: list[NodeInfo], project: str | None, *, containers: bool) -> Snapshot:
    with closing(client(manager_host)) as c:
        services = stack_services(c, project)
        ids = [s["ID"] for s in services]
        tasks = list(c.api.tasks(filters={"service": ids})) if ids else []
        swarm_nodes = {n["ID"]: n for n in c.api.nodes()}
    by_id: dict[str, NodeInfo] = {}
    for n in nodes:
        sn = swarm_nodes.get(n.node_id)
        if sn:
            n.hostname = sn.get("Description", {}).get("Hostname", "") or n.hostname
            n.state = sn.get("Status", {}).get("State", "unknown")
            n.ip = n.ip or sn.get("Status", {}).get("Addr", "")
        by_id[n.node_id] = n
    for nid, sn in swarm_nodes.items():  # members the store does not know (joined by hand)
        if nid not in by_id:
            by_id[nid] = NodeInfo(nid, sn.get("Status", {}).get("Addr", ""), "",
                                  sn.get("Description", {}).get("Hostname", ""), sn.get("Status", {}).get("State", ""))
    snap = Snapshot(services, tasks, by_id, None)
    if containers:
        wanted = sorted({t.get("NodeID") for t in tasks if t.get("NodeID")})

        def look(nid: str) -> tuple[str, dict[str, dict[str, Any]] | None, str]:
            n = by_id.get(nid)
            if n is None or not n.docker_host:
                return nid, None, "no engine address known for this node"
            try:
                return nid, node_containers(n.docker_host, project), ""
            except (DockerException, OSError) as e:
                return nid, None, str(e)

        snap.containers = {}
        for nid, found, err in _parallel(look, wanted):
            if found is None:
                snap.unreachable[nid] = err
            else:
                snap.containers[nid] = found
    return snap


def task_ip(task: dict[str, Any], prefer_network: str | None = None) -> str:
    atts = task.get("NetworksAttachments") or []
    chosen = None
    for a in atts:
        name = a.get("Network", {}).get("Spec", {}).get("Name", "")
        if name == "ingress":
            continue
        if prefer_network and name == prefer_network:
            chosen = a
            break
        chosen = chosen or a
    if not chosen or not chosen.get("Addresses"):
        return ""
    return str(chosen["Addresses"][0]).split("/")[0]


_HEALTH_RE = re.compile(r"\((healthy|unhealthy|health: starting)\)")


def container_health(summary: dict[str, Any]) -> str:
    """'success' | 'failure' | 'starting' (Container Service's words), from `docker ps` status."""
    m = _HEALTH_RE.search(summary.get("Status", ""))
    if m:
        return {"healthy": "success", "unhealthy": "failure", "health: starting": "starting"}[m.group(1)]
    return "success" if summary.get("State") == "running" else "failure"


def current_tasks(snap: Snapshot, service_id: str) -> list[dict[str, Any]]:
    """Tasks the swarm wants running (the service's containers now)."""
    return [t for t in snap.tasks_of(service_id) if t.get("DesiredState") in ("running", "ready")]


def desired_count(svc: dict[str, Any], snap: Snapshot) -> int:
    mode = svc["Spec"].get("Mode", {})
    if "Replicated" in mode:
        return int(mode["Replicated"].get("Replicas", 0))
    constraints = svc["Spec"]["TaskTemplate"].get("Placement", {}).get("Constraints", []) or []
    if STOPPED_CONSTRAINT in constraints:
        return 0
    return len({t.get("NodeID") for t in current_tasks(snap, svc["ID"])}) or 1


def is_global(svc: dict[str, Any]) -> bool:
    return "Global" in svc["Spec"].get("Mode", {})


def service_outcome(svc: dict[str, Any], snap: Snapshot) -> exits.Outcome:
    """Whether the service's containers run, completed or failed for good (exits.outcome)."""
    return exits.outcome(snap.tasks_of(svc["ID"]), desired_count(svc, snap), by_node=is_global(svc),
                         template=svc["Spec"].get("TaskTemplate"))


def service_state(svc: dict[str, Any] | None, snap: Snapshot) -> str:
    """running | completed | failed | stopped | stopping | updating | starting | degraded | missing."""
    if svc is None:
        return "missing"
    want = desired_count(svc, snap)
    cur = current_tasks(snap, svc["ID"])
    running = sum(1 for t in cur if t.get("Status", {}).get("State") == "running")
    all_running = sum(1 for t in snap.tasks_of(svc["ID"]) if t.get("Status", {}).get("State") == "running")
    us = (svc.get("UpdateStatus") or {}).get("State", "")
    if us in ("updating", "rollback_started"):
        return "updating"
    if want == 0:
        return "stopping" if all_running else "stopped"
    settled = service_outcome(svc, snap).state
    if settled:
        return settled
    if running >= want:
        return "running"
    recent_fail = [t for t in snap.tasks_of(svc["ID"]) if t.get("Status", {}).get("State") in FAILED_TASK_STATES
                   and not exits.scaled_away(t) and _age(t.get("Status", {}).get("Timestamp", "")) < 30]
    return "degraded" if recent_fail else "starting"


def _age(ts: str) -> float:
    from datetime import UTC, datetime

    if not ts:
        return 1e9
    try:
        t = datetime.strptime(ts[:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC)
    except ValueError:
        try:
            t = datetime.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            return 1e9
    return (datetime.now(UTC) - t).total_seconds()


def task_problem(task: dict[str, Any]) -> str:
    st = task.get("Status", {})
    return str(st.get("Err") or st.get("Message") or st.get("State", ""))
