"""The durable tasks of the cluster API (spec §5). Stages are idempotent; rollbacks restore the
previous desired state (size, membership) as Magnum does. The rules live here; the engine work
goes through the ClusterDriver, the machines through Machines."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from opencs.engines.driver import ClusterDriver, DriverError
from opencs.services.nodes import Machines
from opencs.store.models import InstanceRow
from opencs.store.repos.clusters import ClusterRepo
from opencs.store.repos.instances import InstanceRepo
from opencs.tasks.engine import StageFailed, TaskContext
from opencs.tasks.registry import StageFn, TaskHandler

log = logging.getLogger("opencs.clusters")


class Registry(Protocol):
    """The bundled image registry the nodes pull through (None: not available here)."""

    def ensure(self) -> str | None: ...


class EndpointSync(Protocol):
    """The Application API endpoint manager (loops.endpoints): owns master_url while it serves."""

    @property
    def owns_master_url(self) -> bool:
        """Whether the Application API is on (read when asked: settings may change at run time)."""
        ...

    def sync(self) -> None: ...


@dataclass
class ClusterTaskDeps:
    clusters: ClusterRepo
    instances: InstanceRepo
    machines: Machines
    driver: ClusterDriver
    registry: Registry
    # None: this server serves no Application API endpoint; master_url is the engine's own address
    endpoints: EndpointSync | None = None


def master_url(d: ClusterTaskDeps, cluster_id: str) -> str:
    if d.endpoints is None or not d.endpoints.owns_master_url:
        return d.driver.api_url(cluster_id)
    # the endpoint manager owns master_url: keep what it wrote, after asking it to start the
    # endpoint now rather than within ~1 s
    try:
        d.endpoints.sync()
    except Exception as e:
        log.warning("Application API endpoint of %s not ready yet: %s", cluster_id, e)
    c = d.clusters.get(cluster_id)
    # an engine without the Application API (Kubernetes: the apiserver) has no endpoint there
    return (c.master_url if c is not None else "") or d.driver.api_url(cluster_id)


def _stage(fn: Callable[[ClusterTaskDeps, TaskContext], None], deps: ClusterTaskDeps) -> StageFn:
    """Bind a stage to its dependencies; a driver failure fails the stage with the driver's code."""

    @functools.wraps(fn)
    def run(ctx: TaskContext) -> None:
        try:
            fn(deps, ctx)
        except DriverError as e:
            raise StageFailed(e.message, e.code) from e

    return run


def _cid(ctx: TaskContext) -> str:
    return ctx.cluster_id or ""


def _set_cluster(d: ClusterTaskDeps, ctx: TaskContext, **values: Any) -> None:
    if not d.clusters.update(_cid(ctx), **values):
        raise StageFailed(f"cluster {ctx.cluster_id} vanished", "ErrorClusterNotFound")


def _plan(ctx: TaskContext, key: str, n: int) -> list[str]:
    """Instance ids to create, chosen once and persisted before anything is created."""
    if key not in ctx.scratch:
        ctx.scratch[key] = Machines.plan_ids(n)
        ctx.save()
    return list(ctx.scratch[key])


def _ensure_registry(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    ctx.progress("starting the bundled image registry")
    d.registry.ensure()


def _start_cluster(d: ClusterTaskDeps, cid: str, instance_id: str) -> None:
    """The engine's cluster starts on one member (idempotent); its id is kept in the spec."""
    engine_id = d.driver.create(cid, instance_id)
    d.clusters.set_spec_key(cid, "swarm_id", engine_id)


def _form(d: ClusterTaskDeps, cid: str, size: int) -> None:
    """Every running instance a ready member, with the engine's number of managers."""
    rows = [r for r in d.instances.of_cluster(cid) if r.state == "running"]
    if not rows:
        raise StageFailed("cluster has no running instance", "NoInstances")
    if not any(r.role == "manager" and r.swarm_node_id for r in rows):
        _start_cluster(d, cid, rows[0].instance_id)
    d.driver.join(cid, size)


def scale_down_victims(rows: list[InstanceRow], target: int) -> list[InstanceRow]:
    """Which members go when a cluster shrinks to `target`: workers before managers, newest first
    (the oldest manager always stays)."""
    workers = sorted((r for r in rows if r.role != "manager"), key=lambda r: r.created, reverse=True)
    mgrs = sorted((r for r in rows if r.role == "manager"), key=lambda r: r.created, reverse=True)
    return (workers + mgrs)[: max(0, len(rows) - target)]


def _converge_size(d: ClusterTaskDeps, ctx: TaskContext, target: int, plan_key: str) -> None:
    """Add fresh instances or remove members until `target`."""
    cid = _cid(ctx)
    rows = d.instances.of_cluster(cid)
    if len(rows) < target or plan_key in ctx.scratch:
        # resumed after a crash the planned rows already count towards `target` but may still be
        # pending (killed before the machine was recorded running): ensure finishes them
        planned = _plan(ctx, plan_key, target - len(rows))
        ctx.progress(f"creating {len(planned)} instance(s)")
        d.machines.ensure(cid, planned)
    elif len(rows) > target:
        for r in scale_down_victims(rows, target):
            ctx.progress(f"removing node {r.private_ip}")
            d.driver.remove_node(cid, r.instance_id)
            d.machines.destroy([r.instance_id])
    ctx.progress("joining nodes to the cluster")
    _form(d, cid, target)
    d.driver.set_managers(cid, d.driver.managers_for(cid, target))


# ---------------------------------------------------------------- create


def _create_provision(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    _ensure_registry(d, ctx)
    planned = _plan(ctx, "planned", int(ctx.params["size"]))
    ctx.progress(f"creating {len(planned)} instance(s)")
    cid = _cid(ctx)

    def first_up(iid: str) -> None:
        # start the swarm on the first node while the others are still booting
        if iid == planned[0]:
            _start_cluster(d, cid, iid)

    d.machines.ensure(cid, planned, after_create=first_up)


def _create_swarm(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    ctx.progress("forming the swarm")
    _form(d, _cid(ctx), int(ctx.params["size"]))


def _create_finish(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    n = len(d.instances.of_cluster(_cid(ctx)))
    _set_cluster(d, ctx, state="running", size=n, master_url=master_url(d, _cid(ctx)))
    ctx.result.update(cluster_id=ctx.cluster_id, size=n)


def _create_rollback(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    c = d.clusters.get(_cid(ctx))
    rows = d.instances.of_cluster(_cid(ctx))
    if c is not None and (c.spec or {}).get("disable_rollback"):
        # spec §6.3: disable_rollback true keeps what was made, for inspection; DELETE releases it
        _set_cluster(d, ctx, state="failed", size=len(rows))
        return
    d.driver.delete(_cid(ctx))  # what the engine holds beyond the nodes (a hosted control plane)
    d.machines.destroy([r.instance_id for r in rows])
    _set_cluster(d, ctx, state="failed", size=0)


# ---------------------------------------------------------------- scale (total size)


def _scale(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    _ensure_registry(d, ctx)
    _converge_size(d, ctx, int(ctx.params["size"]), "planned")


def _scale_finish(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    _set_cluster(d, ctx, state="running", size=len(d.instances.of_cluster(_cid(ctx))),
                 master_url=master_url(d, _cid(ctx)))


def _scale_rollback(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    """A failed scale restores the previous size."""
    try:
        _converge_size(d, ctx, int(ctx.params["previous_size"]), "rollback_planned")
    finally:
        _scale_finish(d, ctx)


# ---------------------------------------------------------------- attach existing instances


def _attach_join(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    cid = _cid(ctx)
    c = d.machines.cluster(cid)
    for iid in ctx.params["instances"]:
        r = d.instances.get(iid)
        if r is None or r.cluster_id != cid:
            raise StageFailed(f"instance {iid} is no longer reserved for this cluster", "InstanceBusy")
        if not r.details.get("attached_spec"):
            # "the system disk is replaced": a fresh engine with the cluster's certificate
            ctx.progress(f"re-initialising {iid}")
            inst = d.machines.reimage(r, c)
            d.instances.update(iid, state=str(inst.state), docker_host=inst.docker_host,
                               details={**dict(inst.details), "attached_spec": True}, private_ip=inst.private_ip)
    ctx.progress("joining the swarm")
    _form(d, cid, len(d.instances.of_cluster(cid)))


def _attach_rollback(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    cid = _cid(ctx)
    for iid in ctx.params["instances"]:
        r = d.instances.get(iid)
        if r is not None and r.cluster_id == cid:
            d.driver.remove_node(cid, iid)
            r = d.instances.get(iid)
            if r is not None:
                d.machines.release_to_pool(r)
    _scale_finish(d, ctx)


# ---------------------------------------------------------------- remove node by IP


def _removed_ids(ctx: TaskContext) -> list[str]:
    """The instances a remove task takes out: one (by IP, spec §5.7) or several (§6.13)."""
    return list(ctx.params.get("instance_ids") or [ctx.params["instance_id"]])


def _remove_leave(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    for iid in _removed_ids(ctx):
        r = d.instances.get(iid)
        if r is None:
            continue  # already gone (re-run after a crash)
        ctx.progress(f"draining and removing {r.private_ip} from the cluster")
        d.driver.remove_node(_cid(ctx), r.instance_id)


def _remove_release(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    for iid in _removed_ids(ctx):
        r = d.instances.get(iid)
        if r is None:
            continue
        if ctx.params.get("release_instance"):
            d.machines.destroy([r.instance_id])
        elif r.cluster_id:
            d.machines.release_to_pool(r)
    cid = _cid(ctx)
    remaining = d.instances.of_cluster(cid)
    if remaining:
        d.driver.set_managers(cid, d.driver.managers_for(cid, len(remaining)))


# ---------------------------------------------------------------- reset node


def _reset_leave(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    cid = _cid(ctx)
    r = d.instances.get(ctx.params["instance_id"])
    if r is None or r.cluster_id != cid:
        raise StageFailed(f"instance {ctx.params['instance_id']} left the cluster", "InstanceNotFound")
    if "was_role" not in ctx.scratch:
        ctx.scratch["was_role"] = r.role
        ctx.save()
    d.driver.reset_node(cid, r.instance_id)


def _reset_reimage(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    c = d.machines.cluster(_cid(ctx))
    iid = ctx.params["instance_id"]
    r = d.instances.get(iid)
    if r is None:
        raise StageFailed(f"instance {iid} vanished", "InstanceNotFound")
    ctx.progress(f"re-initialising {iid}")
    inst = d.machines.reimage(r, c)
    d.instances.update(iid, state=str(inst.state), docker_host=inst.docker_host, details=dict(inst.details),
                       role="", swarm_node_id="")


def _reset_join(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    cid = _cid(ctx)
    _form(d, cid, len(d.instances.of_cluster(cid)))


# ---------------------------------------------------------------- delete


def _delete_release(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    rows = d.instances.of_cluster(_cid(ctx))
    ctx.progress(f"releasing {len(rows)} instance(s)")
    d.driver.delete(_cid(ctx))
    d.machines.destroy([r.instance_id for r in rows])


def _delete_finish(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    _set_cluster(d, ctx, state="deleted", size=0, master_url="")


def _delete_rollback(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    _set_cluster(d, ctx, state="failed")


# ---------------------------------------------------------------- free instances


def _instances_create(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    planned = _plan(ctx, "planned", int(ctx.params["count"]))
    _ensure_registry(d, ctx)
    d.machines.ensure(None, planned)
    ctx.result["instance_ids"] = planned


def _instances_rollback(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    d.machines.destroy(list(ctx.scratch.get("planned", [])))


def _instance_delete(d: ClusterTaskDeps, ctx: TaskContext) -> None:
    d.machines.destroy([ctx.params["instance_id"]])


def task_handlers(deps: ClusterTaskDeps) -> list[TaskHandler]:
    """This module's task types, for the composition root's TaskRegistry."""

    def s(fn: Callable[[ClusterTaskDeps, TaskContext], None]) -> StageFn:
        return _stage(fn, deps)

    return [
        TaskHandler("cluster_create", [("provision_instances", s(_create_provision)), ("init_swarm", s(_create_swarm)),
                                       ("finish", s(_create_finish))], rollback=s(_create_rollback)),
        TaskHandler("cluster_scale", [("scale", s(_scale)), ("finish", s(_scale_finish))],
                    rollback=s(_scale_rollback)),
        TaskHandler("cluster_attach", [("join", s(_attach_join)), ("finish", s(_scale_finish))],
                    rollback=s(_attach_rollback)),
        TaskHandler("cluster_remove_node", [("leave_swarm", s(_remove_leave)), ("release", s(_remove_release)),
                                            ("finish", s(_scale_finish))], rollback=s(_scale_finish)),
        TaskHandler("cluster_reset_node", [("leave_swarm", s(_reset_leave)), ("reimage", s(_reset_reimage)),
                                           ("join", s(_reset_join)), ("finish", s(_scale_finish))],
                    rollback=s(_scale_finish)),
        TaskHandler("cluster_delete", [("release_instances", s(_delete_release)), ("finish", s(_delete_finish))],
                    rollback=s(_delete_rollback), max_attempts=5),
        TaskHandler("instances_create", [("create_instances", s(_instances_create))], rollback=s(_instances_rollback)),
        TaskHandler("instance_delete", [("destroy", s(_instance_delete))], max_attempts=5),
    ]
