"""Task handlers: a task type is an ordered list of idempotent stages plus a rollback.

A worker persists each stage's outcome before starting the next, so a process killed in the
middle re-runs at most the stage it was in; stages must therefore be safe to run again.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opencs.tasks.engine import TaskContext

StageFn = Callable[["TaskContext"], None]


@dataclass
class TaskHandler:
    task_type: str
    stages: list[tuple[str, StageFn]]
    # undo what the finished stages did and restore the previous desired state
    rollback: StageFn | None = None
    # attempts (claims after a crash) before the task is failed and rolled back
    max_attempts: int = 3
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def stage_names(self) -> list[str]:
        return [n for n, _ in self.stages]


_HANDLERS: dict[str, TaskHandler] = {}


def register(handler: TaskHandler) -> TaskHandler:
    _HANDLERS[handler.task_type] = handler
    return handler


def get(task_type: str) -> TaskHandler | None:
    return _HANDLERS.get(task_type)


def load_plugins(modules: list[str]) -> None:
    """Import modules that register more handlers (OPENCS_TASK_PLUGINS)."""
    for m in modules:
        importlib.import_module(m)
