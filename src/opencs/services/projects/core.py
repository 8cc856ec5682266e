"""The project rules' foundation: the cluster and its engine, stack models, preflight checks, rows
and the one transaction that starts an operation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from opencs.compose import ComposeError, Options, StackModel, build_stack
from opencs.engines.apps import (
    AppEngine,
    AppEngineError,
    AppEngines,
    DeployInput,
    EngineUnavailable,
    EngineUnreachable,
)
from opencs.errors import BadRequest, Conflict, NotFound
from opencs.secretbox import SecretBox
from opencs.services.projects import desired
from opencs.services.projects.common import (
    USABLE_CLUSTER_STATES,
    RouteSync,
    ServiceUnavailable,
    TaskSubmitter,
    task_failure,
)
from opencs.services.projects.volumes import VolumeService
from opencs.store.models import Cluster, Project, Task
from opencs.store.repos.projects import Plan, ProjectContended, ProjectMissing, ProjectRepo
from opencs.store.repos.volumes import VolumeRepo

log = logging.getLogger("opencs.projects")

# (the row, its running task or None) -> the row's new column values, or a Plan (e.g. reuse the task)
Mutate = Callable[[Project, Task | None], "dict[str, Any] | Plan"]


class ProjectCore:
    def __init__(self, repo: ProjectRepo, volumes: VolumeRepo, tasks: TaskSubmitter, engines: AppEngines,
                 routes: RouteSync, box: SecretBox) -> None:
        self.repo = repo
        self.tasks = tasks
        self.engines = engines
        self.routes = routes
        self._volumes = VolumeService(volumes, box, self)
        self._facts: dict[tuple[Any, ...], StackModel] = {}

    # ------------------------------------------------------------ cluster helpers

    def usable_cluster(self, cluster_id: str | None) -> Cluster:
        if not cluster_id:
            raise BadRequest("the request carries no cluster (it must come through a cluster's master_url)",
                             code="MissingCluster")
        c = self.repo.cluster(cluster_id)
        if c is None or c.state == "deleted":
            raise NotFound(f"Cluster {cluster_id} not found", code="ErrorClusterNotFound")
        if c.state not in USABLE_CLUSTER_STATES:
            raise Conflict(f"Cluster {cluster_id} is {c.state}: applications need a running cluster",
                           code="ErrorClusterStateConflict")
        return c

    def engine(self, cluster_id: str) -> AppEngine:
        return self.engines.for_cluster(cluster_id)

    def ipvs(self, cluster_id: str) -> bool:
        return self.engine(cluster_id).ipvs()

    def volumes(self) -> VolumeService:
        return self._volumes

    def options(self, cluster_id: str) -> Options:
        return Options(ipvs=self.ipvs(cluster_id), cluster_volumes=self.volumes().cluster_volumes(cluster_id))

    # ------------------------------------------------------------ models

    def model_of(self, row: Project, *, template: str | None = None,
                 environment: dict[str, Any] | None = None) -> StackModel:
        return build_stack(row.name, template if template is not None else row.template,
                           environment if environment is not None else row.environment,
                           self.options(row.cluster_id))

    def model_quiet(self, row: Project) -> StackModel | None:
        try:
            return build_stack(row.name, row.template, row.environment, Options(ipvs=self.ipvs(row.cluster_id),
                                                                                  cluster_volumes={
                k: {"driver": "local"} for k in self.cluster_volume_names(row.cluster_id)}))
        except ComposeError as e:
            log.warning("project %s: stored template no longer normalizes: %s", row.name, e)
            return None

    def cluster_volume_names(self, cluster_id: str) -> list[str]:

        return self._volumes.repo.names(cluster_id)

    def deploy_state(self, row: Project, model: StackModel) -> DeployInput:
        """The per-service inputs of a deploy (scale overrides, stopped services, pinned images)."""
        st = row.state
        pins = {svc: p.ref for svc, p in st.images.items()
                if svc in model.services and model.services[svc].image == p.image}
        return DeployInput(
            replicas={k: v for k, v in st.scale.items() if k in model.services},
            stopped=[s for s in st.stopped if s in model.services],
            images=pins,
        )

    def _facts_model(self, row: Project) -> StackModel | None:
        """The project's model for reading facts (modes, default replicas, ports), kept per template:
        triggers are called often and parsing plus schema validation cost milliseconds. Never
        mutate the result."""
        ipvs = self.ipvs(row.cluster_id)
        key = (row.cluster_id, row.name, row.template, repr(sorted((row.environment or {}).items())), ipvs)
        cache = self._facts
        model = cache.get(key)
        if model is None:
            model = self.model_quiet(row)
            if model is not None:
                if len(cache) > 256:
                    cache.clear()
                cache[key] = model
        return model

    # ------------------------------------------------------------ preflight

    def preflight(self, cluster_id: str, model: StackModel) -> None:
        """Refuse what would only fail later: unknown images, taken ports, impossible host-mode scale."""
        engine = self.engine(cluster_id)
        self.check_external(engine, model)
        self.check_images(engine, model)
        self.check_ports(engine, model, cluster_id)
        nodes = len(engine.nodes())
        for s in model.services.values():
            self.check_host_scale(s.name, s, s.replicas or 0, nodes, model.ipvs)

    @staticmethod
    def check_external(engine: AppEngine, model: StackModel) -> None:
        """External networks and volumes must exist before the stack is deployed: the swarm would
        otherwise leave its tasks pending (networks) or give each node an empty volume."""
        nets = {nm.name: key for key, nm in model.networks.items() if nm.external}
        try:
            problems = engine.network_problems(sorted(nets)) if nets else {}
        except EngineUnavailable as e:
            raise ServiceUnavailable(e.message) from None
        for name, why in sorted(problems.items()):
            raise BadRequest(f"Invalid template: networks.{nets[name]}: the external network {name!r} cannot be "
                             f"used: {why} (create it first: an attachable overlay network)",
                             code="NetworkNotFound")
        vols = {vm.name: key for key, vm in model.volumes.items() if vm.external and not vm.cluster_volume}
        if not vols:
            return
        present: set[str] = set()
        for node in engine.nodes():
            try:
                present |= {v.name for v in engine.node_volumes(node).volumes}
            except EngineUnreachable:
                continue  # a node that does not answer cannot show its volumes
        for name in sorted(set(vols) - present):
            raise BadRequest(f"Invalid template: volumes.{vols[name]}: the external volume {name!r} does not exist "
                             "on any node of the cluster (create it first with POST /volumes/create)",
                             code="VolumeNotFound")

    def check_images(self, engine: AppEngine, model: StackModel) -> dict[str, str]:
        """image → digest ("" when the image is only present on the nodes)."""
        images = sorted({s.image for s in model.services.values()})

        def one(image: str) -> tuple[str, str, str]:
            try:
                return image, engine.resolve_image(image), ""
            except EngineUnavailable:
                raise
            except EngineUnreachable as e:
                return image, "", e.detail
            except AppEngineError as e:
                if engine.image_on_every_node(image):
                    return image, "", ""
                return image, "", e.message

        with ThreadPoolExecutor(max_workers=min(8, max(1, len(images)))) as pool:
            results = list(pool.map(one, images))
        out = {}
        for image, digest, err in results:
            if err:
                users = [s.name for s in model.services.values() if s.image == image]
                raise BadRequest(f"Invalid template: services.{users[0]}.image: {err}", code="ImageNotFound")
            out[image] = digest
        return out

    def check_ports(self, engine: AppEngine, model: StackModel, cluster_id: str) -> None:
        wanted = {(p, proto): svc for p, proto, svc in model.host_ports()}
        if not wanted:
            return
        # what other projects publish (also those whose deploy task has not created services yet)
        for other in self._rows(cluster_id):
            if other.name == model.project:
                continue
            om = self.model_quiet(other)
            for port, proto, osvc in om.host_ports() if om else []:
                if (port, proto) in wanted:
                    raise Conflict(f"Invalid template: services.{wanted[(port, proto)]}.ports: port {port}/{proto} "
                                   f"is already published by project {other.name!r} (service {osvc})",
                                   code="PortConflict")
        try:
            live = engine.published_ports()
        except EngineUnavailable as e:
            raise ServiceUnavailable(e.message) from None
        for p in live:
            if p.project == model.project:
                continue
            key = (p.port, p.protocol)
            if key in wanted:
                owner = (f"project {p.project!r} (service {p.service})" if p.project is not None
                         else f"swarm service {p.service!r}")
                raise Conflict(f"Invalid template: services.{wanted[key]}.ports: port {key[0]}/{key[1]} is "
                               f"already published by {owner}", code="PortConflict")

    @staticmethod
    def check_host_scale(name: str, svc: Any, replicas: int, nodes: int, ipvs: bool) -> None:
        host_ports = [p for p, _, mode in svc.published if mode == "host"]
        if svc.mode == "replicated" and host_ports and replicas > nodes:
            why = ("the nodes' kernel has no IPVS, so ports are published in host mode"
                   if not ipvs else "its ports are published in host mode")
            raise BadRequest(
                f"service {name}: {why} and port {host_ports[0]} can be taken by one container per node; "
                f"the cluster has {nodes} node(s), so at most {nodes} container(s), not {replicas}",
                code="InvalidParameter.Scale",
            )

    # ------------------------------------------------------------ rows and tasks

    def get_row(self, cluster_id: str, name: str) -> Project:
        row = self.repo.get(cluster_id, name)
        if row is None or row.desired_state == "deleted" and row.current_state == "deleted":
            raise NotFound(f"project {name!r} not found", code="ProjectNotFound")
        return row

    def _rows(self, cluster_id: str, q: str | None = None) -> list[Project]:
        rows = self.repo.of_cluster(cluster_id)
        if q:
            rows = [r for r in rows if q.lower() in r.name.lower()]
        return rows

    def begin(self, cluster_id: str, name: str, task_type: str, params: dict[str, Any], *,
              mutate: Mutate) -> str:
        """Write `mutate(row, running task or None)` — the newest desired state — and the task that
        converges to it, in one transaction guarded by a compare-and-set on the row's task id. While
        an earlier task runs, the request is accepted: it reuses, folds into or follows that task
        (desired.py); only true conflicts are refused."""
        chosen: dict[str, Any] = {}

        def prepare(row: Project, active: Task | None) -> Plan:
            bg = row.state.blue_green
            if bg is not None and bg.state != "rolling_back" and task_type != "project_remove" \
                    and not task_type.startswith("project_bg_"):
                # both versions run: only confirm-update / rollback-update (or delete) may change that
                raise Conflict(f"project {name!r} is in a blue-green release to version "
                               f"{bg.new_version!r}: confirm it or roll it back first",
                               code="BlueGreenInProgress")
            if active is not None and active.task_type == "project_remove":
                if task_type == "project_remove":
                    return Plan({}, reuse=True)  # a repeated delete gets the running one
                raise Conflict(f"project {name!r} is being deleted (task {active.task_id})",
                               code="ProjectDeleting")
            values = mutate(row, active)
            if isinstance(values, Plan):
                return values
            plan, chosen["type"], chosen["params"] = desired.plan(active, task_type, {"project": name, **params},
                                                                  values or {})
            return plan

        def submit(session: Any, after: str | None) -> str:
            return self.tasks.submit(chosen["type"], chosen["params"], cluster_id=cluster_id, target_type="project",
                                     target_id=name, session=session, after=after)

        for _ in range(20):
            try:
                return self.repo.begin(cluster_id, name, prepare, submit)
            except ProjectMissing:
                raise NotFound(f"project {name!r} not found", code="ProjectNotFound") from None
            except ProjectContended:
                continue  # another request wrote the row meanwhile: apply this one on top of it
        raise Conflict(f"project {name!r} is being changed by many requests at once; retry",
                       code="ProjectBusy")

    def wait(self, tid: str, timeout: float) -> None:
        row = self.tasks.wait(tid, timeout)
        if row.state == "fail":
            raise task_failure(row)

    # ------------------------------------------------------------ engine operations

    def deploy_service(self, row: Project, model: StackModel, service: str) -> dict[str, str]:
        """Converge one service of the project to what its row says (the others are left alone)."""
        return self.engine(row.cluster_id).deploy(model, self.deploy_state(row, model), only=[service], prune=False)

    def scale_in_place(self, cluster_id: str, project: str, service: str, replicas: int) -> bool:
        """Set one service's replica count on the first swarm manager that answers (no `docker info`
        probe first: the call itself tells). False when the stack must be deployed instead."""
        try:
            return self.engine(cluster_id).scale_service(project, f"{project}_{service}", replicas)
        except EngineUnavailable as e:
            raise ServiceUnavailable(e.message) from None
