"""The node-facing paths for a server on loopback (opencs.loops.node_api): which address trigger URLs
and attach scripts name, and that the listener answers only what the nodes call."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencs.composition import build
from opencs.config import Settings
from opencs.loops.node_api import NodeListen, node_endpoint, node_listen
from tests.conftest import free_port


class _Net:
    gateway_address = "10.9.9.1"


class _Local:
    def host_network(self) -> _Net:
        return _Net()


class _Remote:
    def host_network(self) -> None:
        return None


def _settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path / "d", workers=0, local_nodes=False, **kw)


def test_the_bridge_is_chosen_only_when_the_api_is_on_loopback(tmp_path: Path) -> None:
    local: dict[str, Any] = {"ssh": _Remote(), "local": _Local()}
    listen = node_listen(_settings(tmp_path, host="127.0.0.1", port=8990), local)
    assert listen is not None and listen.address() == "10.9.9.1" and listen.port == 8990
    assert listen.scheme == "http"
    # listening beyond loopback, or a public URL the nodes may reach: no second listener
    assert node_listen(_settings(tmp_path, host="0.0.0.0", port=8990), local) is None
    assert node_listen(_settings(tmp_path, public_url="http://10.0.0.5:8990"), local) is None
    # no bridge (only machines over SSH): nothing nodes could reach
    assert node_listen(_settings(tmp_path), {"ssh": _Remote()}) is None
    # the attach script: the listener's base while it serves, else none
    s = _settings(tmp_path)
    assert node_endpoint(s, local) is None
    ep = node_endpoint(s, local, lambda: "http://10.9.9.1:8990")
    assert ep is not None and ep.base == "http://10.9.9.1:8990"
    wild = node_endpoint(_settings(tmp_path, host="0.0.0.0", port=8990), local)
    assert wild is not None and wild.base == "http://10.9.9.1:8990"


@pytest.fixture
def plane(tmp_path: Path) -> Any:
    rt = build(Settings(data_dir=tmp_path / "d", workers=0, local_nodes=True, host="127.0.0.1", port=free_port()))
    try:
        yield rt
    finally:
        if rt.node_api is not None:
            rt.node_api.stop()
        rt.close()


def test_trigger_urls_name_the_listener_while_it_serves(plane: Any) -> None:
    gateway = plane.providers["local"].host_network().gateway_address
    assert plane.node_api is not None and plane.node_api.listen.address() == gateway
    before = plane.triggers.trigger_url("tok")
    assert before == f"{plane.settings.public_url}/hook/trigger?triggerUrl=tok"  # nothing serves the bridge yet
    assert plane.settings.public_url.startswith("http://127.0.0.1:")

    # the same listener on an address this test can bind (the bridge may not exist here)
    port = free_port()
    plane.node_api.listen = NodeListen(lambda: "127.0.0.1", port)
    plane.node_api.start()
    end = time.monotonic() + 10
    while not plane.node_api.base() and time.monotonic() < end:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    assert plane.node_api.base() == base
    assert plane.triggers.trigger_url("tok") == f"{base}/hook/trigger?triggerUrl=tok"

    r = httpx.get(f"{base}/hook/trigger", params={"triggerUrl": "nope", "secret": "x"}, timeout=10)
    # the route answered (a malformed trigger), not the listener's 404
    assert r.status_code == 400 and r.json()["Code"] != "NotFound" and r.headers["x-acs-request-id"]
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    for path in ("/clusters", "/metrics", "/openapi.json", "/hook/registry", "/console/"):
        r = httpx.get(base + path, timeout=10)
        assert r.status_code == 404 and r.json()["Code"] == "NotFound", path
        assert r.json()["RequestId"] == r.headers["x-acs-request-id"], path
    plane.node_api.stop()
    assert plane.node_api.base() == ""
    assert plane.triggers.trigger_url("tok") == before
