"""Task handlers: a task type is an ordered list of idempotent stages plus a rollback.

A worker persists each stage's outcome before starting the next, so a process killed in the
middle re-runs at most the stage it was in; stages must therefore be safe to run again.

Handlers are registered explicitly: each task module offers `task_handlers(<its dependencies>)`
and the composition root adds what they return to the one `TaskRegistry` of the process.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
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


class TaskRegistry:
    """The task types one process can run."""

    def __init__(self, handlers: Iterable[TaskHandler] = ()) -> None:
        self._handlers: dict[str, TaskHandler] = {}
        self.add_all(handlers)

    def add(self, handler: TaskHandler) -> TaskHandler:
        if handler.task_type in self._handlers:
            raise ValueError(f"task type {handler.task_type!r} registered twice")
        self._handlers[handler.task_type] = handler
        return handler

    def add_all(self, handlers: Iterable[TaskHandler]) -> None:
        for h in handlers:
            self.add(h)

    def get(self, task_type: str) -> TaskHandler | None:
        return self._handlers.get(task_type)

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._handlers

    @property
    def task_types(self) -> list[str]:
        return sorted(self._handlers)

    def load_plugins(self, modules: Iterable[str]) -> None:
        """Add the handlers of plug-in modules (OPENCS_TASK_PLUGINS): each module offers
        `task_handlers() -> list[TaskHandler]`."""
        for m in modules:
            make = getattr(importlib.import_module(m), "task_handlers", None)
            if not callable(make):
                raise ValueError(f"task plug-in {m} has no task_handlers() function")
            self.add_all(make())
