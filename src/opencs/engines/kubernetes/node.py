"""A Kubernetes worker on one machine: Debian's containerd (CRI), kubelet and kube-proxy from the
built binary, a CNI bridge over the node's pod CIDR, and routes to the other nodes' pod CIDRs.

The node's certificates are minted directly from the cluster CA (kubelet client CN=system:node:<name>
in O=system:nodes, its serving certificate for the node IP), so it joins without a bootstrap round.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from opencs.engines.kubernetes import binary
from opencs.engines.kubernetes.config import (
    CNI_BIN_DIR,
    CONTAINERD_SOCK,
    ClusterNetwork,
    KubeletSettings,
    cni_conflist,
    containerd_toml,
    kube_proxy_config,
    kubelet_config,
    registry_hosts,
)
from opencs.engines.kubernetes.controlplane import write_pair, write_private
from opencs.engines.kubernetes.kubeconfig import kubeconfig
from opencs.engines.kubernetes.machine import NETNS_DIR, STD_PATH, Machine, MachineError, MachineHost
from opencs.engines.kubernetes.pki import ClusterPKI

COMPONENTS = ("containerd", "kubelet", "kube-proxy")
_CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
REQUIRED = ("containerd", "runc", "nsenter", "unshare", "setsid", "iptables", "ip")


def missing_host_binaries() -> list[str]:
    """Host programs a node needs (Debian: containerd runc containernetworking-plugins iptables)."""
    missing = [b for b in REQUIRED if shutil.which(b, path=STD_PATH) is None]
    missing += [f"CNI plugin {p}" for p in _CNI_PLUGINS if not Path(CNI_BIN_DIR, p).exists()]
    return missing


def netns_run(netns: str, *cmd: str) -> None:
    """A command inside a network namespace (routes, sysctls of that namespace only)."""
    p = subprocess.run(
        ["nsenter", f"--net={NETNS_DIR / netns}", "--", *cmd], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if p.returncode != 0:
        raise MachineError(f"in {netns}: {' '.join(cmd)} failed: {p.stderr.strip()}")


def set_routes(netns: str, routes: dict[str, str], device: str = "eth0") -> None:
    """In one machine: {destination CIDR: next hop IP, or "" for on-link via `device`}."""
    for dst, via in sorted(routes.items()):
        if via:
            netns_run(netns, "ip", "route", "replace", dst, "via", via, "dev", device)
        else:
            netns_run(netns, "ip", "route", "replace", dst, "dev", device)


@dataclass
class WorkerNode:
    machine: Machine
    pki: ClusterPKI
    server: str  # https://<apiserver>:6443
    pod_cidr: str  # this node's
    sandbox_image: str  # host:port/repo:tag in the bundled registry
    registry: str  # host:port of the bundled registry (docker.io's mirror)
    network: ClusterNetwork = field(default_factory=ClusterNetwork)
    proxy_mode: str = "iptables"
    cpus: float | None = None
    memory_bytes: int | None = None
    system_reserved: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.host = MachineHost(self.machine)
        self.dir = self.host.dir
        self.pki_dir = self.dir / "pki"

    def _write_files(self) -> None:
        m, d = self.machine, self.dir
        write_private(self.pki_dir / "ca.crt", self.pki.ca.cert_pem, 0o644)
        write_pair(self.pki_dir, "kubelet", self.pki.kubelet_serving(m.name, m.ip))
        kc = kubeconfig(
            self.server, self.pki.ca.cert_pem, self.pki.kubelet_client(m.name), user=f"system:node:{m.name}"
        )
        write_private(self.pki_dir / "kubelet.kubeconfig", kc)
        kc = kubeconfig(self.server, self.pki.ca.cert_pem, self.pki.client("system:kube-proxy"), user="kube-proxy")
        write_private(self.pki_dir / "kube-proxy.kubeconfig", kc)
        write_private(d / "containerd.toml", containerd_toml(d, self.sandbox_image), 0o644)
        for rel, text in registry_hosts(self.registry).items():
            write_private(d / "certs.d" / rel, text, 0o644)
        write_private(
            d / "cni" / "net.d" / "10-opencs.conflist", cni_conflist(self.pod_cidr, d / "cni" / "ipam"), 0o644
        )
        # pods with dnsPolicy Default get this: the nodes have no upstream resolver
        write_private(d / "resolv.conf", "options ndots:1\n", 0o644)
        settings = KubeletSettings(
            node_name=m.name, node_ip=m.ip, cgroup=m.cgroup, pki_dir=self.pki_dir, network=self.network,
            system_reserved=self.system_reserved, pod_logs_dir=d / "pod-logs", resolv_conf=d / "resolv.conf",
        )  # fmt: skip
        write_private(d / "kubelet.yaml", kubelet_config(settings), 0o644)
        write_private(
            d / "kube-proxy.yaml",
            kube_proxy_config(self.pki_dir / "kube-proxy.kubeconfig", m.name, m.ip, self.network, self.proxy_mode),
            0o644,
        )

    def _argv(self, component: str) -> list[str]:
        d, exe = self.dir, str(binary.binary())
        if component == "containerd":
            return ["containerd", "--config", str(d / "containerd.toml"), "--log-level", "warn"]
        if component == "kubelet":
            labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
            return [
                exe, "kubelet", "--config", str(d / "kubelet.yaml"),
                "--kubeconfig", str(self.pki_dir / "kubelet.kubeconfig"),
                "--root-dir", str(d / "kubelet"), "--cert-dir", str(self.pki_dir),
                "--hostname-override", self.machine.name, "--node-ip", self.machine.ip,
                *(["--node-labels", labels] if labels else []), "--v", "1",
            ]  # fmt: skip
        if component == "kube-proxy":
            return [exe, "kube-proxy", "--config", str(d / "kube-proxy.yaml"), "--v", "1"]
        raise ValueError(f"unknown node component {component!r}")

    def start(self, routes: dict[str, str] | None = None) -> None:
        """Start (or complete) the node; `routes` are the other nodes' pod CIDRs -> their IPs.
        Readiness is the cluster's to judge (the Node's Ready condition)."""
        binary.binary()
        if missing := missing_host_binaries():
            raise MachineError(f"cannot run a Kubernetes node here, missing: {', '.join(missing)}")
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "kubelet.yaml").exists():
            self._write_files()
        # per-netns settings: forwarding for pod traffic, the service CIDR on-link (no default route)
        netns_run(self.machine.netns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
        set_routes(self.machine.netns, {self.network.service_cidr: "", **(routes or {})})
        self.host.create_cgroups(self.cpus, self.memory_bytes)
        holder = self.host.boot()
        if self.host.pid("containerd") is None:
            self.host.spawn("containerd", self._argv("containerd"))
        self._wait_socket(holder, "containerd", CONTAINERD_SOCK)
        for component in ("kubelet", "kube-proxy"):
            if self.host.pid(component) is None:
                self.host.spawn(component, self._argv(component))

    def _wait_socket(self, holder: int, component: str, path: str, timeout: float = 30.0) -> None:
        sock = Path(f"/proc/{holder}/root") / path.lstrip("/")  # the machine's own /run/containerd
        deadline = time.monotonic() + timeout
        while not sock.exists():
            if self.host.pid(component) is None:
                raise MachineError(f"{self.machine.name}: {component} exited: {self.host.log_tail(component)}")
            if time.monotonic() > deadline:
                raise MachineError(f"{self.machine.name}: {component} gave no socket in {timeout:.0f}s")
            time.sleep(0.05)

    def set_routes(self, routes: dict[str, str]) -> None:
        set_routes(self.machine.netns, routes)

    def running(self) -> dict[str, int | None]:
        return {c: self.host.pid(c) for c in COMPONENTS}

    def stop(self) -> None:
        for component in reversed(COMPONENTS):
            self.host.stop(component)
        with contextlib.suppress(MachineError):
            self.host.kill_all()  # shims and containers outlive containerd

    def destroy(self) -> None:
        """Kill everything of the node (containers included) and remove its cgroups."""
        self.host.teardown()
