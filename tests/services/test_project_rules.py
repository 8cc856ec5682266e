"""The project, blue-green and trigger rules against the in-memory application engine (no dockerd,
no root): what a request does to the project row, which tasks run, what the engine ends up with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opencs.errors import ApiError, BadRequest, Conflict, NotFound
from opencs.services.projects.requests import CreateProject, ScaleService, UpdateProject
from opencs.services.projects.volumes import CreateVolume
from tests.services.apps_kit import CID, WEB, Kit, make_kit


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    return make_kit(tmp_path)


def cp(body: dict[str, Any]) -> CreateProject:
    return CreateProject.from_body(body)


def up(body: dict[str, Any]) -> UpdateProject:
    return UpdateProject.from_body(body)


def create(kit: Kit, name: str = "shop", template: str = WEB, **body: object) -> None:
    kit.projects.create(CID, cp({"name": name, "template": template, **body}))
    kit.run()


def test_create_deploys_every_service_and_views_it(kit: Kit) -> None:
    create(kit)
    e = kit.engine
    assert sorted(e.services) == ["shop_web", "shop_worker"]
    assert "shop_default" in e.networks
    view = kit.projects.get(CID, "shop")
    assert view["current_state"] == "running" and view["version"] == "1.0"
    web = next(s for s in view["services"] if s["name"] == "web")
    assert web["id"] == "shop_web" and web["current_state"] == "running" and len(web["containers"]) == 1
    assert kit.routes.calls  # the router follows the new containers when the task says running
    with pytest.raises(Conflict) as ei:
        kit.projects.create(CID, cp({"name": "shop", "template": WEB}))
    assert ei.value.code == "ProjectExists"


def test_create_refuses_unknown_images_and_taken_ports(kit: Kit) -> None:
    with pytest.raises(BadRequest) as ei:
        kit.projects.create(CID, cp({"name": "a", "template": "services:\n  x:\n    image: nosuch/image:1\n"}))
    assert ei.value.code == "ImageNotFound"
    ports = "services:\n  x:\n    image: busybox\n    ports: ['8080:80']\n"
    create(kit, "first", ports)
    with pytest.raises(Conflict) as ei:
        kit.projects.create(CID, cp({"name": "second", "template": ports}))
    assert ei.value.code == "PortConflict" and "first" in ei.value.message


def test_no_manager_answers_503(kit: Kit) -> None:
    kit.engine.down = True
    with pytest.raises(ApiError) as ei:
        kit.projects.create(CID, cp({"name": "shop", "template": WEB}))
    assert (ei.value.status, ei.value.code) == (503, "NoManager")


def test_failed_update_rolls_back_to_the_previous_version(kit: Kit) -> None:
    create(kit)
    kit.engine.registry["crashy"] = "sha256:" + "c" * 64
    kit.engine.crashing.add("crashy")
    kit.projects.update(CID, "shop", up({"template": WEB.replace("busybox", "crashy"), "version": "2.0"}))
    kit.run()
    view = kit.projects.get(CID, "shop")
    assert view["version"] == "1.0" and view["current_state"] == "running"
    assert "update to version 2.0 failed and was rolled back" in view["message"]
    assert kit.engine.services["shop_web"].image == "busybox"


def test_scale_stop_start_and_kill(kit: Kit) -> None:
    create(kit)
    kit.projects.scale_service(CID, "shop_worker", ScaleService(value=3))
    assert kit.engine.services["shop_worker"].replicas == 3
    assert kit.projects.get_service(CID, "shop_worker")["extensions"]["scale"] == 3
    with pytest.raises(BadRequest):
        ScaleService.from_body({"type": "scale_to", "value": 101})
    with pytest.raises(NotFound):
        kit.projects.scale_service(CID, "shop_nope", ScaleService(value=1))
    kit.projects.kill(CID, "shop", "TERM")
    assert {s for _, s in kit.engine.signals} == {"SIGTERM"} and len(kit.engine.signals) == 4
    kit.projects.stop(CID, "shop", timeout=1)
    assert all(s.replicas == 0 for s in kit.engine.services.values())
    assert kit.projects.get(CID, "shop")["current_state"] == "stopped"
    kit.projects.start(CID, "shop")
    assert kit.engine.services["shop_worker"].replicas == 3  # the scale survives a stop
    assert kit.projects.get(CID, "shop")["current_state"] == "running"


def test_calls_coalesce_into_the_pending_task_and_delete(kit: Kit) -> None:
    create(kit)
    tid = kit.projects.redeploy(CID, "shop")  # pending: not run yet
    assert kit.projects.redeploy(CID, "shop") == tid  # folded into it, not a 409
    kit.run()
    assert kit.engine.services["shop_web"].force == 1  # a redeploy recreates every container
    kit.projects.delete(CID, "shop")
    assert kit.engine.services == {} and kit.engine.networks == {}
    with pytest.raises(NotFound):
        kit.projects.get(CID, "shop")


def release(kit: Kit, **body: object) -> None:
    create(kit)
    tpl = WEB.replace("sleep 3600", "sleep 7200")
    kit.projects.update(CID, "shop", up({"update_method": "blue-green", "template": tpl, "version": "2.0", **body}))
    kit.run()


def test_blue_green_release_serves_both_versions_by_weight(kit: Kit) -> None:
    release(kit, weights={"new": 20})
    assert {"shop_web-new", "shop_worker-new", "shop_web", "shop_worker"} == set(kit.engine.services)
    bg = kit.projects.get(CID, "shop")["blue_green"]
    assert bg["state"] == "serving" and bg["weights"] == {"old": 80, "new": 20}
    assert [s["id"] for s in bg["services"]] == ["shop_web-new", "shop_worker-new"]
    assert True in kit.routes.calls  # the split was drained in
    with pytest.raises(Conflict) as ei:
        kit.projects.update(CID, "shop", up({"template": WEB, "version": "3.0"}))
    assert ei.value.code == "BlueGreenInProgress"
    with pytest.raises(Conflict) as ei:
        kit.projects.confirm_update(CID, "shop", force=False)
    assert ei.value.code == "WeightsNotShifted"


def test_blue_green_confirm_once_the_weights_are_shifted(kit: Kit) -> None:
    release(kit)
    old_config = kit.engine.services["shop_worker"].config
    kit.projects.update(CID, "shop", up({"update_method": "blue-green", "weights": {"new": 100}}))
    kit.run()
    kit.projects.confirm_update(CID, "shop", force=False)
    kit.run()
    view = kit.projects.get(CID, "shop")
    assert view["version"] == "2.0" and view["blue_green"]["state"] == "confirmed"
    assert set(kit.engine.services) == {"shop_web", "shop_worker"}
    assert kit.engine.services["shop_worker"].config != old_config  # the old names run the new version
    assert not [n for n, (_, rel) in kit.engine.networks.items() if rel == "green"]


def test_blue_green_health_gate_rolls_back(kit: Kit) -> None:
    create(kit)
    kit.engine.registry["crashy"] = "sha256:" + "c" * 64
    kit.engine.crashing.add("crashy")
    kit.projects.update(CID, "shop", up({"update_method": "blue-green", "template": WEB.replace("busybox", "crashy"),
                                         "version": "2.0"}))
    kit.run()
    view = kit.projects.get(CID, "shop")
    assert view["blue_green"]["state"] == "rolled_back" and "health gate" in view["blue_green"]["message"]
    assert set(kit.engine.services) == {"shop_web", "shop_worker"} and view["version"] == "1.0"


def test_blue_green_rollback_on_request(kit: Kit) -> None:
    release(kit)
    kit.projects.rollback_update(CID, "shop", force=True)
    kit.run()
    view = kit.projects.get(CID, "shop")
    assert view["blue_green"]["state"] == "rolled_back" and view["version"] == "1.0"
    assert set(kit.engine.services) == {"shop_web", "shop_worker"}
    assert kit.engine.services["shop_worker"].image == "busybox"
    with pytest.raises(Conflict) as ei:
        kit.projects.confirm_update(CID, "shop", force=True)
    assert ei.value.code == "NoBlueGreenRelease"


def test_triggers_scale_within_bounds_and_redeploy(kit: Kit) -> None:
    create(kit)
    t = kit.triggers.create(CID, "shop", "scaling", "worker")
    inv = kit.triggers.invoke(t["token"], t["secret"], "scale_out", "2")
    kit.run()
    assert kit.task(inv.task_id).state == "success" and kit.engine.services["shop_worker"].replicas == 3
    kit.triggers.invoke(t["token"], t["secret"], "scale_in", "100")
    kit.run()
    assert kit.engine.services["shop_worker"].replicas == 0  # kept within 0..100
    with pytest.raises(BadRequest):
        kit.triggers.invoke(t["token"], t["secret"], "scale_up", "1")
    with pytest.raises(ApiError) as ei:
        kit.triggers.invoke(t["token"], "0" * 64, "scale_out", "1")
    assert ei.value.code == "InvalidTriggerSecret"
    r = kit.triggers.create(CID, "shop", "redeploy", image_update=True)
    assert kit.triggers.on_image_push("library/busybox", "latest") and r["id"]
    kit.run()
    assert kit.engine.services["shop_web"].force == 1
    with pytest.raises(NotFound):
        kit.triggers.create(CID, "nope", "redeploy")


def test_volumes_on_every_node_or_none(kit: Kit) -> None:
    vols = kit.projects.volumes()
    out = vols.create(CID, CreateVolume.from_body({"name": "data", "driver": "local"}))
    assert out["Name"] == "data" and all("data" in v for v in kit.engine.volumes.values())
    listed = vols.list(CID)["Volumes"]
    assert len(listed) == 3 and {v["Driver"] for v in listed} == {"local"}
    kit.engine.filesystems.discard("nfs")
    nas = CreateVolume.from_body({"name": "share", "driver": "nas", "driverOpts": {"host": "nas.test", "path": "/x"}})
    with pytest.raises(ApiError) as ei:
        vols.create(CID, nas)
    assert ei.value.code == "VolumeMountFailed" and not any("share" in v for v in kit.engine.volumes.values())
    oss = CreateVolume.from_body({"name": "b", "driver": "ossfs", "driverOpts": {
        "bucket": "bkt", "ak_id": "id", "ak_secret": "s3cr3t-value", "url": "oss-cn-hangzhou.aliyuncs.com"}})
    with pytest.raises(ApiError) as ei:
        vols.create(CID, oss)
    assert ei.value.code == "VolumeDriverUnavailable" and "s3cr3t-value" not in ei.value.message
    vols.delete(CID, "data")
    assert not any("data" in v for v in kit.engine.volumes.values())
    with pytest.raises(NotFound):
        vols.get(CID, "data")
