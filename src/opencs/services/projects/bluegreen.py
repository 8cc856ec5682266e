"""Blue-green releases (spec §10.13–10.15): the new version runs beside the old one and the router
splits each routed domain between them by weight, until the release is confirmed or rolled back.

Design
* The old version keeps its services ``<project>_<svc>`` ("blue"). The new version is the same
  stack namespace with services ``<project>_<svc>-new`` on their own networks ``<net>-new``
  (labelled ``opencs.release=green``), so ``docker stack ps``, the project view and a project
  delete see both, while each version's services only resolve each other by name. Named volumes
  are shared (one application, one data set). Published ports of the new version become host-mode
  ports chosen by the engine (the old version holds the fixed ones; the router needs no fixed port).
* ``Project.state.blue_green`` (a BlueGreenRelease) is the release: ``state`` (deploying → serving → confirming |
  rolling_back), ``old_version``, ``new_version``, ``weights`` (what the user asked for,
  ``{"old": N, "new": 100-N}``), ``slots`` (what the router applies now: ``{"blue": W, "green": W}``)
  and the new template/environment. The project row keeps the old version until the release is
  confirmed; ``state.blue_green_last`` tells how the last release ended (and why).
* Health gate: the release task waits until every new service runs its tasks (healthy, when a
  health check is defined — swarm reports a task running only once it is healthy); tasks that keep
  failing, cannot be placed or are not running within ``health_timeout`` roll the release back by
  itself: traffic back to the old version, new services removed, the reason in the project.
* Confirm: all traffic to the new services (drained: no HAProxy worker of the old weights left),
  then the old services are updated in place to the new version with the images the new services
  ran, traffic moves to them (both sides are the new version now), and the ``-new`` services are
  removed. Keeping the ``<project>_<svc>`` names means every other operation (scale, stop, kill,
  the service ids of the API) keeps working on the confirmed version.
* Rollback: the old services are re-converged to the old template (a no-op unless a failed confirm
  left them half-updated), all traffic goes to them, the new services are removed.
Every step is a stage of a durable task and idempotent (re-running it converges to the same state).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from opencs.compose import ComposeError, Options, StackModel, build_stack
from opencs.compose.release import GREEN, SUFFIX, green_model
from opencs.engines.apps import AppEngineError, AppSnapshot, DeployInput
from opencs.errors import BadRequest, Conflict
from opencs.services.projects.common import pin_image
from opencs.services.projects.requests import HEALTH_TIMEOUT, UpdateProject, parse_weights
from opencs.services.projects.stages import engine, handler, row_of, set_row, stage
from opencs.store.db import utcnow
from opencs.store.models import Project, Task
from opencs.store.project_state import BlueGreenOutcome, BlueGreenRelease, ProjectState, Slots, Weights
from opencs.tasks.engine import TaskContext
from opencs.tasks.registry import TaskHandler

if TYPE_CHECKING:
    from opencs.services.projects.rules import ProjectService
    from opencs.services.projects.views import ProjectViews

__all__ = ["confirm", "green_model", "parse_weights", "rollback", "start", "task_handlers", "view"]

log = logging.getLogger("opencs.projects")

TASK_TYPES = ("project_bg_release", "project_bg_confirm", "project_bg_rollback", "project_bg_weights")


def _iso_now() -> str:
    return utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------- the new version's stack


def new_model(ps: ProjectViews, row: Project, bg: BlueGreenRelease, *, quiet: bool = False) -> StackModel:
    """The release's template as the project's own services (what a confirm makes of it)."""
    opts = Options(ipvs=ps.ipvs(row.cluster_id),
                   cluster_volumes={k: {"driver": "local"} for k in ps.cluster_volume_names(row.cluster_id)}) \
        if quiet else ps.options(row.cluster_id)
    return build_stack(row.name, bg.template, dict(bg.environment), opts)


# ---------------------------------------------------------------- API side (ProjectService delegates here)


def start(ps: ProjectService, cluster_id: str, name: str, req: UpdateProject) -> str:
    """POST /projects/{name}/update with update_method blue-green; returns the task id."""
    ps.usable_cluster(cluster_id)
    row = ps.get_row(cluster_id, name)
    bg = row.state.blue_green
    template = req.template
    if bg is not None:
        if template is None and req.weights is not None:
            return set_weights(ps, cluster_id, row, bg, req.weights)
        raise Conflict(f"project {name!r} is in a blue-green release to version {bg.new_version!r}: "
                       "confirm it or roll it back first (to change the split, send only 'weights')",
                       code="BlueGreenInProgress")
    if template is None:
        raise BadRequest("Field 'template': a Compose YAML template (string) is required",
                         code="InvalidParameter.Template")
    version = req.version
    if not version:
        raise BadRequest("Field 'version': a blue-green update needs the new version", code="InvalidParameter.Version")
    if version == row.version:
        raise Conflict(f"project {name!r} already has version {version!r}: an update needs a new version",
                       code="VersionConflict")
    weights = req.weights or parse_weights(None)
    health_timeout = req.health_timeout
    description = req.description
    new_env = dict(req.environment) if req.environment is not None else dict(row.environment or {})
    new_env.setdefault("COMPOSE_PROJECT_NAME", name)
    latest = req.latest_image
    try:
        model = build_stack(name, template, new_env, ps.options(cluster_id))
    except ComposeError as e:
        raise BadRequest(f"Invalid template: {e}", code=e.code) from None
    try:
        gm = green_model(model)
    except ComposeError as e:
        raise BadRequest(e.message, code=e.code) from None
    old = ps.model_quiet(row)
    clash = sorted({s.full_name for s in gm.services.values()} & {s.full_name for s in (old.services.values()
                                                                                         if old else [])})
    if clash:
        raise BadRequest(f"service {clash[0]!r} exists in the current version: the new version's services are "
                         f"named <project>_<service>{SUFFIX}, rename that service", code="InvalidTemplate")
    ps.preflight(cluster_id, model)  # what a confirm will deploy

    def mutate(r: Project, _active: Task | None) -> dict[str, Any]:
        release = BlueGreenRelease(
            state="deploying", old_version=r.version, new_version=version, weights=Weights(**weights),
            slots=Slots(blue=100, green=0),  # no traffic to the new version before it is healthy
            template=template, environment=new_env, latest_image=latest,
            description=description if description is not None else r.description,
            health_timeout=health_timeout, started=_iso_now(), warnings=model.warnings)
        return {"state": r.state.changed(blue_green_last=None, blue_green=release, last_error=None),
                "current_state": "updating"}

    return ps.begin(cluster_id, name, "project_bg_release", {"latest": latest}, mutate=mutate)


def _release_changed(r: Project, **changes: Any) -> dict[str, Any]:
    """The `begin` values that change the row's release (it is there: begin holds the row)."""
    bg = r.state.blue_green
    if bg is None:
        raise Conflict(f"project {r.name!r} has no blue-green release in progress", code="NoBlueGreenRelease")
    return {"state": r.state.changed(blue_green=BlueGreenRelease.model_validate({**bg.model_dump(), **changes}))}


def set_weights(ps: ProjectService, cluster_id: str, row: Project, bg: BlueGreenRelease, raw: Any) -> str:
    weights = parse_weights(raw)
    if bg.state != "serving":
        raise Conflict(f"the blue-green release of {row.name!r} is {bg.state}: weights can change while "
                       "both versions serve", code="BlueGreenBusy")

    def mutate(r: Project, _active: Task | None) -> dict[str, Any]:
        return _release_changed(r, weights=weights)

    return ps.begin(cluster_id, row.name, "project_bg_weights", {"weights": weights}, mutate=mutate)


def _active(ps: ProjectService, cluster_id: str, name: str) -> tuple[Project, BlueGreenRelease]:
    ps.usable_cluster(cluster_id)
    row = ps.get_row(cluster_id, name)
    bg = row.state.blue_green
    if bg is None:
        raise Conflict(f"project {name!r} has no blue-green release in progress", code="NoBlueGreenRelease")
    return row, bg


def confirm(ps: ProjectService, cluster_id: str, name: str, force: bool) -> str:
    """force=true: all traffic to the new version, then the old one goes. force=false: the
    user's weights are kept, never overridden — so the release can only complete once they already
    send everything to the new version (else 409 WeightsNotShifted)."""
    row, bg = _active(ps, cluster_id, name)
    if bg.state not in ("serving", "confirming"):
        raise Conflict(f"the blue-green release of {name!r} is {bg.state}; it can be confirmed once both "
                       "versions serve", code="BlueGreenBusy")
    if not force and bg.weights.new != 100:
        raise Conflict(f"the configured weights still send {bg.weights.old}% of the requests to version "
                       f"{bg.old_version!r}: shift them first ({{\"update_method\": \"blue-green\", "
                       "\"weights\": {\"new\": 100}}) or confirm with force=true", code="WeightsNotShifted")

    def mutate(r: Project, _active: Task | None) -> dict[str, Any]:
        return {**_release_changed(r, state="confirming", message=None), "current_state": "updating"}

    return ps.begin(cluster_id, name, "project_bg_confirm", {"force": force}, mutate=mutate)


def rollback(ps: ProjectService, cluster_id: str, name: str, force: bool) -> str:
    """All traffic back to the old version, the new one removed (force: accepted, same effect —
    the spec says "currently just pass true")."""
    row, bg = _active(ps, cluster_id, name)
    params: dict[str, Any] = {"force": force}

    def mutate(r: Project, _active: Task | None) -> dict[str, Any]:
        # the version to restore, as it is now: a rolling change accepted while the rollback cleans
        # up writes the row's template, and follows this task
        params["restore"] = {"template": r.template, "environment": dict(r.environment or {})}
        return {**_release_changed(r, state="rolling_back", message=None), "current_state": "updating"}

    return ps.begin(cluster_id, name, "project_bg_rollback", params, mutate=mutate)


def view(ps: ProjectViews, row: Project, snap: AppSnapshot | None, containers: bool) -> dict[str, Any] | None:
    """``blue_green`` of the project view: the release in progress (with the new version's
    services and containers) or how the last one ended."""
    bg = row.state.blue_green
    if bg is None:
        last = row.state.blue_green_last
        return last.model_dump(mode="json") if last is not None else None
    out: dict[str, Any] = bg.model_dump(mode="json", include={"state", "old_version", "new_version", "weights",
                                                              "started", "message"})
    out["task_id"] = row.task_id or ""
    out["services"] = []
    try:
        gm = green_model(new_model(ps, row, bg, quiet=True))
    except (ComposeError, BadRequest) as e:
        out["message"] = out.get("message") or f"template: {e}"
        return out
    shadow = Project(cluster_id=row.cluster_id, name=row.name, state=ProjectState(), created=row.created,
                     updated=row.updated)
    for n in gm.order:
        sv = ps.service_view(shadow, gm, n, snap, containers)
        sv["release"] = "new"
        out["services"].append(sv)
    return out


# ---------------------------------------------------------------- engine helpers


def remove_green(ps: ProjectService, ctx: TaskContext, *, timeout: float = 60.0) -> None:
    """Remove the new version's services, wait for their containers, remove their networks."""
    project = ctx.params["project"]
    eng = engine(ps, ctx)
    eng.remove_services(project, release=GREEN)
    eng.wait_gone(project, release=GREEN, timeout=timeout)
    try:
        eng.remove_networks(project, release=GREEN)
    except AppEngineError as e:
        log.warning("project %s: %s", project, e.message)


def converge_blue(ps: ProjectService, ctx: TaskContext, model: StackModel, st: DeployInput, *,
                  timeout: float) -> None:
    """The project's own services to ``model`` (the new version at confirm, the old one at
    rollback): update in place, remove services the model no longer has (never the new version's),
    wait until they run."""
    eng = engine(ps, ctx)
    ctx.scratch.setdefault("t0", time.time())
    ctx.save()
    eng.deploy(model, st, prune=False)
    eng.remove_services(model.project, release="blue", keep={s.full_name for s in model.services.values()})
    eng.wait_converged(model, model.order, timeout=timeout, since=ctx.scratch["t0"], progress=ctx.progress)


# ---------------------------------------------------------------- task stages


def _bg(row: Project) -> BlueGreenRelease:
    bg = row.state.blue_green
    if bg is None:
        raise AppEngineError(f"project {row.name} has no blue-green release", "NoBlueGreenRelease")
    return bg


def _set_bg(ps: ProjectService, ctx: TaskContext, **changes: Any) -> BlueGreenRelease:
    bg = BlueGreenRelease.model_validate({**_bg(row_of(ps, ctx)).model_dump(), **changes})
    set_row(ps, ctx, state={"blue_green": bg})
    return bg


def _route(ps: ProjectService, ctx: TaskContext, blue: int, green: int) -> None:
    """Apply the split and wait until no request is served under the previous one."""
    _set_bg(ps, ctx, slots={"blue": int(blue), "green": int(green)})
    ps.routes.sync(drain=True)


def _images(bg: BlueGreenRelease) -> dict[str, str]:
    return {svc: p.ref for svc, p in bg.images.items()}


def _end(ps: ProjectService, ctx: TaskContext, outcome: str, reason: str, *, error: str | None = None) -> None:
    bg = row_of(ps, ctx).state.blue_green
    last = BlueGreenOutcome(state=outcome, old_version=bg.old_version if bg else None,
                            new_version=bg.new_version if bg else None, weights=bg.weights if bg else None,
                            started=bg.started if bg else None, finished=_iso_now(), message=reason)
    set_row(ps, ctx, state={"blue_green": None, "blue_green_last": last, "last_error": error},
            current_state="running")
    ps.routes.sync()


def _abort(ps: ProjectService, ctx: TaskContext, reason: str) -> None:
    """Back to the old version alone: traffic first, then the new version's services."""
    _route(ps, ctx, 100, 0)
    remove_green(ps, ctx)
    _end(ps, ctx, "rolled_back", reason, error=reason)


# ---- release


@stage
def _rel_prepare(ps: ProjectService, ctx: TaskContext) -> None:
    row = row_of(ps, ctx)
    bg = _bg(row)
    if "images" not in ctx.scratch:
        model = new_model(ps, row, bg)
        images: dict[str, dict[str, str]] = {}
        need = [n for n, s in model.services.items() if bg.latest_image or s.latest_image]
        if need:
            ctx.progress("resolving the newest images")
            digests = ps.check_images(engine(ps, ctx), model)
            for n in need:
                img = model.services[n].image
                if digests.get(img) and "@" not in img:
                    images[n] = {"image": img, "ref": pin_image(img, digests[img])}
        ctx.scratch["images"] = images
        ctx.save()
    _set_bg(ps, ctx, images=ctx.scratch["images"])


@stage
def _rel_deploy(ps: ProjectService, ctx: TaskContext) -> None:
    row = row_of(ps, ctx)
    bg = _bg(row)
    gm = green_model(new_model(ps, row, bg))
    ctx.scratch.setdefault("t0", time.time())
    ctx.save()
    ctx.progress(f"deploying version {bg.new_version} beside {bg.old_version}")
    ctx.result["actions"] = engine(ps, ctx).deploy(gm, DeployInput(images=_images(bg)), prune=False)


@stage
def _rel_health(ps: ProjectService, ctx: TaskContext) -> None:
    row = row_of(ps, ctx)
    bg = _bg(row)
    gm = green_model(new_model(ps, row, bg))
    engine(ps, ctx).wait_converged(gm, gm.order, timeout=float(bg.health_timeout or HEALTH_TIMEOUT),
                                   since=ctx.scratch.get("t0"), progress=ctx.progress)


@stage
def _rel_route(ps: ProjectService, ctx: TaskContext) -> None:
    bg = _set_bg(ps, ctx, state="serving")
    w = bg.weights
    _route(ps, ctx, w.old, w.new)
    set_row(ps, ctx, current_state="running")
    ctx.result.update(project=ctx.params["project"], state="serving", weights=w.model_dump())


def _rel_rollback(ps: ProjectService, ctx: TaskContext) -> None:
    err = ctx.scratch.get("error") or "the release failed"
    row = row_of(ps, ctx)
    bg = row.state.blue_green
    reason = (f"blue-green release of version {bg.new_version if bg else None} failed its health gate and was "
              f"rolled back (version {bg.old_version if bg else None} serves all requests): {err}")
    _abort(ps, ctx, reason)


# ---- weights


@stage
def _weights_route(ps: ProjectService, ctx: TaskContext) -> None:
    w = parse_weights(ctx.params.get("weights"))
    _set_bg(ps, ctx, weights=w)
    if _bg(row_of(ps, ctx)).state == "serving":
        _route(ps, ctx, w["old"], w["new"])
    ctx.result.update(project=ctx.params["project"], weights=w)


def _weights_rollback(ps: ProjectService, ctx: TaskContext) -> None:
    set_row(ps, ctx, state={"last_error": ctx.scratch.get("error") or "the weights could not be applied"})


# ---- confirm


@stage
def _conf_shift(ps: ProjectService, ctx: TaskContext) -> None:
    bg = _bg(row_of(ps, ctx))
    if "before" not in ctx.scratch:
        ctx.scratch["before"] = bg.slots.model_dump()
        ctx.save()
    ctx.progress("sending every request to the new version")
    _route(ps, ctx, 0, 100)


@stage
def _conf_promote(ps: ProjectService, ctx: TaskContext) -> None:
    row = row_of(ps, ctx)
    bg = _bg(row)
    if row.version == bg.new_version:
        return  # switched before a restart
    ctx.progress(f"updating {row.name}'s services to version {bg.new_version}")
    converge_blue(ps, ctx, new_model(ps, row, bg), DeployInput(images=_images(bg)),
                  timeout=float(bg.health_timeout or HEALTH_TIMEOUT))


@stage
def _conf_switch(ps: ProjectService, ctx: TaskContext) -> None:
    row = row_of(ps, ctx)
    bg = _bg(row)
    if row.version != bg.new_version:
        set_row(ps, ctx, previous_version=row.version, previous_template=row.template, version=bg.new_version,
                template=bg.template, environment=dict(bg.environment), latest_image=bg.latest_image,
                description=bg.description or row.description,
                state={"previous_environment": dict(row.environment or {}), "previous_images": row.state.images,
                       "previous_latest_image": row.latest_image, "images": bg.images, "scale": {},
                       "stopped": [], "warnings": bg.warnings, "update_method": "blue-green"})
    ctx.scratch["switched"] = True
    ctx.save()
    _route(ps, ctx, 100, 0)  # the project's own services run the new version now


@stage
def _conf_cleanup(ps: ProjectService, ctx: TaskContext) -> None:
    ctx.progress("removing the new version's temporary services")
    remove_green(ps, ctx)


@stage
def _conf_finish(ps: ProjectService, ctx: TaskContext) -> None:
    bg = _bg(row_of(ps, ctx))
    _end(ps, ctx, "confirmed", f"version {bg.new_version} serves all requests; version "
                           f"{bg.old_version} was removed")
    ctx.result.update(project=ctx.params["project"], version=bg.new_version)


def _conf_rollback(ps: ProjectService, ctx: TaskContext) -> None:
    err = ctx.scratch.get("error") or "the confirm failed"
    if ctx.scratch.get("switched"):  # the new version is the project's: only the cleanup is missing
        try:
            remove_green(ps, ctx)
        finally:
            _end(ps, ctx, "confirmed", f"confirmed, but removing the temporary services failed: {err}", error=err)
        return
    # the old services may be half-updated: back to the old version, the split as before
    row = row_of(ps, ctx)
    model = ps.model_of(row)
    try:
        converge_blue(ps, ctx, model, ps.deploy_state(row, model), timeout=120)
    except Exception as e:
        _set_bg(ps, ctx, state="serving", message=f"confirm failed ({err}); restoring version "
                                              f"{row.version} failed too: {getattr(e, 'message', e)}")
        raise
    before = ctx.scratch.get("before") or {"blue": 100, "green": 0}
    _route(ps, ctx, before.get("blue", 100), before.get("green", 0))
    _set_bg(ps, ctx, state="serving", message=f"confirm failed, both versions serve as before: {err}")
    set_row(ps, ctx, current_state="running", state={"last_error": f"confirm failed: {err}"})


# ---- rollback


@stage
def _rb_restore(ps: ProjectService, ctx: TaskContext) -> None:
    row = row_of(ps, ctx)
    restore = ctx.params.get("restore") or {}
    model = ps.model_of(row, template=restore.get("template"), environment=restore.get("environment"))
    converge_blue(ps, ctx, model, ps.deploy_state(row, model), timeout=120)


@stage
def _rb_switch(ps: ProjectService, ctx: TaskContext) -> None:
    ctx.progress("sending every request to the old version")
    _route(ps, ctx, 100, 0)


@stage
def _rb_cleanup(ps: ProjectService, ctx: TaskContext) -> None:
    remove_green(ps, ctx)


@stage
def _rb_finish(ps: ProjectService, ctx: TaskContext) -> None:
    bg = _bg(row_of(ps, ctx))
    _end(ps, ctx, "rolled_back", f"rolled back on request: version {bg.old_version} serves all requests, "
                             f"version {bg.new_version} was removed")


def _rb_rollback(ps: ProjectService, ctx: TaskContext) -> None:
    err = ctx.scratch.get("error") or "the rollback failed"
    _set_bg(ps, ctx, state="serving", message=f"rollback failed (retry it): {err}")
    set_row(ps, ctx, current_state="failed", state={"last_error": f"rollback failed: {err}"})


def task_handlers(ps: ProjectService) -> list[TaskHandler]:
    """This module's task types, for the composition root's TaskRegistry."""
    return [
        handler(ps, "project_bg_release", [("prepare", _rel_prepare), ("deploy", _rel_deploy),
                                           ("health", _rel_health), ("route", _rel_route)], _rel_rollback),
        handler(ps, "project_bg_weights", [("route", _weights_route)], _weights_rollback),
        handler(ps, "project_bg_confirm", [("shift", _conf_shift), ("promote", _conf_promote),
                                           ("switch", _conf_switch), ("cleanup", _conf_cleanup),
                                           ("finish", _conf_finish)], _conf_rollback),
        handler(ps, "project_bg_rollback", [("restore", _rb_restore), ("switch", _rb_switch),
                                            ("cleanup", _rb_cleanup), ("finish", _rb_finish)], _rb_rollback),
    ]
