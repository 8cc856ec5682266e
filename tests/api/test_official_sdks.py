"""The official Alibaba SDKs against a real `opencs server` on 127.0.0.1 (issue 2 checks)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sdks import core_call, core_client, tea_client

pytestmark = pytest.mark.integration  # starts real server processes (not only in-process apps)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.conftest import ServerProcess

    s = ServerProcess(tmp_path_factory.mktemp("sdk") / "data", env={"OPENCS_MONITOR_INTERVAL": "0"})
    s.start()
    try:
        yield s
    finally:
        s.kill()


def test_sdk_core_lists_clusters(server: Any) -> None:
    from aliyunsdkcs.request.v20151215.DescribeClustersRequest import DescribeClustersRequest

    out = core_call(core_client(server.endpoint, server.ak, server.secret), DescribeClustersRequest())
    assert out == []


def test_sdk_core_wrong_secret_surfaces_code_and_request_id(server: Any) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcs.request.v20151215.DescribeClustersRequest import DescribeClustersRequest

    with pytest.raises(ServerException) as e:
        core_call(core_client(server.endpoint, server.ak, "not-the-secret"), DescribeClustersRequest())
    assert e.value.get_http_status() == 403
    # sdk-core maps SignatureDoesNotMatch to its own code but keeps the server's request id
    assert e.value.get_error_code() in ("SignatureDoesNotMatch", "IncompleteSignature", "InvalidAccessKeySecret")
    assert len(e.value.get_request_id()) == 36


def test_sdk_core_unknown_cluster_is_404(server: Any) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException
    from aliyunsdkcs.request.v20151215.DescribeClusterDetailRequest import DescribeClusterDetailRequest

    req = DescribeClusterDetailRequest()
    req.set_ClusterId("c0123456789abcdef0123456789abcdef")
    with pytest.raises(ServerException) as e:
        core_call(core_client(server.endpoint, server.ak, server.secret), req)
    assert e.value.get_http_status() == 404 and e.value.get_error_code() == "ErrorClusterNotFound"


@pytest.mark.parametrize("v2", [False, True], ids=["acs3", "roa-v2"])
def test_tea_sdk_lists_clusters(server: Any, v2: bool) -> None:
    from alibabacloud_cs20151215 import models

    c = tea_client(server.endpoint, server.ak, server.secret, v2=v2)
    r = c.describe_clusters(models.DescribeClustersRequest())
    assert r.status_code == 200 and r.body == []
    r = c.describe_clusters_v1(models.DescribeClustersV1Request(page_size=5, page_number=1))
    assert r.body.page_info.total_count == 0 and r.body.page_info.page_size == 5


@pytest.mark.parametrize("v2", [False, True], ids=["acs3", "roa-v2"])
def test_tea_sdk_wrong_secret_surfaces_code_and_request_id(server: Any, v2: bool) -> None:
    from alibabacloud_cs20151215 import models
    from Tea.exceptions import TeaException

    c = tea_client(server.endpoint, server.ak, "not-the-secret", v2=v2)
    with pytest.raises(TeaException) as e:
        c.describe_clusters(models.DescribeClustersRequest())
    assert e.value.code == "SignatureDoesNotMatch"
    assert e.value.statusCode == 403
    assert len(e.value.data.get("RequestId", "")) == 36


def test_tea_sdk_task_not_found(server: Any) -> None:
    from Tea.exceptions import TeaException

    c = tea_client(server.endpoint, server.ak, server.secret)
    with pytest.raises(TeaException) as e:
        c.describe_task_info("T-000000000000000000000000")
    assert e.value.code == "ErrorTaskNotFound" and e.value.statusCode == 404


def test_openapi_document_describes_the_api(server: Any) -> None:
    import httpx

    doc = httpx.get(f"http://{server.endpoint}/openapi.json", trust_env=False).json()
    paths = doc["paths"]
    for p in ("/clusters", "/api/v1/clusters", "/clusters/{cluster_id}", "/tasks/{task_id}", "/version",
              "/clusters/{cluster_id}/certs", "/clusters/{cluster_id}/nodes", "/images"):
        assert p in paths, p
    body = paths["/clusters"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"name", "size"} <= set(body["required"])


def test_sigterm_stops_cleanly(tmp_path: Any) -> None:
    import signal

    from tests.conftest import ServerProcess

    s = ServerProcess(tmp_path / "data", env={"OPENCS_MONITOR_INTERVAL": "0"}).start()
    assert s.proc is not None
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(20) == 0
    log = s.log.read_text()
    assert "opencs stopped" in log and "Traceback" not in log
    assert s.secret not in log  # the bootstrap secret never reaches the log
