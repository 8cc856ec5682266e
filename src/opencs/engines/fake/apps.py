"""FakeAppEngine: an in-memory application engine (opencs.engines.apps) for unit tests of the rules.

It keeps real state — services with their replica counts, images, force counters and containers,
networks, per-node volumes — and converges at once: a deploy creates, updates, scales or prunes
services the way the Swarm engine reports it, and a snapshot shows what was deployed. Faults are
state too: `registry` (images a registry knows), `crashing` (images whose containers keep
failing), `exits` (images whose command ends: exit code, 0 = a one-shot that completed; non-zero =
failed, not restarted again, with `logs`), `networks` (external ones the cluster has), `down` (no
manager answers), `plugins`/`filesystems` (what volumes can mount).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from opencs.compose import StackModel
from opencs.compose.normalize import NAMESPACE_LABEL, ROUTING_LABEL_PREFIX
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
    NodeVolumes,
    Progress,
    PublishedPort,
    RoutedPort,
    TaskAddress,
    VolumeDriverMissing,
    VolumeInfo,
)

_ids = itertools.count(1)


@dataclass
class FakeService:
    project: str
    full_name: str
    release: str
    labels: dict[str, str]
    mode: str
    replicas: int
    image: str
    config: str  # hash of what makes its tasks (not the replica count)
    force: int
    published: list[tuple[int, str]]
    service_id: str = field(default_factory=lambda: f"svc{next(_ids):06d}")
    containers: list[ContainerRef] = field(default_factory=list)


class FakeAppEngine(AppEngine):
    def __init__(self, cluster_id: str, nodes: int = 3) -> None:
        self.cluster_id = cluster_id
        self._nodes = [AppNode(f"node{i}", f"10.0.0.{i + 1}") for i in range(nodes)]
        self.services: dict[str, FakeService] = {}
        self.networks: dict[str, tuple[str, str]] = {}  # name -> (project, release)
        self.volumes: dict[str, dict[str, VolumeInfo]] = {n.node_id: {} for n in self._nodes}
        self.registry: dict[str, str] = {}  # image -> digest ("busybox" is added by FakeAppEngines)
        self.node_images: set[str] = set()
        self.crashing: set[str] = set()  # images whose containers keep failing
        self.exits: dict[str, int] = {}  # image -> exit code of its containers' command
        self.logs: dict[str, list[str]] = {}  # image -> what its containers printed last
        self.down = False
        self.has_ipvs = False
        self.plugins: set[str] = {"local"}
        self.filesystems: set[str] = {"nfs"}
        self.signals: list[tuple[str, str]] = []  # (container id, signal)
        self.stopped_containers: list[tuple[str, int]] = []
        self.volume_options: dict[tuple[str, str], dict[str, str]] = {}
        self.writes: list[tuple[str, str]] = []  # (service, created|updated|scaled): each engine update

    # ------------------------------------------------------------ facts

    def _up(self) -> None:
        if self.down:
            raise EngineUnavailable(f"no reachable swarm manager in cluster {self.cluster_id}")

    def nodes(self) -> list[AppNode]:
        return list(self._nodes)

    def ipvs(self) -> bool:
        return self.has_ipvs

    def lacks_filesystem(self, fstype: str) -> bool:
        return fstype not in self.filesystems

    def network_problems(self, names: Collection[str]) -> dict[str, str]:
        self._up()
        return {n: "it does not exist in the cluster" for n in names if n not in self.networks}

    def _exit(self, s: FakeService) -> int | None:
        return self.exits.get(s.image.split("@", 1)[0])

    def _failure(self, s: FakeService) -> str:
        name = s.labels.get("opencs.service", s.full_name)
        logs = self.logs.get(s.image.split("@", 1)[0], [])
        return (f"service {name}: exit code {self._exit(s)} after 3 attempts, not restarted again"
                + (f"; last log lines: {' | '.join(logs)}" if logs else ""))

    def resolve_image(self, image: str) -> str:
        self._up()
        base = image.split("@", 1)[0]
        if base not in self.registry:
            raise AppEngineError(f"image {image!r} was not found in the registry", "ImageNotFound")
        return self.registry[base]

    def image_on_every_node(self, image: str) -> bool:
        return image in self.node_images

    def published_ports(self) -> list[PublishedPort]:
        self._up()
        return [PublishedPort(p, proto, s.full_name, s.project) for s in self.services.values()
                for p, proto in s.published]

    # ------------------------------------------------------------ stacks

    def deploy(self, model: StackModel, state: DeployInput, *, only: Iterable[str] | None = None,
               prune: bool = True) -> dict[str, str]:
        self._up()
        only_set = set(only) if only is not None else None
        actions: dict[str, str] = {}
        for nm in model.networks.values():
            self.networks[nm.name] = (model.project, nm.labels.get(RELEASE_LABEL, "blue"))
        for name in model.order:
            if only_set is not None and name not in only_set:
                continue
            actions[name] = self._converge(model, name, state)
        if prune and only_set is None:
            wanted = {s.full_name for s in model.services.values()}
            for full in [f for f, s in self.services.items() if s.project == model.project and f not in wanted]:
                del self.services[full]
                actions[full] = "removed"
        return actions

    def _converge(self, model: StackModel, name: str, state: DeployInput) -> str:
        sm = model.services[name]
        image = state.images.get(name) or sm.image
        stopped = name in set(state.stopped)
        replicas = 0 if stopped else (state.replicas.get(name, sm.replicas or 0) if sm.mode != "global"
                                      else len(self._nodes))
        labels = {str(k): str(v) for k, v in (sm.spec.get("Labels") or {}).items()}
        config = hashlib.sha256(json.dumps([sm.spec, image], sort_keys=True, default=str).encode()).hexdigest()
        cur = self.services.get(sm.full_name)
        force = max(cur.force if cur else 0, state.force.get(name, 0))
        published = [(p, proto) for p, proto, _ in sm.published]
        if cur is None:
            self.services[sm.full_name] = FakeService(model.project, sm.full_name, labels.get(RELEASE_LABEL, "blue"),
                                                      labels, sm.mode, replicas, image, config, force, published)
            self._place(self.services[sm.full_name])
            self.writes.append((sm.full_name, "created"))
            return "created"
        same = cur.config == config and cur.force == force
        if same and cur.replicas == replicas:
            return "unchanged"
        cur.replicas = replicas
        if not same:
            cur.image, cur.config, cur.force, cur.labels, cur.published = image, config, force, labels, published
            cur.containers = []  # a rolling update replaces every container
        self._place(cur)
        self.writes.append((sm.full_name, "scaled" if same else "updated"))
        return "scaled" if same else "updated"

    def _place(self, svc: FakeService) -> None:
        svc.containers = svc.containers[:svc.replicas]
        while len(svc.containers) < svc.replicas:
            node = self._nodes[len(svc.containers) % len(self._nodes)]
            svc.containers.append(ContainerRef(node, f"c{next(_ids):012d}"))

    def scale_service(self, project: str, full_name: str, replicas: int) -> bool:
        self._up()
        svc = self.services.get(full_name)
        if svc is None or svc.project != project or svc.mode != "replicated":
            return False
        svc.replicas = int(replicas)
        self._place(svc)
        self.writes.append((full_name, "scaled"))
        return True

    def wait_converged(self, model: StackModel, services: Iterable[str], *, timeout: float,
                       since: float | None = None, progress: Progress | None = None,
                       unchanged: Collection[str] = ()) -> None:
        self._up()
        for name in services:
            svc = self.services.get(model.services[name].full_name)
            if svc is None:
                raise AppEngineError(f"service {name} disappeared from the swarm")
            if svc.replicas and svc.image.split("@", 1)[0] in self.crashing:
                raise AppEngineError(f"service {name}: containers keep failing: exit status 1", "ContainerFailed")
            if svc.replicas and self._exit(svc):
                raise AppEngineError(self._failure(svc), "ContainerFailed")

    def remove_services(self, project: str, *, release: str | None = None, keep: Collection[str] = ()) -> None:
        self._up()
        for full, s in list(self.services.items()):
            if s.project == project and (release is None or s.release == release) and full not in keep:
                del self.services[full]

    def wait_gone(self, project: str, *, release: str | None = None, timeout: float = 60.0) -> None:
        return None  # containers go with their services here

    def remove_networks(self, project: str, *, release: str | None = None, timeout: float = 30.0) -> None:
        self._up()
        for name, (p, rel) in list(self.networks.items()):
            if p == project and (release is None or rel == release):
                del self.networks[name]

    def remove_project_volumes(self, project: str) -> list[str]:
        for vols in self.volumes.values():
            for name in [n for n, v in vols.items() if v.labels.get(NAMESPACE_LABEL) == project]:
                del vols[name]
        return []

    # ------------------------------------------------------------ observing

    def snapshot(self, project: str | None, *, containers: bool) -> AppSnapshot:
        self._up()
        out = AppSnapshot()
        for s in self.services.values():
            if project is not None and s.project != project:
                continue
            crashing = s.image.split("@", 1)[0] in self.crashing
            code = self._exit(s)
            exited = crashing or code is not None
            state = "stopped" if s.replicas == 0 else ("degraded" if crashing else "completed" if code == 0
                                                      else "failed" if code else "running")
            views = [ContainerView(r.container_id, f"/{s.full_name}.{i + 1}.{r.container_id}", r.node.ip,
                                   f"10.1.0.{i + 2}", not exited, "exited" if exited else "running",
                                   "failure" if crashing or code else "success")
                     for i, r in enumerate(s.containers)]
            out.services[s.full_name] = AppService(s.service_id, s.full_name, state, "2026-01-01T00:00:00Z",
                                                   "2026-01-01T00:00:00Z", s.force, views,
                                                   [] if exited else list(s.containers),
                                                   self._failure(s) if state == "failed" else "")
        return out

    def signal(self, targets: list[ContainerRef], signal: str) -> list[str]:
        self.signals += [(t.container_id, signal) for t in targets]
        return []

    def stop_containers(self, targets: list[ContainerRef], timeout: int) -> list[str]:
        self.stopped_containers += [(t.container_id, timeout) for t in targets]
        return []

    def routed_ports(self) -> list[RoutedPort]:
        self._up()
        out = []
        for s in self.services.values():
            for key, value in s.labels.items():
                if key.startswith(ROUTING_LABEL_PREFIX) and key[len(ROUTING_LABEL_PREFIX):].isdigit():
                    port = int(key[len(ROUTING_LABEL_PREFIX):])
                    tasks = tuple(TaskAddress(r.container_id, r.node.ip, 30000 + port % 1000) for r in s.containers)
                    out.append(RoutedPort(s.project, s.full_name, s.release, port, value, tasks))
        return out

    # ------------------------------------------------------------ volumes

    def node_volumes(self, node: AppNode) -> NodeVolumes:
        return NodeVolumes(node.node_id, tuple(self.volumes[node.node_id].values()))

    def create_volume(self, node: AppNode, name: str, driver: str, options: dict[str, str],
                      labels: dict[str, str]) -> VolumeInfo:
        if driver not in self.plugins:
            raise VolumeDriverMissing(f"plugin {driver!r} not found")
        v = VolumeInfo(name, driver, f"/var/lib/docker/volumes/{name}/_data", "local", dict(labels))
        self.volumes[node.node_id][name] = v
        self.volume_options[(node.node_id, name)] = dict(options)
        return v

    def remove_volume(self, node: AppNode, name: str) -> None:
        self.volumes[node.node_id].pop(name, None)

    def probe_mount(self, node: AppNode, name: str) -> None:
        opts = self.volume_options.get((node.node_id, name), {})
        if opts.get("type") and opts["type"] not in self.filesystems:
            raise AppEngineError(f"error while mounting volume: unknown filesystem type '{opts['type']}'",
                                 "VolumeMountFailed")


class FakeAppEngines:
    """One FakeAppEngine per cluster, made on first use (busybox in its registry)."""

    def __init__(self, nodes: int = 3) -> None:
        self.nodes = nodes
        self.engines: dict[str, FakeAppEngine] = {}

    def for_cluster(self, cluster_id: str) -> FakeAppEngine:
        if cluster_id not in self.engines:
            e = self.engines[cluster_id] = FakeAppEngine(cluster_id, self.nodes)
            e.registry["busybox"] = "sha256:" + "b" * 64
        return self.engines[cluster_id]
