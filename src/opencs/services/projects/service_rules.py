"""The services of a project (spec §10.18–10.23): scale, start, stop and kill one service."""

from __future__ import annotations

from typing import Any

from opencs.compose import StackModel
from opencs.engines.apps import AppEngine, AppEngineError, ContainerRef
from opencs.errors import ApiError, BadRequest, NotFound
from opencs.services.projects.common import api_error, engine_errors, parse_signal
from opencs.services.projects.requests import ScaleService
from opencs.services.projects.views import ProjectViews
from opencs.store.models import Project
from opencs.store.project_state import ProjectState


class _Busy(Exception):
    pass


class ServiceRules(ProjectViews):
    def _service_change(self, cluster_id: str, service_id: str, change: Any, scale_to: int | None = None,
                        wait: float = 120.0) -> tuple[Project, StackModel, str, bool]:
        """Apply `change(state, svc)` (-> the new state) to the project, then converge that service
        (`scale_to`: only its replica count changed, set just that). While a project task runs, the
        change is the newest desired state: a project task converges to it after (or instead of)
        the running one, and this waits for it (-> True: converged by a task)."""
        self.usable_cluster(cluster_id)
        row, _, svc = self._service_ref(cluster_id, service_id)

        def apply(r: Project, busy: bool) -> ProjectState:
            if busy:
                raise _Busy
            new: ProjectState = change(r.state, svc)
            return new

        try:
            fresh = self.repo.change_state(cluster_id, row.name, apply)
        except _Busy:
            state = "scaling" if scale_to is not None else "updating"
            tid = self.begin(cluster_id, row.name, "project_deploy", {"op": "converge"},
                             mutate=lambda r, _a: {"state": change(r.state, svc), "current_state": state})
            self.wait(tid, wait)
            return row, self.model_of(row), svc, True
        if fresh is None:
            raise NotFound(f"service {service_id!r} not found", code="ServiceNotFound")
        row = fresh
        full_model = self.model_of(row)
        try:
            if scale_to is None or not self.scale_in_place(cluster_id, row.name, svc, scale_to):
                self.deploy_service(row, full_model, svc)
        except AppEngineError as e:
            raise api_error(e) from None
        return row, full_model, svc, False

    def _converge_service(self, cluster_id: str, model: StackModel, svc: str, timeout: float) -> None:
        try:
            self.engine(cluster_id).wait_converged(model, [svc], timeout=timeout)
        except AppEngineError as e:
            raise api_error(e) from None

    @engine_errors
    def scale_service(self, cluster_id: str, service_id: str, req: ScaleService) -> None:
        value = req.value
        self.usable_cluster(cluster_id)
        row, model, svc = self._service_ref(cluster_id, service_id)
        sm = model.services[svc]
        if sm.mode == "global":
            raise BadRequest(f"service {service_id} is global (one container on every node): it cannot be scaled",
                             code="InvalidParameter.Scale")
        self.check_host_scale(svc, sm, value, len(self.engine(cluster_id).nodes()), self.ipvs(cluster_id))

        previous: list[ProjectState] = []

        def change(st: ProjectState, s: str) -> ProjectState:
            previous.append(st)
            return st.changed(scale={**st.scale, s: value},
                              stopped=[x for x in st.stopped if x != s] if value > 0 else st.stopped)

        _, full_model, _, by_task = self._service_change(cluster_id, service_id, change, scale_to=value)
        if by_task:
            return
        try:
            self._converge_service(cluster_id, full_model, svc, 90)
            self.routes.sync()  # the router's backends follow the new containers now, not in a second
        except ApiError as e:
            # do not leave a scale behind that cannot be reached: back to the previous count
            old = previous[0].scale.get(svc, sm.replicas or 0)

            def undo(st: ProjectState, s: str) -> ProjectState:
                return st.changed(scale=previous[0].scale, stopped=previous[0].stopped)

            self._service_change(cluster_id, service_id, undo)
            raise ApiError(f"{e.message}; the service was scaled back to {old}", code=e.code,
                           status=e.status) from None

    @engine_errors
    def start_service(self, cluster_id: str, service_id: str) -> None:
        def change(st: ProjectState, s: str) -> ProjectState:
            return st.changed(stopped=[x for x in st.stopped if x != s])

        _, model, svc, by_task = self._service_change(cluster_id, service_id, change)
        if not by_task:
            self._converge_service(cluster_id, model, svc, 90)

    @engine_errors
    def stop_service(self, cluster_id: str, service_id: str, timeout: int = 10) -> None:
        self.usable_cluster(cluster_id)
        row, _, svc = self._service_ref(cluster_id, service_id)
        before = self._snapshot(cluster_id, row.name, containers=True)
        targets = self.targets(before, f"{row.name}_{svc}")

        def change(st: ProjectState, s: str) -> ProjectState:
            return st.changed(stopped=sorted(set(st.stopped) | {s}))

        _, model, _, by_task = self._service_change(cluster_id, service_id, change, wait=timeout + 120)
        if not by_task:
            self.stop_targets(self.engine(cluster_id), model, svc, targets, timeout)
            self._converge_service(cluster_id, model, svc, timeout + 60)

    @staticmethod
    def stop_targets(engine: AppEngine, model: StackModel, svc: str, targets: list[ContainerRef],
                      timeout: int) -> None:
        grace = model.services[svc].stop_grace_ns
        if timeout * 10**9 < grace and targets:
            # the swarm stops tasks with the service's own grace period; `t` shortens it
            engine.stop_containers(targets, timeout)

    @engine_errors
    def kill_service(self, cluster_id: str, service_id: str, signal: str | None) -> None:
        sig = parse_signal(signal)
        self.usable_cluster(cluster_id)
        row, _, svc = self._service_ref(cluster_id, service_id)
        snap = self._snapshot(cluster_id, row.name, containers=True)
        errors = self.engine(cluster_id).signal(self.targets(snap, f"{row.name}_{svc}"), sig)
        if errors:
            raise ApiError("the signal could not be delivered to every container: " + "; ".join(errors),
                           code="KillFailed", status=500)
