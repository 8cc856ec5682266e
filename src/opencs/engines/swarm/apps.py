"""SwarmAppEngine: the application engine of a Swarm cluster (opencs.engines.apps) over the stack
functions of ``stack.py`` and the Engine API (docker SDK).

It is handed the cluster's members (a callable, read afresh by each engine object) and picks the
manager itself: the first manager whose engine says it is one (one ``docker info`` per engine
object; the project rules make one per operation or task stage). Docker exceptions and StackError
never leave this module: they become AppEngineError / EngineUnavailable / EngineUnreachable.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from docker.errors import APIError, DockerException, NotFound

from opencs.compose import StackModel
from opencs.compose.normalize import NAMESPACE_LABEL, ROUTING_LABEL_PREFIX, SERVICE_LABEL
from opencs.engines import swarm
from opencs.engines.apps import (
    RELEASE_LABEL,
    AppEngine,
    AppEngineError,
    AppNode,
    AppService,
    AppSnapshot,
    ContainerRef,
    ContainerView,
    DeployInput,
    EngineUnavailable,
    EngineUnreachable,
    NodeVolumes,
    Progress,
    PublishedPort,
    RoutedPort,
    TaskAddress,
    VolumeDriverMissing,
    VolumeInfo,
    VolumeRef,
)
from opencs.engines.swarm import client, exits, node_ops, observe, stack

log = logging.getLogger("opencs.stack")

ROUTER_TIMEOUT = 5  # the router reads every cluster once a second: a dead manager must not hold it up

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class SwarmMember:
    """A cluster member as the store knows it."""

    node_id: str  # the swarm's node id ("" before it joined)
    ip: str
    endpoint: str  # its engine (docker host URL)
    role: str  # manager | worker
    state: str = "running"
    details: Mapping[str, Any] = field(default_factory=dict)  # provider details (dockerd log dir...)


@contextmanager
def _translated_errors() -> Iterator[None]:
    try:
        yield
    except stack.StackError as e:
        raise AppEngineError(e.message, e.code) from None
    except APIError as e:
        raise AppEngineError(stack._explain(e), "EngineError") from None
    except (DockerException, OSError) as e:
        raise EngineUnreachable(str(e)) from None


def _translated(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _translated_errors():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _node(n: observe.NodeInfo) -> AppNode:
    return AppNode(n.node_id, n.ip, n.docker_host.startswith("unix://"))


class SwarmAppEngine(AppEngine):
    def __init__(self, cluster_id: str, members: Callable[[], list[SwarmMember]],
                 ipvs_cache: dict[str, bool] | None = None,
                 login: Callable[[str], stack.RegistryLogin | None] | None = None) -> None:
        self.cluster_id = cluster_id
        self._login = login
        self._members_of = members
        self._members: list[SwarmMember] | None = None
        self._manager: str | None = None
        self._ipvs_cache = ipvs_cache if ipvs_cache is not None else {}

    # ------------------------------------------------------------ members

    def members(self) -> list[SwarmMember]:
        if self._members is None:
            self._members = list(self._members_of())
        return self._members

    def _infos(self) -> list[observe.NodeInfo]:
        return [observe.NodeInfo(m.node_id, m.ip, m.endpoint) for m in self.members() if m.node_id and m.endpoint]

    def _endpoint(self, node: AppNode) -> str:
        for m in self.members():
            if m.node_id == node.node_id and m.endpoint:
                return m.endpoint
        raise AppEngineError(f"node {node.ip} has no engine address", "NodeUnreachable")

    def _managers(self) -> list[SwarmMember]:
        return [m for m in self.members() if m.role == "manager" and m.node_id and m.endpoint]

    def manager(self) -> str:
        """The engine of the first manager that answers as one (kept for this object's life)."""
        if self._manager is None:
            for m in self._managers():
                try:
                    if swarm.local_state(m.endpoint)["is_manager"]:
                        self._manager = m.endpoint
                        break
                except Exception as e:
                    log.info("manager %s not reachable: %s", m.ip, e)
            else:
                raise EngineUnavailable(f"no reachable swarm manager in cluster {self.cluster_id}")
        return self._manager

    # ------------------------------------------------------------ facts

    def nodes(self) -> list[AppNode]:
        return [_node(n) for n in self._infos()]

    def ipvs(self) -> bool:
        forced = os.environ.get("OPENCS_SWARM_IPVS", "auto").lower()
        if forced in ("on", "true", "1"):
            return True
        if forced in ("off", "false", "0"):
            return False
        if self.cluster_id not in self._ipvs_cache:
            found = stack.detect_ipvs([(m.endpoint, dict(m.details)) for m in self.members()])
            self._ipvs_cache[self.cluster_id] = found
            log.info("cluster %s: IPVS %s", self.cluster_id, "available" if found else
                     "missing (dnsrr endpoints and host-mode ports)")
        return self._ipvs_cache[self.cluster_id]

    def lacks_filesystem(self, fstype: str) -> bool:
        return any(n.local for n in self.nodes()) and node_ops.kernel_has_filesystem(fstype) is False

    @_translated
    def network_problems(self, names: Collection[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        with closing(client(self.manager())) as c:
            for name in names:
                found = [n for n in c.api.networks(names=[name]) if n.get("Name") == name]
                if not found:
                    out[name] = "it does not exist in the cluster"
                elif found[0].get("Driver") != "overlay" or found[0].get("Scope") != "swarm":
                    out[name] = f"it is a {found[0].get('Scope', '')} {found[0].get('Driver', '')} network, " \
                                "not a swarm overlay network"
        return out

    # ------------------------------------------------------------ images and ports

    @_translated
    def resolve_image(self, image: str) -> str:
        return stack.resolve_image(self.manager(), image, self._registry_login())

    def image_on_every_node(self, image: str) -> bool:
        nodes = self._infos()
        try:
            return bool(nodes) and all(stack.image_present(n.docker_host, image) for n in nodes)
        except (DockerException, OSError):
            return False

    def published_ports(self) -> list[PublishedPort]:
        try:
            with closing(client(self.manager())) as c:
                live = c.api.services()
        except (DockerException, OSError) as e:
            raise EngineUnavailable(f"the swarm manager did not answer: {e}") from None
        out = []
        for s in live:
            labels = s["Spec"].get("Labels") or {}
            for p in (s.get("Spec", {}).get("EndpointSpec") or {}).get("Ports") or []:
                if p.get("PublishedPort"):
                    out.append(PublishedPort(int(p["PublishedPort"]), p.get("Protocol", "tcp"), s["Spec"]["Name"],
                                             labels.get(NAMESPACE_LABEL)))
        return out

    # ------------------------------------------------------------ stacks

    @_translated
    def deploy(self, model: StackModel, state: DeployInput, *, only: Iterable[str] | None = None,
               prune: bool = True) -> dict[str, str]:
        return stack.deploy(self.manager(), model, replicas=state.replicas, stopped=state.stopped,
                            images=state.images, force=state.force, only=only, prune=prune,
                            login=self._registry_login()).actions

    def _registry_login(self) -> stack.RegistryLogin | None:
        return self._login(self.cluster_id) if self._login is not None else None

    def scale_service(self, project: str, full_name: str, replicas: int) -> bool:
        # no `docker info` probe first: the call itself tells whether this manager answers
        problems = []
        for m in self._managers():
            try:
                return stack.scale_service(m.endpoint, project, full_name, replicas)
            except (DockerException, OSError) as e:  # this manager is down: the next one
                problems.append(f"{m.ip}: {e}")
            except stack.StackError as e:
                if "not a swarm manager" not in e.message:
                    raise AppEngineError(e.message, e.code) from None
                problems.append(f"{m.ip}: {e.message}")
        raise EngineUnavailable(f"no swarm manager of cluster {self.cluster_id} answered: {'; '.join(problems)}")

    @_translated
    def wait_converged(self, model: StackModel, services: Iterable[str], *, timeout: float,
                       since: float | None = None, progress: Progress | None = None,
                       unchanged: Collection[str] = ()) -> None:
        stack.wait_converged(self.manager(), model, services, timeout=timeout, since=since, progress=progress,
                             exit_logs=self._exit_logs, unchanged=unchanged)

    def _exit_logs(self, task: dict[str, Any]) -> list[str]:
        """The last lines of a task's container, from the engine of the node it ran on."""
        host = next((n.docker_host for n in self._infos() if n.node_id == task.get("NodeID")), "")
        return exits.last_log_lines(host, exits.container_id(task))

    @_translated
    def remove_services(self, project: str, *, release: str | None = None, keep: Collection[str] = ()) -> None:
        with closing(client(self.manager())) as c:
            for s in observe.stack_services(c, project):
                rel = (s["Spec"].get("Labels") or {}).get(RELEASE_LABEL, "blue")
                if release is not None and rel != release or s["Spec"]["Name"] in keep:
                    continue
                with suppress(NotFound):
                    c.api.remove_service(s["ID"])

    @_translated
    def wait_gone(self, project: str, *, release: str | None = None, timeout: float = 60.0) -> None:
        flt = [f"{NAMESPACE_LABEL}={project}"] + ([f"{RELEASE_LABEL}={release}"] if release else [])
        end = time.time() + timeout
        while True:
            def look(n: observe.NodeInfo) -> list[str]:
                try:
                    with closing(client(n.docker_host, timeout=10)) as c:
                        return [f"{n.ip}:{x['Id'][:12]}" for x in c.api.containers(all=True, filters={"label": flt})]
                except (DockerException, OSError):
                    return []  # an unreachable node cannot be waited for

            left = [x for found in observe._parallel(look, self._infos()) for x in found]
            if not left:
                return
            if time.time() > end:
                raise AppEngineError(f"containers still present after {timeout:.0f}s: {', '.join(left[:5])}",
                                     "Timeout")
            time.sleep(0.3)

    @_translated
    def remove_networks(self, project: str, *, release: str | None = None, timeout: float = 30.0) -> None:
        stack.remove_networks(self.manager(), project, timeout, [f"{RELEASE_LABEL}={release}"] if release else [])

    def remove_project_volumes(self, project: str) -> list[str]:
        return node_ops.remove_project_volumes(self._infos(), project)

    # ------------------------------------------------------------ observing

    def snapshot(self, project: str | None, *, containers: bool) -> AppSnapshot:
        try:
            snap = observe.snapshot(self.manager(), self._infos(), project, containers=containers)
        except (DockerException, OSError) as e:
            raise EngineUnavailable(f"the swarm manager did not answer: {e}") from None
        out = AppSnapshot()
        for svc in snap.services:
            spec = svc["Spec"]
            ns = (spec.get("Labels") or {}).get(NAMESPACE_LABEL, project or "")
            out.services[spec["Name"]] = AppService(
                service_id=svc["ID"], full_name=spec["Name"], state=observe.service_state(svc, snap),
                created=svc.get("CreatedAt", "") or "", updated=svc.get("UpdatedAt", "") or "",
                force_update=int(spec["TaskTemplate"].get("ForceUpdate", 0)),
                containers=_containers(snap, svc, ns), refs=_refs(snap, svc))
            out.services[spec["Name"]].problem = self._problem(snap, svc, out.services[spec["Name"]].state)
        return out

    def _problem(self, snap: observe.Snapshot, svc: dict[str, Any], state: str) -> str:
        """What went wrong with a failed or restarting service (its last log lines: failed only,
        one call to that node's engine)."""
        name = (svc["Spec"].get("Labels") or {}).get(SERVICE_LABEL, svc["Spec"]["Name"])
        if state == "failed":
            o = observe.service_outcome(svc, snap)
            return exits.failure_text(name, o, self._exit_logs(o.task or {}))
        if state == "degraded":
            bad = [t for t in snap.tasks_of(svc["ID"]) if t.get("Status", {}).get("State") in exits.EXITED_BAD]
            if bad:
                t = max(bad, key=lambda x: exits.timestamp(x.get("CreatedAt", "")))
                code = exits.exit_code(t)
                return f"service {name}: restarting after " + (f"exit code {code}" if code is not None
                                                                else observe.task_problem(t))
        return ""

    def signal(self, targets: list[ContainerRef], signal: str) -> list[str]:
        return node_ops.signal_containers(self._targets(targets), signal)

    def stop_containers(self, targets: list[ContainerRef], timeout: int) -> list[str]:
        return node_ops.stop_containers(self._targets(targets), timeout)

    def container_logs(self, target: ContainerRef, tail: int) -> str:
        found = self._targets([target])
        if not found:
            raise AppEngineError(f"node {target.node.ip} has no engine address", "NodeUnreachable")
        return node_ops.container_logs(*found[0], tail)

    def open_logs(self, target: ContainerRef, *, follow: bool, tail: int | None,
                  since: float | None) -> node_ops.NodeLogStream:
        found = self._targets([target])
        if not found:
            raise AppEngineError(f"node {target.node.ip} has no engine address", "NodeUnreachable")
        return node_ops.NodeLogStream(*found[0], follow, tail, since)

    def _targets(self, refs: list[ContainerRef]) -> list[tuple[observe.NodeInfo, str]]:
        by_id = {n.node_id: n for n in self._infos()}
        return [(by_id[r.node.node_id], r.container_id) for r in refs if r.node.node_id in by_id]

    # ------------------------------------------------------------ routing

    def routed_ports(self) -> list[RoutedPort]:
        """Tries every running manager in turn (short timeouts, no probe)."""
        addrs = {m.node_id: m.ip for m in self.members() if m.node_id and m.ip}
        last_err = "no running manager"
        for m in self.members():
            if m.role != "manager" or not m.endpoint or m.state != "running":
                continue
            try:
                with closing(client(m.endpoint, timeout=ROUTER_TIMEOUT)) as c:
                    services = [x for x in c.api.services(filters={"label": NAMESPACE_LABEL})
                                if any(k.startswith(ROUTING_LABEL_PREFIX) for k in (x["Spec"].get("Labels") or {}))]
                    tasks = list(c.api.tasks(filters={"desired-state": "running"})) if services else []
                    nodes = c.api.nodes() if services else []
            except (DockerException, OSError) as e:
                last_err = str(e)
                continue
            for n in nodes:  # members the store does not know (joined by hand): the swarm's address
                addr = (n.get("Status") or {}).get("Addr", "")
                if n["ID"] not in addrs and addr and addr != "0.0.0.0":
                    addrs[n["ID"]] = addr
            return routed_ports(services, tasks, addrs)
        raise EngineUnavailable(last_err)

    # ------------------------------------------------------------ volumes

    def node_volumes(self, node: AppNode) -> NodeVolumes:
        try:
            hostname, vols, refs = node_ops.volume_summaries(self._endpoint(node))
        except (DockerException, OSError) as e:
            raise EngineUnreachable(str(e)) from None
        return NodeVolumes(hostname, tuple(
            VolumeInfo(v["Name"], v.get("Driver", ""), v.get("Mountpoint", ""), v.get("Scope", ""),
                       dict(v.get("Labels") or {}),
                       tuple(VolumeRef(r["Name"], r["ID"]) for r in refs.get(v["Name"], [])))
            for v in vols))

    def create_volume(self, node: AppNode, name: str, driver: str, options: dict[str, str],
                      labels: dict[str, str]) -> VolumeInfo:
        try:
            r = node_ops.create_volume(self._endpoint(node), name, driver, options, labels)
        except NotFound as e:
            raise VolumeDriverMissing(stack._explain(e)) from None
        except APIError as e:
            raise AppEngineError(stack._explain(e), "VolumeCreateFailed") from None
        except (DockerException, OSError) as e:
            raise EngineUnreachable(str(e)) from None
        return VolumeInfo(name, driver, r.get("Mountpoint", ""), r.get("Scope", ""), dict(labels))

    def remove_volume(self, node: AppNode, name: str) -> None:
        with _translated_errors():
            node_ops.remove_volume(self._endpoint(node), name)

    def probe_mount(self, node: AppNode, name: str) -> None:
        with _translated_errors():
            node_ops.probe_mount(self._endpoint(node), name)


# ---------------------------------------------------------------- raw shapes -> typed values


def _refs(snap: observe.Snapshot, svc: dict[str, Any]) -> list[ContainerRef]:
    out = []
    for t in observe.current_tasks(snap, svc["ID"]):
        cid = (t.get("Status", {}).get("ContainerStatus") or {}).get("ContainerID")
        node = snap.nodes.get(t.get("NodeID", ""))
        if cid and node and node.docker_host:
            out.append(ContainerRef(_node(node), cid))
    return out


def _shown_tasks(snap: observe.Snapshot, svc: dict[str, Any]) -> list[dict[str, Any]]:
    """The tasks whose containers a service shows: those the swarm wants running, and of a slot that
    exited for good (completed or failed) its last one, whose container the swarm keeps."""
    cur = observe.current_tasks(snap, svc["ID"])
    by_node = observe.is_global(svc)
    busy = {t.get("NodeID") if by_node else t.get("Slot") for t in cur}
    done = [t for key, t in exits.newest_by_slot(snap.tasks_of(svc["ID"]), by_node=by_node,
                                                  template=svc["Spec"].get("TaskTemplate")).items()
            if key not in busy]
    return cur + done


def _containers(snap: observe.Snapshot, svc: dict[str, Any], project: str) -> list[ContainerView]:
    out: list[ContainerView] = []
    for t in sorted(_shown_tasks(snap, svc), key=lambda t: (t.get("Slot") or 0, t["ID"])):
        st = t.get("Status", {})
        cid = (st.get("ContainerStatus") or {}).get("ContainerID")
        if not cid:
            continue  # not created yet: there is no container to show
        nid = t.get("NodeID", "")
        node = snap.nodes.get(nid)
        node_ip = node.ip if node else ""
        ip = observe.task_ip(t, f"{project}_default")
        if snap.containers is not None and nid in snap.containers:
            c = snap.containers[nid].get(cid)
            if c is None:
                continue  # removed meanwhile: only list containers that exist
            out.append(ContainerView(cid, (c.get("Names") or [""])[0], node_ip, ip, c.get("State") == "running",
                                     c.get("State", ""), observe.container_health(c)))
        else:  # the node's engine did not answer: say what the swarm knows
            out.append(ContainerView(cid, f"/{svc['Spec']['Name']}.{t.get('Slot') or nid}.{t['ID']}", node_ip, ip,
                                     st.get("State") == "running", st.get("State", "unknown"), "unknown"))
    return out


def routed_ports(services: list[dict[str, Any]], tasks: list[dict[str, Any]],
                 node_addrs: dict[str, str]) -> list[RoutedPort]:
    """Routing-labelled container ports with the running tasks that publish them."""
    by_service: dict[str, list[dict[str, Any]]] = {}
    for t in tasks:
        if t.get("DesiredState") == "running" and (t.get("Status") or {}).get("State") == "running":
            by_service.setdefault(t.get("ServiceID", ""), []).append(t)
    out: list[RoutedPort] = []
    for s in services:
        labels = s.get("Spec", {}).get("Labels") or {}
        for key, value in labels.items():
            if not key.startswith(ROUTING_LABEL_PREFIX) or not key[len(ROUTING_LABEL_PREFIX):].isdigit():
                continue
            target = int(key[len(ROUTING_LABEL_PREFIX):])
            ingress = [p.get("PublishedPort") for p in (s.get("Endpoint") or {}).get("Ports") or []
                       if p.get("TargetPort") == target and p.get("PublishMode") == "ingress"
                       and p.get("Protocol", "tcp") == "tcp" and p.get("PublishedPort")]
            addrs: list[TaskAddress] = []
            for t in by_service.get(s["ID"], []):
                addr = node_addrs.get(t.get("NodeID", ""), "")
                if not addr:
                    continue
                ports = [p.get("PublishedPort") for p in (t.get("Status", {}).get("PortStatus") or {}).get("Ports")
                         or [] if p.get("TargetPort") == target and p.get("Protocol", "tcp") == "tcp"]
                port = next((p for p in ports if p), None) or (ingress[0] if ingress else None)
                if port:
                    addrs.append(TaskAddress(t["ID"], addr, int(port)))
            out.append(RoutedPort(labels.get(NAMESPACE_LABEL, ""), s["Spec"]["Name"], labels.get(RELEASE_LABEL, "blue"),
                                  target, str(value), tuple(addrs)))
    return out


class SwarmAppEngines:
    """AppEngines for Swarm clusters: `members(cluster_id)` reads the cluster's members from the
    store. The IPVS finding of a cluster is kept for the life of this object (the kernel does not
    change under a running control plane)."""

    def __init__(self, members: Callable[[str], list[SwarmMember]],
                 login: Callable[[str], stack.RegistryLogin | None] | None = None) -> None:
        self._members = members
        self._ipvs: dict[str, bool] = {}
        self._login = login  # the bundled registry's node credential of a cluster

    def for_cluster(self, cluster_id: str) -> SwarmAppEngine:
        return SwarmAppEngine(cluster_id, lambda: self._members(cluster_id), self._ipvs, self._login)
