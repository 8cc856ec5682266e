"""Real Kubernetes on local machines: 1 control plane + 2 workers, each in a network namespace this
test creates, from the built multicall binary and Debian's containerd. Seen through the official
`kubernetes` Python client: both nodes Ready, a busybox pod on each, a pod on node A reaches a pod
IP on node B. Everything is torn down by the names and PIDs created here, and checked gone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from opencs.engines.kubernetes import binary
from opencs.engines.kubernetes.config import ClusterNetwork
from opencs.engines.kubernetes.controlplane import ControlPlane
from opencs.engines.kubernetes.machine import Machine, MachineHost
from opencs.engines.kubernetes.node import WorkerNode, missing_host_binaries, set_routes
from opencs.engines.kubernetes.pki import ClusterPKI
from opencs.providers import localnet
from opencs.registry.bundled import BundledRegistry
from opencs.registry.image import INDEX_HTML, seed_busybox
from opencs.registry.pause import PAUSE_REPOSITORY, PAUSE_TAG, seed_pause

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX, BRIDGE, GATEWAY = "k8t", "k8tbr0", "10.231.0.1"
HOST_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "vm/panic_on_oom")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait(what: str, check: Callable[[], Any], timeout: float, on_timeout: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(1.0)
    pytest.fail(f"{what} not reached in {timeout:.0f}s {on_timeout()}")


@pytest.fixture
def machines(tmp_path: Path) -> Iterator[Callable[[str, str], Machine]]:
    """Makes machines (netns on our bridge + a state dir + a cgroup); tears down what it made."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, cgroups, mounts)")
    try:
        binary.binary()
    except binary.BinaryMissing as e:
        pytest.skip(str(e))
    if missing := missing_host_binaries():
        pytest.fail(f"host lacks {missing} (scripts/bootstrap.sh installs them)")
    made: list[tuple[Machine, str]] = []
    localnet.ensure_bridge(BRIDGE, f"{GATEWAY}/24")

    def make(tag: str, ip: str) -> Machine:
        netns, veth = f"{PREFIX}n{tag}", f"{PREFIX}v{tag}"
        m = Machine(name=f"k8t-{tag}", ip=ip, netns=netns, root_dir=tmp_path / tag, cgroup=netns)
        made.append((m, veth))
        localnet.ensure_netns(netns, veth, BRIDGE, f"{ip}/24")
        return m

    try:
        yield make
    finally:
        errors = []
        for m, veth in reversed(made):
            try:
                MachineHost(m).teardown()
            except Exception as e:  # keep tearing down the others
                errors.append(f"{m.name}: {e}")
            localnet.delete_netns(m.netns, veth)
        localnet.remove_bridge(BRIDGE)
        left = localnet.leftovers(PREFIX, BRIDGE, tmp_path)
        left += [f"mount {p}" for m, _ in made for p in MachineHost(m).mounts()]
        assert not errors and not left, f"teardown: {errors} left behind: {left}"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[BundledRegistry]:
    reg = BundledRegistry(tmp_path / "registry", f"{GATEWAY}:{_free_port('127.0.0.1')}")
    try:
        yield reg
    finally:
        reg.stop()


def _node_ready(v1: Any, name: str) -> bool:
    with contextlib.suppress(Exception):
        node = v1.read_node(name)
        return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
    return False


def _pod(name: str, node: str, command: list[str], restart: str = "Always") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},  # placed by the scheduler
            "restartPolicy": restart,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox", "command": command}],
        },
    }


def test_control_plane_and_two_nodes(machines: Callable[[str, str], Machine], registry: BundledRegistry) -> None:
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config

    before = {s: Path("/proc/sys", s).read_text() for s in HOST_SYSCTLS}
    localnet.ensure_bridge(BRIDGE, f"{GATEWAY}/24")
    registry.ensure_running()
    seed_busybox(registry.url)
    seed_pause(registry.url)
    reg_host = registry.url.removeprefix("http://")

    net = ClusterNetwork()
    pki = ClusterPKI.create("itest")
    cp_machine = machines("cp", "10.231.0.10")
    workers = [machines("a", "10.231.0.11"), machines("b", "10.231.0.12")]
    cp = ControlPlane(cp_machine, pki, net, etcd_fsync=False)
    t0 = time.monotonic()
    cp.start()
    t_api = time.monotonic() - t0
    cidrs = {m.name: net.node_pod_cidr(i + 1) for i, m in enumerate(workers)}
    nodes = []
    for m in workers:
        routes = {cidrs[o.name]: o.ip for o in workers if o is not m}
        node = WorkerNode(m, pki, cp.server, cidrs[m.name], f"{reg_host}/{PAUSE_REPOSITORY}:{PAUSE_TAG}", reg_host, net)
        node.start(routes)
        nodes.append(node)
    set_routes(cp_machine.netns, {cidrs[m.name]: m.ip for m in workers})

    api = k8s_config.new_client_from_config(str(cp.admin_kubeconfig()))
    v1 = k8s.CoreV1Api(api)

    def logs() -> str:
        return " || ".join(f"{n.machine.name}: {n.host.log_tail('kubelet', 4)}" for n in nodes)

    for m in workers:
        _wait(f"node {m.name} Ready", lambda m=m: _node_ready(v1, m.name), 180, logs)
    t_ready = time.monotonic() - t0

    a, b = workers

    def default_sa() -> bool:  # the service-account controller makes it shortly after start
        with contextlib.suppress(Exception):
            return bool(v1.read_namespaced_service_account("default", "default"))
        return False

    _wait("service account default/default", default_sa, 60)
    v1.create_namespaced_pod("default", _pod("web", b.name, ["httpd", "-f", "-p", "8080", "-h", "/www"]))

    def web_ip() -> str | None:
        pod = v1.read_namespaced_pod("web", "default")
        return pod.status.pod_ip if pod.status.phase == "Running" else None

    ip = _wait("pod web Running on node b", web_ip, 120, logs)
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(cidrs[b.name])
    # nc, not wget: the static (glibc) busybox's wget crashes resolving even a literal address
    v1.create_namespaced_pod(
        "default",
        _pod(
            "client", a.name, ["sh", "-c", f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {ip} 8080"], restart="Never"
        ),
    )

    def client_done() -> str | None:
        phase = v1.read_namespaced_pod("client", "default").status.phase
        return phase if phase in ("Succeeded", "Failed") else None

    phase = _wait("pod client finished on node a", client_done, 120, logs)
    out = v1.read_namespaced_pod_log("client", "default")  # apiserver -> kubelet (serving cert, authz)
    assert phase == "Succeeded" and out.startswith("HTTP/1.") and out.encode().endswith(INDEX_HTML), (phase, out)
    pod_a = v1.read_namespaced_pod("client", "default")
    assert ipaddress.ip_address(pod_a.status.pod_ip) in ipaddress.ip_network(cidrs[a.name])

    # every process of a node is inside its cgroup, and the host kept its kernel settings
    for n in nodes:
        assert all(n.running().values()), n.running()
    assert {s: Path("/proc/sys", s).read_text() for s in HOST_SYSCTLS} == before
    print(f"apiserver ready {t_api:.1f}s, 2 nodes Ready {t_ready:.1f}s after start")
