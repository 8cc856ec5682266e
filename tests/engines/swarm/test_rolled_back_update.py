"""wait_converged's reading of a rolled-back update: a failure of the deploy that made it, but not
of a later deploy that left the service as it was (the swarm had already rolled a failed update
back to the very release a project's rollback then deploys)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opencs.engines.swarm.observe import Snapshot
from opencs.engines.swarm.stack import StackError, _still_waiting, _Watch


def _ts(ago: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _snapshot() -> tuple[dict[str, Any], Snapshot]:
    svc = {"ID": "s1", "Spec": {"Name": "holder_web", "Mode": {"Replicated": {"Replicas": 1}}, "TaskTemplate": {}},
           "UpdateStatus": {"State": "rollback_completed", "StartedAt": _ts(2), "Message": "rollback completed"}}
    task = {"ID": "t1", "ServiceID": "s1", "NodeID": "n1", "DesiredState": "running", "CreatedAt": _ts(30),
            "Status": {"State": "running", "Timestamp": _ts(20)}}
    return svc, Snapshot(services=[svc], tasks=[task], nodes={}, containers=None)


def test_a_rolled_back_update_fails_the_deploy_that_made_it() -> None:
    svc, snap = _snapshot()
    with pytest.raises(StackError, match="rollback_completed"):
        _still_waiting("web", svc, snap, _Watch(time.time(), 1.5, lambda t: []))


def test_a_deploy_that_changed_nothing_is_not_failed_by_an_earlier_rollback() -> None:
    svc, snap = _snapshot()
    w = _Watch(time.time(), 1.5, lambda t: [], unchanged=frozenset({"web"}))
    assert _still_waiting("web", svc, snap, w) is None  # its one container runs, settled: converged
