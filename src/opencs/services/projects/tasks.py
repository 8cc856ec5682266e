"""Durable tasks of the Application API: deploy (create/update/redeploy/start), stop, remove.

Every stage converges the swarm to what the project row says (idempotent: re-running a stage after a
crash re-applies the same state; unchanged services are recognised by their config hash). A failed
create leaves its services in place for inspection (or removes what it made, when the request asked
to roll back); a failed update rolls back to the previous release.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from opencs.engines.apps import AppEngineError
from opencs.services.projects.common import pin_image
from opencs.services.projects.stages import engine, handler, row_of, set_row, stage
from opencs.store.models import Project
from opencs.tasks.engine import TaskContext
from opencs.tasks.registry import TaskHandler

if TYPE_CHECKING:
    from opencs.compose import StackModel
    from opencs.services.projects.rules import ProjectService

log = logging.getLogger("opencs.projects")

CONVERGE_TIMEOUT = 180.0


def _model(ps: ProjectService, row: Project) -> StackModel:
    return ps.model_of(row)


def _images(ctx: TaskContext) -> dict[str, str]:
    return {svc: v["ref"] for svc, v in (ctx.scratch.get("images") or {}).items()}


# ---------------------------------------------------------------- deploy (create, update, redeploy, start)


@stage
def _deploy_prepare(ps: ProjectService, ctx: TaskContext) -> None:
    row = row_of(ps, ctx)
    model = _model(ps, row)
    if "images" not in ctx.scratch:
        st = ps.deploy_state(row, model)
        images = {svc: {"image": model.services[svc].image, "ref": ref} for svc, ref in st.images.items()}
        latest_all = bool(ctx.params.get("latest"))
        need = [n for n, s in model.services.items() if latest_all or s.latest_image]
        if need:
            ctx.progress("resolving the newest images")
            digests = ps.check_images(engine(ps, ctx), model)
            for n in need:
                img = model.services[n].image
                if digests.get(img) and "@" not in img:
                    images[n] = {"image": img, "ref": pin_image(img, digests[img])}
        ctx.scratch["images"] = images
    recreate = ctx.params.get("op") == "redeploy" or ctx.params.get("recreate")  # also when a redeploy was folded in
    if recreate and "force" not in ctx.scratch:
        snap = engine(ps, ctx).snapshot(row.name, containers=False)
        force = {}
        for n, s in model.services.items():
            live = snap.service(s.full_name)
            force[n] = (live.force_update if live else 0) + 1
        ctx.scratch["force"] = force
    ctx.save()


@stage
def _deploy_apply(ps: ProjectService, ctx: TaskContext) -> None:
    row = row_of(ps, ctx)
    model = _model(ps, row)
    st = replace(ps.deploy_state(row, model), images=_images(ctx), force=ctx.scratch.get("force") or {})
    eng = engine(ps, ctx)
    ctx.scratch.setdefault("t0", time.time())
    ctx.save()
    if ctx.params.get("op") == "start":
        for level in model.levels:  # dependencies first, each running before the next level starts
            ctx.progress(f"starting {', '.join(level)}")
            eng.deploy(model, st, only=level, prune=False)
            eng.wait_converged(model, level, timeout=CONVERGE_TIMEOUT, since=ctx.scratch["t0"],
                               progress=ctx.progress)
        return
    ctx.progress("deploying the stack")
    ctx.result["actions"] = eng.deploy(model, st)


@stage
def _deploy_converge(ps: ProjectService, ctx: TaskContext) -> None:
    """Until the project's services run (a scale: just the scaled service)."""
    row = row_of(ps, ctx)
    model = _model(ps, row)
    names = [ctx.params["service"]] if ctx.params.get("service") else model.order
    engine(ps, ctx).wait_converged(model, names, timeout=CONVERGE_TIMEOUT, since=ctx.scratch.get("t0"),
                                   progress=ctx.progress)


@stage
def _deploy_finish(ps: ProjectService, ctx: TaskContext) -> None:
    ps.routes.sync()  # routed domains reach the new containers when the project says "running"
    set_row(ps, ctx, current_state="running", state={"images": ctx.scratch.get("images") or {}, "last_error": None})
    ctx.result.update(project=ctx.params["project"], state="running")


def _teardown(ps: ProjectService, ctx: TaskContext, *, volumes: bool, tolerate: bool) -> list[str]:
    """Remove the stack's services, wait for their containers, remove networks (and volumes)."""
    project = ctx.params["project"]
    eng = engine(ps, ctx)
    problems: list[str] = []
    reached = True
    try:
        eng.remove_services(project)
    except AppEngineError as e:
        if not tolerate:
            raise
        problems.append(f"services: {e.message}")
        reached = False
    try:
        eng.wait_gone(project, timeout=60)
    except AppEngineError as e:
        if not tolerate:
            raise
        problems.append(e.message)
    if reached:
        try:
            eng.remove_networks(project)
        except AppEngineError as e:
            if not tolerate:
                raise
            problems.append(e.message)
    if volumes:
        errs = eng.remove_project_volumes(project)
        if errs and not tolerate:
            raise AppEngineError("volumes could not be removed: " + "; ".join(errs), "RemoveFailed")
        problems += errs
    return problems


def _deploy_rollback(ps: ProjectService, ctx: TaskContext) -> None:
    op = ctx.params.get("op")
    err = ctx.scratch.get("error") or "the deployment failed"
    if op == "create" and ctx.params.get("rollback"):  # the request asked for it
        problems = _teardown(ps, ctx, volumes=True, tolerate=True)
        note = f" (cleanup: {'; '.join(problems)})" if problems else ""
        set_row(ps, ctx, current_state="failed",
                state={"last_error": f"deployment failed and was removed: {err}{note}"})
        return
    if op == "create":  # left in place: a failed service is not restarted again and keeps its container
        ps.routes.sync()
        set_row(ps, ctx, current_state="failed",
                state={"last_error": f"deployment failed: {err} (its services are left in place for inspection; "
                                     "delete the project to remove them)"})
        return
    if op == "update":
        row = row_of(ps, ctx)
        st = row.state
        if row.previous_template is None:
            set_row(ps, ctx, current_state="failed", state={"last_error": err})
            return
        failed_version = row.version
        set_row(ps, ctx, template=row.previous_template, version=row.previous_version or row.version,
             environment=st.previous_environment if st.previous_environment is not None else row.environment,
             latest_image=st.previous_latest_image, current_state="updating",
             state={"images": st.previous_images, "scale": {}, "stopped": []})
        try:
            row = row_of(ps, ctx)
            model = ps.model_of(row)
            eng = engine(ps, ctx)
            actions = eng.deploy(model, ps.deploy_state(row, model))
            # the swarm may have rolled the failed update back to this release already: then the
            # deploy changes nothing, and the service's "rollback_completed" is that, not a failure
            eng.wait_converged(model, model.order, timeout=CONVERGE_TIMEOUT,
                               unchanged=[n for n, a in actions.items() if a in ("unchanged", "scaled")])
        except Exception as e:  # the old release does not come back either
            set_row(ps, ctx, current_state="failed",
                 state={"last_error": f"update to version {failed_version} failed ({err}); rolling back to "
                                      f"version {row.version} failed too: {getattr(e, 'message', e)}"})
            raise
        set_row(ps, ctx, current_state="running",
             state={"last_error": f"update to version {failed_version} failed and was rolled back: {err}"})
        return
    if op == "scale":  # back to the count before (a trigger asked for more than can run)
        row = row_of(ps, ctx)
        svc = ctx.params["service"]
        scale = {**row.state.scale, svc: int(ctx.params["previous_scale"])}
        set_row(ps, ctx, state={"scale": scale})
        try:
            row = row_of(ps, ctx)
            ps.deploy_service(row, _model(ps, row), svc)
        finally:
            set_row(ps, ctx, current_state="running",
                 state={"last_error": f"scaling {svc} failed and was undone: {err}"})
        return
    set_row(ps, ctx, current_state="failed", state={"last_error": err})


# ---------------------------------------------------------------- scale one service (triggers)


@stage
def _scale_apply(ps: ProjectService, ctx: TaskContext) -> None:
    """Only the replica count changes: set it on the service itself, first thing (a trigger's latency
    is the time until the engine has the new count). A service missing from the swarm gets the
    full deploy of that service instead."""
    ctx.scratch.setdefault("t0", time.time())
    cid, project, svc = ctx.cluster_id or "", ctx.params["project"], ctx.params["service"]
    # the row's count, not the one asked when the task was made: calls folded into it count too
    target = row_of(ps, ctx).state.scale.get(svc, int(ctx.params["target"]))
    if ps.scale_in_place(cid, project, svc, target):
        ctx.result["actions"] = {svc: "scaled"}
    else:
        row = row_of(ps, ctx)
        ctx.result["actions"] = ps.deploy_service(row, _model(ps, row), svc)
    ctx.save()


# ---------------------------------------------------------------- stop


@stage
def _stop(ps: ProjectService, ctx: TaskContext) -> None:
    row = row_of(ps, ctx)
    model = _model(ps, row)
    st = replace(ps.deploy_state(row, model), stopped=model.order)
    eng = engine(ps, ctx)
    timeout = int(ctx.params.get("timeout", 10))
    for level in reversed(model.levels):  # dependants first
        ctx.progress(f"stopping {', '.join(level)}")
        snap = eng.snapshot(row.name, containers=False)
        targets = {svc: ps.targets(snap, model.services[svc].full_name) for svc in level}
        eng.deploy(model, st, only=level, prune=False)
        for svc in level:
            ps.stop_targets(eng, model, svc, targets[svc], timeout)
        eng.wait_converged(model, level, timeout=timeout + 60, progress=ctx.progress)


@stage
def _stop_finish(ps: ProjectService, ctx: TaskContext) -> None:
    set_row(ps, ctx, current_state="stopped", state={"last_error": None})
    ps.routes.sync()


def _fail_rollback(ps: ProjectService, ctx: TaskContext) -> None:
    set_row(ps, ctx, current_state="failed", state={"last_error": ctx.scratch.get("error") or "the operation failed"})


# ---------------------------------------------------------------- remove


@stage
def _remove(ps: ProjectService, ctx: TaskContext) -> None:
    problems = _teardown(ps, ctx, volumes=bool(ctx.params.get("volumes")), tolerate=bool(ctx.params.get("force")))
    if problems:
        ctx.result["ignored_problems"] = problems


@stage
def _remove_forget(ps: ProjectService, ctx: TaskContext) -> None:
    ps.repo.delete(ctx.cluster_id or "", ctx.params["project"])
    ctx.result["project"] = ctx.params["project"]
    ps.routes.sync()


def task_handlers(ps: ProjectService) -> list[TaskHandler]:
    """This module's task types, for the composition root's TaskRegistry."""
    return [
        handler(ps, "project_deploy", [("prepare", _deploy_prepare), ("deploy", _deploy_apply),
                                       ("converge", _deploy_converge), ("finish", _deploy_finish)], _deploy_rollback),
        handler(ps, "project_scale", [("scale", _scale_apply), ("converge", _deploy_converge),
                                      ("finish", _deploy_finish)], _deploy_rollback),
        handler(ps, "project_stop", [("stop", _stop), ("finish", _stop_finish)], _fail_rollback),
        handler(ps, "project_remove", [("remove", _remove), ("forget", _remove_forget)], _fail_rollback,
                max_attempts=5),
    ]
