"""Cluster events (opencs.services.events) on a real SQLite store: recording, reading after an id,
pruning by age; the cause an Alertmanager call carries; task and container-death events."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from opencs.engines.apps import EngineUnreachable
from opencs.engines.container_events import ContainerDeath
from opencs.engines.usage import NodeRef
from opencs.services.container_events import DeathWatcher
from opencs.services.events import EventLog, alert_cause
from opencs.store.db import Database, migrate, utcnow
from opencs.store.repos.events import EventRepo


@pytest.fixture
def log(tmp_path: Path) -> EventLog:
    db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(db.engine)
    return EventLog(EventRepo(db), retention_seconds=3600)


def test_record_list_after_and_prune(log: EventLog) -> None:
    log.record("c1", "node", "NodeUnhealthy", "i-a: healthy -> unhealthy: engine stopped")
    log.record("c1", "scaling", "ScaleOut", "scale out by 2", project="web")
    log.record("c2", "task", "TaskSuccess", "other cluster")
    log.record(None, "task", "TaskSuccess", "a task of no cluster is not a cluster event")
    all_ = log.list("c1")
    assert [e["reason"] for e in all_] == ["NodeUnhealthy", "ScaleOut"]
    assert log.list("c1", project="web")[0]["message"] == "scale out by 2"
    assert log.list("c1", kind="node")[0]["reason"] == "NodeUnhealthy"
    assert [e["reason"] for e in log.list("c1", after=all_[0]["id"])] == ["ScaleOut"]
    assert log.list("c1", limit=1)[0]["reason"] == "ScaleOut"  # the newest, without `after`
    assert log.repo.prune(utcnow() - timedelta(seconds=60)) == 0
    assert log.repo.prune(utcnow() + timedelta(seconds=1)) == 3
    assert log.list("c1") == []


def test_alert_cause_names_the_firing_alerts() -> None:
    body = {"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "OpencsScaleOut"},
         "annotations": {"summary": "cpu 97.0% > 50% for 20s: scale out web_app by 2"}},
        {"status": "resolved", "labels": {"alertname": "Old"}, "annotations": {"summary": "gone"}}]}
    assert alert_cause(json.dumps(body).encode()) == \
        "alert OpencsScaleOut: cpu 97.0% > 50% for 20s: scale out web_app by 2"
    assert alert_cause(b"") is None and alert_cause(b"[1]") is None and alert_cause(b'{"alerts": []}') is None


def test_task_observer(log: EventLog) -> None:
    task = type("T", (), {"task_id": "T-1", "task_type": "project_scale", "cluster_id": "c1",
                          "target_type": "project", "target_id": "web"})
    log.task_observer(task, "scale", "success", "")
    log.task_observer(task, "", "fail", "stage scale: Boom: no")
    a, b = log.list("c1", project="web")
    assert (a["reason"], a["message"]) == ("StageSuccess", "project_scale T-1: stage scale success")
    assert (b["reason"], b["message"]) == ("TaskFail", "project_scale T-1: task fail: stage scale: Boom: no")


class Rows:
    def __init__(self, rows: list[Any]) -> None:
        self.rows = rows

    def live(self) -> list[Any]:
        return self.rows

    def all(self) -> list[Any]:
        return self.rows


class Reader:
    def __init__(self) -> None:
        self.windows: list[tuple[str, float, float]] = []
        self.retained: list[list[str]] = []

    def retain(self, nodes: list[NodeRef]) -> None:
        self.retained.append([n.instance_id for n in nodes])

    def deaths(self, node: NodeRef, since: float, until: float) -> list[ContainerDeath]:
        self.windows.append((node.instance_id, since, until))
        if node.instance_id == "i-dead":
            raise EngineUnreachable("refused")
        return [ContainerDeath(until, "web_app.1.x", "web", "web_app", 137, True),
                ContainerDeath(until, "web_db.1.y", "web", "web_db", 143, False)]


def test_deaths_become_events_with_their_reason(log: EventLog) -> None:
    row = lambda **kw: type("R", (), kw)  # noqa: E731
    clusters = Rows([row(cluster_id="c1", cluster_type="swarm")])
    member = {"cluster_id": "c1", "state": "running", "private_ip": ""}
    instances = Rows([row(instance_id="i-a", docker_host="unix:///a", **member),
                      row(instance_id="i-dead", docker_host="unix:///d", **member),
                      row(instance_id="i-free", docker_host="unix:///f", **{**member, "cluster_id": None})])
    reader = Reader()
    w = DeathWatcher(clusters, instances, {"swarm": reader}, log)  # type: ignore[arg-type]
    assert w.collect() == 2
    assert [x[0] for x in reader.windows] == ["i-a", "i-dead"]
    assert reader.retained == [["i-a", "i-dead"]]
    oom, term = log.list("c1", kind="container")
    assert oom["reason"] == "ContainerOOMKilled" and "OOM killer" in oom["message"] and oom["project"] == "web"
    assert term["reason"] == "ContainerDied" and "killed by SIGTERM" in term["message"]
    w.collect()
    assert reader.windows[2][1] == reader.windows[0][2]  # windows follow each other: none lost, none twice
