"""Real clusters for tests: a runtime with its own node bridge/subnet/prefix (so parallel test runs
and a running server never collide) and a teardown that removes everything it made, by id."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from opencs.api.schemas import CreateCluster
from opencs.composition import ControlPlane, build
from opencs.config import Settings
from opencs.providers import hostclaims


def require_local_nodes() -> None:
    if os.geteuid() != 0:
        pytest.skip("local nodes need root")
    if not shutil.which("dockerd"):
        pytest.skip("no dockerd (apt-get install docker.io)")
    if not shutil.which("docker-registry"):
        pytest.skip("no docker-registry (apt-get install docker-registry)")


@contextmanager
def node_runtime(data_dir: Path, prefix: str, subnet: str, *, workers: int = 2, **kw: Any) -> Iterator[ControlPlane]:
    """A runtime whose local nodes use bridge `<prefix>0` and `subnet`. On exit: every instance it
    knows is destroyed by id, its registry stopped by PID, and nothing of the prefix may remain."""
    require_local_nodes()
    from opencs.providers.local import local_provider_leftovers
    from opencs.registry.bundled import BundledRegistry

    settings = Settings(data_dir=data_dir, local_prefix=prefix, local_bridge=f"{prefix}0", local_subnet=subnet,
                        workers=workers, monitor_interval=kw.pop("monitor_interval", 0), **kw)
    rt = build(settings)
    try:
        rt.start()
        yield rt
    finally:
        rt.tasks.stop()
        prov = rt.providers["local"]
        for inst in prov.list():
            prov.destroy(inst.instance_id)
        BundledRegistry(data_dir / "registry").stop()
        prov.release_network()  # the bridge, even if no instance was ever made
        rt.close()
        left = local_provider_leftovers(prefix, f"{prefix}0", data_dir / "nodes")
        assert not left, f"leftovers: {left}"
        hostclaims.release(data_dir)


def create_cluster(rt: ControlPlane, size: int, name: str = "kit", timeout: float = 120) -> str:
    cid, tid = rt.clusters.create(CreateCluster(name=name, size=size))
    row = rt.tasks.wait(tid, timeout)
    assert row.state == "success", f"create failed: {row.error_code} {row.error_message}"
    return cid


def write_certs(rt: ControlPlane, cluster_id: str, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    issued = rt.cluster_certs.issue(cluster_id)  # the account owner's
    for k, v in (("ca", issued.ca_pem), ("cert", issued.cert_pem), ("key", issued.key_pem)):
        (d / f"{k}.pem").write_text(v)
    (d / "key.pem").chmod(0o600)
    return d


def master_session(url: str, certs: dict[str, str], d: Path) -> Any:
    """A requests session that opens master_url with a cluster's certificates (written to `d`)."""
    import requests

    d.mkdir(exist_ok=True)
    for k, v in certs.items():
        (d / f"{k}.pem").write_text(v)
    s = requests.Session()
    s.trust_env = False
    s.cert, s.verify = (str(d / "cert.pem"), str(d / "key.pem")), str(d / "ca.pem")
    s.headers["x-test-base"] = url
    return s


def node_env(prefix: str, subnet: str) -> dict[str, str]:
    """Environment for an `opencs server` subprocess whose local nodes use their own names."""
    return {"OPENCS_LOCAL_PREFIX": prefix, "OPENCS_LOCAL_BRIDGE": f"{prefix}0", "OPENCS_LOCAL_SUBNET": subnet}


def destroy_everything(data_dir: Path, prefix: str, subnet: str) -> None:
    """After a server subprocess is gone: destroy the instances it left (by the ids in its state dir),
    stop its registry by PID, and assert nothing of the prefix remains."""
    from opencs.providers.local import LocalProvider, local_provider_leftovers
    from opencs.registry.bundled import BundledRegistry
    from opencs.routing.haproxy import HAProxy

    prov = LocalProvider(data_dir / "nodes", bridge=f"{prefix}0", subnet=subnet, prefix=prefix)
    for inst in prov.list():
        prov.destroy(inst.instance_id)
    prov.release_network()  # the bridge, even if the server died before its first instance
    BundledRegistry(data_dir / "registry").stop()
    HAProxy(data_dir / "router").stop()  # the server's router, by the PID it recorded
    left = local_provider_leftovers(prefix, f"{prefix}0", data_dir / "nodes")
    assert not left, f"leftovers: {left}"
    hostclaims.release(data_dir)


class WithCluster:
    """What the mTLS frontend does before calling the Application API app: name the cluster (and a
    request id) in the ASGI scope state. For driving the app in-process."""

    def __init__(self, app: Any, cluster_id: str) -> None:
        self.app, self.cluster_id = app, cluster_id
        self.n = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.n += 1
            scope = {**scope, "state": {**(scope.get("state") or {}), "cluster_id": self.cluster_id,
                                        "request_id": f"TEST-{self.n}"}}
        await self.app(scope, receive, send)


@contextmanager
def node_server(data_dir: Path, prefix: str, subnet: str, env: dict[str, str] | None = None) -> Iterator[Any]:
    """A real `opencs server` (tests.conftest.ServerProcess) whose local nodes use `prefix` and
    `subnet`; killed and everything of the prefix destroyed on exit, failed or not."""
    from tests.conftest import ServerProcess

    require_local_nodes()
    srv = ServerProcess(data_dir, env={**node_env(prefix, subnet), **(env or {})})
    try:
        srv.start()  # ServerProcess's own 60 s: enough on a loaded host
        yield srv
    finally:
        srv.kill()
        destroy_everything(data_dir, prefix, subnet)
