"""Applications (spec §10): Compose projects deployed as Swarm stacks, and their services.

The store holds what the user wants — template, environment, version, and in ``extra`` the
per-service scale overrides, stopped services and pinned image digests — and the project tasks
(``project_tasks.py``) converge the swarm to it. Every long operation is a durable task; its
project row says honestly what is going on (``desired_state`` = the target, ``current_state`` =
``creating``/``updating``/… while a task runs, then what the swarm reports).
"""

from __future__ import annotations

import logging
import os
import re
import signal as pysignal
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from docker.errors import DockerException
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from opencs.compose import ComposeError, Options, StackModel, build_stack
from opencs.compose.normalize import NAMESPACE_LABEL, PROJECT_NAME_RE
from opencs.engines.swarm import stack
from opencs.errors import ApiError, BadRequest, Conflict, NotFound
from opencs.routing.router import sync_routes
from opencs.services.nodes import NodeOps
from opencs.store.db import utcnow
from opencs.store.models import Cluster, Project, Task
from opencs.tasks.engine import ACTIVE, StageFailed

if TYPE_CHECKING:
    from opencs.runtime import Runtime

log = logging.getLogger("opencs.projects")

USABLE_CLUSTER_STATES = ("running", "scaling", "updating")
TRANSITIONAL = ("creating", "updating", "redeploying", "scaling", "starting", "stopping", "removing")
MAX_SCALE = 100


class NotSupportedYet(ApiError):
    status = 400
    code = "NotSupportedYet"


class ServiceUnavailable(ApiError):
    status = 503
    code = "NoManager"


def iso(d: datetime | None) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if d else ""


def template_error(e: ComposeError) -> BadRequest:
    return BadRequest(f"Invalid template: {e}", code=e.code)


def bump_version(v: str) -> str:
    """'1.0' → '1.1', 'v2' → 'v3', 'abc' → 'abc.1' (an update without a version)."""
    m = re.match(r"^(.*?)(\d+)$", v)
    if m:
        return f"{m.group(1)}{int(m.group(2)) + 1}"
    return f"{v}.1"


def parse_signal(sig: str | None) -> str:
    """'KILL', 'SIGTERM', '9' → the engine's signal name; 400 for anything else."""
    raw = (sig or "KILL").strip()
    if raw.isdigit():
        n = int(raw)
        if not 1 <= n <= 64:
            raise BadRequest(f"Parameter 'signal': {raw} is not a signal number", code="InvalidParameter.Signal")
        return raw
    name = raw.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    if not hasattr(pysignal.Signals, name):
        raise BadRequest(f"Parameter 'signal': unknown signal {raw!r} (e.g. KILL, TERM, HUP, INT, USR1)",
                         code="InvalidParameter.Signal")
    return name


def _task_failure(row: Task) -> ApiError:
    code = row.error_code or "OperationFailed"
    status = 503 if code in ("NoManager", "NodeUnreachable") else 500
    return ApiError(row.error_message or "the operation failed", code=code, status=status)


class ProjectService:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.db = rt.db

    # ------------------------------------------------------------ cluster helpers

    def usable_cluster(self, cluster_id: str | None) -> Cluster:
        if not cluster_id:
            raise BadRequest("the request carries no cluster (it must come through a cluster's master_url)",
                             code="MissingCluster")
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
        if c is None or c.state == "deleted":
            raise NotFound(f"Cluster {cluster_id} not found", code="ErrorClusterNotFound")
        if c.state not in USABLE_CLUSTER_STATES:
            raise Conflict(f"Cluster {cluster_id} is {c.state}: applications need a running cluster",
                           code="ErrorClusterStateConflict")
        return c

    def manager_host(self, cluster_id: str) -> str:
        try:
            return NodeOps(self.rt).reachable_manager(cluster_id).docker_host
        except StageFailed as e:
            raise ServiceUnavailable(str(e)) from None

    def node_infos(self, cluster_id: str) -> list[stack.NodeInfo]:
        return [stack.NodeInfo(r.swarm_node_id, r.private_ip, r.docker_host)
                for r in NodeOps(self.rt).rows(cluster_id) if r.swarm_node_id and r.docker_host]

    def ipvs(self, cluster_id: str) -> bool:
        forced = os.environ.get("OPENCS_SWARM_IPVS", "auto").lower()
        if forced in ("on", "true", "1"):
            return True
        if forced in ("off", "false", "0"):
            return False
        cache: dict[str, bool] = self.rt.extras.setdefault("appapi.ipvs", {})
        if cluster_id not in cache:
            rows = NodeOps(self.rt).rows(cluster_id)
            cache[cluster_id] = stack.detect_ipvs([(r.docker_host, r.details or {}) for r in rows])
            log.info("cluster %s: IPVS %s", cluster_id, "available" if cache[cluster_id] else
                     "missing (dnsrr endpoints and host-mode ports)")
        return cache[cluster_id]

    def volumes(self) -> Any:
        from opencs.services.app_volumes import VolumeService

        return VolumeService(self.rt, self)

    def options(self, cluster_id: str) -> Options:
        return Options(ipvs=self.ipvs(cluster_id), cluster_volumes=self.volumes().cluster_volumes(cluster_id))

    # ------------------------------------------------------------ models

    def model_of(self, row: Project, *, template: str | None = None,
                 environment: dict[str, Any] | None = None) -> StackModel:
        return build_stack(row.name, template if template is not None else row.template,
                           environment if environment is not None else row.environment,
                           self.options(row.cluster_id))

    def _model_quiet(self, row: Project) -> StackModel | None:
        try:
            return build_stack(row.name, row.template, row.environment, Options(ipvs=self.ipvs(row.cluster_id),
                                                                                  cluster_volumes={
                k: {"driver": "local"} for k in self._cluster_volume_names(row.cluster_id)}))
        except ComposeError as e:
            log.warning("project %s: stored template no longer normalizes: %s", row.name, e)
            return None

    def _cluster_volume_names(self, cluster_id: str) -> list[str]:
        from opencs.store.models import AppVolume

        with self.db.session() as s:
            return list(s.scalars(select(AppVolume.name).where(AppVolume.cluster_id == cluster_id)))

    def deploy_state(self, row: Project, model: StackModel) -> dict[str, Any]:
        """The per-service inputs of a deploy (scale overrides, stopped services, pinned images)."""
        extra = row.extra or {}
        pins = {svc: p["ref"] for svc, p in (extra.get("images") or {}).items()
                if svc in model.services and model.services[svc].image == p.get("image")}
        return {
            "replicas": {k: int(v) for k, v in (extra.get("scale") or {}).items() if k in model.services},
            "stopped": [s for s in (extra.get("stopped") or []) if s in model.services],
            "images": pins,
        }

    # ------------------------------------------------------------ preflight

    def preflight(self, cluster_id: str, model: StackModel, manager: str) -> None:
        """Refuse what would only fail later: unknown images, taken ports, impossible host-mode scale."""
        self.check_images(cluster_id, model, manager)
        self.check_ports(model, manager, cluster_id)
        nodes = len(self.node_infos(cluster_id))
        for s in model.services.values():
            self.check_host_scale(s.name, s, s.replicas or 0, nodes, model.ipvs)

    def check_images(self, cluster_id: str, model: StackModel, manager: str) -> dict[str, str]:
        """image → digest ("" when the image is only present on the nodes)."""
        images = sorted({s.image for s in model.services.values()})
        nodes = self.node_infos(cluster_id)

        def one(image: str) -> tuple[str, str, str]:
            try:
                return image, stack.resolve_image(manager, image), ""
            except stack.StackError as e:
                try:
                    if nodes and all(stack.image_present(n.docker_host, image) for n in nodes):
                        return image, "", ""
                except (DockerException, OSError):
                    pass
                return image, "", e.message
            except (DockerException, OSError) as e:
                return image, "", str(e)

        with ThreadPoolExecutor(max_workers=min(8, max(1, len(images)))) as pool:
            results = list(pool.map(one, images))
        out = {}
        for image, digest, err in results:
            if err:
                users = [s.name for s in model.services.values() if s.image == image]
                raise BadRequest(f"Invalid template: services.{users[0]}.image: {err}", code="ImageNotFound")
            out[image] = digest
        return out

    def check_ports(self, model: StackModel, manager: str, cluster_id: str) -> None:
        wanted = {(p, proto): svc for p, proto, svc in model.host_ports()}
        if not wanted:
            return
        # what other projects publish (also those whose deploy task has not created services yet)
        for other in self._rows(cluster_id):
            if other.name == model.project:
                continue
            om = self._model_quiet(other)
            for port, proto, osvc in om.host_ports() if om else []:
                if (port, proto) in wanted:
                    raise Conflict(f"Invalid template: services.{wanted[(port, proto)]}.ports: port {port}/{proto} "
                                   f"is already published by project {other.name!r} (service {osvc})",
                                   code="PortConflict")
        try:
            from contextlib import closing

            from opencs.engines.swarm import client

            with closing(client(manager)) as c:
                live = c.api.services()
        except (DockerException, OSError) as e:
            raise ServiceUnavailable(f"the swarm manager did not answer: {e}") from None
        for s in live:
            labels = s["Spec"].get("Labels") or {}
            if labels.get(NAMESPACE_LABEL) == model.project:
                continue
            for p in (s.get("Spec", {}).get("EndpointSpec") or {}).get("Ports") or []:
                key = (p.get("PublishedPort"), p.get("Protocol", "tcp"))
                if key in wanted:
                    owner = (f"project {labels[NAMESPACE_LABEL]!r} (service {s['Spec']['Name']})"
                             if NAMESPACE_LABEL in labels else f"swarm service {s['Spec']['Name']!r}")
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

    def _get_row(self, cluster_id: str, name: str) -> Project:
        with self.db.session() as s:
            row = s.get(Project, (cluster_id, name))
        if row is None or row.desired_state == "deleted" and row.current_state == "deleted":
            raise NotFound(f"project {name!r} not found", code="ProjectNotFound")
        return row

    def _begin(self, cluster_id: str, name: str, task_type: str, params: dict[str, Any], *,
               mutate: Any, force: bool = False) -> str:
        """Check the project is idle, apply `mutate(row)` and submit the task — one transaction,
        guarded by a compare-and-set on the row's task id against concurrent requests."""
        with self.db.session() as s:
            row = s.get(Project, (cluster_id, name))
            if row is None:
                raise NotFound(f"project {name!r} not found", code="ProjectNotFound")
            old_tid = row.task_id
            if (row.extra or {}).get("blue_green") and task_type != "project_remove" \
                    and not task_type.startswith("project_bg_"):
                # both versions run: only confirm-update / rollback-update (or delete) may change that
                raise Conflict(f"project {name!r} is in a blue-green release to version "
                               f"{row.extra['blue_green'].get('new_version')!r}: confirm it or roll it back first",
                               code="BlueGreenInProgress")
            if old_tid and not force:
                t = s.get(Task, old_tid)
                if t is not None and t.state in ACTIVE:
                    raise Conflict(f"project {name!r} is {row.current_state} (task {old_tid}); retry when it "
                                   "has finished", code="ProjectBusy")
            values = mutate(row) or {}
            tid = self.rt.tasks.submit(task_type, {"project": name, **params}, cluster_id=cluster_id,
                                       target_type="project", target_id=name, session=s)
            guard = Project.task_id.is_(None) if old_tid is None else Project.task_id == old_tid
            res = s.execute(update(Project).where(Project.cluster_id == cluster_id, Project.name == name, guard)
                            .values(task_id=tid, updated=utcnow(), **values)
                            .execution_options(synchronize_session=False))
            if res.rowcount != 1:  # type: ignore[attr-defined]
                raise Conflict(f"project {name!r} is being changed by another request", code="ProjectBusy")
        return tid

    def wait(self, tid: str, timeout: float) -> None:
        row = self.rt.tasks.wait(tid, timeout)
        if row.state == "fail":
            raise _task_failure(row)

    def _check_idle(self, s: Any, row: Project) -> None:
        if row.task_id:
            t = s.get(Task, row.task_id)
            if t is not None and t.state in ACTIVE:
                raise Conflict(f"project {row.name!r} is {row.current_state} (task {row.task_id}); retry when it "
                               "has finished", code="ProjectBusy")

    # ------------------------------------------------------------ create / update

    @staticmethod
    def _body_env(body: dict[str, Any]) -> dict[str, str] | None:
        env = body.get("environment")
        if env is None:
            return None
        if not isinstance(env, dict):
            raise BadRequest("Field 'environment': an object of variable names to values",
                             code="InvalidParameter.Environment")
        out = {}
        for k, v in env.items():
            if not re.fullmatch(r"[_A-Za-z][_A-Za-z0-9]*", str(k)):
                raise BadRequest(f"Field 'environment': {k!r} is not a variable name",
                                 code="InvalidParameter.Environment")
            if isinstance(v, (dict, list)):
                raise BadRequest(f"Field 'environment.{k}': must be a string", code="InvalidParameter.Environment")
            out[str(k)] = "" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))
        return out

    @staticmethod
    def _body_str(body: dict[str, Any], key: str, default: str | None = None, *, max_len: int = 4096) -> str | None:
        v = body.get(key, default)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise BadRequest(f"Field '{key}': must be a string", code=f"InvalidParameter.{key.capitalize()}")
        v = str(v)
        if len(v) > max_len:
            raise BadRequest(f"Field '{key}': at most {max_len} characters",
                             code=f"InvalidParameter.{key.capitalize()}")
        return v

    @staticmethod
    def _body_bool(body: dict[str, Any], key: str) -> bool:
        v = body.get(key, False)
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in ("true", "1", "false", "0", ""):
            return v.lower() in ("true", "1")
        if isinstance(v, int) and v in (0, 1):
            return bool(v)
        raise BadRequest(f"Field '{key}': must be true or false", code=f"InvalidParameter.{key}")

    def create(self, cluster_id: str, body: dict[str, Any]) -> str:
        name = body.get("name")
        if not isinstance(name, str) or not PROJECT_NAME_RE.match(name):
            raise BadRequest(f"Field 'name': {name!r} is not a valid project name (1-64 letters, digits and '-', "
                             "not starting with '-')", code="InvalidParameter.Name")
        template = body.get("template")
        if not isinstance(template, str) or not template.strip():
            raise BadRequest("Field 'template': a Compose YAML template (string) is required",
                             code="InvalidParameter.Template")
        version = self._body_str(body, "version", "1.0", max_len=128) or "1.0"
        description = self._body_str(body, "description", "") or ""
        env = self._body_env(body) or {}
        env.setdefault("COMPOSE_PROJECT_NAME", name)
        latest = self._body_bool(body, "latest_image")
        self.usable_cluster(cluster_id)
        with self.db.session() as s:
            if s.get(Project, (cluster_id, name)) is not None:
                raise Conflict(f"project {name!r} already exists", code="ProjectExists")
        try:
            model = build_stack(name, template, env, self.options(cluster_id))
        except ComposeError as e:
            raise template_error(e) from None
        manager = self.manager_host(cluster_id)
        self.preflight(cluster_id, model, manager)
        now = utcnow()
        try:
            with self.db.session() as s:
                row = Project(cluster_id=cluster_id, name=name, description=description, version=version,
                              template=template, environment=env, latest_image=latest, desired_state="running",
                              current_state="creating", extra={"warnings": model.warnings}, created=now,
                              updated=now)
                s.add(row)
                s.flush()
                row.task_id = self.rt.tasks.submit("project_deploy", {"project": name, "op": "create",
                                                                      "latest": latest},
                                                   cluster_id=cluster_id, target_type="project", target_id=name,
                                                   session=s)
        except IntegrityError:
            raise Conflict(f"project {name!r} already exists", code="ProjectExists") from None
        return name

    def update(self, cluster_id: str, name: str, body: dict[str, Any]) -> str:
        method = body.get("update_method")
        if method not in (None, "", "rolling", "rolling-update", "rolling_update"):
            if method in ("blue-green", "blue_green", "bluegreen"):
                from opencs.services import project_bluegreen

                return project_bluegreen.start(self, cluster_id, name, body)
            raise BadRequest(f"Field 'update_method': {method!r} is not an update method (blue-green)",
                             code="InvalidParameter.UpdateMethod")
        self.usable_cluster(cluster_id)
        row = self._get_row(cluster_id, name)
        template = body.get("template")
        if not isinstance(template, str) or not template.strip():
            raise BadRequest("Field 'template': a Compose YAML template (string) is required",
                             code="InvalidParameter.Template")
        version = self._body_str(body, "version", None, max_len=128)
        if version is not None and version == row.version:
            raise Conflict(f"project {name!r} already has version {version!r}: an update needs a new version",
                           code="VersionConflict")
        new_version = version if version is not None else bump_version(row.version)
        description = self._body_str(body, "description", None)
        env = self._body_env(body)
        new_env = dict(env) if env is not None else dict(row.environment or {})
        new_env.setdefault("COMPOSE_PROJECT_NAME", name)
        latest = self._body_bool(body, "latest_image")
        try:
            model = build_stack(name, template, new_env, self.options(cluster_id))
        except ComposeError as e:
            raise template_error(e) from None
        self.preflight(cluster_id, model, self.manager_host(cluster_id))

        def mutate(r: Project) -> dict[str, Any]:
            extra = dict(r.extra or {})
            extra.update(previous_environment=dict(r.environment or {}), previous_images=extra.get("images", {}),
                         previous_latest_image=r.latest_image, scale={}, stopped=[], warnings=model.warnings,
                         last_error=None, update_method="rolling")
            return {"previous_version": r.version, "previous_template": r.template, "version": new_version,
                    "template": template, "environment": new_env, "latest_image": latest,
                    "description": description if description is not None else r.description,
                    "desired_state": "running", "current_state": "updating", "extra": extra}

        return self._begin(cluster_id, name, "project_deploy", {"op": "update", "latest": latest}, mutate=mutate)

    def confirm_update(self, cluster_id: str, name: str, force: bool) -> str:
        """Blue-green confirm (spec §10.14); returns the task id."""
        from opencs.services import project_bluegreen

        return project_bluegreen.confirm(self, cluster_id, name, force)

    def rollback_update(self, cluster_id: str, name: str, force: bool) -> str:
        """Blue-green rollback (spec §10.15); returns the task id."""
        from opencs.services import project_bluegreen

        return project_bluegreen.rollback(self, cluster_id, name, force)

    def redeploy(self, cluster_id: str, name: str, pull_latest: bool = True) -> str:
        """Recreate every container, by default with the newest image of its tag (what a redeploy
        trigger does); returns the task id."""
        self.usable_cluster(cluster_id)
        self._get_row(cluster_id, name)
        return self._begin(cluster_id, name, "project_deploy", {"op": "redeploy", "latest": pull_latest},
                           mutate=lambda r: {"desired_state": "running", "current_state": "redeploying",
                                             "extra": {**(r.extra or {}), "stopped": [], "last_error": None}})

    def start(self, cluster_id: str, name: str, wait: float = 120.0) -> str:
        self.usable_cluster(cluster_id)
        self._get_row(cluster_id, name)
        tid = self._begin(cluster_id, name, "project_deploy", {"op": "start", "latest": False},
                          mutate=lambda r: {"desired_state": "running", "current_state": "starting",
                                            "extra": {**(r.extra or {}), "stopped": [], "last_error": None}})
        self.wait(tid, wait)
        return tid

    def stop(self, cluster_id: str, name: str, timeout: int = 10, wait: float | None = None) -> str:
        self.usable_cluster(cluster_id)
        row = self._get_row(cluster_id, name)
        model = self._model_quiet(row)
        everything = list(model.services) if model else []
        tid = self._begin(cluster_id, name, "project_stop", {"timeout": timeout},
                          mutate=lambda r: {"desired_state": "stopped", "current_state": "stopping",
                                            "extra": {**(r.extra or {}), "stopped": everything}})
        self.wait(tid, wait if wait is not None else timeout + 90)
        return tid

    def delete(self, cluster_id: str, name: str, *, force: bool = False, volumes: bool = False,
               wait: float = 120.0) -> str:
        self.usable_cluster(cluster_id)
        self._get_row(cluster_id, name)
        tid = self._begin(cluster_id, name, "project_remove", {"volumes": volumes, "force": force},
                          mutate=lambda r: {"desired_state": "deleted", "current_state": "removing"}, force=force)
        self.wait(tid, wait)
        return tid

    def kill(self, cluster_id: str, name: str, signal: str | None) -> None:
        sig = parse_signal(signal)
        self.usable_cluster(cluster_id)
        row = self._get_row(cluster_id, name)
        model = self._model_quiet(row)
        order = list(reversed(model.order)) if model else []
        snap = self._snapshot(cluster_id, row.name, containers=True)
        errors: list[str] = []
        for svc in order:
            errors += stack.signal_containers(self._targets(snap, f"{name}_{svc}"), sig)
        if errors:
            raise ApiError("the signal could not be delivered to every container: " + "; ".join(errors),
                           code="KillFailed", status=500)

    # ------------------------------------------------------------ services

    def _service_ref(self, cluster_id: str, service_id: str) -> tuple[Project, StackModel, str]:
        project, sep, svc = service_id.partition("_")
        if not sep or not project or not svc:
            raise NotFound(f"service {service_id!r} not found (service ids are <project>_<service>)",
                           code="ServiceNotFound")
        try:
            row = self._get_row(cluster_id, project)
        except NotFound:
            raise NotFound(f"service {service_id!r} not found: no project {project!r}",
                           code="ServiceNotFound") from None
        model = self._model_quiet(row)
        if model is None or svc not in model.services:
            raise NotFound(f"service {service_id!r} not found: project {project!r} has no service {svc!r}",
                           code="ServiceNotFound")
        return row, model, svc

    def _service_change(self, cluster_id: str, service_id: str, change: Any,
                        scale_to: int | None = None) -> tuple[Project, StackModel, str]:
        """Apply `change(extra, svc)` to the project's per-service state (refused while a task runs),
        then converge that service (`scale_to`: only its replica count changed, set just that)."""
        self.usable_cluster(cluster_id)
        row, _, svc = self._service_ref(cluster_id, service_id)
        with self.db.session() as s:
            r = s.get(Project, (cluster_id, row.name))
            if r is None:
                raise NotFound(f"service {service_id!r} not found", code="ServiceNotFound")
            self._check_idle(s, r)
            extra = dict(r.extra or {})
            change(extra, svc)
            r.extra = extra
            r.updated = utcnow()
            row = r
        full_model = self.model_of(row)
        try:
            if scale_to is None or not self.scale_in_place(cluster_id, row.name, svc, scale_to):
                self.deploy_service(row, full_model, svc)
        except stack.StackError as e:
            raise ApiError(e.message, code=e.code, status=500) from None
        return row, full_model, svc

    def _converge_service(self, cluster_id: str, model: StackModel, svc: str, timeout: float) -> None:
        try:
            stack.wait_converged(self.manager_host(cluster_id), model, [svc], timeout=timeout)
        except stack.StackError as e:
            raise ApiError(e.message, code=e.code, status=500) from None

    def scale_service(self, cluster_id: str, service_id: str, body: dict[str, Any]) -> None:
        kind = body.get("type", "scale_to")
        if kind != "scale_to":
            raise BadRequest(f"Field 'type': {kind!r} is not supported (only 'scale_to')", code="InvalidParameter.Type")
        value = body.get("value")
        if isinstance(value, str) and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SCALE:
            raise BadRequest(f"Field 'value': the number of containers, 0-{MAX_SCALE}", code="InvalidParameter.Value")
        self.usable_cluster(cluster_id)
        row, model, svc = self._service_ref(cluster_id, service_id)
        sm = model.services[svc]
        if sm.mode == "global":
            raise BadRequest(f"service {service_id} is global (one container on every node): it cannot be scaled",
                             code="InvalidParameter.Scale")
        self.check_host_scale(svc, sm, value, len(self.node_infos(cluster_id)), self.ipvs(cluster_id))

        previous: dict[str, Any] = {}

        def change(extra: dict[str, Any], s: str) -> None:
            previous.update(scale=dict(extra.get("scale") or {}), stopped=list(extra.get("stopped") or []))
            extra["scale"] = {**(extra.get("scale") or {}), s: value}
            if value > 0:
                extra["stopped"] = [x for x in (extra.get("stopped") or []) if x != s]

        _, full_model, _ = self._service_change(cluster_id, service_id, change, scale_to=value)
        try:
            self._converge_service(cluster_id, full_model, svc, 90)
            sync_routes(self.rt)  # the router's backends follow the new containers now, not in a second
        except ApiError as e:
            # do not leave a scale behind that cannot be reached: back to the previous count
            old = int(previous["scale"].get(svc, sm.replicas or 0))

            def undo(extra: dict[str, Any], s: str) -> None:
                extra["scale"], extra["stopped"] = previous["scale"], previous["stopped"]

            self._service_change(cluster_id, service_id, undo)
            raise ApiError(f"{e.message}; the service was scaled back to {old}", code=e.code,
                           status=e.status) from None

    def start_service(self, cluster_id: str, service_id: str) -> None:
        def change(extra: dict[str, Any], s: str) -> None:
            extra["stopped"] = [x for x in (extra.get("stopped") or []) if x != s]

        _, model, svc = self._service_change(cluster_id, service_id, change)
        self._converge_service(cluster_id, model, svc, 90)

    def stop_service(self, cluster_id: str, service_id: str, timeout: int = 10) -> None:
        self.usable_cluster(cluster_id)
        row, _, svc = self._service_ref(cluster_id, service_id)
        before = self._snapshot(cluster_id, row.name, containers=True)
        targets = self._targets(before, f"{row.name}_{svc}")

        def change(extra: dict[str, Any], s: str) -> None:
            extra["stopped"] = sorted(set(extra.get("stopped") or []) | {s})

        _, model, _ = self._service_change(cluster_id, service_id, change)
        self._stop_targets(model, svc, targets, timeout)
        self._converge_service(cluster_id, model, svc, timeout + 60)

    @staticmethod
    def _stop_targets(model: StackModel, svc: str, targets: list[tuple[stack.NodeInfo, str]], timeout: int) -> None:
        grace = model.services[svc].spec["TaskTemplate"]["ContainerSpec"].get("StopGracePeriod", 10 * 10**9)
        if timeout * 10**9 < grace and targets:
            # the swarm stops tasks with the service's own grace period; `t` shortens it
            stack.stop_containers(targets, timeout)

    def kill_service(self, cluster_id: str, service_id: str, signal: str | None) -> None:
        sig = parse_signal(signal)
        self.usable_cluster(cluster_id)
        row, _, svc = self._service_ref(cluster_id, service_id)
        snap = self._snapshot(cluster_id, row.name, containers=True)
        errors = stack.signal_containers(self._targets(snap, f"{row.name}_{svc}"), sig)
        if errors:
            raise ApiError("the signal could not be delivered to every container: " + "; ".join(errors),
                           code="KillFailed", status=500)

    # ------------------------------------------------------------ for triggers (services/triggers.py)

    def trigger_check(self, cluster_id: str, project: str, service: str | None) -> None:
        if service:
            self._service_ref(cluster_id, f"{project}_{service}")
        else:
            self._get_row(cluster_id, project)

    def trigger_redeploy(self, cluster_id: str, project: str, pull_latest: bool) -> str:
        return self.redeploy(cluster_id, project, pull_latest=pull_latest)

    def trigger_images(self, cluster_id: str, project: str) -> list[str]:
        model = self._model_quiet(self._get_row(cluster_id, project))
        return sorted({s.image for s in model.services.values()}) if model else []

    def trigger_scale(self, cluster_id: str, project: str, service: str, delta: int) -> str:
        """Change a service's container count by `delta` (kept within 0..MAX_SCALE and what host-mode
        ports allow) as a durable task (`project_scale`: only that service's replica count is
        changed on the engine); returns the task id."""
        self.usable_cluster(cluster_id)
        row = self._get_row(cluster_id, project)
        model = self._facts_model(row)
        if model is None or service not in model.services:
            raise NotFound(f"service {project}_{service} not found", code="ServiceNotFound")
        sm = model.services[service]
        if sm.mode == "global":
            raise BadRequest(f"service {project}_{service} is global: it cannot be scaled",
                             code="InvalidParameter.Scale")
        nodes, ipvs = len(self.node_infos(cluster_id)), self.ipvs(cluster_id)
        params: dict[str, Any] = {"op": "scale", "service": service}

        def mutate(r: Project) -> dict[str, Any]:
            # from the row as locked by _begin: two calls in a row add up
            extra = dict(r.extra or {})
            current = int((extra.get("scale") or {}).get(service, sm.replicas or 0))
            target = max(0, min(MAX_SCALE, current + int(delta)))
            self.check_host_scale(service, sm, target, nodes, ipvs)
            params.update(previous_scale=current, target=target)
            extra["scale"] = {**(extra.get("scale") or {}), service: target}
            if target > 0:
                extra["stopped"] = [x for x in (extra.get("stopped") or []) if x != service]
            return {"extra": extra, "current_state": "scaling"}

        return self._begin(cluster_id, project, "project_scale", params, mutate=mutate)

    def _facts_model(self, row: Project) -> StackModel | None:
        """The project's model for reading facts (modes, default replicas, ports), kept per template:
        triggers are called often and parsing plus schema validation cost milliseconds. Never
        mutate the result."""
        ipvs = self.ipvs(row.cluster_id)
        key = (row.cluster_id, row.name, row.template, repr(sorted((row.environment or {}).items())), ipvs)
        cache: dict[tuple[Any, ...], StackModel] = self.rt.extras.setdefault("projects.facts", {})
        model = cache.get(key)
        if model is None:
            model = self._model_quiet(row)
            if model is not None:
                if len(cache) > 256:
                    cache.clear()
                cache[key] = model
        return model

    def deploy_service(self, row: Project, model: StackModel, service: str) -> stack.DeployPlan:
        """Converge one service of the project to what its row says (the others are left alone)."""
        return stack.deploy(self.manager_host(row.cluster_id), model, only=[service], prune=False,
                            **self.deploy_state(row, model))

    def scale_in_place(self, cluster_id: str, project: str, service: str, replicas: int) -> bool:
        """Set one service's replica count on the first swarm manager that answers (no `docker info`
        probe first: the call itself tells). False when the stack must be deployed instead."""
        problems = []
        for r in NodeOps(self.rt).managers(cluster_id):
            try:
                return stack.scale_service(r.docker_host, project, f"{project}_{service}", replicas)
            except (DockerException, OSError) as e:  # this manager is down: the next one
                problems.append(f"{r.private_ip}: {e}")
            except stack.StackError as e:
                if "not a swarm manager" not in e.message:
                    raise
                problems.append(f"{r.private_ip}: {e.message}")
        raise ServiceUnavailable(f"no swarm manager of cluster {cluster_id} answered: {'; '.join(problems)}")

    # ------------------------------------------------------------ views

    def _snapshot(self, cluster_id: str, project: str | None, *, containers: bool) -> stack.Snapshot:
        manager = self.manager_host(cluster_id)
        try:
            return stack.snapshot(manager, self.node_infos(cluster_id), project, containers=containers)
        except (DockerException, OSError) as e:
            raise ServiceUnavailable(f"the swarm manager did not answer: {e}") from None

    @staticmethod
    def _targets(snap: stack.Snapshot, full_name: str) -> list[tuple[stack.NodeInfo, str]]:
        svc = snap.service(full_name)
        if svc is None:
            return []
        out = []
        for t in stack.current_tasks(snap, svc["ID"]):
            cid = (t.get("Status", {}).get("ContainerStatus") or {}).get("ContainerID")
            node = snap.nodes.get(t.get("NodeID", ""))
            if cid and node and node.docker_host:
                out.append((node, cid))
        return out

    def _containers(self, snap: stack.Snapshot, svc: dict[str, Any], project: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for t in sorted(stack.current_tasks(snap, svc["ID"]), key=lambda t: (t.get("Slot") or 0, t["ID"])):
            st = t.get("Status", {})
            cid = (st.get("ContainerStatus") or {}).get("ContainerID")
            if not cid:
                continue  # not created yet: there is no container to show
            nid = t.get("NodeID", "")
            node = snap.nodes.get(nid)
            node_ip = node.ip if node else ""
            ip = stack.task_ip(t, f"{project}_default")
            if snap.containers is not None and nid in snap.containers:
                c = snap.containers[nid].get(cid)
                if c is None:
                    continue  # removed meanwhile: only list containers that exist
                out[cid] = {"name": (c.get("Names") or [""])[0], "node": node_ip, "ip": ip,
                            "running": c.get("State") == "running", "status": c.get("State", ""),
                            "health": stack.container_health(c)}
            else:  # the node's engine did not answer: say what the swarm knows
                out[cid] = {"name": f"/{svc['Spec']['Name']}.{t.get('Slot') or nid}.{t['ID']}", "node": node_ip,
                            "ip": ip, "running": st.get("State") == "running", "status": st.get("State", "unknown"),
                            "health": "unknown"}
        return out

    def _service_view(self, row: Project, model: StackModel, name: str, snap: stack.Snapshot | None,
                      containers: bool) -> dict[str, Any]:
        sm = model.services[name]
        extra = row.extra or {}
        live = snap.service(sm.full_name) if snap else None
        stopped = name in (extra.get("stopped") or [])
        ext = dict(sm.extensions)
        if sm.mode != "global":
            ext["scale"] = int((extra.get("scale") or {}).get(name, sm.replicas or 0))
        view = {
            "id": sm.full_name,
            "name": name,
            "project": row.name,
            "description": str(sm.definition.get("description", "")),
            "created": (live or {}).get("CreatedAt", "") or iso(row.created),
            "updated": (live or {}).get("UpdatedAt", "") or iso(row.updated),
            "desired_state": "stopped" if stopped else "running",
            "current_state": stack.service_state(live, snap) if snap else "unknown",
            "definition": sm.definition,
            "extensions": ext,
            "containers": self._containers(snap, live, row.name) if (containers and snap and live) else {},
        }
        return view

    def _project_state(self, row: Project, services: list[dict[str, Any]] | None) -> str:
        if row.task_id:
            with self.db.session() as s:
                t = s.get(Task, row.task_id)
            if t is not None and t.state in ACTIVE:
                return row.current_state
        if row.current_state == "failed" or services is None:
            return row.current_state
        states = [sv["current_state"] for sv in services if sv["desired_state"] == "running"]
        if row.desired_state == "stopped" or not states:
            return "stopped" if all(sv["current_state"] == "stopped" for sv in services) else "stopping"
        if all(st == "running" for st in states):
            return "running"
        for st in ("updating", "degraded", "missing", "starting", "unknown"):
            if st in states:
                return st
        return row.current_state

    def _project_view(self, row: Project, snap: stack.Snapshot | None, *, services: bool,
                      containers: bool) -> dict[str, Any]:
        model = self._model_quiet(row) if services else None
        svcs = [self._service_view(row, model, n, snap, containers) for n in model.order] if model else None
        extra = row.extra or {}
        view: dict[str, Any] = {
            "name": row.name,
            "description": row.description,
            "template": row.template,
            "version": row.version,
            "environment": dict(row.environment or {}),
            "created": iso(row.created),
            "updated": iso(row.updated),
            "desired_state": row.desired_state,
            "current_state": self._project_state(row, svcs if snap is not None else None),
            "services": svcs or [],
            "task_id": row.task_id or "",
        }
        if extra.get("last_error"):
            view["message"] = extra["last_error"]
        if extra.get("warnings"):
            view["warnings"] = extra["warnings"]
        if extra.get("blue_green") or extra.get("blue_green_last"):
            from opencs.services import project_bluegreen

            bg = project_bluegreen.view(self, row, snap, containers and services)
            if bg is not None:
                view["blue_green"] = bg
        return view

    def _rows(self, cluster_id: str, q: str | None = None) -> list[Project]:
        with self.db.session() as s:
            rows = list(s.scalars(select(Project).where(Project.cluster_id == cluster_id).order_by(Project.created)))
        if q:
            rows = [r for r in rows if q.lower() in r.name.lower()]
        return rows

    def _try_snapshot(self, cluster_id: str, project: str | None, containers: bool) -> stack.Snapshot | None:
        try:
            return self._snapshot(cluster_id, project, containers=containers)
        except ServiceUnavailable as e:
            log.warning("cluster %s: %s", cluster_id, e.message)
            return None

    def _settled(self, row: Project) -> Project:
        """The row as its last task left it. Reading the swarm takes a while: a task that ended after
        `row` was read has written its final state (and message) into a newer row; without this the
        view mixes a stale 'creating' row with the post-rollback swarm ('missing')."""
        if not row.task_id:
            return row
        with self.db.session() as s:
            t = s.get(Task, row.task_id)
            if t is not None and t.state in ACTIVE:
                return row
            fresh = s.get(Project, (row.cluster_id, row.name))
        return fresh if fresh is not None else row

    def list_projects(self, cluster_id: str, q: str | None = None, services: bool = True,
             containers: bool = True) -> list[dict[str, Any]]:
        self.usable_cluster(cluster_id)
        rows = self._rows(cluster_id, q)
        snap = self._try_snapshot(cluster_id, None, containers) if services and rows else None
        return [self._project_view(self._settled(r), snap, services=services, containers=containers) for r in rows]

    def get(self, cluster_id: str, name: str, services: bool = True, containers: bool = True) -> dict[str, Any]:
        self.usable_cluster(cluster_id)
        row = self._get_row(cluster_id, name)
        snap = self._try_snapshot(cluster_id, name, containers) if services else None
        return self._project_view(self._settled(row), snap, services=services, containers=containers)

    def list_services(self, cluster_id: str, q: str | None = None, containers: bool = True) -> list[dict[str, Any]]:
        self.usable_cluster(cluster_id)
        rows = self._rows(cluster_id)
        snap = self._try_snapshot(cluster_id, None, containers) if rows else None
        out = []
        for row in rows:
            model = self._model_quiet(row)
            if model is None:
                continue
            for n in model.order:
                sid = model.services[n].full_name
                if q and q.lower() not in n.lower() and q.lower() not in sid.lower():
                    continue
                out.append(self._service_view(row, model, n, snap, containers))
        return out

    def get_service(self, cluster_id: str, service_id: str, containers: bool = True) -> dict[str, Any]:
        self.usable_cluster(cluster_id)
        row, model, svc = self._service_ref(cluster_id, service_id)
        snap = self._try_snapshot(cluster_id, row.name, containers)
        return self._service_view(row, model, svc, snap, containers)
