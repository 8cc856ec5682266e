"""Durable tasks of the Application API: deploy (create/update/redeploy/start), stop, remove.

Every stage converges the swarm to what the project row says (idempotent: re-running a stage after a
crash re-applies the same state; unchanged services are recognised by their config hash). A failed
create removes what it made; a failed update rolls back to the previous release.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from docker.errors import DockerException

from opencs.compose import ComposeError
from opencs.engines.swarm import stack
from opencs.errors import ApiError
from opencs.routing.router import sync_routes
from opencs.services.projects import ProjectService
from opencs.store.db import utcnow
from opencs.store.models import Project
from opencs.tasks.engine import StageFailed, TaskContext
from opencs.tasks.registry import TaskHandler

if TYPE_CHECKING:
    from opencs.compose import StackModel

log = logging.getLogger("opencs.projects")

CONVERGE_TIMEOUT = 180.0


def _ps(ctx: TaskContext) -> ProjectService:
    return ProjectService(ctx.services)


def _row(ctx: TaskContext) -> Project:
    with ctx.services.db.session() as s:
        row = s.get(Project, (ctx.cluster_id, ctx.params["project"]))
    if row is None:
        raise StageFailed(f"project {ctx.params['project']} vanished", "ProjectNotFound")
    return row


def _set(ctx: TaskContext, extra: dict[str, Any] | None = None, **values: Any) -> None:
    with ctx.services.db.session() as s:
        row = s.get(Project, (ctx.cluster_id, ctx.params["project"]))
        if row is None:
            return
        for k, v in values.items():
            setattr(row, k, v)
        if extra is not None:
            row.extra = {**(row.extra or {}), **extra}
        row.updated = utcnow()


def _stage(fn: Any) -> Any:
    """Turn engine/template errors into coded StageFailed and remember the message for rollbacks."""

    @functools.wraps(fn)
    def run(ctx: TaskContext) -> None:
        try:
            fn(ctx)
        except stack.StackError as e:
            ctx.scratch["error"] = e.message
            raise StageFailed(e.message, e.code) from None
        except ComposeError as e:
            ctx.scratch["error"] = str(e)
            raise StageFailed(f"Invalid template: {e}", e.code) from None
        except ApiError as e:
            ctx.scratch["error"] = e.message
            raise StageFailed(e.message, e.code) from None
        except StageFailed as e:
            ctx.scratch["error"] = str(e)
            raise
        except (DockerException, OSError) as e:
            ctx.scratch["error"] = f"engine error: {e}"
            raise StageFailed(f"engine error: {e}", "EngineError") from None

    return run


def _model(ctx: TaskContext, row: Project) -> StackModel:
    return _ps(ctx).model_of(row)


def _images(ctx: TaskContext) -> dict[str, str]:
    return {svc: v["ref"] for svc, v in (ctx.scratch.get("images") or {}).items()}


# ---------------------------------------------------------------- deploy (create, update, redeploy, start)


@_stage
def _deploy_prepare(ctx: TaskContext) -> None:
    ps = _ps(ctx)
    row = _row(ctx)
    model = _model(ctx, row)
    if "images" not in ctx.scratch:
        st = ps.deploy_state(row, model)
        images = {svc: {"image": model.services[svc].image, "ref": ref} for svc, ref in st["images"].items()}
        latest_all = bool(ctx.params.get("latest"))
        need = [n for n, s in model.services.items() if latest_all or s.latest_image]
        if need:
            ctx.progress("resolving the newest images")
            digests = ps.check_images(ctx.cluster_id or "", model, ps.manager_host(ctx.cluster_id or ""))
            for n in need:
                img = model.services[n].image
                if digests.get(img) and "@" not in img:
                    images[n] = {"image": img, "ref": stack.pin(img, digests[img])}
        ctx.scratch["images"] = images
    if ctx.params.get("op") == "redeploy" and "force" not in ctx.scratch:
        snap = ps._snapshot(ctx.cluster_id or "", row.name, containers=False)
        force = {}
        for n, s in model.services.items():
            live = snap.service(s.full_name)
            cur = int(live["Spec"]["TaskTemplate"].get("ForceUpdate", 0)) if live else 0
            force[n] = cur + 1
        ctx.scratch["force"] = force
    ctx.save()


@_stage
def _deploy_apply(ctx: TaskContext) -> None:
    ps = _ps(ctx)
    row = _row(ctx)
    model = _model(ctx, row)
    st = ps.deploy_state(row, model)
    manager = ps.manager_host(ctx.cluster_id or "")
    ctx.scratch.setdefault("t0", time.time())
    ctx.save()
    kw = {"replicas": st["replicas"], "stopped": st["stopped"], "images": _images(ctx),
          "force": ctx.scratch.get("force") or {}}
    if ctx.params.get("op") == "start":
        for level in model.levels:  # dependencies first, each running before the next level starts
            ctx.progress(f"starting {', '.join(level)}")
            stack.deploy(manager, model, only=level, prune=False, **kw)
            stack.wait_converged(manager, model, level, timeout=CONVERGE_TIMEOUT, since=ctx.scratch["t0"],
                                 progress=ctx.progress)
        return
    ctx.progress("deploying the stack")
    plan = stack.deploy(manager, model, **kw)
    ctx.result["actions"] = plan.actions


@_stage
def _deploy_converge(ctx: TaskContext) -> None:
    """Until the project's services run (a scale: just the scaled service)."""
    ps = _ps(ctx)
    row = _row(ctx)
    model = _model(ctx, row)
    names = [ctx.params["service"]] if ctx.params.get("service") else model.order
    stack.wait_converged(ps.manager_host(ctx.cluster_id or ""), model, names, timeout=CONVERGE_TIMEOUT,
                         since=ctx.scratch.get("t0"), progress=ctx.progress)


@_stage
def _deploy_finish(ctx: TaskContext) -> None:
    sync_routes(ctx.services)  # routed domains reach the new containers when the project says "running"
    _set(ctx, current_state="running", extra={"images": ctx.scratch.get("images") or {}, "last_error": None})
    ctx.result.update(project=ctx.params["project"], state="running")


def _teardown(ctx: TaskContext, *, volumes: bool, tolerate: bool) -> list[str]:
    """Remove the stack's services, wait for their containers, remove networks (and volumes)."""
    ps = _ps(ctx)
    project = ctx.params["project"]
    cid = ctx.cluster_id or ""
    problems: list[str] = []
    nodes = ps.node_infos(cid)
    try:
        manager = ps.manager_host(cid)
        stack.remove_services(manager, project)
    except (ApiError, DockerException, OSError) as e:
        if not tolerate:
            raise
        problems.append(f"services: {e}")
        manager = ""
    try:
        stack.wait_gone(nodes, project, timeout=60)
    except stack.StackError as e:
        if not tolerate:
            raise
        problems.append(e.message)
    if manager:
        try:
            stack.remove_networks(manager, project)
        except stack.StackError as e:
            if not tolerate:
                raise
            problems.append(e.message)
    if volumes:
        errs = stack.remove_project_volumes(nodes, project)
        if errs and not tolerate:
            raise stack.StackError("volumes could not be removed: " + "; ".join(errs), "RemoveFailed")
        problems += errs
    return problems


def _deploy_rollback(ctx: TaskContext) -> None:
    op = ctx.params.get("op")
    err = ctx.scratch.get("error") or "the deployment failed"
    if op == "create":
        problems = _teardown(ctx, volumes=True, tolerate=True)
        note = f" (cleanup: {'; '.join(problems)})" if problems else ""
        _set(ctx, current_state="failed", extra={"last_error": f"deployment failed and was removed: {err}{note}"})
        return
    if op == "update":
        row = _row(ctx)
        extra = row.extra or {}
        if row.previous_template is None:
            _set(ctx, current_state="failed", extra={"last_error": err})
            return
        failed_version = row.version
        _set(ctx, template=row.previous_template, version=row.previous_version or row.version,
             environment=extra.get("previous_environment", row.environment),
             latest_image=bool(extra.get("previous_latest_image", False)), current_state="updating",
             extra={"images": extra.get("previous_images") or {}, "scale": {}, "stopped": []})
        try:
            ps = _ps(ctx)
            row = _row(ctx)
            model = ps.model_of(row)
            st = ps.deploy_state(row, model)
            manager = ps.manager_host(ctx.cluster_id or "")
            stack.deploy(manager, model, **st)
            stack.wait_converged(manager, model, model.order, timeout=CONVERGE_TIMEOUT)
        except Exception as e:  # the old release does not come back either
            _set(ctx, current_state="failed",
                 extra={"last_error": f"update to version {failed_version} failed ({err}); rolling back to "
                                      f"version {row.version} failed too: {getattr(e, 'message', e)}"})
            raise
        _set(ctx, current_state="running",
             extra={"last_error": f"update to version {failed_version} failed and was rolled back: {err}"})
        return
    if op == "scale":  # back to the count before (a trigger asked for more than can run)
        row = _row(ctx)
        svc = ctx.params["service"]
        scale = {**((row.extra or {}).get("scale") or {}), svc: int(ctx.params["previous_scale"])}
        _set(ctx, extra={"scale": scale})
        try:
            row = _row(ctx)
            _ps(ctx).deploy_service(row, _model(ctx, row), svc)
        finally:
            _set(ctx, current_state="running",
                 extra={"last_error": f"scaling {svc} failed and was undone: {err}"})
        return
    _set(ctx, current_state="failed", extra={"last_error": err})


# ---------------------------------------------------------------- scale one service (triggers)


@_stage
def _scale_apply(ctx: TaskContext) -> None:
    """Only the replica count changes: set it on the service itself, first thing (a trigger's latency
    is the time until the engine has the new count). A service missing from the swarm gets the
    full deploy of that service instead."""
    ctx.scratch.setdefault("t0", time.time())
    cid, project, svc = ctx.cluster_id or "", ctx.params["project"], ctx.params["service"]
    ps = _ps(ctx)
    if ps.scale_in_place(cid, project, svc, int(ctx.params["target"])):
        ctx.result["actions"] = {svc: "scaled"}
    else:
        row = _row(ctx)
        ctx.result["actions"] = ps.deploy_service(row, _model(ctx, row), svc).actions
    ctx.save()


# ---------------------------------------------------------------- stop


@_stage
def _stop(ctx: TaskContext) -> None:
    ps = _ps(ctx)
    row = _row(ctx)
    model = _model(ctx, row)
    st = ps.deploy_state(row, model)
    manager = ps.manager_host(ctx.cluster_id or "")
    timeout = int(ctx.params.get("timeout", 10))
    for level in reversed(model.levels):  # dependants first
        ctx.progress(f"stopping {', '.join(level)}")
        snap = ps._snapshot(ctx.cluster_id or "", row.name, containers=False)
        targets = {svc: ps._targets(snap, model.services[svc].full_name) for svc in level}
        stack.deploy(manager, model, only=level, prune=False, replicas=st["replicas"], stopped=model.order,
                     images=st["images"])
        for svc in level:
            ps._stop_targets(model, svc, targets[svc], timeout)
        stack.wait_converged(manager, model, level, timeout=timeout + 60, progress=ctx.progress)


@_stage
def _stop_finish(ctx: TaskContext) -> None:
    _set(ctx, current_state="stopped", extra={"last_error": None})
    sync_routes(ctx.services)


def _fail_rollback(ctx: TaskContext) -> None:
    _set(ctx, current_state="failed", extra={"last_error": ctx.scratch.get("error") or "the operation failed"})


# ---------------------------------------------------------------- remove


@_stage
def _remove(ctx: TaskContext) -> None:
    problems = _teardown(ctx, volumes=bool(ctx.params.get("volumes")), tolerate=bool(ctx.params.get("force")))
    if problems:
        ctx.result["ignored_problems"] = problems


@_stage
def _remove_forget(ctx: TaskContext) -> None:
    with ctx.services.db.session() as s:
        row = s.get(Project, (ctx.cluster_id, ctx.params["project"]))
        if row is not None:
            s.delete(row)
    ctx.result["project"] = ctx.params["project"]
    sync_routes(ctx.services)


def task_handlers() -> list[TaskHandler]:
    """This module's task types, for the composition root's TaskRegistry."""
    return [
        TaskHandler("project_deploy", [("prepare", _deploy_prepare), ("deploy", _deploy_apply),
            ("converge", _deploy_converge), ("finish", _deploy_finish)],
            rollback=_deploy_rollback),
        TaskHandler("project_scale", [("scale", _scale_apply), ("converge", _deploy_converge),
            ("finish", _deploy_finish)], rollback=_deploy_rollback),
        TaskHandler("project_stop", [("stop", _stop), ("finish", _stop_finish)], rollback=_fail_rollback),
        TaskHandler("project_remove", [("remove", _remove), ("forget", _remove_forget)], rollback=_fail_rollback,
            max_attempts=5),
    ]
