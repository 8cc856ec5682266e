"""Replies of the project API (spec §10.4, §10.17): projects and services as the store and the
engine see them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from opencs.compose import StackModel
from opencs.engines.apps import AppEngineError, AppService, AppSnapshot, ContainerRef
from opencs.errors import NotFound
from opencs.services.projects import bluegreen, logs
from opencs.services.projects.common import ServiceUnavailable, engine_errors, iso
from opencs.services.projects.core import ProjectCore
from opencs.services.projects.logs import LogOptions
from opencs.store.models import Project

log = logging.getLogger("opencs.projects")


class ProjectViews(ProjectCore):
    def _service_ref(self, cluster_id: str, service_id: str) -> tuple[Project, StackModel, str]:
        project, sep, svc = service_id.partition("_")
        if not sep or not project or not svc:
            raise NotFound(f"service {service_id!r} not found (service ids are <project>_<service>)",
                           code="ServiceNotFound")
        try:
            row = self.get_row(cluster_id, project)
        except NotFound:
            raise NotFound(f"service {service_id!r} not found: no project {project!r}",
                           code="ServiceNotFound") from None
        model = self.model_quiet(row)
        if model is None or svc not in model.services:
            raise NotFound(f"service {service_id!r} not found: project {project!r} has no service {svc!r}",
                           code="ServiceNotFound")
        return row, model, svc

    def _snapshot(self, cluster_id: str, project: str | None, *, containers: bool) -> AppSnapshot:
        try:
            return self.engine(cluster_id).snapshot(project, containers=containers)
        except AppEngineError as e:
            raise ServiceUnavailable(e.message) from None

    @staticmethod
    def targets(snap: AppSnapshot, full_name: str) -> list[ContainerRef]:
        svc = snap.service(full_name)
        return list(svc.refs) if svc is not None else []

    @staticmethod
    def _containers(svc: AppService) -> dict[str, Any]:
        return {c.container_id: {"name": c.name, "node": c.node_ip, "ip": c.ip, "running": c.running,
                                 "status": c.status, "health": c.health} for c in svc.containers}

    def service_view(self, row: Project, model: StackModel, name: str, snap: AppSnapshot | None,
                      containers: bool) -> dict[str, Any]:
        sm = model.services[name]
        live = snap.service(sm.full_name) if snap else None
        stopped = name in row.state.stopped
        ext = dict(sm.extensions)
        if sm.mode != "global":
            ext["scale"] = row.state.scale.get(name, sm.replicas or 0)
        view = {
            "id": sm.full_name,
            "name": name,
            "project": row.name,
            "description": str(sm.definition.get("description", "")),
            "created": (live.created if live else "") or iso(row.created),
            "updated": (live.updated if live else "") or iso(row.updated),
            "desired_state": "stopped" if stopped else "running",
            "current_state": snap.state_of(sm.full_name) if snap else "unknown",
            "definition": sm.definition,
            "extensions": ext,
            "containers": self._containers(live) if (containers and snap and live) else {},
        }
        if live is not None and live.problem:
            view["message"] = live.problem  # failed / restarting: exit code and the last log lines
        return view

    def _project_state(self, row: Project, services: list[dict[str, Any]] | None) -> str:
        if self.repo.task_running(row.task_id):
            return row.current_state
        if row.current_state == "failed" or services is None:
            return row.current_state
        states = [sv["current_state"] for sv in services if sv["desired_state"] == "running"]
        if row.desired_state == "stopped" or not states:
            return "stopped" if all(sv["current_state"] == "stopped" for sv in services) else "stopping"
        if "failed" in states:  # a service exited non-zero and is not restarted again
            return "failed"
        if all(st == "completed" for st in states):  # every command ran to its end
            return "completed"
        if all(st in ("running", "completed") for st in states):  # one-shot services are done
            return "running"
        for st in ("updating", "degraded", "missing", "starting", "unknown"):
            if st in states:
                return st
        return row.current_state

    def project_view(self, row: Project, snap: AppSnapshot | None, *, services: bool,
                      containers: bool) -> dict[str, Any]:
        model = self.model_quiet(row) if services else None
        svcs = [self.service_view(row, model, n, snap, containers) for n in model.order] if model else None
        st = row.state
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
        problems = [sv["message"] for sv in svcs or [] if sv.get("message") and sv["current_state"] == "failed"]
        if st.last_error or problems:
            view["message"] = st.last_error or "; ".join(problems)
        if st.warnings:
            view["warnings"] = list(st.warnings)
        if st.blue_green is not None or st.blue_green_last is not None:
            bg = bluegreen.view(self, row, snap, containers and services)
            if bg is not None:
                view["blue_green"] = bg
        return view

    def _try_snapshot(self, cluster_id: str, project: str | None, containers: bool) -> AppSnapshot | None:
        try:
            return self._snapshot(cluster_id, project, containers=containers)
        except ServiceUnavailable as e:
            log.warning("cluster %s: %s", cluster_id, e.message)
            return None

    def _settled(self, row: Project) -> Project:
        """The row as its last task left it. Reading the swarm takes a while: a task that ended after
        `row` was read has written its final state (and message) into a newer row; without this the
        view mixes a stale 'creating' row with the post-rollback swarm ('missing')."""
        return self.repo.settled(row)

    @engine_errors
    def list_projects(self, cluster_id: str, q: str | None = None, services: bool = True,
             containers: bool = True) -> list[dict[str, Any]]:
        self.usable_cluster(cluster_id)
        rows = self._rows(cluster_id, q)
        snap = self._try_snapshot(cluster_id, None, containers) if services and rows else None
        return [self.project_view(self._settled(r), snap, services=services, containers=containers) for r in rows]

    @engine_errors
    def get(self, cluster_id: str, name: str, services: bool = True, containers: bool = True) -> dict[str, Any]:
        self.usable_cluster(cluster_id)
        row = self.get_row(cluster_id, name)
        snap = self._try_snapshot(cluster_id, name, containers) if services else None
        return self.project_view(self._settled(row), snap, services=services, containers=containers)

    @engine_errors
    def container_logs(self, cluster_id: str, service_id: str, container_id: str, tail: int = 200) -> str:
        """The last `tail` lines of one container of a service (stdout and stderr)."""
        self.usable_cluster(cluster_id)
        row, model, svc = self._service_ref(cluster_id, service_id)
        snap = self._snapshot(cluster_id, row.name, containers=False)
        ref = next((r for r in self.targets(snap, model.services[svc].full_name)
                    if r.container_id == container_id), None)
        if ref is None:
            raise NotFound(f"container {container_id!r} is not one of {service_id}'s", code="ContainerNotFound")
        return self.engine(cluster_id).container_logs(ref, max(1, min(tail, 5000)))

    @engine_errors
    def logs(self, cluster_id: str, project: str, service_id: str | None, opts: LogOptions) -> Iterator[str]:
        """A project's (or one of its services') log lines, prefixed by container (see .logs)."""
        self.usable_cluster(cluster_id)
        if service_id is not None:
            row, model, svc = self._service_ref(cluster_id, service_id)
            names = [model.services[svc].full_name]
        else:
            row = self.get_row(cluster_id, project)
            whole = self.model_quiet(row)
            names = [sm.full_name for sm in whole.services.values()] if whole else []
        snap = self._snapshot(cluster_id, row.name, containers=True)
        try:
            streams = logs.open_all(self.engine(cluster_id), logs.sources(snap, names), opts)
        except AppEngineError as e:
            raise ServiceUnavailable(e.message) from None
        return logs.lines(streams, opts)

    @engine_errors
    def list_services(self, cluster_id: str, q: str | None = None, containers: bool = True) -> list[dict[str, Any]]:
        self.usable_cluster(cluster_id)
        rows = self._rows(cluster_id)
        snap = self._try_snapshot(cluster_id, None, containers) if rows else None
        out = []
        for row in rows:
            model = self.model_quiet(row)
            if model is None:
                continue
            for n in model.order:
                sid = model.services[n].full_name
                if q and q.lower() not in n.lower() and q.lower() not in sid.lower():
                    continue
                out.append(self.service_view(row, model, n, snap, containers))
        return out

    @engine_errors
    def get_service(self, cluster_id: str, service_id: str, containers: bool = True) -> dict[str, Any]:
        self.usable_cluster(cluster_id)
        row, model, svc = self._service_ref(cluster_id, service_id)
        snap = self._try_snapshot(cluster_id, row.name, containers)
        return self.service_view(row, model, svc, snap, containers)
