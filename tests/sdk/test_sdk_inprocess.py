"""The Python SDK against the real ASGI app in-process (starlette's TestClient as the httpx client)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from opencs.sdk import (
    ACS3,
    ROA,
    AuthError,
    Client,
    NotFoundError,
    OpencsError,
    TaskFailed,
    TaskTimeout,
)
from tests.plugins.sdk_tasks import FAIL, OK, SLOW, gate

# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def http(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(params=[ROA, ACS3])
def sdk(request: pytest.FixtureRequest, http: TestClient, creds: tuple[str, str]) -> Client:
    return Client("http://testserver", *creds, scheme=request.param, http_client=http)


def has_route(app: Any, method: str, path: str) -> bool:
    return method.lower() in app.openapi().get("paths", {}).get(path, {})


# ---------------------------------------------------------------------- reads


def test_version(sdk: Client) -> None:
    v = sdk.version()
    assert v["api_version"] == "2015-12-15" and v["version"]


def test_list_clusters_empty(sdk: Client) -> None:
    assert sdk.list_clusters() == []
    page = sdk.list_clusters_paged(1, 5)
    assert page["clusters"] == []
    assert page["page_info"]["page_number"] == 1 and page["page_info"]["page_size"] == 5
    assert page["page_info"]["total_count"] == 0


def test_not_found(sdk: Client) -> None:
    with pytest.raises(NotFoundError) as ei:
        sdk.describe_cluster("c-doesnotexist")
    assert ei.value.status == 404 and ei.value.code == "ErrorClusterNotFound"
    assert ei.value.request_id
    with pytest.raises(NotFoundError):
        sdk.describe_task("T-doesnotexist")


def test_many_calls_never_replay(sdk: Client) -> None:
    for _ in range(20):
        assert sdk.list_clusters() == []


@pytest.mark.parametrize("scheme", [ROA, ACS3])
def test_wrong_secret_is_auth_error(http: TestClient, creds: tuple[str, str], scheme: str) -> None:
    bad = Client("http://testserver", creds[0], creds[1] + "x", scheme=scheme, http_client=http)
    with pytest.raises(AuthError) as ei:
        bad.list_clusters()
    assert ei.value.status == 403 and ei.value.code == "SignatureDoesNotMatch" and ei.value.request_id
    unknown = Client("http://testserver", "LTAInobody", "x", scheme=scheme, http_client=http)
    with pytest.raises(AuthError):
        unknown.version()


def test_raw_request_with_query_in_path(sdk: Client) -> None:
    reply = sdk.request("GET", "/api/v1/clusters?page_number=1", query={"page_size": 3})
    assert reply["page_info"]["page_size"] == 3


# ---------------------------------------------------------------------- tasks


@pytest.fixture
def workers(runtime: Any) -> Iterator[Any]:
    runtime.tasks.start(1)
    yield runtime
    gate.set()


def test_wait_task_success(sdk: Client, workers: Any) -> None:
    task_id = workers.tasks.submit(OK, {})
    seen: list[dict[str, Any]] = []
    task = sdk.wait_task(task_id, timeout=15, poll=0.05, on_update=seen.append)
    assert task["state"] == "success" and task["task_id"] == task_id
    assert [s["state"] for s in task["stages"]] == ["success", "success"]
    assert seen and seen[-1]["state"] == "success"


def test_wait_task_failure(sdk: Client, workers: Any) -> None:
    task_id = workers.tasks.submit(FAIL, {})
    with pytest.raises(TaskFailed) as ei:
        sdk.wait_task(task_id, timeout=15, poll=0.05)
    assert ei.value.code == "NodeBootFailed"
    assert "did not come up" in ei.value.message
    assert ei.value.task["stages"][1]["state"] == "fail"


def test_wait_task_timeout(sdk: Client, workers: Any) -> None:
    gate.clear()
    task_id = workers.tasks.submit(SLOW, {})
    try:
        with pytest.raises(TaskTimeout) as ei:
            sdk.wait_task(task_id, timeout=0.3, poll=0.05)
        assert ei.value.task is not None and ei.value.task["state"] in ("pending", "running")
    finally:
        gate.set()


# ---------------------------------------------------------------------- writes (when the routes exist)


def test_create_describe_delete_cluster(app: Any, sdk: Client) -> None:
    if not has_route(app, "POST", "/clusters"):
        pytest.skip("POST /clusters is not implemented yet")
    reply = sdk.create_cluster({"name": "sdk-c1", "size": 1})
    assert reply["cluster_id"] and reply["task_id"].startswith("T-")
    cid = reply["cluster_id"]
    assert sdk.describe_cluster(cid)["name"] == "sdk-c1"
    assert any(c["cluster_id"] == cid for c in sdk.list_clusters())
    task = sdk.describe_task(reply["task_id"])
    assert task["task_id"] == reply["task_id"] and task["cluster_id"] == cid
    if has_route(app, "DELETE", "/clusters/{cluster_id}"):
        try:
            deleted = sdk.delete_cluster(cid)
        except OpencsError as e:  # e.g. 409 while the create task is still pending
            assert e.status == 409
        else:
            assert deleted.get("cluster_id") == cid


def test_create_instances_reply(app: Any, sdk: Client) -> None:
    if not has_route(app, "POST", "/instances"):
        pytest.skip("POST /instances is not implemented yet")
    reply = sdk.create_instances(1)
    assert reply["task_id"].startswith("T-")
    assert sdk.describe_task(reply["task_id"])["task_id"] == reply["task_id"]
