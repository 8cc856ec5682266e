"""Real docker-registry (Debian's distribution v2) + the busybox image built from /bin/busybox."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencs.registry.bundled import REGISTRY_BIN, BundledRegistry, RegistryError
from opencs.registry.image import (
    BUSYBOX,
    MANIFEST_V2,
    build_busybox_image,
    build_image,
    build_layer_tar,
    seed_busybox,
)
from opencs.registry.service import through_restarts

pytestmark = [
    pytest.mark.integration,  # runs Debian's docker-registry processes
    pytest.mark.skipif(
        not REGISTRY_BIN.exists(), reason=f"{REGISTRY_BIN} missing (apt-get install docker-registry)"
    ),
    pytest.mark.skipif(not BUSYBOX.exists(), reason=f"{BUSYBOX} missing (apt-get install busybox-static)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gone(pid: int) -> bool:
    """No such process, or an exited one waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


MakeRegistry = Callable[..., BundledRegistry]


@pytest.fixture
def make_registry(tmp_path: Path) -> Iterator[MakeRegistry]:
    made: list[BundledRegistry] = []

    def make(name: str = "registry", port: int | None = None, **kwargs: Any) -> BundledRegistry:
        reg = BundledRegistry(tmp_path / name, f"127.0.0.1:{port or _free_port()}", **kwargs)
        made.append(reg)
        return reg

    try:
        yield make
    finally:
        # Stop everything even if the test failed half-way.
        for reg in made:
            with contextlib.suppress(Exception):
                reg.stop()


@pytest.fixture
def registry(make_registry: MakeRegistry) -> BundledRegistry:
    reg = make_registry()
    reg.ensure_running()
    return reg


def test_seed_busybox_and_fetch_manifest_and_blobs(registry: BundledRegistry) -> None:
    result = seed_busybox(registry.url)
    assert result.pushed

    resp = httpx.get(f"{registry.url}/v2/library/busybox/manifests/latest", headers={"Accept": MANIFEST_V2})
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == MANIFEST_V2
    digest = "sha256:" + hashlib.sha256(resp.content).hexdigest()
    assert resp.headers["Docker-Content-Digest"] == digest == result.digest
    manifest = resp.json()
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == MANIFEST_V2

    config_resp = httpx.get(f"{registry.url}/v2/library/busybox/blobs/{manifest['config']['digest']}")
    assert config_resp.status_code == 200
    assert "sha256:" + hashlib.sha256(config_resp.content).hexdigest() == manifest["config"]["digest"]
    config = config_resp.json()
    assert (config["architecture"], config["os"]) == ("amd64", "linux")
    assert config["config"]["Cmd"] == ["sh"]

    (layer_desc,) = manifest["layers"]
    layer = httpx.get(
        f"{registry.url}/v2/library/busybox/blobs/{layer_desc['digest']}", follow_redirects=True
    )
    assert layer.status_code == 200
    assert "sha256:" + hashlib.sha256(layer.content).hexdigest() == layer_desc["digest"]
    assert len(layer.content) == layer_desc["size"]
    raw_tar = gzip.decompress(layer.content)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(raw_tar).hexdigest()]

    with tarfile.open(fileobj=io.BytesIO(raw_tar)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["bin/busybox"].isfile()
        assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
        assert members["tmp"].isdir() and members["tmp"].mode == 0o1777
        www = tar.extractfile("www/index.html")
        assert www is not None and b"hello from opencs busybox" in www.read()
        assert "etc/passwd" in members and "etc/group" in members


def test_seed_is_idempotent_and_build_deterministic(registry: BundledRegistry) -> None:
    first = seed_busybox(registry.url)
    again = seed_busybox(registry.url)
    assert not again.pushed
    assert again.digest == first.digest
    assert again.seconds < 1.0
    # Built from scratch (not the cache) the digest is the same.
    assert build_image([build_layer_tar()]).digest == build_busybox_image().digest == first.digest


def test_restart_adopts_live_registry(make_registry: MakeRegistry, tmp_path: Path) -> None:
    port = _free_port()
    first = make_registry(port=port)
    pid = first.ensure_running()
    assert not first.adopted

    second = make_registry(port=port)  # e.g. the control plane restarted
    assert second.ensure_running() == pid
    assert second.adopted and second.healthy()

    # A different config (notifications added) must not be adopted: restart with the new one.
    third = make_registry(port=port, notify_url="http://127.0.0.1:9/events", notify_token="t")
    new_pid = third.ensure_running()
    assert new_pid != pid and not third.adopted
    assert _gone(pid)
    assert third.healthy()


def test_seed_waits_out_a_restart_by_another_process(make_registry: MakeRegistry) -> None:
    # A process taking the notifications lease restarts the data dir's registry while another's
    # cluster create seeds it: the push is refused for a moment, then goes through (a full
    # kill -9 test on PostgreSQL once failed its cluster create on "[Errno 111] Connection refused").
    port = _free_port()
    first = make_registry(port=port)
    old = first.ensure_running()
    other = make_registry(port=port, notify_url="http://127.0.0.1:9/events", notify_token="t")
    refused = []

    def seed() -> None:
        if not refused:
            restart = threading.Thread(target=other.ensure_running)
            restart.start()
            while first.healthy(timeout=0.2):  # until the old registry is gone
                time.sleep(0.01)
            restart.join()  # the new one may answer by now; the first attempt is refused regardless
            refused.append(True)
            raise httpx.ConnectError("[Errno 111] Connection refused")
        seed_busybox(first.url)

    through_restarts(first, seed, timeout=20)
    assert refused and _gone(old) and other.recorded_pid() not in (None, old)
    assert httpx.get(f"{first.url}/v2/library/busybox/tags/list", timeout=5).json()["tags"] == ["latest"]

    other.stop()  # none runs any more: waiting is pointless, and says so
    with pytest.raises(RegistryError, match="no docker-registry"):
        through_restarts(first, lambda: seed_busybox(first.url), timeout=5)


def test_spawn_records_pid_itself(registry: BundledRegistry) -> None:
    # The PID file is written by the spawning shell, so a control plane killed right after the
    # spawn still leaves the registry recorded (CI once lost a run to such an orphan).
    assert registry.pid_path.read_text().strip() == str(registry.pid)
    assert registry.pid_path.stat().st_mode & 0o777 == 0o600


def test_unrecorded_registry_of_this_data_dir_is_replaced(make_registry: MakeRegistry) -> None:
    port = _free_port()
    first = make_registry(port=port)
    orphan = first.ensure_running()
    first.pid_path.unlink()  # as if killed before the PID was recorded

    again = make_registry(port=port, notify_url="http://127.0.0.1:9/events", notify_token="t")
    pid = again.ensure_running()
    assert pid != orphan and _gone(orphan)
    assert again.healthy() and again.recorded_pid() == pid


def test_stop_leaves_no_process(registry: BundledRegistry) -> None:
    pid = registry.pid
    assert pid is not None
    registry.stop()
    deadline = time.monotonic() + 5
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid)
    assert not registry.healthy()
    assert not registry.pid_path.exists()
    registry.stop()  # stopping again is a no-op


def test_port_taken_by_someone_else(make_registry: MakeRegistry) -> None:
    with socket.create_server(("127.0.0.1", 0)) as squatter:
        reg = make_registry(port=squatter.getsockname()[1])
        with pytest.raises(RegistryError, match="in use"):
            reg.ensure_running()
    assert reg.recorded_pid() is None


class _EventSink(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EventHandler)
        self.received: list[tuple[str | None, dict[str, Any]]] = []


class _EventHandler(http.server.BaseHTTPRequestHandler):
    server: _EventSink

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append((self.headers.get("Authorization"), json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


@pytest.fixture
def event_sink() -> Iterator[_EventSink]:
    sink = _EventSink()
    thread = threading.Thread(target=sink.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.shutdown()
        sink.server_close()
        thread.join(timeout=5)


def test_push_sends_notification_with_bearer_token(
    make_registry: MakeRegistry, event_sink: _EventSink
) -> None:
    token = "test-token-" + os.urandom(8).hex()
    reg = make_registry(
        notify_url=f"http://127.0.0.1:{event_sink.server_address[1]}/registry/events", notify_token=token
    )
    reg.ensure_running()
    result = seed_busybox(reg.url)

    deadline = time.monotonic() + 10
    manifest_push: dict[str, Any] | None = None
    while manifest_push is None and time.monotonic() < deadline:
        for auth, envelope in list(event_sink.received):
            for event in envelope.get("events", []):
                target = event.get("target", {})
                if event.get("action") == "push" and target.get("mediaType") == MANIFEST_V2:
                    assert auth == f"Bearer {token}"
                    manifest_push = event
        time.sleep(0.05)
    assert manifest_push is not None, f"no manifest push event; got {event_sink.received!r}"
    assert manifest_push["target"]["repository"] == "library/busybox"
    assert manifest_push["target"]["digest"] == result.digest
    assert manifest_push["target"]["tag"] == "latest"
    # The token is in the (0600) config but must not leak into the registry's log.
    assert token not in reg.log_path.read_text()
    assert reg.config_path.stat().st_mode & 0o077 == 0


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chroot") is None, reason="chroot needs root")
def test_layer_is_a_working_rootfs(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    with tarfile.open(fileobj=io.BytesIO(build_layer_tar())) as tar:
        tar.extractall(root, filter="tar")
    out = subprocess.run(
        ["chroot", str(root), "sh", "-c", "cat /www/index.html && id -un && wget --help 2>&1 | head -1"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[:2] == ["hello from opencs busybox", "root"]
