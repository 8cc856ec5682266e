"""Blue-green releases (spec §10.13–10.15): the new version runs beside the old one and the router
splits each routed domain between them by weight, until the release is confirmed or rolled back.

Design
* The old version keeps its services ``<project>_<svc>`` ("blue"). The new version is the same
  stack namespace with services ``<project>_<svc>-new`` on their own networks ``<net>-new``
  (labelled ``opencs.release=green``), so ``docker stack ps``, the project view and a project
  delete see both, while each version's services only resolve each other by name. Named volumes
  are shared (one application, one data set). Published ports of the new version become host-mode
  ports chosen by the engine (the old version holds the fixed ones; the router needs no fixed port).
* ``Project.extra["blue_green"]`` is the release: ``state`` (deploying → serving → confirming |
  rolling_back), ``old_version``, ``new_version``, ``weights`` (what the user asked for,
  ``{"old": N, "new": 100-N}``), ``slots`` (what the router applies now: ``{"blue": W, "green": W}``)
  and the new template/environment. The project row keeps the old version until the release is
  confirmed; ``extra["blue_green_last"]`` tells how the last release ended (and why).
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

import copy
import dataclasses
import logging
import time
from contextlib import closing, suppress
from typing import TYPE_CHECKING, Any

from docker.errors import DockerException, NotFound

from opencs.compose import ComposeError, Options, StackModel, build_stack
from opencs.compose.normalize import MAX_SERVICE_NAME, NAMESPACE_LABEL
from opencs.engines.swarm import client, stack
from opencs.errors import BadRequest, Conflict
from opencs.routing.router import RELEASE_LABEL, sync_routes
from opencs.services.project_tasks import _ps, _row, _set, _stage
from opencs.store.db import utcnow
from opencs.store.models import Project
from opencs.tasks.engine import TaskContext
from opencs.tasks.registry import TaskHandler

if TYPE_CHECKING:
    from opencs.services.projects import ProjectService

log = logging.getLogger("opencs.projects")

GREEN = "green"
SUFFIX = "-new"  # <project>_<svc>-new, <project>_default-new
ACTIVE = "blue_green"
LAST = "blue_green_last"
DEFAULT_WEIGHTS = {"old": 50, "new": 50}
HEALTH_TIMEOUT = 120
TASK_TYPES = ("project_bg_release", "project_bg_confirm", "project_bg_rollback", "project_bg_weights")


def _iso_now() -> str:
    return utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------- the new version's stack


def green_model(model: StackModel) -> StackModel:
    """The stack of ``model`` as the new version beside the old one (see the module doc)."""
    m = copy.deepcopy(model)
    renamed: dict[str, str] = {}
    for key, nm in list(m.networks.items()):
        if nm.external:
            continue
        renamed[nm.name] = nm.name + SUFFIX
        m.networks[key] = dataclasses.replace(nm, name=nm.name + SUFFIX, labels={**nm.labels, RELEASE_LABEL: GREEN})
    for svc in m.services.values():
        svc.full_name += SUFFIX
        if len(svc.full_name) > MAX_SERVICE_NAME:
            raise BadRequest(f"service {svc.name}: the new version's service id {svc.full_name!r} is longer than "
                             f"{MAX_SERVICE_NAME} characters", code="InvalidTemplate")
        spec = svc.spec
        spec["Name"] = svc.full_name
        spec["Labels"][RELEASE_LABEL] = GREEN
        cs = spec["TaskTemplate"]["ContainerSpec"]
        cs["Labels"] = {**(cs.get("Labels") or {}), RELEASE_LABEL: GREEN}
        for att in spec["TaskTemplate"].get("Networks") or []:
            att["Target"] = renamed.get(att["Target"], att["Target"])
        ep = spec.get("EndpointSpec") or {}
        if ep.get("Ports"):
            # the old version holds the fixed ports: the engine picks the new version's (host mode)
            seen: dict[tuple[int, str], dict[str, Any]] = {}
            for p in ep["Ports"]:
                k = (int(p["TargetPort"]), p.get("Protocol", "tcp"))
                seen.setdefault(k, {"Protocol": k[1], "TargetPort": k[0], "PublishMode": "host"})
            ep["Ports"] = list(seen.values())
        svc.published = []
    return m


def new_model(ps: ProjectService, row: Project, bg: dict[str, Any], *, quiet: bool = False) -> StackModel:
    """The release's template as the project's own services (what a confirm makes of it)."""
    opts = Options(ipvs=ps.ipvs(row.cluster_id),
                   cluster_volumes={k: {"driver": "local"} for k in ps._cluster_volume_names(row.cluster_id)}) \
        if quiet else ps.options(row.cluster_id)
    return build_stack(row.name, bg["template"], bg.get("environment") or {}, opts)


def parse_weights(raw: Any, default: dict[str, int] | None = None) -> dict[str, int]:
    """``{"old": 80, "new": 20}`` (either key alone: the other is the rest of 100)."""
    if raw is None:
        return dict(default or DEFAULT_WEIGHTS)
    if not isinstance(raw, dict) or not set(raw) <= {"old", "new"} or not raw:
        raise BadRequest("Field 'weights': an object {\"old\": N, \"new\": 100-N} (percent of the requests)",
                         code="InvalidParameter.Weights")
    vals: dict[str, int] = {}
    for k, v in raw.items():
        if isinstance(v, str) and v.strip().isdigit():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 100:
            raise BadRequest(f"Field 'weights.{k}': a percentage 0-100", code="InvalidParameter.Weights")
        vals[k] = v
    old = vals.get("old", 100 - vals.get("new", 0))
    new = vals.get("new", 100 - old)
    if old + new != 100:
        raise BadRequest(f"Field 'weights': old + new must be 100, not {old + new}", code="InvalidParameter.Weights")
    return {"old": old, "new": new}


def _health_timeout(body: dict[str, Any]) -> int:
    v = body.get("health_timeout", HEALTH_TIMEOUT)
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or not 5 <= v <= 1800:
        raise BadRequest("Field 'health_timeout': seconds (5-1800) the new version has to become healthy",
                         code="InvalidParameter.HealthTimeout")
    return v


# ---------------------------------------------------------------- API side (ProjectService delegates here)


def start(ps: ProjectService, cluster_id: str, name: str, body: dict[str, Any]) -> str:
    """POST /projects/{name}/update with update_method blue-green; returns the task id."""
    ps.usable_cluster(cluster_id)
    row = ps._get_row(cluster_id, name)
    bg = (row.extra or {}).get(ACTIVE)
    template = body.get("template")
    if bg:
        if template in (None, "") and "weights" in body:
            return set_weights(ps, cluster_id, row, bg, body["weights"])
        raise Conflict(f"project {name!r} is in a blue-green release to version {bg.get('new_version')!r}: "
                       "confirm it or roll it back first (to change the split, send only 'weights')",
                       code="BlueGreenInProgress")
    if not isinstance(template, str) or not template.strip():
        raise BadRequest("Field 'template': a Compose YAML template (string) is required",
                         code="InvalidParameter.Template")
    version = ps._body_str(body, "version", None, max_len=128)
    if not version:
        raise BadRequest("Field 'version': a blue-green update needs the new version", code="InvalidParameter.Version")
    if version == row.version:
        raise Conflict(f"project {name!r} already has version {version!r}: an update needs a new version",
                       code="VersionConflict")
    weights = parse_weights(body.get("weights"))
    health_timeout = _health_timeout(body)
    description = ps._body_str(body, "description", None)
    env = ps._body_env(body)
    new_env = dict(env) if env is not None else dict(row.environment or {})
    new_env.setdefault("COMPOSE_PROJECT_NAME", name)
    latest = ps._body_bool(body, "latest_image")
    try:
        model = build_stack(name, template, new_env, ps.options(cluster_id))
    except ComposeError as e:
        raise BadRequest(f"Invalid template: {e}", code=e.code) from None
    gm = green_model(model)
    old = ps._model_quiet(row)
    clash = sorted({s.full_name for s in gm.services.values()} & {s.full_name for s in (old.services.values()
                                                                                         if old else [])})
    if clash:
        raise BadRequest(f"service {clash[0]!r} exists in the current version: the new version's services are "
                         f"named <project>_<service>{SUFFIX}, rename that service", code="InvalidTemplate")
    ps.preflight(cluster_id, model, ps.manager_host(cluster_id))  # what a confirm will deploy

    def mutate(r: Project) -> dict[str, Any]:
        extra = dict(r.extra or {})
        extra.pop(LAST, None)
        extra[ACTIVE] = {
            "state": "deploying", "old_version": r.version, "new_version": version, "weights": weights,
            "slots": {"blue": 100, "green": 0},  # no traffic to the new version before it is healthy
            "template": template, "environment": new_env, "latest_image": latest,
            "description": description if description is not None else r.description,
            "health_timeout": health_timeout, "started": _iso_now(), "warnings": model.warnings,
        }
        extra["last_error"] = None
        return {"extra": extra, "current_state": "updating"}

    return ps._begin(cluster_id, name, "project_bg_release", {"latest": latest}, mutate=mutate)


def set_weights(ps: ProjectService, cluster_id: str, row: Project, bg: dict[str, Any], raw: Any) -> str:
    weights = parse_weights(raw)
    if bg.get("state") != "serving":
        raise Conflict(f"the blue-green release of {row.name!r} is {bg.get('state')}: weights can change while "
                       "both versions serve", code="BlueGreenBusy")

    def mutate(r: Project) -> dict[str, Any]:
        extra = dict(r.extra or {})
        extra[ACTIVE] = {**extra[ACTIVE], "weights": weights}
        return {"extra": extra}

    return ps._begin(cluster_id, row.name, "project_bg_weights", {"weights": weights}, mutate=mutate)


def _active(ps: ProjectService, cluster_id: str, name: str) -> tuple[Project, dict[str, Any]]:
    ps.usable_cluster(cluster_id)
    row = ps._get_row(cluster_id, name)
    bg = (row.extra or {}).get(ACTIVE)
    if not bg:
        raise Conflict(f"project {name!r} has no blue-green release in progress", code="NoBlueGreenRelease")
    return row, bg


def confirm(ps: ProjectService, cluster_id: str, name: str, force: bool) -> str:
    """force=true: all traffic to the new version, then the old one goes. force=false: the
    user's weights are kept, never overridden — so the release can only complete once they already
    send everything to the new version (else 409 WeightsNotShifted)."""
    row, bg = _active(ps, cluster_id, name)
    if bg.get("state") not in ("serving", "confirming"):
        raise Conflict(f"the blue-green release of {name!r} is {bg.get('state')}; it can be confirmed once both "
                       "versions serve", code="BlueGreenBusy")
    weights = bg.get("weights") or DEFAULT_WEIGHTS
    if not force and int(weights.get("new", 0)) != 100:
        raise Conflict(f"the configured weights still send {weights.get('old')}% of the requests to version "
                       f"{bg.get('old_version')!r}: shift them first ({{\"update_method\": \"blue-green\", "
                       "\"weights\": {\"new\": 100}}) or confirm with force=true", code="WeightsNotShifted")

    def mutate(r: Project) -> dict[str, Any]:
        extra = dict(r.extra or {})
        extra[ACTIVE] = {**extra[ACTIVE], "state": "confirming", "message": None}
        return {"extra": extra, "current_state": "updating"}

    return ps._begin(cluster_id, name, "project_bg_confirm", {"force": force}, mutate=mutate)


def rollback(ps: ProjectService, cluster_id: str, name: str, force: bool) -> str:
    """All traffic back to the old version, the new one removed (force: accepted, same effect —
    the spec says "currently just pass true")."""
    row, bg = _active(ps, cluster_id, name)

    def mutate(r: Project) -> dict[str, Any]:
        extra = dict(r.extra or {})
        extra[ACTIVE] = {**extra[ACTIVE], "state": "rolling_back", "message": None}
        return {"extra": extra, "current_state": "updating"}

    return ps._begin(cluster_id, name, "project_bg_rollback", {"force": force}, mutate=mutate)


def view(ps: ProjectService, row: Project, snap: stack.Snapshot | None, containers: bool) -> dict[str, Any] | None:
    """``blue_green`` of the project view: the release in progress (with the new version's
    services and containers) or how the last one ended."""
    extra = row.extra or {}
    bg = extra.get(ACTIVE)
    if not bg:
        return dict(extra[LAST]) if extra.get(LAST) else None
    out = {k: bg.get(k) for k in ("state", "old_version", "new_version", "weights", "started", "message")}
    out["task_id"] = row.task_id or ""
    out["services"] = []
    try:
        gm = green_model(new_model(ps, row, bg, quiet=True))
    except (ComposeError, BadRequest) as e:
        out["message"] = out.get("message") or f"template: {e}"
        return out
    shadow = Project(cluster_id=row.cluster_id, name=row.name, extra={}, created=row.created, updated=row.updated)
    for n in gm.order:
        sv = ps._service_view(shadow, gm, n, snap, containers)
        sv["release"] = "new"
        out["services"].append(sv)
    return out


# ---------------------------------------------------------------- engine helpers


def _manager(ctx: TaskContext) -> str:
    return _ps(ctx).manager_host(ctx.cluster_id or "")


def remove_green(ctx: TaskContext, *, timeout: float = 60.0) -> None:
    """Remove the new version's services, wait for their containers, remove their networks."""
    ps = _ps(ctx)
    project = ctx.params["project"]
    manager = _manager(ctx)
    with closing(client(manager)) as c:
        for s in stack.stack_services(c, project):
            if (s["Spec"].get("Labels") or {}).get(RELEASE_LABEL) == GREEN:
                with suppress(NotFound):
                    c.api.remove_service(s["ID"])
    flt = {"label": [f"{NAMESPACE_LABEL}={project}", f"{RELEASE_LABEL}={GREEN}"]}
    end = time.time() + timeout
    for n in ps.node_infos(ctx.cluster_id or ""):
        while True:
            try:
                with closing(client(n.docker_host, timeout=10)) as c:
                    left = c.api.containers(all=True, filters=flt)
            except (DockerException, OSError):
                break  # an unreachable node cannot be waited for
            if not left:
                break
            if time.time() > end:
                raise stack.StackError(f"containers of the new version still present after {timeout:.0f}s",
                                       "Timeout")
            time.sleep(0.3)
    with closing(client(manager)) as c:
        deadline = time.time() + 30
        while True:
            left_nets = []
            for net in c.api.networks(filters={"label": [f"{NAMESPACE_LABEL}={project}", f"{RELEASE_LABEL}={GREEN}"]}):
                try:
                    c.api.remove_network(net["Id"])
                except NotFound:
                    pass
                except DockerException as e:
                    left_nets.append(f"{net['Name']}: {e}")
            if not left_nets or time.time() > deadline:
                if left_nets:
                    log.warning("project %s: networks left: %s", project, "; ".join(left_nets))
                return
            time.sleep(0.5)  # endpoints detach asynchronously


def converge_blue(ctx: TaskContext, model: StackModel, st: dict[str, Any], *, timeout: float) -> None:
    """The project's own services to ``model`` (the new version at confirm, the old one at
    rollback): update in place, remove services the model no longer has (never the new version's),
    wait until they run."""
    manager = _manager(ctx)
    ctx.scratch.setdefault("t0", time.time())
    ctx.save()
    stack.deploy(manager, model, prune=False, **st)
    wanted = {s.full_name for s in model.services.values()}
    with closing(client(manager)) as c:
        for s in stack.stack_services(c, model.project):
            labels = s["Spec"].get("Labels") or {}
            if labels.get(RELEASE_LABEL) != GREEN and s["Spec"]["Name"] not in wanted:
                with suppress(NotFound):
                    c.api.remove_service(s["ID"])
    stack.wait_converged(manager, model, model.order, timeout=timeout, since=ctx.scratch["t0"],
                         progress=ctx.progress)


# ---------------------------------------------------------------- task stages


def _bg(row: Project) -> dict[str, Any]:
    bg = (row.extra or {}).get(ACTIVE)
    if not bg:
        raise stack.StackError(f"project {row.name} has no blue-green release", "NoBlueGreenRelease")
    return dict(bg)


def _set_bg(ctx: TaskContext, **changes: Any) -> dict[str, Any]:
    bg = {**_bg(_row(ctx)), **changes}
    _set(ctx, extra={ACTIVE: bg})
    return bg


def _route(ctx: TaskContext, blue: int, green: int) -> None:
    """Apply the split and wait until no request is served under the previous one."""
    _set_bg(ctx, slots={"blue": int(blue), "green": int(green)})
    sync_routes(ctx.services, drain=True)


def _images(bg: dict[str, Any]) -> dict[str, str]:
    return {svc: v["ref"] for svc, v in (bg.get("images") or {}).items()}


def _end(ctx: TaskContext, outcome: str, reason: str, *, error: str | None = None) -> None:
    row = _row(ctx)
    bg = (row.extra or {}).get(ACTIVE) or {}
    last = {"state": outcome, "old_version": bg.get("old_version"), "new_version": bg.get("new_version"),
            "weights": bg.get("weights"), "started": bg.get("started"), "finished": _iso_now(), "message": reason}
    with ctx.services.db.session() as s:
        r = s.get(Project, (ctx.cluster_id, ctx.params["project"]))
        if r is not None:
            extra = dict(r.extra or {})
            extra.pop(ACTIVE, None)
            extra[LAST] = last
            extra["last_error"] = error
            r.extra = extra
            r.current_state = "running"
            r.updated = utcnow()
    sync_routes(ctx.services)


def _abort(ctx: TaskContext, reason: str) -> None:
    """Back to the old version alone: traffic first, then the new version's services."""
    _route(ctx, 100, 0)
    remove_green(ctx)
    _end(ctx, "rolled_back", reason, error=reason)


# ---- release


@_stage
def _rel_prepare(ctx: TaskContext) -> None:
    ps, row = _ps(ctx), _row(ctx)
    bg = _bg(row)
    if "images" not in ctx.scratch:
        model = new_model(ps, row, bg)
        images: dict[str, dict[str, str]] = {}
        need = [n for n, s in model.services.items() if bg.get("latest_image") or s.latest_image]
        if need:
            ctx.progress("resolving the newest images")
            digests = ps.check_images(ctx.cluster_id or "", model, _manager(ctx))
            for n in need:
                img = model.services[n].image
                if digests.get(img) and "@" not in img:
                    images[n] = {"image": img, "ref": stack.pin(img, digests[img])}
        ctx.scratch["images"] = images
        ctx.save()
    _set_bg(ctx, images=ctx.scratch["images"])


@_stage
def _rel_deploy(ctx: TaskContext) -> None:
    ps, row = _ps(ctx), _row(ctx)
    bg = _bg(row)
    gm = green_model(new_model(ps, row, bg))
    ctx.scratch.setdefault("t0", time.time())
    ctx.save()
    ctx.progress(f"deploying version {bg['new_version']} beside {bg['old_version']}")
    plan = stack.deploy(_manager(ctx), gm, images=_images(bg), prune=False)
    ctx.result["actions"] = plan.actions


@_stage
def _rel_health(ctx: TaskContext) -> None:
    ps, row = _ps(ctx), _row(ctx)
    bg = _bg(row)
    gm = green_model(new_model(ps, row, bg))
    stack.wait_converged(_manager(ctx), gm, gm.order, timeout=float(bg.get("health_timeout") or HEALTH_TIMEOUT),
                         since=ctx.scratch.get("t0"), progress=ctx.progress)


@_stage
def _rel_route(ctx: TaskContext) -> None:
    bg = _set_bg(ctx, state="serving")
    w = bg.get("weights") or DEFAULT_WEIGHTS
    _route(ctx, w["old"], w["new"])
    _set(ctx, current_state="running")
    ctx.result.update(project=ctx.params["project"], state="serving", weights=w)


def _rel_rollback(ctx: TaskContext) -> None:
    err = ctx.scratch.get("error") or "the release failed"
    row = _row(ctx)
    bg = (row.extra or {}).get(ACTIVE) or {}
    reason = (f"blue-green release of version {bg.get('new_version')} failed its health gate and was rolled back "
              f"(version {bg.get('old_version')} serves all requests): {err}")
    _abort(ctx, reason)




# ---- weights


@_stage
def _weights_route(ctx: TaskContext) -> None:
    w = parse_weights(ctx.params.get("weights"))
    _set_bg(ctx, weights=w)
    if _bg(_row(ctx)).get("state") == "serving":
        _route(ctx, w["old"], w["new"])
    ctx.result.update(project=ctx.params["project"], weights=w)


def _weights_rollback(ctx: TaskContext) -> None:
    _set(ctx, extra={"last_error": ctx.scratch.get("error") or "the weights could not be applied"})




# ---- confirm


@_stage
def _conf_shift(ctx: TaskContext) -> None:
    bg = _bg(_row(ctx))
    if "before" not in ctx.scratch:
        ctx.scratch["before"] = bg.get("slots") or {"blue": 100, "green": 0}
        ctx.save()
    ctx.progress("sending every request to the new version")
    _route(ctx, 0, 100)


@_stage
def _conf_promote(ctx: TaskContext) -> None:
    ps, row = _ps(ctx), _row(ctx)
    bg = _bg(row)
    if row.version == bg["new_version"]:
        return  # switched before a restart
    ctx.progress(f"updating {row.name}'s services to version {bg['new_version']}")
    converge_blue(ctx, new_model(ps, row, bg), {"images": _images(bg)},
                  timeout=float(bg.get("health_timeout") or HEALTH_TIMEOUT))


@_stage
def _conf_switch(ctx: TaskContext) -> None:
    row = _row(ctx)
    bg = _bg(row)
    if row.version != bg["new_version"]:
        extra = dict(row.extra or {})
        _set(ctx, previous_version=row.version, previous_template=row.template, version=bg["new_version"],
             template=bg["template"], environment=bg.get("environment") or {},
             latest_image=bool(bg.get("latest_image")), description=bg.get("description") or row.description,
             extra={"previous_environment": dict(row.environment or {}), "previous_images": extra.get("images", {}),
                    "previous_latest_image": row.latest_image, "images": bg.get("images") or {}, "scale": {},
                    "stopped": [], "warnings": bg.get("warnings") or [], "update_method": "blue-green"})
    ctx.scratch["switched"] = True
    ctx.save()
    _route(ctx, 100, 0)  # the project's own services run the new version now


@_stage
def _conf_cleanup(ctx: TaskContext) -> None:
    ctx.progress("removing the new version's temporary services")
    remove_green(ctx)


@_stage
def _conf_finish(ctx: TaskContext) -> None:
    bg = _bg(_row(ctx))
    _end(ctx, "confirmed", f"version {bg.get('new_version')} serves all requests; version "
                           f"{bg.get('old_version')} was removed")
    ctx.result.update(project=ctx.params["project"], version=bg.get("new_version"))


def _conf_rollback(ctx: TaskContext) -> None:
    err = ctx.scratch.get("error") or "the confirm failed"
    if ctx.scratch.get("switched"):  # the new version is the project's: only the cleanup is missing
        try:
            remove_green(ctx)
        finally:
            _end(ctx, "confirmed", f"confirmed, but removing the temporary services failed: {err}", error=err)
        return
    # the old services may be half-updated: back to the old version, the split as before
    ps, row = _ps(ctx), _row(ctx)
    model = ps.model_of(row)
    try:
        converge_blue(ctx, model, ps.deploy_state(row, model), timeout=120)
    except Exception as e:
        _set_bg(ctx, state="serving", message=f"confirm failed ({err}); restoring version "
                                              f"{row.version} failed too: {getattr(e, 'message', e)}")
        raise
    before = ctx.scratch.get("before") or {"blue": 100, "green": 0}
    _route(ctx, before.get("blue", 100), before.get("green", 0))
    _set_bg(ctx, state="serving", message=f"confirm failed, both versions serve as before: {err}")
    _set(ctx, current_state="running", extra={"last_error": f"confirm failed: {err}"})




# ---- rollback


@_stage
def _rb_restore(ctx: TaskContext) -> None:
    ps, row = _ps(ctx), _row(ctx)
    model = ps.model_of(row)
    converge_blue(ctx, model, ps.deploy_state(row, model), timeout=120)


@_stage
def _rb_switch(ctx: TaskContext) -> None:
    ctx.progress("sending every request to the old version")
    _route(ctx, 100, 0)


@_stage
def _rb_cleanup(ctx: TaskContext) -> None:
    remove_green(ctx)


@_stage
def _rb_finish(ctx: TaskContext) -> None:
    bg = _bg(_row(ctx))
    _end(ctx, "rolled_back", f"rolled back on request: version {bg.get('old_version')} serves all requests, "
                             f"version {bg.get('new_version')} was removed")


def _rb_rollback(ctx: TaskContext) -> None:
    err = ctx.scratch.get("error") or "the rollback failed"
    _set_bg(ctx, state="serving", message=f"rollback failed (retry it): {err}")
    _set(ctx, current_state="failed", extra={"last_error": f"rollback failed: {err}"})


def task_handlers() -> list[TaskHandler]:
    """This module's task types, for the composition root's TaskRegistry."""
    return [
        TaskHandler("project_bg_release", [("prepare", _rel_prepare), ("deploy", _rel_deploy),
            ("health", _rel_health), ("route", _rel_route)],
            rollback=_rel_rollback),
        TaskHandler("project_bg_weights", [("route", _weights_route)], rollback=_weights_rollback),
        TaskHandler("project_bg_confirm", [("shift", _conf_shift), ("promote", _conf_promote),
            ("switch", _conf_switch), ("cleanup", _conf_cleanup),
            ("finish", _conf_finish)], rollback=_conf_rollback),
        TaskHandler("project_bg_rollback", [("restore", _rb_restore), ("switch", _rb_switch),
            ("cleanup", _rb_cleanup), ("finish", _rb_finish)],
            rollback=_rb_rollback),
    ]
