"""Task handlers for the durable-task tests, loaded with OPENCS_TASK_PLUGINS.

Each stage appends "<task>:<stage>:<pid>" to a journal file before and after it sleeps, so a test
can see which process ran which stage and that no stage ran twice concurrently.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from opencs.tasks.engine import StageFailed, TaskContext
from opencs.tasks.registry import TaskHandler

JOURNAL = Path(os.environ.get("OPENCS_TEST_JOURNAL", "/tmp/opencs-test-journal"))


def _log(ctx: TaskContext, what: str) -> None:
    with open(JOURNAL, "a") as f:
        f.write(f"{ctx.task_id}:{ctx.stage}:{what}:{os.getpid()}\n")
        f.flush()
        os.fsync(f.fileno())


def _stage(seconds_key: str):  # type: ignore[no-untyped-def]
    def run(ctx: TaskContext) -> None:
        _log(ctx, "begin")
        time.sleep(float(ctx.params.get(seconds_key, 0.0)))
        if ctx.params.get("fail_at") == ctx.stage:
            raise StageFailed(f"asked to fail at {ctx.stage}", "TestFailure")
        ctx.scratch.setdefault("done", []).append(ctx.stage)
        _log(ctx, "end")

    return run


def _rollback(ctx: TaskContext) -> None:
    _log(ctx, "rollback")


def task_handlers() -> list[TaskHandler]:
    """This module's task types, for the composition root's TaskRegistry."""
    return [
        TaskHandler("test_slow", [("one", _stage("s1")), ("two", _stage("s2")), ("three", _stage("s3"))],
            rollback=_rollback),
    ]
