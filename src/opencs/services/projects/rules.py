"""Applications (spec §10): Compose projects deployed as stacks on a cluster's application engine.

The store holds what the user wants — template, environment, version, and in ``state`` (a typed
ProjectState) the per-service scale overrides, stopped services and pinned image digests — and the
project tasks (``tasks.py``) converge the engine to it. Every long operation is a durable task; its
project row says honestly what is going on (``desired_state`` = the target, ``current_state`` =
``creating``/``updating``/… while a task runs, then what the engine reports). Blue-green releases
are ``bluegreen.py``.
"""

from __future__ import annotations

from typing import Any

from opencs.compose import ComposeError, build_stack
from opencs.errors import ApiError, BadRequest, Conflict, NotFound
from opencs.services.projects import bluegreen
from opencs.services.projects.common import bump_version, engine_errors, parse_signal, template_error
from opencs.services.projects.requests import MAX_SCALE, CreateProject, UpdateProject
from opencs.services.projects.service_rules import ServiceRules
from opencs.store.db import utcnow
from opencs.store.models import Project, Task
from opencs.store.project_state import ProjectState
from opencs.store.repos.projects import Plan, ProjectExists


class ProjectService(ServiceRules):
    """The one object the edges use for projects, their services and volumes."""

    # ------------------------------------------------------------ create / update

    @engine_errors
    def create(self, cluster_id: str, req: CreateProject) -> str:
        name, template, env, latest = req.name, req.template, dict(req.environment), req.latest_image
        version, description = req.version, req.description
        self.usable_cluster(cluster_id)
        if self.repo.get(cluster_id, name) is not None:
            raise Conflict(f"project {name!r} already exists", code="ProjectExists")
        try:
            model = build_stack(name, template, env, self.options(cluster_id))
        except ComposeError as e:
            raise template_error(e) from None
        self.preflight(cluster_id, model)
        now = utcnow()
        row = Project(cluster_id=cluster_id, name=name, description=description, version=version,
                      template=template, environment=env, latest_image=latest, desired_state="running",
                      current_state="creating", state=ProjectState(warnings=model.warnings), created=now,
                      updated=now)

        def submit(session: Any, _after: str | None) -> str:
            params = {"project": name, "op": "create", "latest": latest, "rollback": req.rollback_on_failure}
            return self.tasks.submit("project_deploy", params,
                                     cluster_id=cluster_id, target_type="project", target_id=name, session=session)

        try:
            self.repo.insert(row, submit)
        except ProjectExists:
            raise Conflict(f"project {name!r} already exists", code="ProjectExists") from None
        return name

    @engine_errors
    def update(self, cluster_id: str, name: str, req: UpdateProject) -> str:
        if req.method == "blue-green":
            return bluegreen.start(self, cluster_id, name, req)
        self.usable_cluster(cluster_id)
        row = self.get_row(cluster_id, name)
        template = req.template
        if template is None:
            raise BadRequest("Field 'template': a Compose YAML template (string) is required",
                             code="InvalidParameter.Template")
        version = req.version
        description = req.description
        new_env = dict(req.environment) if req.environment is not None else dict(row.environment or {})
        new_env.setdefault("COMPOSE_PROJECT_NAME", name)
        latest = req.latest_image
        try:
            model = build_stack(name, template, new_env, self.options(cluster_id))
        except ComposeError as e:
            raise template_error(e) from None
        self.preflight(cluster_id, model)

        def mutate(r: Project, active: Task | None) -> dict[str, Any] | Plan:
            if version is not None and version == r.version:
                if active is not None and active.task_type == "project_deploy" and r.template == template \
                        and dict(r.environment or {}) == new_env:
                    return Plan({}, reuse=True)  # the same update again: the one that runs
                raise Conflict(f"project {name!r} already has version {version!r}"
                               f"{' (its update is running) with another template' if active else ''}: "
                               "an update needs a new version", code="VersionConflict")
            values: dict[str, Any] = {
                "version": version if version is not None else bump_version(r.version), "template": template,
                "environment": new_env, "latest_image": latest,
                "description": description if description is not None else r.description,
                "desired_state": "running", "current_state": "updating"}
            state = r.state.changed(scale={}, stopped=[], warnings=model.warnings, last_error=None,
                                    update_method="rolling")
            if active is None or active.task_type != "project_deploy" or \
                    active.params.get("op") not in ("create", "update"):
                # what a failed update rolls back to; an update that follows an unfinished one keeps
                # the release before that one (the last that ran)
                values.update(previous_version=r.version, previous_template=r.template)
                state = state.changed(previous_environment=dict(r.environment or {}), previous_images=r.state.images,
                                      previous_latest_image=r.latest_image)
            return {**values, "state": state}

        return self.begin(cluster_id, name, "project_deploy", {"op": "update", "latest": latest}, mutate=mutate)

    def confirm_update(self, cluster_id: str, name: str, force: bool) -> str:
        """Blue-green confirm (spec §10.14); returns the task id."""
        return bluegreen.confirm(self, cluster_id, name, force)

    def rollback_update(self, cluster_id: str, name: str, force: bool) -> str:
        """Blue-green rollback (spec §10.15); returns the task id."""
        return bluegreen.rollback(self, cluster_id, name, force)

    @engine_errors
    def redeploy(self, cluster_id: str, name: str, pull_latest: bool = True) -> str:
        """Recreate every container, by default with the newest image of its tag (what a redeploy
        trigger does); returns the task id."""
        self.usable_cluster(cluster_id)
        self.get_row(cluster_id, name)
        return self.begin(cluster_id, name, "project_deploy", {"op": "redeploy", "latest": pull_latest},
                          mutate=lambda r, _a: {"desired_state": "running", "current_state": "redeploying",
                                             "state": r.state.changed(stopped=[], last_error=None)})

    @engine_errors
    def start(self, cluster_id: str, name: str, wait: float = 120.0) -> str:
        self.usable_cluster(cluster_id)
        self.get_row(cluster_id, name)
        tid = self.begin(cluster_id, name, "project_deploy", {"op": "start", "latest": False},
                          mutate=lambda r, _a: {"desired_state": "running", "current_state": "starting",
                                            "state": r.state.changed(stopped=[], last_error=None)})
        self.wait(tid, wait)
        return tid

    @engine_errors
    def stop(self, cluster_id: str, name: str, timeout: int = 10, wait: float | None = None) -> str:
        self.usable_cluster(cluster_id)
        row = self.get_row(cluster_id, name)
        model = self.model_quiet(row)
        everything = list(model.services) if model else []
        tid = self.begin(cluster_id, name, "project_stop", {"timeout": timeout},
                          mutate=lambda r, _a: {"desired_state": "stopped", "current_state": "stopping",
                                            "state": r.state.changed(stopped=everything)})
        self.wait(tid, wait if wait is not None else timeout + 90)
        return tid

    @engine_errors
    def delete(self, cluster_id: str, name: str, *, force: bool = False, volumes: bool = False,
               wait: float = 120.0) -> str:
        self.usable_cluster(cluster_id)
        self.get_row(cluster_id, name)
        tid = self.begin(cluster_id, name, "project_remove", {"volumes": volumes, "force": force},
                          mutate=lambda r, _a: {"desired_state": "deleted", "current_state": "removing"})
        self.wait(tid, wait)
        return tid

    @engine_errors
    def kill(self, cluster_id: str, name: str, signal: str | None) -> None:
        sig = parse_signal(signal)
        self.usable_cluster(cluster_id)
        row = self.get_row(cluster_id, name)
        model = self.model_quiet(row)
        order = list(reversed(model.order)) if model else []
        snap = self._snapshot(cluster_id, row.name, containers=True)
        errors: list[str] = []
        for svc in order:
            errors += self.engine(cluster_id).signal(self.targets(snap, f"{name}_{svc}"), sig)
        if errors:
            raise ApiError("the signal could not be delivered to every container: " + "; ".join(errors),
                           code="KillFailed", status=500)

    # ------------------------------------------------------------ for triggers (services/triggers.py)

    def trigger_check(self, cluster_id: str, project: str, service: str | None) -> None:
        if service:
            self._service_ref(cluster_id, f"{project}_{service}")
        else:
            self.get_row(cluster_id, project)

    def trigger_redeploy(self, cluster_id: str, project: str, pull_latest: bool) -> str:
        return self.redeploy(cluster_id, project, pull_latest=pull_latest)

    def trigger_images(self, cluster_id: str, project: str) -> list[str]:
        model = self.model_quiet(self.get_row(cluster_id, project))
        return sorted({s.image for s in model.services.values()}) if model else []

    @engine_errors
    def trigger_scale(self, cluster_id: str, project: str, service: str, delta: int) -> str:
        """Change a service's container count by `delta` (kept within 0..MAX_SCALE and what host-mode
        ports allow) as a durable task (`project_scale`: only that service's replica count is
        changed on the engine); returns the task id."""
        self.usable_cluster(cluster_id)
        row = self.get_row(cluster_id, project)
        model = self._facts_model(row)
        if model is None or service not in model.services:
            raise NotFound(f"service {project}_{service} not found", code="ServiceNotFound")
        sm = model.services[service]
        if sm.mode == "global":
            raise BadRequest(f"service {project}_{service} is global: it cannot be scaled",
                             code="InvalidParameter.Scale")
        engine = self.engine(cluster_id)
        nodes, ipvs = len(engine.nodes()), engine.ipvs()
        params: dict[str, Any] = {"op": "scale", "service": service}

        def mutate(r: Project, _active: Task | None) -> dict[str, Any]:
            # from the row as locked by begin: two calls in a row add up
            current = r.state.scale.get(service, sm.replicas or 0)
            target = max(0, min(MAX_SCALE, current + int(delta)))
            self.check_host_scale(service, sm, target, nodes, ipvs)
            params.update(previous_scale=current, target=target)
            stopped = [x for x in r.state.stopped if x != service] if target > 0 else r.state.stopped
            return {"state": r.state.changed(scale={**r.state.scale, service: target}, stopped=stopped),
                    "current_state": "scaling"}

        return self.begin(cluster_id, project, "project_scale", params, mutate=mutate)
