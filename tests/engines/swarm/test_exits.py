"""The outcome of a swarm service's slots from its tasks (engines/swarm/exits.py): what the
Application API reports as running, completed or failed, on task dicts shaped like the Engine API's."""

from __future__ import annotations

from typing import Any

from opencs.engines.swarm.exits import Outcome, completed_slots, failure_text, outcome

SPEC = {"ContainerSpec": {"Image": "busybox", "Args": ["x"]}, "ForceUpdate": 0}


def task(slot: int, state: str, desired: str, at: int, code: int | None = None,
         spec: dict[str, Any] = SPEC) -> dict[str, Any]:
    cs = {"ContainerID": f"c{slot}{at}", **({"ExitCode": code} if code is not None else {})}
    return {"ID": f"t{slot}{at}", "Slot": slot, "NodeID": "n1", "DesiredState": desired, "Spec": spec,
            "CreatedAt": f"2026-12-03T07:00:{at:02d}.000000000Z",
            "Status": {"State": state, "ContainerStatus": cs, "Err": f"task: non-zero exit ({code})" if code else ""}}


def test_slots_settle_as_running_completed_or_failed() -> None:
    assert outcome([task(1, "running", "running", 1)], 1, by_node=False, template=SPEC).state == "running"
    done = [task(1, "complete", "shutdown", 1, 0)]
    assert outcome(done, 1, by_node=False, template=SPEC).state == "completed"
    assert completed_slots(done, by_node=False, template=SPEC) == 1
    # one slot done, another still running: the service runs
    both = [*done, task(2, "running", "running", 2)]
    assert outcome(both, 2, by_node=False, template=SPEC).state == "running"
    # a restart pending (the replacement waits its delay as "ready"): not settled yet
    loop = [task(1, "failed", "shutdown", 1, 1), task(1, "new", "ready", 2)]
    assert outcome(loop, 1, by_node=False, template=SPEC).state == ""
    # the restart policy gave up: failed, with the attempts of that slot
    gave_up = [task(1, "failed", "shutdown", at, 1) for at in (1, 2, 3)]
    o = outcome(gave_up, 1, by_node=False, template=SPEC)
    assert (o.state, o.attempts, o.task and o.task["ID"]) == ("failed", 3, "t13")
    assert failure_text("bad", o, ["boom"]) == "service bad: exit code 1 after 3 attempts, not restarted again; " \
                                              "last log lines: boom"


def test_exits_under_an_older_spec_are_no_outcome() -> None:
    old = {**SPEC, "ForceUpdate": 1}
    assert outcome([task(1, "failed", "shutdown", 1, 1, spec=old)], 1, by_node=False, template=SPEC).state == ""
    assert outcome([task(1, "complete", "shutdown", 1, 0, spec=old)], 1, by_node=False, template=SPEC).state == ""
    # a task shut down by an update or scale-down is not an exit
    assert outcome([task(1, "shutdown", "shutdown", 1)], 1, by_node=False, template=SPEC).state == ""
    assert failure_text("x", Outcome("failed", {"Status": {"State": "rejected", "Err": "no such image"}}), []) == \
        "service x: no such image, not restarted again"


def test_tasks_a_scale_down_takes_away_are_no_outcome() -> None:
    # 3 -> 1: the engine marks the removed slots' tasks "remove"; their containers get SIGKILL after
    # the grace period (137), and one may even end "failed" on a network clean-up race of the engine
    # ("error while removing network"); a full run once failed and rolled back a scale-in so
    removed = task(2, "failed", "remove", 2, 137)
    removed["Status"]["Err"] = "error while removing network: unknown network web_default id x"
    tasks = [task(1, "running", "running", 1), removed, task(3, "shutdown", "remove", 3, 137)]
    assert outcome(tasks, 1, by_node=False, template=SPEC).state == "running"
    assert completed_slots(tasks, by_node=False, template=SPEC) == 0
