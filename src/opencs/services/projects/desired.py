"""Desired state wins (issue 13 item 3): what a project request does while the project's task runs.

The row always takes the newest desired state at once. The task that converges to it is then:

* the running task itself, when it already does exactly this (a repeated delete, the same update
  sent twice): the reply carries its id;
* the queued task, given merged params, when no worker has claimed it yet — it reads the row when
  it runs, so a burst of calls (20 triggers) coalesces into one run that reflects the last call;
* otherwise a new task queued behind it (claimed once it ended) that supersedes it: the running
  task stops at its next stage boundary (or its next progress poll) without rolling back, and the
  new one converges the whole project, since the one before may have stopped half-way. The same
  trigger again (a redeploy, a scale of the same service) only follows the running one.

Blue-green tasks are superseded only by a removal: otherwise they run to their end, and a request
either waits behind them (a rolling change behind a rollback that cleans up) or is a true conflict
(409). A removal is never superseded: a repeated delete gets it, anything else is a 409.
"""

from __future__ import annotations

from typing import Any

from opencs.store.models import Task
from opencs.store.repos.projects import Plan

# tasks that may stop at a stage boundary and hand over (each stage re-reads the row)
SUPERSEDABLE = ("project_deploy", "project_scale", "project_stop")
# a deploy's op decides its rollback: the strongest of a chain is kept
_STRONG = ("create", "update")


def _deployed(active: Task) -> bool:
    """Did the running deploy already apply its deploy stage (what a redeploy's recreate needs)?"""
    return any(st.get("name") == "deploy" and st.get("state") == "success" for st in active.stages or [])


def _repeated(active: Task, task_type: str, params: dict[str, Any]) -> bool:
    """Is this the running task's own request again (a redeploy, a scale of the same service)?"""
    if task_type != active.task_type:
        return False
    if task_type == "project_scale":
        return bool(active.params.get("service") == params.get("service"))
    return task_type == "project_deploy" and active.params.get("op") == params.get("op") == "redeploy"


def merged_deploy(old: dict[str, Any], new: dict[str, Any], *, done: bool) -> dict[str, Any]:
    """The params of one project_deploy that does what `old` (still to run or running; `done`: its
    engine deploy happened) and `new` ask for. A create or update keeps its op (and so its
    rollback); a redeploy's recreate and newest images are kept unless they happened already."""
    op_old, op_new = old.get("op"), new.get("op")
    strong = next((op for op in _STRONG if op in (op_old, op_new)), None)
    if strong is not None and strong == op_old != op_new:
        out = {**old, **{k: v for k, v in new.items() if k not in ("op", "rollback", "previous_scale")}}
    else:
        out = {**new}
        if strong is None and op_old != op_new:
            out["op"] = "converge"
        elif op_old == op_new == "scale":
            if old.get("service") == new.get("service"):
                out["previous_scale"] = old.get("previous_scale", new.get("previous_scale"))  # undo to the first
            else:
                out["op"] = "converge"
    out["latest"] = bool(new.get("latest")) or (not done and bool(old.get("latest")))
    out["recreate"] = bool(new.get("recreate")) or op_new == "redeploy" or (
        not done and (bool(old.get("recreate")) or op_old == "redeploy"))
    return out


def plan(active: Task | None, task_type: str, params: dict[str, Any], values: dict[str, Any]) -> tuple[Plan, str,
                                                                                                     dict[str, Any]]:
    """-> (the plan for ProjectRepo.begin, the task type and params a new task gets)."""
    if active is None:
        return Plan(values), task_type, params
    full = {"project": params["project"]}
    if task_type == "project_scale" and not (active.task_type == "project_scale"
                                             and active.params.get("service") == params.get("service")):
        # the task before may not have deployed the whole desired state: converge all of it
        task_type = "project_deploy"
    if task_type == "project_deploy" and active.task_type == "project_deploy":
        params = {**merged_deploy(active.params, params, done=_deployed(active)), **full}
    # a blue-green release starts from a converged old version: it follows, it does not cut short;
    # a removal tears everything down, so whatever runs (a release too) may stop for it; the same
    # trigger again follows too: cutting the running one short would only start the same work over
    # (a burst becomes the running call plus one queued run that every later call folds into)
    supersede = task_type == "project_remove" or (active.task_type in SUPERSEDABLE
                                                  and not task_type.startswith("project_bg_")
                                                  and not _repeated(active, task_type, params))
    fold = None
    if active.task_type == task_type and active.state == "pending" and task_type in SUPERSEDABLE:
        fold = params if task_type != "project_scale" else {**params,
                                                             "previous_scale": active.params.get("previous_scale")}
    return Plan(values, fold=fold, supersede=supersede), task_type, params
