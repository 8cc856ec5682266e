"""The durable tasks of the cluster API (spec §5). Stages are idempotent; rollbacks restore the
previous desired state (size, membership) as Magnum does."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from opencs.services.nodes import NodeOps, desired_managers
from opencs.store.db import utcnow
from opencs.store.models import Cluster
from opencs.tasks.engine import StageFailed, TaskContext
from opencs.tasks.registry import TaskHandler

if TYPE_CHECKING:
    from opencs.runtime import Runtime

log = logging.getLogger("opencs.clusters")


def _ops(ctx: TaskContext) -> NodeOps:
    rt: Runtime = ctx.services
    return NodeOps(rt)


def _set_cluster(ctx: TaskContext, **values: Any) -> None:
    rt: Runtime = ctx.services
    with rt.db.session() as s:
        c = s.get(Cluster, ctx.cluster_id)
        if c is None:
            raise StageFailed(f"cluster {ctx.cluster_id} vanished", "ErrorClusterNotFound")
        for k, v in values.items():
            setattr(c, k, v)
        c.updated = utcnow()


def _master_url(ops: NodeOps, cluster_id: str) -> str:
    if ops.rt.settings.appapi:
        # opencs.appapi.AppApiManager owns master_url (its mTLS endpoint): keep what it wrote, after
        # asking this process' manager (if any) to start the endpoint now rather than within ~1 s
        appapi = getattr(ops.rt, "_appapi", None)
        if appapi is not None:
            try:
                appapi.sync()
            except Exception as e:
                log.warning("Application API endpoint of %s not ready yet: %s", cluster_id, e)
        return ops.cluster(cluster_id).master_url
    mgrs = ops.managers(cluster_id)
    return f"https://{mgrs[0].private_ip}:2376" if mgrs else ""


def _plan(ctx: TaskContext, key: str, n: int) -> list[str]:
    """Instance ids to create, chosen once and persisted before anything is created."""
    if key not in ctx.scratch:
        ctx.scratch[key] = _ops(ctx).plan_ids(n)
        ctx.save()
    return list(ctx.scratch[key])


def _ensure_registry(ctx: TaskContext) -> None:
    rt: Runtime = ctx.services
    ctx.progress("starting the bundled image registry")
    rt.ensure_registry()


def _converge_size(ctx: TaskContext, target: int, plan_key: str) -> None:
    """Add fresh instances or remove members (workers first, newest first) until `target`."""
    ops = _ops(ctx)
    cid = ctx.cluster_id
    assert cid
    rows = ops.rows(cid)
    if len(rows) < target:
        planned = _plan(ctx, plan_key, target - len(rows))
        ctx.progress(f"creating {len(planned)} instance(s)")
        ops.ensure_instances(cid, planned)
    elif len(rows) > target:
        # workers before managers, newest first; the oldest manager always stays
        workers = sorted((r for r in rows if r.role != "manager"), key=lambda r: r.created, reverse=True)
        mgrs = sorted((r for r in rows if r.role == "manager"), key=lambda r: r.created, reverse=True)
        victims = (workers + mgrs)[: len(rows) - target]
        for r in victims:
            ctx.progress(f"removing node {r.private_ip}")
            ops.leave_swarm(cid, r)
            ops.destroy_instances([r.instance_id])
    ctx.progress("joining nodes to the swarm")
    ops.form_swarm(cid, target)
    ops.converge_managers(cid, desired_managers(target))


# ---------------------------------------------------------------- create


def _create_provision(ctx: TaskContext) -> None:
    _ensure_registry(ctx)
    planned = _plan(ctx, "planned", int(ctx.params["size"]))
    ctx.progress(f"creating {len(planned)} instance(s)")
    ops = _ops(ctx)
    cid = ctx.cluster_id or ""

    def first_up(iid: str) -> None:
        # start the swarm on the first node while the others are still booting
        if iid == planned[0]:
            ops.init_swarm(cid, iid)

    ops.ensure_instances(cid, planned, after_create=first_up)


def _create_swarm(ctx: TaskContext) -> None:
    ctx.progress("forming the swarm")
    _ops(ctx).form_swarm(ctx.cluster_id or "", int(ctx.params["size"]))


def _create_finish(ctx: TaskContext) -> None:
    ops = _ops(ctx)
    n = len(ops.rows(ctx.cluster_id or ""))
    _set_cluster(ctx, state="running", size=n, master_url=_master_url(ops, ctx.cluster_id or ""))
    ctx.result.update(cluster_id=ctx.cluster_id, size=n)


def _create_rollback(ctx: TaskContext) -> None:
    ops = _ops(ctx)
    ids_ = [r.instance_id for r in ops.rows(ctx.cluster_id or "")]
    ops.destroy_instances(ids_)
    _set_cluster(ctx, state="failed", size=0)




# ---------------------------------------------------------------- scale (total size)


def _scale(ctx: TaskContext) -> None:
    _ensure_registry(ctx)
    _converge_size(ctx, int(ctx.params["size"]), "planned")


def _scale_finish(ctx: TaskContext) -> None:
    ops = _ops(ctx)
    _set_cluster(ctx, state="running", size=len(ops.rows(ctx.cluster_id or "")),
                 master_url=_master_url(ops, ctx.cluster_id or ""))


def _scale_rollback(ctx: TaskContext) -> None:
    """A failed scale restores the previous size."""
    try:
        _converge_size(ctx, int(ctx.params["previous_size"]), "rollback_planned")
    finally:
        _scale_finish(ctx)




# ---------------------------------------------------------------- attach existing instances


def _attach_join(ctx: TaskContext) -> None:
    ops = _ops(ctx)
    cid = ctx.cluster_id or ""
    c = ops.cluster(cid)
    for iid in ctx.params["instances"]:
        r = ops.row(iid)
        if r is None or r.cluster_id != cid:
            raise StageFailed(f"instance {iid} is no longer reserved for this cluster", "InstanceBusy")
        if not r.details.get("attached_spec"):
            # "the system disk is replaced": a fresh engine with the cluster's certificate
            ctx.progress(f"re-initialising {iid}")
            inst = ops.provider(r.provider).reset(iid, ops.spec_for(c, iid))
            ops.update_row(iid, state=str(inst.state), docker_host=inst.docker_host,
                           details={**dict(inst.details), "attached_spec": True}, private_ip=inst.private_ip)
    ctx.progress("joining the swarm")
    ops.form_swarm(cid, len(ops.rows(cid)))


def _attach_rollback(ctx: TaskContext) -> None:
    ops = _ops(ctx)
    cid = ctx.cluster_id or ""
    for iid in ctx.params["instances"]:
        r = ops.row(iid)
        if r is not None and r.cluster_id == cid:
            ops.leave_swarm(cid, r)
            ops.release_to_pool(r)
    _scale_finish(ctx)




# ---------------------------------------------------------------- remove node by IP


def _remove_leave(ctx: TaskContext) -> None:
    ops = _ops(ctx)
    r = ops.row(ctx.params["instance_id"])
    if r is None:
        return  # already gone (re-run after a crash)
    ctx.progress(f"draining and removing {r.private_ip} from the swarm")
    ops.leave_swarm(ctx.cluster_id or "", r)


def _remove_release(ctx: TaskContext) -> None:
    ops = _ops(ctx)
    r = ops.row(ctx.params["instance_id"])
    if r is None:
        return
    if ctx.params.get("release_instance"):
        ops.destroy_instances([r.instance_id])
    elif r.cluster_id:
        ops.release_to_pool(r)
    cid = ctx.cluster_id or ""
    remaining = ops.rows(cid)
    if remaining:
        ops.converge_managers(cid, desired_managers(len(remaining)))




# ---------------------------------------------------------------- reset node


def _reset_leave(ctx: TaskContext) -> None:
    ops = _ops(ctx)
    cid = ctx.cluster_id or ""
    r = ops.row(ctx.params["instance_id"])
    if r is None or r.cluster_id != cid:
        raise StageFailed(f"instance {ctx.params['instance_id']} left the cluster", "InstanceNotFound")
    if "was_role" not in ctx.scratch:
        ctx.scratch["was_role"] = r.role
        ctx.save()
    if r.swarm_node_id:
        ops.leave_swarm(cid, r)


def _reset_reimage(ctx: TaskContext) -> None:
    ops = _ops(ctx)
    c = ops.cluster(ctx.cluster_id or "")
    iid = ctx.params["instance_id"]
    r = ops.row(iid)
    assert r is not None
    ctx.progress(f"re-initialising {iid}")
    inst = ops.provider(r.provider).reset(iid, ops.spec_for(c, iid))
    ops.update_row(iid, state=str(inst.state), docker_host=inst.docker_host, details=dict(inst.details),
                   role="", swarm_node_id="")


def _reset_join(ctx: TaskContext) -> None:
    ops = _ops(ctx)
    cid = ctx.cluster_id or ""
    ops.form_swarm(cid, len(ops.rows(cid)))




# ---------------------------------------------------------------- delete


def _delete_release(ctx: TaskContext) -> None:
    ops = _ops(ctx)
    rows = ops.rows(ctx.cluster_id or "")
    ctx.progress(f"releasing {len(rows)} instance(s)")
    ops.destroy_instances([r.instance_id for r in rows])


def _delete_finish(ctx: TaskContext) -> None:
    _set_cluster(ctx, state="deleted", size=0, master_url="")


def _delete_rollback(ctx: TaskContext) -> None:
    _set_cluster(ctx, state="failed")




# ---------------------------------------------------------------- free instances


def _instances_create(ctx: TaskContext) -> None:
    planned = _plan(ctx, "planned", int(ctx.params["count"]))
    _ensure_registry(ctx)
    _ops(ctx).ensure_instances(None, planned)
    ctx.result["instance_ids"] = planned


def _instances_rollback(ctx: TaskContext) -> None:
    _ops(ctx).destroy_instances(list(ctx.scratch.get("planned", [])))




def _instance_delete(ctx: TaskContext) -> None:
    _ops(ctx).destroy_instances([ctx.params["instance_id"]])


def task_handlers() -> list[TaskHandler]:
    """This module's task types, for the composition root's TaskRegistry."""
    return [
        TaskHandler("cluster_create", [("provision_instances", _create_provision),
            ("init_swarm", _create_swarm),
            ("finish", _create_finish)], rollback=_create_rollback),
        TaskHandler("cluster_scale", [("scale", _scale), ("finish", _scale_finish)], rollback=_scale_rollback),
        TaskHandler("cluster_attach", [("join", _attach_join), ("finish", _scale_finish)],
            rollback=_attach_rollback),
        TaskHandler("cluster_remove_node", [("leave_swarm", _remove_leave), ("release", _remove_release),
            ("finish", _scale_finish)], rollback=_scale_finish),
        TaskHandler("cluster_reset_node", [("leave_swarm", _reset_leave), ("reimage", _reset_reimage),
            ("join", _reset_join), ("finish", _scale_finish)],
            rollback=_scale_finish),
        TaskHandler("cluster_delete", [("release_instances", _delete_release), ("finish", _delete_finish)],
            rollback=_delete_rollback, max_attempts=5),
        TaskHandler("instances_create", [("create_instances", _instances_create)], rollback=_instances_rollback),
        TaskHandler("instance_delete", [("destroy", _instance_delete)], max_attempts=5),
    ]
