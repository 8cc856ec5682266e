"""The local provider against real dockerd processes (no mocks for the engine)."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import ssl
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import pytest
import requests
from docker.tls import TLSConfig

from opencs import ids
from opencs.providers import localnet
from opencs.providers.base import InstanceNotFound, InstanceSpec, InstanceState, TLSMaterial
from opencs.providers.local import LocalProvider, LocalProviderError

from .conftest import (
    CA,
    TEST_BRIDGE,
    TEST_SUBNET,
    Nodes,
    busybox_rootfs_tar,
    issue,
    make_ca,
    make_provider,
    wait_clean,
    write_client_files,
)

pytestmark = pytest.mark.docker


def client(docker_host: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=docker_host, version="1.41", timeout=20)


def wait_state(p: LocalProvider, iid: str, want: InstanceState, timeout: float = 5.0) -> InstanceState:
    deadline = time.monotonic() + timeout
    while (st := p.inspect(iid).state) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return st


def ping_tls_without_client_cert(ip: str, ca_file: str) -> bytes:
    ctx = ssl.create_default_context(cafile=ca_file)
    with (
        socket.create_connection((ip, 2376), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=ip) as s,
    ):
        s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
        reply = s.recv(100)  # with TLS 1.3 the server's alert arrives here
    if not reply:
        raise ConnectionError("closed without a reply")
    return reply


def test_unknown_ids(provider: LocalProvider) -> None:
    provider.check()
    with pytest.raises(InstanceNotFound):
        provider.inspect("i-" + "0" * 20)
    with pytest.raises(InstanceNotFound):
        provider.inspect("../etc")
    with pytest.raises(InstanceNotFound):
        provider.start("i-" + "0" * 20)
    provider.destroy("i-" + "0" * 20)  # idempotent: unknown is not an error


def test_create_two_in_parallel(nodes: Nodes) -> None:
    t0 = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        insts = list(pool.map(lambda _: nodes.create(InstanceSpec(labels={"zone": "a"})), range(2)))
    elapsed = time.monotonic() - t0
    assert elapsed < 15, elapsed
    assert {i.state for i in insts} == {InstanceState.RUNNING}
    ips = {i.private_ip for i in insts}
    assert len(ips) == 2 and ips.isdisjoint({str(next(ipaddress.ip_network(TEST_SUBNET).hosts()))})
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(TEST_SUBNET) for ip in ips)
    engine_ids = set()
    for i in insts:
        assert i.docker_host.startswith("unix://") and i.tls_port is None
        info = client(i.docker_host).info()
        assert info["Name"] == i.instance_id == i.hostname
        assert "zone=a" in info["Labels"]
        engine_ids.add(info["ID"])
    assert len(engine_ids) == 2  # each node has its own /etc/docker key
    assert {i.instance_id for i in nodes.provider.list()} == {i.instance_id for i in insts}


def test_create_failure_cleans_up(nodes: Nodes) -> None:
    provider = nodes.provider
    # dockerd rejects the mirror and exits: create must fail fast, name the cause, and undo everything
    with pytest.raises(LocalProviderError, match="dockerd exited"):
        provider.create(InstanceSpec(registry_mirror="not a url"))
    assert provider.list() == []
    assert wait_clean(provider.root_dir) == []


def test_limits_and_registry_settings(nodes: Nodes) -> None:
    mem = 256 * 1024 * 1024
    mirror = "http://10.214.0.1:5000"
    spec = InstanceSpec(
        cpus=0.5, memory_bytes=mem, registry_mirror=mirror, insecure_registries=["10.214.0.1:5000"]
    )
    inst = nodes.create(spec)
    reg = client(inst.docker_host).info()["RegistryConfig"]
    assert reg["Mirrors"] == [mirror + "/"]
    assert "10.214.0.1:5000" in reg["IndexConfigs"] and not reg["IndexConfigs"]["10.214.0.1:5000"]["Secure"]
    # nodes pull from a registry: the offline-image switch is opt-in
    environ = Path(f"/proc/{inst.details['pid']}/environ").read_bytes().split(b"\0")
    assert not any(e.startswith(b"DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=") for e in environ)
    cg = inst.details["cgroup"]
    assert int(Path(f"/sys/fs/cgroup/memory/{cg}/memory.limit_in_bytes").read_text()) == mem
    cpu = Path(f"/sys/fs/cgroup/cpu/{cg}")
    quota, period = int((cpu / "cpu.cfs_quota_us").read_text()), int((cpu / "cpu.cfs_period_us").read_text())
    assert quota == period // 2
    rootfs = busybox_rootfs_tar()
    if rootfs is None:
        return
    # a container of the node lands below the limited cgroup (dockerd --cgroup-parent)
    c = client(inst.docker_host)
    c.api.import_image_from_data(rootfs, repository="local/busybox", tag="latest")
    ctr = c.containers.run("local/busybox:latest", ["sleep", "30"], detach=True)
    ctr.reload()
    pid = ctr.attrs["State"]["Pid"]
    assert pid in nodes.provider.node_pids(inst.instance_id)
    assert Path(f"/sys/fs/cgroup/memory/{cg}/{ctr.id}").is_dir()
    mem_line = next(ln for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if ":memory:" in ln)
    assert mem_line.endswith(f"/{cg}/{ctr.id}")


def test_stop_start(nodes: Nodes) -> None:
    p = nodes.provider
    inst = nodes.create()
    sock = Path(inst.details["unix_socket"])
    assert p.stop(inst.instance_id).state == InstanceState.STOPPED
    assert p.node_pids(inst.instance_id) == []
    assert not localnet.ping_unix(sock)
    # a restarted control plane must not bring a stopped node back
    p2 = make_provider(p.root_dir)
    assert [(i.instance_id, i.state) for i in p2.adopt()] == [(inst.instance_id, InstanceState.STOPPED)]
    again = p2.start(inst.instance_id)
    assert again.state == InstanceState.RUNNING and again.private_ip == inst.private_ip
    assert client(again.docker_host).info()["Name"] == inst.instance_id


def test_kill9_then_adopt(nodes: Nodes) -> None:
    p = nodes.provider
    inst = nodes.create()
    client(inst.docker_host).volumes.create("survives-crash")
    old_pid = inst.details["pid"]
    os.kill(old_pid, signal.SIGKILL)
    assert wait_state(p, inst.instance_id, InstanceState.UNHEALTHY) == InstanceState.UNHEALTHY
    p2 = make_provider(p.root_dir)  # a restarted control plane
    adopted = {i.instance_id: i for i in p2.adopt()}
    back = adopted[inst.instance_id]
    assert back.state == InstanceState.RUNNING and back.details["pid"] != old_pid
    assert back.private_ip == inst.private_ip
    names = [v.name for v in client(back.docker_host).volumes.list()]
    assert "survives-crash" in names  # a crash is a reboot, not a re-image


def tls_client(endpoint: str, ca: CA, d: Path, client_ca: CA | None = None) -> docker.DockerClient:
    """A TLS docker client trusting `ca`, with a client certificate from `client_ca` (default: `ca`)."""
    material = issue(client_ca or ca, "test-client", server=False)
    ca_f, cert_f, key_f = write_client_files(TLSMaterial(ca.pem, material.cert_pem, material.key_pem), d)
    tls = TLSConfig(client_cert=(cert_f, key_f), ca_cert=ca_f, verify=True)
    c = docker.DockerClient(base_url=endpoint, tls=tls, version="1.41", timeout=10)
    c.api.trust_env = False  # REQUESTS_CA_BUNDLE in the env would override verify=ca.pem
    return c


def test_tls_endpoint(nodes: Nodes, tmp_path: Path) -> None:
    ca = make_ca()
    seen: list[str] = []

    def server_cert(ip: str) -> TLSMaterial:  # the provider knows the IP only once it assigns it
        seen.append(ip)
        return issue(ca, "node", server=True, ips=(ip,))

    inst = nodes.create(InstanceSpec(tls_factory=server_cert))
    assert seen == [inst.private_ip]
    assert inst.tls_port == 2376 and inst.details["tcp_endpoint"] == f"tcp://{inst.private_ip}:2376"
    key_file = Path(inst.details["dir"]) / "tls" / "key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert tls_client(inst.details["tcp_endpoint"], ca, tmp_path / "c").info()["Name"] == inst.instance_id
    assert client(inst.docker_host).info()["Name"] == inst.instance_id  # the unix socket needs no cert

    # a client without a certificate, or with one from another CA, is refused
    ca_f = str(tmp_path / "c" / "ca.pem")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        ping_tls_without_client_cert(inst.private_ip, ca_f)
    foreign = tls_client(inst.details["tcp_endpoint"], ca, tmp_path / "o", client_ca=make_ca("other"))
    with pytest.raises(requests.exceptions.RequestException):
        foreign.info()


def test_reset_wipes_data(nodes: Nodes, tmp_path: Path) -> None:
    p = nodes.provider
    inst = nodes.create(InstanceSpec(labels={"gen": "1"}))
    client(inst.docker_host).volumes.create("before-reset")
    old_engine = client(inst.docker_host).info()["ID"]
    ca = make_ca()
    # reset keeps the IP, so a certificate for it can be made up front
    server = issue(ca, "node", server=True, ips=(inst.private_ip,))
    fresh = p.reset(inst.instance_id, InstanceSpec(tls=server, labels={"gen": "2"}))
    assert fresh.state == InstanceState.RUNNING
    assert (fresh.instance_id, fresh.private_ip) == (inst.instance_id, inst.private_ip)
    info = client(fresh.docker_host).info()
    assert "before-reset" not in [v.name for v in client(fresh.docker_host).volumes.list()]
    assert "gen=2" in info["Labels"] and "gen=1" not in info["Labels"]
    assert info["ID"] != old_engine  # a re-imaged disk gets a new engine identity
    assert tls_client(fresh.details["tcp_endpoint"], ca, tmp_path / "c").info()["ID"] == info["ID"]


def test_destroy_leaves_nothing(nodes: Nodes) -> None:
    p = nodes.provider
    chosen = ids.instance_id()  # the store picks the id before the provider creates anything
    inst = nodes.create(InstanceSpec(instance_id=chosen, memory_bytes=128 * 1024 * 1024))
    assert inst.instance_id == chosen
    with pytest.raises(LocalProviderError, match="already in use"):
        p.create(InstanceSpec(instance_id=chosen))
    assert p.inspect(chosen).state == InstanceState.RUNNING  # the failed duplicate did not harm it
    pids = p.node_pids(inst.instance_id)
    assert len(pids) >= 2  # dockerd + containerd
    p.destroy(inst.instance_id)
    p.destroy(inst.instance_id)  # idempotent
    with pytest.raises(InstanceNotFound):
        p.inspect(inst.instance_id)
    assert wait_clean(p.root_dir) == []
    assert not localnet.link_exists(TEST_BRIDGE)


def test_half_made_bridge_is_completed_and_released(provider: LocalProvider) -> None:
    # A control plane killed between `ip link add` and `ip addr add` leaves a bridge without its
    # address; the next ensure_network must finish it (CI once lost a run to exactly this).
    assert not localnet.link_exists(TEST_BRIDGE)
    localnet.run("ip", "link", "add", TEST_BRIDGE, "type", "bridge")
    try:
        gw = provider.ensure_network()
        addrs = localnet.run("ip", "-4", "-o", "addr", "show", "dev", TEST_BRIDGE).stdout
        assert f" {gw}/24 " in addrs
        with socket.socket() as s:  # what the bundled registry does next
            s.bind((gw, 0))
        provider.ensure_network()  # again: no error, still one address
        addrs = localnet.run("ip", "-4", "-o", "addr", "show", "dev", TEST_BRIDGE).stdout
        assert addrs.count(" inet ") == 1
    finally:
        provider.release_network()
    assert not localnet.link_exists(TEST_BRIDGE)
    assert wait_clean(provider.root_dir) == []
