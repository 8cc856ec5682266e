"""Honest states for containers that exit (issue 13, item 7), against the in-memory engine: one-shot
services complete, a failing service makes its project failed with the exit code and the last log
lines, a failed create is left in place unless the request asked to roll back, and external
networks and volumes the cluster lacks are refused before anything is created."""

from __future__ import annotations

from pathlib import Path

import pytest

from opencs.errors import BadRequest
from opencs.services.projects.requests import CreateProject
from tests.services.apps_kit import CID, Kit, make_kit

MIXED = """
services:
  web: {image: busybox, command: sleep 3600}
  once: {image: oneshot, command: echo hello, restart: "no"}
  bad: {image: crasher, command: sh -c 'echo boom; exit 1', restart: ""}
"""


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    k = make_kit(tmp_path)
    for image, code in (("oneshot", 0), ("crasher", 1)):
        k.engine.registry[image] = "sha256:" + image[0] * 64
        k.engine.exits[image] = code
    k.engine.logs["crasher"] = ["starting", "boom"]
    return k


def create(kit: Kit, name: str, template: str, **body: object) -> None:
    kit.projects.create(CID, CreateProject.from_body({"name": name, "template": template, **body}))
    kit.run()


def states(view: dict[str, object]) -> dict[str, str]:
    return {s["name"]: s["current_state"] for s in view["services"]}  # type: ignore[attr-defined, index]


def test_a_failing_service_fails_its_project_and_is_left_in_place(kit: Kit) -> None:
    create(kit, "mix", MIXED)
    view = kit.projects.get(CID, "mix")
    assert view["current_state"] == "failed"
    assert states(view) == {"web": "running", "once": "completed", "bad": "failed"}
    assert "service bad: exit code 1" in view["message"] and "boom" in view["message"], view["message"]
    assert "left in place" in view["message"]
    bad = next(s for s in view["services"] if s["name"] == "bad")
    assert "exit code 1" in bad["message"] and bad["containers"]  # the exited container is still shown
    assert not next(iter(bad["containers"].values()))["running"]
    assert sorted(kit.engine.services) == ["mix_bad", "mix_once", "mix_web"]  # nothing removed


def test_rollback_on_failure_removes_what_the_create_made(kit: Kit) -> None:
    create(kit, "mix", MIXED, rollback_on_failure=True)
    view = kit.projects.get(CID, "mix")
    assert view["current_state"] == "failed" and "was removed" in view["message"] and "boom" in view["message"]
    assert kit.engine.services == {}


def test_one_shot_services_complete(kit: Kit) -> None:
    create(kit, "jobs", "services:\n  a: {image: oneshot}\n  b: {image: oneshot, restart: on-failure}\n")
    view = kit.projects.get(CID, "jobs")
    assert view["current_state"] == "completed" and states(view) == {"a": "completed", "b": "completed"}
    assert "message" not in view
    create(kit, "mixed", "services:\n  a: {image: oneshot}\n  web: {image: busybox}\n")
    assert kit.projects.get(CID, "mixed")["current_state"] == "running"


def test_external_networks_and_volumes_must_exist_first(kit: Kit) -> None:
    net = "services:\n  web: {image: busybox, networks: [front]}\nnetworks:\n  front: {external: true}\n"
    with pytest.raises(BadRequest) as ei:
        kit.projects.create(CID, CreateProject.from_body({"name": "n", "template": net}))
    assert ei.value.code == "NetworkNotFound" and "networks.front" in ei.value.message
    vol = "services:\n  web: {image: busybox, volumes: ['data:/d']}\nvolumes:\n  data: {external: true}\n"
    with pytest.raises(BadRequest) as ei:
        kit.projects.create(CID, CreateProject.from_body({"name": "v", "template": vol}))
    assert ei.value.code == "VolumeNotFound" and "'data'" in ei.value.message
    assert kit.projects.repo.of_cluster(CID) == [] and kit.engine.services == {}  # nothing was created
    kit.engine.networks["front"] = ("", "blue")
    node = kit.engine.nodes()[0]
    kit.engine.create_volume(node, "data", "local", {}, {})
    create(kit, "n", net)
    create(kit, "v", vol)
    assert {kit.projects.get(CID, p)["current_state"] for p in ("n", "v")} == {"running"}
