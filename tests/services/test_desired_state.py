"""Issue 13 item 3, desired state wins, against the in-memory engine: a project request while an
earlier task runs is accepted (no 409), the running task hands over at its next stage boundary, calls
in a burst fold into one queued run, and the engine ends up with the last request. `writes` counts
every engine update (a service created, updated or scaled)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opencs.errors import Conflict
from opencs.services.projects.desired import merged_deploy
from opencs.services.projects.requests import CreateProject, ScaleService, UpdateProject
from tests.services.apps_kit import CID, Kit, make_kit

ONE = """
services:
  web:
    image: busybox
    command: sleep {n}
"""


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    k = make_kit(tmp_path)
    k.projects.create(CID, CreateProject.from_body({"name": "shop", "template": ONE.format(n=1)}))
    k.run()
    k.engine.writes.clear()
    return k


def up(n: int, version: str | None = None) -> UpdateProject:
    body: dict[str, Any] = {"template": ONE.format(n=n)}
    if version is not None:
        body["version"] = version
    return UpdateProject.from_body(body)


def during(kit: Kit, monkeypatch: pytest.MonkeyPatch, request: Callable[[], object],
           calls: tuple[str, ...] = ("deploy", "scale_service")) -> None:
    """The running task's first engine call of `calls` lets `request` in first: a call while it runs."""
    e, fired = kit.engine, []

    def wrap(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*a: Any, **kw: Any) -> Any:
            if not fired:
                fired.append(1)
                request()
            return real(*a, **kw)
        return call

    for name in calls:
        monkeypatch.setattr(e, name, wrap(getattr(e, name)))


def web(kit: Kit) -> Any:
    return kit.engine.services["shop_web"]


def settled(kit: Kit, version: str) -> None:
    view = kit.projects.get(CID, "shop")
    assert (view["current_state"], view["version"], view.get("message")) == ("running", version, None), view


def test_scale_then_update(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    trig = kit.triggers.create(CID, "shop", "scaling", service="web")
    first = kit.triggers.invoke(trig["token"], trig["secret"], "scale_out", "2").task_id
    later: list[str] = []
    during(kit, monkeypatch, lambda: later.append(kit.projects.update(CID, "shop", up(2, "2.0"))))
    kit.run()
    t = kit.task(first)
    assert t.state == "success" and t.superseded_by == later[0] and t.result["superseded_by"] == later[0]
    assert [s["state"] for s in t.stages] == ["success", "skipped", "skipped"]  # stopped at the boundary
    assert kit.task(later[0]).state == "success"
    settled(kit, "2.0")
    assert web(kit).replicas == 1 and kit.engine.writes == [("shop_web", "scaled"), ("shop_web", "updated")]
    print(f"scale then update: {len(kit.engine.writes)} engine updates")


def test_update_then_scale(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    first = kit.projects.update(CID, "shop", up(2, "2.0"))
    during(kit, monkeypatch, lambda: kit.projects.scale_service(CID, "shop_web", ScaleService(value=3)))
    kit.run()
    assert kit.task(first).superseded_by
    settled(kit, "2.0")
    assert web(kit).replicas == 3 and kit.engine.writes == [("shop_web", "updated"), ("shop_web", "scaled")]
    print(f"update then scale: {len(kit.engine.writes)} engine updates")


def test_two_updates_in_a_row_and_what_stays_a_conflict(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    kit.projects.update(CID, "shop", up(2, "2.0"))
    seen: dict[str, Any] = {}

    def second() -> None:
        seen["tid"] = kit.projects.update(CID, "shop", up(3, "3.0"))
        seen["again"] = kit.projects.update(CID, "shop", up(3, "3.0"))  # the same request again: same task
        with pytest.raises(Conflict) as ei:  # the same version with another template: a true conflict
            kit.projects.update(CID, "shop", up(4, "3.0"))
        seen["code"] = ei.value.code

    during(kit, monkeypatch, second)
    kit.run()
    assert seen["again"] == seen["tid"] and seen["code"] == "VersionConflict"
    settled(kit, "3.0")
    assert kit.engine.writes == [("shop_web", "updated"), ("shop_web", "updated")]
    print(f"two updates in a row: {len(kit.engine.writes)} engine updates")


def test_twenty_triggers_coalesce(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    trig = kit.triggers.create(CID, "shop", "redeploy")

    def call() -> str:
        return kit.triggers.invoke(trig["token"], trig["secret"], None, None).task_id

    # nothing runs yet: all twenty fold into the first, pending task
    assert len({call() for _ in range(20)}) == 1
    kit.run()
    assert web(kit).force == 1 and len(kit.engine.writes) == 1
    kit.engine.writes.clear()
    # one runs: the second call queues a successor, the other eighteen fold into it
    first = call()
    ids: list[str] = []
    during(kit, monkeypatch, lambda: ids.extend(call() for _ in range(19)))
    kit.run()
    # the running one is not cut short (it does the same): the queued run follows it
    assert len(set(ids)) == 1 and ids[0] != first and kit.task(ids[0]).after == first
    assert kit.task(first).superseded_by is None and kit.task(first).state == "success"
    assert web(kit).force == 3 and len(kit.engine.writes) == 2
    print(f"20 triggers while one runs: {len(kit.engine.writes)} engine updates")


def test_a_scale_trigger_burst_adds_up_in_one_run(kit: Kit) -> None:
    trig = kit.triggers.create(CID, "shop", "scaling", service="web")
    tids = {kit.triggers.invoke(trig["token"], trig["secret"], "scale_out", "1").task_id for _ in range(20)}
    kit.run()
    assert len(tids) == 1 and web(kit).replicas == 21 and kit.engine.writes == [("shop_web", "scaled")]


def test_a_worker_killed_in_between_still_converges_to_the_newest(kit: Kit) -> None:
    first = kit.projects.update(CID, "shop", up(2, "2.0"))
    repo = kit.tasks.engine.repo
    assert repo.claim(first, "ghost:1:dead", time.time(), 0.05) is not None  # claimed, then killed -9
    second = kit.projects.update(CID, "shop", up(3, "3.0"))
    assert second != first and repo.get(second).after == first
    time.sleep(0.1)  # the ghost's lease runs out
    kit.run()
    assert kit.task(first).state == "success" and kit.task(first).superseded_by == second
    settled(kit, "3.0")
    assert len(kit.engine.writes) == 1  # the superseded update never reached the engine


def test_a_superseded_failure_is_not_rolled_back(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    kit.engine.registry["crashy"] = "sha256:" + "c" * 64
    kit.engine.crashing.add("crashy")
    bad = UpdateProject.from_body({"template": ONE.format(n=2).replace("busybox", "crashy"), "version": "2.0"})
    first = kit.projects.update(CID, "shop", bad)
    during(kit, monkeypatch, lambda: kit.projects.update(CID, "shop", up(3, "3.0")), ("wait_converged",))
    kit.run()
    t = kit.task(first)
    assert t.state == "success" and "ContainerFailed" in t.result["error_before_hand_over"]
    settled(kit, "3.0")
    assert web(kit).image == "busybox"


def test_an_update_after_an_unfinished_one_rolls_back_to_the_last_release(kit: Kit,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    kit.engine.registry["crashy"] = "sha256:" + "c" * 64
    kit.engine.crashing.add("crashy")
    kit.projects.update(CID, "shop", up(2, "2.0"))
    bad = UpdateProject.from_body({"template": ONE.format(n=3).replace("busybox", "crashy"), "version": "3.0"})
    during(kit, monkeypatch, lambda: kit.projects.update(CID, "shop", bad))
    kit.run()
    view = kit.projects.get(CID, "shop")
    assert view["version"] == "1.0" and "rolled back" in view["message"]  # 2.0 never finished


def test_a_rolling_update_follows_a_blue_green_rollback(kit: Kit) -> None:
    kit.projects.update(CID, "shop", UpdateProject.from_body({"update_method": "blue-green", "version": "2.0",
                                                              "template": ONE.format(n=2)}))
    kit.run()
    with pytest.raises(Conflict) as ei:  # both versions serve: a true conflict
        kit.projects.update(CID, "shop", up(3, "3.0"))
    assert ei.value.code == "BlueGreenInProgress"
    rb = kit.projects.rollback_update(CID, "shop", True)
    tid = kit.projects.update(CID, "shop", up(3, "3.0"))  # while the rollback cleans up: it follows
    assert kit.task(tid).after == rb and kit.task(rb).superseded_by is None
    kit.run()
    assert kit.task(rb).state == "success" and set(kit.engine.services) == {"shop_web"}
    settled(kit, "3.0")
    assert kit.projects.get(CID, "shop")["blue_green"]["state"] == "rolled_back"


def test_merged_deploy_params() -> None:
    upd = {"op": "update", "latest": False}
    red = {"op": "redeploy", "latest": True}
    assert merged_deploy(upd, red, done=False) == {"op": "update", "latest": True, "recreate": True}
    assert merged_deploy(red, upd, done=True) == {"op": "update", "latest": False, "recreate": False}
    sc1 = {"op": "scale", "service": "a", "previous_scale": 1, "target": 2}
    sc2 = {"op": "scale", "service": "a", "previous_scale": 2, "target": 3}
    assert merged_deploy(sc1, sc2, done=True)["previous_scale"] == 1
    assert merged_deploy(sc1, {**sc2, "service": "b"}, done=True)["op"] == "converge"
    assert merged_deploy({"op": "create", "rollback": True}, sc2, done=False)["op"] == "create"


def test_concurrent_calls_all_count(kit: Kit) -> None:
    """Ten scale triggers at the same moment from ten threads: every step lands in the one run."""
    from concurrent.futures import ThreadPoolExecutor

    trig = kit.triggers.create(CID, "shop", "scaling", service="web")
    with ThreadPoolExecutor(10) as pool:
        tids = set(pool.map(lambda _: kit.triggers.invoke(trig["token"], trig["secret"], "scale_out", "1").task_id,
                            range(10)))
    kit.run()
    assert len(tids) == 1 and web(kit).replicas == 11
