"""Task types for SDK/CLI tests: one that succeeds, one that fails, one that waits on a gate."""

from __future__ import annotations

import threading
from typing import Any

from opencs.tasks.registry import TaskHandler

gate = threading.Event()


def _stage_ok(ctx: Any) -> None:
    ctx.progress("working")


def _stage_gate(ctx: Any) -> None:
    gate.wait(10)


def _stage_boom(ctx: Any) -> None:
    from opencs.tasks.engine import StageFailed

    raise StageFailed("the node did not come up", "NodeBootFailed")


OK, FAIL, SLOW = "sdktest_ok", "sdktest_fail", "sdktest_slow"



def task_handlers() -> list[TaskHandler]:
    """Loaded as a task plug-in by the test runtimes (Settings.task_plugins)."""
    return [
        TaskHandler(OK, [("prepare", _stage_ok), ("finish", _stage_ok)], max_attempts=1),
        TaskHandler(FAIL, [("prepare", _stage_ok), ("boot", _stage_boom)], max_attempts=1),
        TaskHandler(SLOW, [("wait", _stage_gate)], max_attempts=1),
    ]
