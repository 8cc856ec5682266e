"""Whether an SSH-registered host could become a Kubernetes node, found by asking it (issue 9).

A node over SSH would run what a local machine runs (runtime.py: containerd with CRI, then kubelet
and kube-proxy, a CNI bridge over its pod CIDR, routes to the other nodes' pod CIDRs) with the
host's own programs, as root, under directories, a mount namespace and a cgroup of its own. Before
anything is attached the host is probed over SSH with its registered login and its own PATH, and
what it lacks is named; nothing is written to the host, and no host-wide setting is changed: IP
forwarding is its owner's to turn on.

The probe also checks that the host's address is on the network of the cluster's nodes, both
ways: pod routes go to node addresses directly (network.py), without a gateway in between.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING

from opencs.engines.kubernetes import binary
from opencs.engines.kubernetes.config import CNI_BIN_DIR
from opencs.engines.kubernetes.runtime import CNI_PLUGINS, HOST_BINARIES
from opencs.machine import HostShell

if TYPE_CHECKING:
    from opencs.engines.kubernetes.box import SshBox

PROBE_TIMEOUT = 60.0
KUBERNETES_ON_HOST = "kubernetes"  # the multicall binary of scripts/build-kubernetes.sh, on the host's PATH


def probe_script(server_bin: str) -> str:
    """A POSIX sh script printing one line per thing the host lacks (nothing: it has everything).
    It uses shell built-ins for what it checks, so a program missing from PATH cannot hide another."""
    q = shlex.quote
    plugins = " ".join(CNI_PLUGINS)
    version = binary.KUBERNETES_VERSION
    return f"""
uid=$(id -u 2>/dev/null)
[ "$uid" = 0 ] || echo "root login (the host was registered as uid ${{uid:-unknown}}: register it as root)"
for b in {" ".join(HOST_BINARIES)}; do
  command -v "$b" >/dev/null 2>&1 || echo "$b on PATH ($PATH)"
done
for p in {plugins}; do [ -x {q(CNI_BIN_DIR)}/"$p" ] || echo "the CNI plugin $p in {CNI_BIN_DIR}"; done
k=$(command -v {KUBERNETES_ON_HOST} 2>/dev/null) || k={q(server_bin)}
if [ -x "$k" ]; then
  v=$("$k" kubelet --version 2>&1 | tail -n 1)
  [ "$v" = "Kubernetes {version}" ] || echo "the Kubernetes {version} binary: $k answers '$v'"
else
  echo "the Kubernetes {version} binary ({KUBERNETES_ON_HOST}, built by scripts/build-kubernetes.sh) on PATH or \
at {server_bin}"
fi
if command -v containerd >/dev/null 2>&1; then
  containerd config default 2>/dev/null | grep -q io.containerd.grpc.v1.cri || echo "containerd's CRI plugin"
fi
f=; read -r f < /proc/sys/net/ipv4/ip_forward 2>/dev/null
[ "$f" = 1 ] || echo "net.ipv4.ip_forward=1 (it is ${{f:-unreadable}}; a node never changes a host-wide kernel \
setting: its owner sets it)"
[ -d /sys/fs/cgroup/pids ] && [ -d /sys/fs/cgroup/memory ] || echo "cgroup v1 hierarchies (pids, memory, ...) \
under /sys/fs/cgroup"
if command -v iptables >/dev/null 2>&1 && iptables -t nat -S 2>/dev/null | grep -q -- '-N KUBE-SERVICES'; then
  echo "no kube-proxy of its own (its nat table has KUBE-SERVICES: the host runs Kubernetes already)"
fi
true
"""


def route_script(ip: str) -> str:
    """Whether the host reaches `ip` directly (on-link, no gateway): prints the route or why not."""
    return f"ip -o route get {shlex.quote(ip)} 2>&1"


def on_link(route: str) -> bool:
    """`ip -o route get` output of a destination on the machine's own network."""
    words = route.split()
    return bool(words) and "via" not in words and "unreachable" not in route and "dev" in words


def host_lacks(shell: HostShell) -> list[str]:
    """What the host lacks to be a node (empty: nothing); OSError if it cannot be reached."""
    r = shell.run(probe_script(str(binary.bin_dir() / "kubernetes")), PROBE_TIMEOUT)
    if r.status != 0:
        raise OSError(f"the probe failed (exit {r.status}): {r.stderr.strip()[-300:]}")
    return [line.strip() for line in r.stdout.splitlines() if line.strip()]


def network_problem(shell: HostShell, host_ip: str, node_ip: str,
                    route_from_node: Callable[[str], str]) -> str | None:
    """Why the host and a node of the cluster (`node_ip`, whose routes `route_from_node(dst)` tells)
    are not on one network, or None."""
    back = route_from_node(host_ip)
    if not on_link(back):
        return (f"the host's address {host_ip} is not on the network of the cluster's nodes (from node "
                f"{node_ip}: {back.strip() or 'no route'})")
    r = shell.run(route_script(node_ip), PROBE_TIMEOUT)
    if r.status != 0 or not on_link(r.stdout):
        return (f"the host does not reach the cluster's node {node_ip} directly (on the host: "
                f"{(r.stdout or r.stderr).strip() or 'no route'})")
    return None


def with_binary(box: SshBox) -> SshBox:
    """The box with the Kubernetes binary the host has (the probe found it: on PATH, or at this
    server's path)."""
    r = box.shell.run(f"command -v {KUBERNETES_ON_HOST} || echo {shlex.quote(str(binary.binary()))}", PROBE_TIMEOUT)
    return dataclasses.replace(box, exe=r.stdout.strip().splitlines()[-1] if r.stdout.strip() else "")


def refusal(host: str, lacks: list[str]) -> str:
    return (f"the ssh host {host} cannot become a Kubernetes node, it lacks: {'; '.join(lacks)}. "
            "Nothing was installed on the host (Debian: apt-get install containerd runc "
            "containernetworking-plugins iptables; the Kubernetes binary from scripts/build-kubernetes.sh)")
