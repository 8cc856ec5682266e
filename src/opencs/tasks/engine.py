"""Durable task engine: submit returns a T-… id at once; worker threads claim tasks with a lease.

Claiming is a compare-and-set UPDATE (works the same on SQLite and PostgreSQL), so several
worker processes on one database never run the same task at the same time. A worker renews its
lease while it runs; a task whose owner died (SIGKILL) is claimed again once its lease runs out,
or at once by a process on the same host that sees the owner's PID is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from opencs import ids, metrics
from opencs.errors import ApiError, NotFound
from opencs.store.changes import RecentReads
from opencs.store.db import utcnow
from opencs.store.models import Task
from opencs.store.repos.tasks import ACTIVE, TaskRepo
from opencs.tasks.registry import TaskHandler, TaskRegistry

log = logging.getLogger("opencs.tasks")

IDLE_POLL = 0.5  # seconds between an idle worker's looks for claimable tasks
DESCRIBE_RECHECK_SECONDS = 1.0  # how late DescribeTaskInfo may show another process's write (as GET /clusters)
NOTIFIED_POLL = 2.0  # the same where new and ended tasks are announced (PostgreSQL's NOTIFY)

__all__ = ["ACTIVE", "LeaseLost", "StageFailed", "Superseded", "TaskContext", "TaskEngine"]


class LeaseLost(Exception):
    """Another worker owns the task now; stop touching it."""


class Superseded(Exception):  # noqa: N818 - a hand-over, not an error
    """A newer request took over: the task stops here and its successor converges (no rollback)."""

    def __init__(self, by: str) -> None:
        super().__init__(by)
        self.by = by


class StageFailed(Exception):
    """A stage failed in a way worth reporting with a code."""

    def __init__(self, message: str, code: str = "StageFailed") -> None:
        super().__init__(message)
        self.code = code


def _iso(d: Any) -> str | None:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ") if d else None


def _now_iso() -> str:
    return utcnow().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TaskContext:
    """What a stage sees: its task's params, a scratch dict persisted between stages, the
    runtime's services, and progress reporting."""

    def __init__(self, engine: TaskEngine, task: Task, services: Any) -> None:
        self.engine = engine
        self.task_id = task.task_id
        self.task_type = task.task_type
        self.cluster_id = task.cluster_id
        self.params: dict[str, Any] = dict(task.params or {})
        self.scratch: dict[str, Any] = dict(task.scratch or {})
        self.result: dict[str, Any] = dict(task.result or {})
        self.attempt = task.attempts
        self.services = services
        self.stage = ""
        self._said = ("", "")
        self._checked = 0.0

    def progress(self, message: str) -> None:
        """Report what the stage waits for (written when it changed). Engines call it while they
        wait, so it is also where a long stage learns that a newer request took over."""
        if self._said != (self.stage, message):
            self._said = (self.stage, message)
            self.engine._stage_message(self, message)
        if time.monotonic() - self._checked >= 1.0:
            self._checked = time.monotonic()
            self.check_superseded()

    def save(self) -> None:
        """Persist scratch/result now (before a side effect that must be remembered)."""
        self.engine._save_ctx(self)

    def check_superseded(self) -> None:
        """Raise Superseded when a newer task took over (for stages that wait long between steps)."""
        by = self.engine.superseded_by(self.task_id)
        if by:
            raise Superseded(by)


class TaskEngine:
    def __init__(self, repo: TaskRepo, handlers: TaskRegistry, lease_seconds: float = 15.0) -> None:
        self.repo = repo
        self.handlers = handlers
        self.lease = lease_seconds
        self.services: Any = None  # transitional: stages still reaching the runtime (being removed)
        # told when a stage or a task ends: (task, stage or "", "success"|"fail", message); the events
        self.observers: list[Callable[[Task, str, str, str], None]] = []
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._poll = IDLE_POLL  # an idle worker looks for claimable tasks this often
        # DescribeTaskInfo's JSON while this process wrote no task, for at most a second (the writes
        # of other processes): the followers of a task poll it (bench/load.py: a quarter of the reads)
        self._described: RecentReads[str, bytes] = RecentReads(repo.db.changes, ("tasks",), DESCRIBE_RECHECK_SECONDS)

    # ------------------------------------------------------------ submitting and reading

    def submit(
        self,
        task_type: str,
        params: dict[str, Any] | None = None,
        *,
        cluster_id: str | None = None,
        target_type: str = "",
        target_id: str = "",
        session: Any = None,
        after: str | None = None,
    ) -> str:
        """Create a pending task. Pass ``session`` to commit it atomically with a state change;
        ``after``: claimed only once that task has ended (a queued successor)."""
        handler = self.handlers.get(task_type)
        if handler is None:
            raise ValueError(f"no handler for task type {task_type!r}")
        now = utcnow()
        row = Task(
            task_id=ids.task_id(),
            task_type=task_type,
            cluster_id=cluster_id,
            target_type=target_type or ("cluster" if cluster_id else ""),
            target_id=target_id or (cluster_id or ""),
            state="pending",
            current_stage="",
            stages=[{"name": n, "state": "pending", "message": "", "start_time": None, "end_time": None,
                     "outputs": {}} for n in handler.stage_names],
            params=params or {},
            scratch={},
            result={},
            lease_until=0.0,
            attempts=0,
            after=after,
            created=now,
            updated=now,
        )
        # wake the workers only once the row is visible: woken before the commit they find
        # nothing and sleep for a whole poll interval
        self.repo.add(row, session, self._wake.set)
        return row.task_id

    def get(self, task_id: str) -> Task:
        row = self.repo.get(task_id)
        if row is None:
            raise NotFound(f"Task {task_id} not found", code="ErrorTaskNotFound")
        return row

    def describe_json(self, task_id: str) -> bytes:
        """`describe(get(task_id))` as JSON, from memory while no task was written since."""
        return self._described.get(task_id, lambda: json.dumps(
            self.describe(self.get(task_id)), separators=(",", ":"), ensure_ascii=False).encode())

    @staticmethod
    def describe(row: Task) -> dict[str, Any]:
        """DescribeTaskInfo shape."""
        error = {"code": row.error_code, "message": row.error_message} if row.state == "fail" else None
        return {
            "task_id": row.task_id,
            "task_type": row.task_type,
            "cluster_id": row.cluster_id or "",
            "state": row.state,
            "current_stage": row.current_stage,
            "stages": row.stages,
            "error": error,
            "target": {"id": row.target_id, "type": row.target_type},
            "parameters": {},
            "task_result": [{"data": row.result, "status": row.state}] if row.result else [],
            "outputs": row.result,
            "created": _iso(row.created),
            "updated": _iso(row.updated),
        }

    # ------------------------------------------------------------ workers

    def start(self, workers: int) -> None:
        self.reclaim_dead_local_owners()
        # PostgreSQL: other processes' tasks wake the workers at once (NOTIFY); the poll is left
        # for what nobody announces, a lease that ran out
        listener = self.repo.listen(self._wake.set, self._stop)
        if listener is not None:
            self._threads.append(listener)
            self._poll = NOTIFIED_POLL
        for i in range(workers):
            t = threading.Thread(target=self._loop, name=f"opencs-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def superseded_by(self, task_id: str) -> str | None:
        row = self.repo.get(task_id)
        return row.superseded_by if row is not None else None

    def reclaim_dead_local_owners(self) -> int:
        """Tasks owned by a process of this host that no longer exists are free at once."""
        n = self.repo.release_dead_local_owners(self.host)
        if n:
            log.info("reclaimed %d task(s) of dead local workers", n)
        return n

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                ran = self.run_one()
            except Exception:  # never let a worker thread die
                log.exception("task worker error")
                ran = False
            if not ran:
                self._wake.wait(self._poll)
                self._wake.clear()

    def run_one(self) -> bool:
        task = self._claim()
        if task is None:
            return False
        self._execute(task)
        return True

    def _claim(self) -> Task | None:
        now = time.time()
        for tid in self.repo.claimable(now):
            task = self.repo.claim(tid, self.owner, now, self.lease)
            if task is not None:
                return task
        return None

    def _guarded_update(self, task_id: str, **values: Any) -> None:
        """Write only while we still own the lease; renew it on every write."""
        values.setdefault("lease_until", time.time() + self.lease)
        if not self.repo.update_owned(task_id, self.owner, values):
            raise LeaseLost(task_id)

    def _heartbeat(self, task_id: str, done: threading.Event, lost: threading.Event) -> None:
        while not done.wait(self.lease / 3):
            try:
                self._guarded_update(task_id)
            except LeaseLost:
                lost.set()
                return
            except Exception:
                log.exception("lease renewal of %s failed", task_id)

    def _save_ctx(self, ctx: TaskContext) -> None:
        self._guarded_update(ctx.task_id, scratch=dict(ctx.scratch), result=dict(ctx.result))

    def _set_stage(self, ctx: TaskContext, stages: list[dict[str, Any]], **extra: Any) -> None:
        self._guarded_update(ctx.task_id, stages=[dict(x) for x in stages], scratch=dict(ctx.scratch),
                             result=dict(ctx.result), **extra)

    def _stage_message(self, ctx: TaskContext, message: str) -> None:
        row = self.get(ctx.task_id)
        stages = [dict(x) for x in row.stages]
        for st in stages:
            if st["name"] == ctx.stage:
                st["message"] = message
        self._set_stage(ctx, stages)

    def _execute(self, task: Task) -> None:
        handler = self.handlers.get(task.task_type)
        ctx = TaskContext(self, task, self.services)
        stages = [dict(x) for x in task.stages]
        if handler is None:
            self._finish_failed(ctx, stages, "UnknownTaskType", f"no handler for {task.task_type}", None)
            return
        done, lost = threading.Event(), threading.Event()
        started, outcome = time.perf_counter(), "lost"
        hb = threading.Thread(target=self._heartbeat, args=(task.task_id, done, lost), daemon=True)
        hb.start()
        try:
            if task.attempts > handler.max_attempts:
                raise StageFailed(
                    f"gave up after {handler.max_attempts} attempts (worker died each time)", "TooManyAttempts"
                )
            for (name, fn), st in zip(handler.stages, stages, strict=True):
                if st["state"] == "success":
                    continue  # done before a restart
                if lost.is_set():
                    raise LeaseLost(task.task_id)
                ctx.check_superseded()  # the stage boundary: a newer request takes over here
                ctx.stage = name
                st.update(state="running", start_time=st.get("start_time") or _now_iso(), message="")
                self._set_stage(ctx, stages, current_stage=name)
                with metrics.timed_stage(task.task_type, name):
                    fn(ctx)
                st.update(state="success", end_time=_now_iso())
                self._set_stage(ctx, stages)
                self._tell(task, name, "success", "")
            self._guarded_update(task.task_id, state="success", stages=stages, scratch=dict(ctx.scratch),
                                 result=dict(ctx.result), owner=None, lease_until=0.0)
            outcome = "success"
            self._tell(task, "", "success", "")
        except LeaseLost:
            log.warning("lost the lease of %s; another worker continues it", task.task_id)
        except Superseded as e:
            with contextlib.suppress(LeaseLost):
                self._hand_over(ctx, stages, e.by, "")
                outcome = "superseded"
                self._tell(task, "", "superseded", f"by {e.by}")
        except Exception as e:
            code = e.code if isinstance(e, (StageFailed, ApiError)) else "InternalError"
            message = e.message if isinstance(e, ApiError) else str(e) or type(e).__name__
            if not isinstance(e, (StageFailed, ApiError)):
                log.error("task %s stage %s failed:\n%s", task.task_id, ctx.stage, traceback.format_exc())
            for st in stages:
                if st["state"] == "running":
                    st.update(state="fail", end_time=_now_iso(), message=message)
            failed = ctx.stage
            by = self.superseded_by(task.task_id)
            if by:  # its outcome no longer matters: the successor converges, nothing is rolled back
                with contextlib.suppress(LeaseLost):
                    self._hand_over(ctx, stages, by, f"{code}: {message}")
                    outcome = "superseded"
                    self._tell(task, "", "superseded", f"by {by} (after {code}: {message})")
                return
            with contextlib.suppress(LeaseLost):
                self._finish_failed(ctx, stages, code, message, handler)
                outcome = "fail"
                self._tell(task, "", "fail", f"stage {failed}: {code}: {message}")
        finally:
            done.set()
            metrics.task_duration.labels(task.task_type, outcome).observe(time.perf_counter() - started)
            if outcome != "lost":
                metrics.tasks_finished.labels(task.task_type, outcome).inc()

    def _tell(self, task: Task, stage: str, state: str, message: str) -> None:
        for f in self.observers:
            try:
                f(task, stage, state, message)
            except Exception:  # an observer never fails the task
                log.exception("task observer failed")

    def _hand_over(self, ctx: TaskContext, stages: list[dict[str, Any]], by: str, error: str) -> None:
        """End a superseded task: `success` with `superseded_by` in its result, the stages it did not
        run `skipped` (its request is part of the newer one's desired state)."""
        for st in stages:
            if st["state"] in ("pending", "running"):
                st.update(state="skipped", end_time=_now_iso(), message=f"superseded by {by}")
        ctx.result["superseded_by"] = by
        if error:
            ctx.result["error_before_hand_over"] = error[:1000]
        self._guarded_update(ctx.task_id, state="success", stages=stages, scratch=dict(ctx.scratch),
                             result=dict(ctx.result), owner=None, lease_until=0.0)

    def _finish_failed(
        self, ctx: TaskContext, stages: list[dict[str, Any]], code: str, message: str,
        handler: TaskHandler | None,
    ) -> None:
        if handler is not None and handler.rollback is not None:
            ctx.stage = "rollback"
            try:
                handler.rollback(ctx)
                message += " (rolled back)"
            except Exception as e:
                log.error("rollback of %s failed:\n%s", ctx.task_id, traceback.format_exc())
                message += f" (rollback failed: {e})"
        self._guarded_update(ctx.task_id, state="fail", stages=stages, error_code=code,
                             error_message=message[:4000], scratch=dict(ctx.scratch),
                             result=dict(ctx.result), owner=None, lease_until=0.0)

    def wait(self, task_id: str, timeout: float = 60.0) -> Task:
        """Poll until the task ends; a superseded task's wait goes on with its successor (the
        outcome of the newest desired state)."""
        end = time.time() + timeout
        while True:
            row = self.get(task_id)
            if row.state not in ACTIVE and row.superseded_by:
                row = self.get(row.superseded_by)
                task_id = row.task_id
            if row.state not in ACTIVE or time.time() > end:
                return row
            time.sleep(0.05)

    def final(self, task_id: str) -> Task:
        """The task, or the newest of the chain it handed over to once it ended."""
        row = self.get(task_id)
        while row.state not in ACTIVE and row.superseded_by:
            row = self.get(row.superseded_by)
        return row
