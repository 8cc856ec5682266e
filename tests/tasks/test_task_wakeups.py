"""Workers of one process claim a task another process submitted at once (PostgreSQL NOTIFY), also
a successor queued behind a task that ended elsewhere, not at their next poll (issue 13: 2 API +
2 worker processes, where every task is submitted by an API process that runs no workers)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opencs.config import Settings
from opencs.store.db import Database, migrate
from opencs.store.repos.tasks import TaskRepo
from opencs.tasks import engine as engine_mod
from opencs.tasks.engine import TaskEngine
from opencs.tasks.registry import TaskHandler, TaskRegistry

pytestmark = pytest.mark.postgres


def _handlers() -> TaskRegistry:
    reg = TaskRegistry()
    reg.add(TaskHandler("noop", [("only", lambda ctx: None)]))
    return reg


@pytest.fixture
def two_processes(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TaskEngine,
                                                                                                    TaskEngine]]:
    # a poll this slow would leave a task waiting for half a minute: only the wake-up can be quick
    monkeypatch.setattr(engine_mod, "NOTIFIED_POLL", 30.0)
    monkeypatch.setattr(engine_mod, "IDLE_POLL", 30.0)
    url = Settings(data_dir=tmp_path, database_url=pg_url).resolved_database_url
    api_db, worker_db = Database(url), Database(url)  # two pools, as two processes have
    migrate(api_db.engine)
    api, worker = TaskEngine(TaskRepo(api_db), _handlers()), TaskEngine(TaskRepo(worker_db), _handlers())
    worker.start(1)
    try:
        time.sleep(1.0)  # the worker's first look found nothing: it sleeps until woken
        yield api, worker
    finally:
        worker.stop()
        api_db.close()
        worker_db.close()


def _ended_within(api: TaskEngine, tid: str, seconds: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if api.get(tid).state == "success":
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"{tid} is {api.get(tid).state} after {seconds}s")


def test_a_task_submitted_elsewhere_is_claimed_at_once(two_processes: tuple[TaskEngine, TaskEngine]) -> None:
    api, _worker = two_processes
    for _ in range(3):
        tid = api.submit("noop", {})
        assert _ended_within(api, tid, 5.0) < 5.0
        time.sleep(0.3)  # idle again


def test_a_queued_successor_is_claimed_when_its_predecessor_ends(
        two_processes: tuple[TaskEngine, TaskEngine]) -> None:
    api, _worker = two_processes
    first = api.submit("noop", {})
    second = api.submit("noop", {}, after=first)
    _ended_within(api, first, 5.0)
    assert _ended_within(api, second, 5.0) < 5.0
