"""Scaling alert rules (opencs.services.alerts) and the monitoring switch (opencs.services.monitoring)
on a real SQLite store, with a fake trigger service and a fake stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from opencs.errors import ApiError, BadRequest, NotFound
from opencs.monitoring.render import ScalingAlert, StackConfig
from opencs.secretbox import SecretBox
from opencs.services.alerts import AlertRuleService, RuleSpec, seconds
from opencs.services.monitoring import MonitoringService, PlaneAddress
from opencs.store.db import Database, migrate
from opencs.store.repos.alerts import AlertRuleRepo

BODY = {"scale_out": {"cpu_above": 50, "for": "20s", "step": 2}, "scale_in": {"cpu_below": 10, "for": 30},
        "min_replicas": 1, "max_replicas": 6, "cooldown": "1m"}


class FakeTriggers:
    def __init__(self) -> None:
        self.made: dict[str, tuple[str, str, str]] = {}

    def create(self, cluster_id: str, project: str, action: str, service: str = "",
               image_update: bool = False, signed: bool | None = None) -> dict[str, Any]:
        assert signed is False  # the Alertmanager cannot sign its webhook calls
        if project != "web":
            raise NotFound("no such project")
        tid = f"t{len(self.made)}"
        self.made[tid] = (cluster_id, project, service)
        return {"id": tid, "token": "Yy+/x=", "secret": f"secret-{tid}"}

    def delete(self, cluster_id: str, trigger_id: str) -> None:
        del self.made[trigger_id]


class FakeStack:
    def __init__(self, fail: str = "") -> None:
        self.applied: list[tuple[StackConfig, list[str], list[ScalingAlert]]] = []
        self.stopped = 0
        self.fail = fail

    def apply(self, cfg: StackConfig, cluster_ids: list[str], alerts: list[ScalingAlert]) -> None:
        if self.fail:
            raise RuntimeError(self.fail)
        self.applied.append((cfg, cluster_ids, alerts))

    def stop(self) -> None:
        self.stopped += 1

    def status(self, cfg: StackConfig) -> dict[str, Any]:
        return {"prometheus": {"running": bool(self.applied), "port": cfg.prometheus_port}}


class Live:
    def __init__(self, *ids: str) -> None:
        self.ids = ids

    def live(self) -> list[Any]:
        return [type("C", (), {"cluster_id": i}) for i in self.ids]


@pytest.fixture
def rules(tmp_path: Path) -> AlertRuleService:
    db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    migrate(db.engine)
    return AlertRuleService(AlertRuleRepo(db), FakeTriggers(), SecretBox.from_file(tmp_path / "key"))


@pytest.mark.parametrize(("body", "field"), [
    ({}, "scale_out, scale_in"),
    ({"scale_out": {"cpu_above": 0}}, "scale_out.cpu_above"),
    ({"scale_out": {"cpu_above": True}}, "scale_out.cpu_above"),
    ({"scale_out": {"cpu_above": 50, "step": 101}}, "scale_out.step"),
    ({"scale_out": {"cpu_above": 50, "for": "20x"}}, "scale_out.for"),
    ({"scale_out": {"cpu_above": 50, "for": "25h"}}, "scale_out.for"),
    ({"scale_out": {"cpu_above": 50}, "min_replicas": 3, "max_replicas": 2}, "min_replicas"),
    ({"scale_out": {"cpu_above": 50}, "scale_in": {"cpu_below": 60}}, "scale_in.cpu_below"),
    ({"scale_in": "low"}, "scale_in"),
])
def test_bad_rules_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as e:
        RuleSpec.parse(body)
    assert field in e.value.message


def test_durations() -> None:
    assert [seconds(v, "f") for v in (20, "20s", "2m", "1h")] == [20, 20, 120, 3600]


def test_a_rule_owns_a_trigger_and_renders_both_halves(rules: AlertRuleService) -> None:
    triggers: FakeTriggers = rules.triggers  # type: ignore[assignment]
    with pytest.raises(NotFound):
        rules.create("c1", "nope", "app", BODY)
    r = rules.create("c1", "web", "app", BODY)
    assert triggers.made == {"t0": ("c1", "web", "app")}
    assert "secret" not in str(r) and r["scale_in"] == {"cpu": 10.0, "for_seconds": 30, "step": 1}
    assert rules.alerts("http://h:1", {"c2"}) == []  # a cluster that is gone renders nothing
    out, in_ = rules.alerts("http://10.0.0.1:8990", {"c1"})
    assert (out.direction, out.threshold, out.for_seconds, out.step, out.bound, out.cooldown_seconds) == \
        ("out", 50.0, 20, 2, 6, 60)
    assert (in_.direction, in_.bound, in_.service_id) == ("in", 1, "web_app")
    q = parse_qs(urlsplit(out.webhook_url).query)
    assert out.webhook_url.startswith("http://10.0.0.1:8990/hook/trigger?")
    assert q == {"triggerUrl": ["Yy+/x="], "secret": ["secret-t0"], "type": ["scale_out"], "step": ["2"]}
    with pytest.raises(NotFound):
        rules.delete("c2", r["id"])
    rules.delete("c1", r["id"])
    assert triggers.made == {} and rules.list_rules("c1") == []


def test_monitoring_switch(rules: AlertRuleService, tmp_path: Path) -> None:
    stack = FakeStack()
    plane = PlaneAddress(StackConfig("127.0.0.1:8990"), "http://127.0.0.1:8990")
    mon = MonitoringService(tmp_path / "mon", stack, Live("c1"), rules, plane)
    mon.converge()
    assert stack.applied == []  # off until enabled
    with pytest.raises(BadRequest):
        mon.enable(9000, 9000)
    st = mon.enable(19390, 19393)
    assert st["enabled"] and st["clusters"] == ["c1"] and st["prometheus"]["port"] == 19390
    rules.create("c1", "web", "app", BODY)
    assert mon.wake.is_set()  # the loop renders the new rule at once
    mon.converge()
    cfg, clusters, alerts = stack.applied[-1]
    assert (cfg.prometheus_port, cfg.alertmanager_port, clusters, len(alerts)) == (19390, 19393, ["c1"], 2)
    assert mon.status()["alert_rules"] == 1
    # ports are kept across restarts of the service (a new process reads the same state file)
    again = MonitoringService(tmp_path / "mon", stack, Live("c1"), rules, plane)
    assert again.enable()["prometheus"]["port"] == 19390
    assert not mon.disable()["enabled"] and stack.stopped == 1
    n = len(stack.applied)
    mon.converge()
    assert len(stack.applied) == n


def test_a_stack_that_cannot_start_is_a_503(rules: AlertRuleService, tmp_path: Path) -> None:
    plane = PlaneAddress(StackConfig("127.0.0.1:8990"), "http://127.0.0.1:8990")
    mon = MonitoringService(tmp_path / "mon", FakeStack("/usr/bin/prometheus is not installed"), Live(), rules, plane)
    with pytest.raises(ApiError) as e:
        mon.enable()
    assert e.value.status == 503 and "not installed" in e.value.message
    assert "not installed" in mon.status()["last_error"]
