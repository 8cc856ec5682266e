"""Whose API the bundled registry announces its pushes to, with several processes on one data dir:
the holder of the notifications lease, never a process without an API (opencs worker), and the
others adopt the running registry instead of restarting it to point it at themselves."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from opencs.loops.registry_notifications import RegistryNotificationsLoop
from opencs.registry.bundled import REGISTRY_BIN, BundledRegistry
from opencs.registry.service import RegistryService


class _Loopback:
    """The nodes' bridge stood in by loopback: the registry listens there, nothing is created."""

    gateway_address = "127.0.0.1"

    def ensure_network(self) -> str:
        return "lo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    if not REGISTRY_BIN.exists():
        pytest.skip(f"{REGISTRY_BIN} missing (apt-get install docker-registry)")
    try:
        yield tmp_path
    finally:
        BundledRegistry(tmp_path / "registry").stop()


def test_only_the_owner_points_the_registry_at_itself(data_dir: Path) -> None:
    port = _free_port()

    def process(api: str | None) -> RegistryService:
        return RegistryService(data_dir, port, _Loopback(), notify_url=api and f"http://{api}/hook/registry")

    a, b, worker = process("127.0.0.1:8990"), process("127.0.0.1:8991"), process(None)
    reg = BundledRegistry(data_dir / "registry")
    loop_a = RegistryNotificationsLoop(a, interval=3600)
    loop_a.start()  # a holds the lease
    try:
        a.ensure()
        pid = reg.recorded_pid()
        assert pid is not None and reg.recorded_notify_url() == "http://127.0.0.1:8990/hook/registry"

        for other in (b, worker):  # they use the registry as it is: same process, a's URL
            other.ensure()
            other.keep_notifications()  # not the owner: changes nothing
            assert reg.recorded_pid() == pid and reg.recorded_notify_url() == "http://127.0.0.1:8990/hook/registry"
    finally:
        loop_a.stop()
    assert not a.owns_notifications

    # b takes the lease over: its first pass makes the running registry notify b
    loop_b = RegistryNotificationsLoop(b, interval=3600)
    loop_b.start()
    try:
        deadline = time.monotonic() + 10  # the loop's first pass runs at once, on its thread
        while reg.recorded_notify_url() != "http://127.0.0.1:8991/hook/registry" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reg.recorded_notify_url() == "http://127.0.0.1:8991/hook/registry"
        assert reg.recorded_pid() not in (None, pid)
        pid_b = reg.recorded_pid()
        a.ensure()  # the old holder, still running, adopts it
        assert reg.recorded_pid() == pid_b
    finally:
        loop_b.stop()

    # a worker never owns them, even when it holds the lease (it has no /hook/registry)
    worker.take_notifications()
    assert not worker.owns_notifications
