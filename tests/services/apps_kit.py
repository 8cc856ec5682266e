"""The project rules wired against the in-memory application engine (no dockerd, no root): a real
SQLite store, the real task engine run in the test's thread, FakeAppEngines."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opencs.engines.fake.apps import FakeAppEngine, FakeAppEngines
from opencs.secretbox import SecretBox
from opencs.services.projects import ProjectService
from opencs.services.projects import bluegreen as project_bluegreen
from opencs.services.projects import tasks as project_tasks
from opencs.services.triggers import TriggerService
from opencs.store.db import Database, utcnow
from opencs.store.models import Base, Cluster, Task
from opencs.store.repos.projects import ProjectRepo
from opencs.store.repos.tasks import TaskRepo
from opencs.store.repos.triggers import TriggerRepo
from opencs.store.repos.volumes import VolumeRepo
from opencs.tasks.engine import TaskEngine
from opencs.tasks.registry import TaskRegistry

CID = "c" + "a" * 32

WEB = """
services:
  web:
    image: busybox
    command: httpd -f -p 8080
    labels:
      aliyun.routing.port_8080: http://shop.test
  worker:
    image: busybox
    command: sleep 3600
"""


class InlineTasks:
    """The task engine, its workers replaced by running the pending tasks in the caller's thread."""

    def __init__(self, engine: TaskEngine) -> None:
        self.engine = engine

    def submit(self, task_type: str, params: dict[str, Any], *, cluster_id: str | None = None,
               target_type: str = "", target_id: str = "", session: Any = None, after: str | None = None) -> str:
        return self.engine.submit(task_type, params, cluster_id=cluster_id, target_type=target_type,
                                  target_id=target_id, session=session, after=after)

    def wait(self, task_id: str, timeout: float = 60.0) -> Task:
        self.drain()
        return self.engine.wait(task_id, 0)

    def drain(self) -> None:
        while self.engine.run_one():
            pass


@dataclass
class CountingRoutes:
    calls: list[bool] = field(default_factory=list)

    def sync(self, *, drain: bool = False) -> bool:
        self.calls.append(drain)
        return True


@dataclass
class Kit:
    db: Database
    tasks: InlineTasks
    engines: FakeAppEngines
    routes: CountingRoutes
    projects: ProjectService
    triggers: TriggerService

    @property
    def engine(self) -> FakeAppEngine:
        return self.engines.for_cluster(CID)

    def run(self) -> None:
        self.tasks.drain()

    def task(self, tid: str) -> Task:
        return self.tasks.engine.get(tid)


class Clusters:
    def __init__(self, db: Database) -> None:
        self.db = db

    def get_row(self, cluster_id: str) -> object:
        from opencs.errors import NotFound

        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
        if c is None:
            raise NotFound(f"Cluster {cluster_id} not found", code="ErrorClusterNotFound")
        return c


def make_kit(tmp: Path) -> Kit:
    db = Database(f"sqlite:///{tmp / 'opencs.db'}")  # a real store (SQLite), as the server uses it
    Base.metadata.create_all(db.engine)
    now = utcnow()
    with db.session() as s:
        s.add(Cluster(cluster_id=CID, name="k", state="running", size=3, spec={}, created=now, updated=now))
    registry = TaskRegistry()
    engine = TaskEngine(TaskRepo(db), registry)
    tasks = InlineTasks(engine)
    engines, routes = FakeAppEngines(), CountingRoutes()
    box = SecretBox.from_file(tmp / "secret.key")
    ps = ProjectService(ProjectRepo(db), VolumeRepo(db), tasks, engines, routes, box)
    registry.add_all([*project_tasks.task_handlers(ps), *project_bluegreen.task_handlers(ps)])
    triggers = TriggerService(TriggerRepo(db), Clusters(db), "http://127.0.0.1:1", ps)
    return Kit(db, tasks, engines, routes, ps, triggers)
