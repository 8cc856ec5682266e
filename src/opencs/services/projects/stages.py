"""What every project task stage shares: the task's row and engine, coded failures, and binding
a stage to the project rules (closures: the task engine calls a stage with its context only)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opencs.compose import ComposeError
from opencs.engines.apps import AppEngine, AppEngineError
from opencs.errors import ApiError
from opencs.store.models import Project
from opencs.tasks.engine import StageFailed, TaskContext
from opencs.tasks.registry import StageFn, TaskHandler

if TYPE_CHECKING:
    from opencs.services.projects.rules import ProjectService

Stage = Callable[["ProjectService", TaskContext], None]


def engine(ps: ProjectService, ctx: TaskContext) -> AppEngine:
    return ps.engine(ctx.cluster_id or "")


def row_of(ps: ProjectService, ctx: TaskContext) -> Project:
    """The task's project row (StageFailed when it vanished)."""
    row = ps.repo.get(ctx.cluster_id or "", ctx.params["project"])
    if row is None:
        raise StageFailed(f"project {ctx.params['project']} vanished", "ProjectNotFound")
    return row


def set_row(ps: ProjectService, ctx: TaskContext, state: dict[str, Any] | None = None, **values: Any) -> None:
    """Write `values` into the task's project row and replace the `state` fields named (the status
    fields only while the row is still this task's: a newer one reports its own)."""
    ps.repo.write(ctx.cluster_id or "", ctx.params["project"], state, task=ctx.task_id, **values)


def stage(fn: Stage) -> Stage:
    """Turn engine/template errors into coded StageFailed and remember the message for rollbacks."""

    @functools.wraps(fn)
    def run(ps: ProjectService, ctx: TaskContext) -> None:
        try:
            fn(ps, ctx)
        except AppEngineError as e:
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
        except OSError as e:
            ctx.scratch["error"] = f"engine error: {e}"
            raise StageFailed(f"engine error: {e}", "EngineError") from None

    return run


def bind(ps: ProjectService, fn: Stage) -> StageFn:
    """A stage as the task engine calls it (the project rules by closure)."""
    return lambda ctx: fn(ps, ctx)


def handler(ps: ProjectService, task_type: str, stages: list[tuple[str, Stage]], rollback: Stage,
            max_attempts: int = 3) -> TaskHandler:
    """A task type whose stages and rollback are bound to the project rules."""
    return TaskHandler(task_type, [(n, bind(ps, fn)) for n, fn in stages], rollback=bind(ps, rollback),
                       max_attempts=max_attempts)
