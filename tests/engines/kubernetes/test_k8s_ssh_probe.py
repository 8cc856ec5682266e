"""An SSH-registered host asked over SSH whether it could become a Kubernetes node (issue 9): the
real sshd host of tests/providers/sshhost.py, with a PATH of its own (sshd's SetEnv: a directory of
links to this machine's programs, so that one can be taken away), and the driver's 412 through
probe_machine."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from opencs.engines.driver import DriverError
from opencs.engines.kubernetes import network, sshnode
from opencs.engines.kubernetes.driver import KubernetesDriver
from opencs.engines.kubernetes.runtime import STD_PATH
from opencs.engines.swarm.node import DockerEngine
from opencs.providers.ssh import SshProvider
from opencs.secretbox import SecretBox
from tests.providers.sshhost import TEST_USER, SshHost, new_tmp, skip_reason

pytestmark = [pytest.mark.integration, pytest.mark.docker]

PREFIX, BRIDGE, SUBNET = "okp", "okp0", "10.188.0.0/24"  # this module's own claim


def _path_farm(d: Path) -> Path:
    """Links to every program of the standard PATH (the first of each name wins)."""
    d.mkdir()
    for src in STD_PATH.split(":"):
        for p in sorted(Path(src).glob("*")) if Path(src).is_dir() else []:
            if not (d / p.name).exists() and not (d / p.name).is_symlink():
                (d / p.name).symlink_to(p.resolve() if p.is_symlink() else p)
    d.chmod(0o755)
    return d


@pytest.fixture(scope="module")
def host() -> Iterator[SshHost]:
    if reason := skip_reason():
        pytest.skip(reason)
    tmp = new_tmp()
    farm = _path_farm(tmp / "path")
    h = SshHost(tmp, prefix=PREFIX, bridge=BRIDGE, subnet=SUBNET, sshd_extra=f"SetEnv PATH={farm}\n")
    try:
        yield h.start()
    finally:
        problems = h.close()
        shutil.rmtree(tmp, ignore_errors=True)
        assert problems == [], problems


@pytest.fixture(scope="module")
def provider(host: SshHost) -> Iterator[SshProvider]:
    p = SshProvider(host.tmp / "ssh", SecretBox(Fernet.generate_key()), runtime=DockerEngine())
    try:
        yield p
    finally:
        for i in p.list():
            p.destroy(i.instance_id)
        p.close()


def _forwarding(host: SshHost, on: bool) -> None:
    """What the host's owner does (its netns: this test's own machine)."""
    assert host.node is not None
    subprocess.run(["ip", "netns", "exec", host.node.details["netns"], "sysctl", "-q", "-w",
                    f"net.ipv4.ip_forward={int(on)}"], check=True)


def test_the_probe_names_what_the_host_lacks(host: SshHost, provider: SshProvider) -> None:
    assert host.node is not None
    iid = provider.register(f"root@{host.ip}", private_key=host.root_key_pem,
                            remote_socket=host.engine_socket).instance_id
    shell = provider.host_shell(iid)
    farm = host.tmp / "path"
    _forwarding(host, False)
    path = shell.run("echo $PATH").stdout.strip()
    assert path.endswith(str(farm)), path  # the host's own PATH is what the probe sees (root's shell adds to it)
    lacks = sshnode.host_lacks(shell)
    assert len(lacks) == 1 and lacks[0].startswith("net.ipv4.ip_forward=1 (it is 0"), lacks
    _forwarding(host, True)
    assert sshnode.host_lacks(shell) == []
    (farm / "runc").unlink()
    (farm / "kubernetes").symlink_to("/bin/true")  # some other "kubernetes" first on its PATH
    try:
        lacks = sshnode.host_lacks(shell)
        assert lacks[0] == f"runc on PATH ({path})" and len(lacks) == 2, lacks
        assert lacks[1].startswith(f"the Kubernetes v1.34.4 binary: {farm}/kubernetes answers ''"), lacks
        # through the driver: the 412's text names each, and says nothing was installed
        kube = KubernetesDriver(book=None, clusters=None)  # type: ignore[arg-type]
        with pytest.raises(DriverError) as e:
            kube.probe_machine("c-k", "ssh", host.ip, shell)
        assert e.value.code == "ProviderUnsupported"
        assert f"the ssh host {host.ip} cannot become a Kubernetes node, it lacks: runc on PATH" in e.value.message
        assert "Nothing was installed on the host" in e.value.message
        kube.probe_machine("c-k", "local", host.ip, shell)  # other providers are not probed
    finally:
        (farm / "kubernetes").unlink()
        (farm / "runc").symlink_to(Path("/usr/sbin/runc").resolve() if Path("/usr/sbin/runc").exists()
                                   else Path("/usr/bin/runc").resolve())
    assert sshnode.host_lacks(shell) == []
    provider.destroy(iid)


def test_a_host_off_the_nodes_network_and_a_plain_login(host: SshHost, provider: SshProvider) -> None:
    assert host.node is not None
    netns = host.node.details["netns"]
    iid = provider.register(f"{TEST_USER}@{host.ip}", password=host.user_password,
                            remote_socket=host.engine_socket).instance_id
    shell = provider.host_shell(iid)
    _forwarding(host, True)
    lacks = sshnode.host_lacks(shell)  # (and /root, where this server's Kubernetes binary is, is not its to read)
    assert lacks[0] == f"root login (the host was registered as uid {_uid(TEST_USER)}: register it as root)", lacks
    # its own bridge's gateway is on its network, both ways; an address of another network is not
    gateway = SUBNET.replace(".0/24", ".1")
    assert sshnode.network_problem(shell, host.ip, gateway, lambda dst: network.route_to(netns, dst)) is None
    why = sshnode.network_problem(shell, host.ip, "10.187.0.2", lambda dst: network.route_to(netns, dst))
    assert why is not None and "does not reach the cluster's node 10.187.0.2 directly" in why, why
    why = sshnode.network_problem(shell, "10.187.0.9", gateway, lambda dst: network.route_to(netns, dst))
    assert why is not None and "10.187.0.9 is not on the network of the cluster's nodes" in why, why
    provider.destroy(iid)


def _uid(user: str) -> int:
    return int(subprocess.run(["id", "-u", user], capture_output=True, text=True, check=True).stdout)


def _node_procs(iid: str) -> list[int]:
    cg = Path(f"/sys/fs/cgroup/pids/opencs-{iid}")
    return [int(p) for f in cg.rglob("cgroup.procs") for p in f.read_text().split()] if cg.exists() else []


def test_the_node_runtime_on_the_host_kept_up_and_removed(host: SshHost) -> None:
    """The ssh provider boots the Kubernetes node runtime on the host (containerd under its supervisor,
    in cgroup opencs-<id>), starts it again after everything of it was killed (adopt: reboot
    semantics), and a reset back to a Docker host removes it all."""
    from opencs.engines.kubernetes.runtime import KubernetesNodeRuntime
    from opencs.providers.base import InstanceSpec, InstanceState
    from opencs.providers.sshnode import NODE_ROOT

    p = SshProvider(host.tmp / "ssh-node", SecretBox(Fernet.generate_key()), runtime=DockerEngine(),
                    runtimes={"kubernetes": KubernetesNodeRuntime(oci_runtime="runc")})
    iid = p.register(f"root@{host.ip}", private_key=host.root_key_pem, remote_socket=host.engine_socket).instance_id
    try:
        _forwarding(host, True)
        inst = p.reset(iid, InstanceSpec(runtime="kubernetes"))
        assert inst.state == InstanceState.RUNNING and inst.details["cgroup"] == f"opencs-{iid}", inst.details
        comms = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in _node_procs(iid)}
        assert "containerd" in comms, comms
        for pid in _node_procs(iid):  # the host "lost power"
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _node_procs(iid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert p.inspect(iid).state == InstanceState.UNHEALTHY
        p.adopt()
        assert p.inspect(iid).state == InstanceState.RUNNING
        assert p.reset(iid, InstanceSpec()).state == InstanceState.RUNNING  # a Docker host again
        assert _node_procs(iid) == [] and not list(Path("/sys/fs/cgroup").glob(f"*/opencs-{iid}"))
        assert not (NODE_ROOT / iid).exists()
    finally:
        p.destroy(iid)
        p.close()
    assert _node_procs(iid) == []
