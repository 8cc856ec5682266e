"""A Kubernetes control plane on one machine: embedded etcd, kube-apiserver, kube-controller-manager
and kube-scheduler from the built multicall binary, with the cluster's own PKI and RBAC on.

etcd listens on the machine's loopback only (its own network namespace: no other machine can reach
it); the apiserver serves https://<machine ip>:6443, the only port other machines see.
"""

from __future__ import annotations

import os
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from opencs.engines.kubernetes import binary
from opencs.engines.kubernetes.config import ClusterNetwork
from opencs.engines.kubernetes.kubeconfig import kubeconfig
from opencs.engines.kubernetes.machine import Machine, MachineError, MachineHost
from opencs.engines.kubernetes.pki import ClusterPKI
from opencs.pki import IssuedCert

APISERVER_PORT = 6443
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def write_pair(directory: Path, name: str, cred: IssuedCert) -> None:
    write_private(directory / f"{name}.crt", cred.cert_pem, 0o644)
    write_private(directory / f"{name}.key", cred.key_pem, 0o600)


@dataclass
class ControlPlane:
    machine: Machine
    pki: ClusterPKI
    network: ClusterNetwork = field(default_factory=ClusterNetwork)
    etcd_fsync: bool = True  # False: --unsafe-no-fsync (tests on a busy disk; loses data on a host crash)

    def __post_init__(self) -> None:
        self.host = MachineHost(self.machine)
        self.dir = self.host.dir
        self.pki_dir = self.dir / "pki"

    @property
    def server(self) -> str:
        return f"https://{self.machine.ip}:{APISERVER_PORT}"

    def kubeconfig_for(self, cred: IssuedCert, user: str) -> str:
        return kubeconfig(self.server, self.pki.ca.cert_pem, cred, user=user)

    def _write_files(self) -> None:
        d = self.pki_dir
        write_private(d / "ca.crt", self.pki.ca.cert_pem, 0o644)
        write_private(d / "ca.key", self.pki.ca.key_pem)
        write_private(d / "sa.key", self.pki.sa_key_pem)
        write_private(d / "sa.pub", self.pki.sa_pub_pem, 0o644)
        write_pair(d, "apiserver", self.pki.apiserver([self.machine.ip], self.network.apiserver_service_ip))
        write_pair(d, "apiserver-kubelet-client", self.pki.client("kube-apiserver-kubelet-client", ["system:masters"]))
        for user in ("system:kube-controller-manager", "system:kube-scheduler"):
            short = user.split(":", 1)[1]
            write_private(d / f"{short}.kubeconfig", self.kubeconfig_for(self.pki.client(user), short))
        admin = self.pki.admin()
        write_pair(d, "admin", admin)
        write_private(d / "admin.kubeconfig", self.kubeconfig_for(admin, "admin"))

    def _argv(self, component: str) -> list[str]:
        d, net, exe = self.pki_dir, self.network, str(binary.binary())
        if component == "etcd":
            argv = [
                exe, "etcd", "--name", self.machine.name, "--data-dir", str(self.dir / "etcd"),
                "--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
                "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                "--initial-cluster", f"{self.machine.name}=http://127.0.0.1:2380",
                "--log-level", "warn", "--quota-backend-bytes", str(2 << 30),
            ]  # fmt: skip
            return argv + ([] if self.etcd_fsync else ["--unsafe-no-fsync"])
        if component == "kube-apiserver":
            return [
                exe, "kube-apiserver",
                "--advertise-address", self.machine.ip, "--bind-address", self.machine.ip,
                "--secure-port", str(APISERVER_PORT),
                "--etcd-servers", "http://127.0.0.1:2379",
                "--client-ca-file", str(d / "ca.crt"),
                "--tls-cert-file", str(d / "apiserver.crt"), "--tls-private-key-file", str(d / "apiserver.key"),
                "--kubelet-client-certificate", str(d / "apiserver-kubelet-client.crt"),
                "--kubelet-client-key", str(d / "apiserver-kubelet-client.key"),
                "--kubelet-certificate-authority", str(d / "ca.crt"),
                "--kubelet-preferred-address-types", "InternalIP,Hostname",
                "--service-account-issuer", f"https://kubernetes.default.svc.{net.dns_domain}",
                "--service-account-key-file", str(d / "sa.pub"),
                "--service-account-signing-key-file", str(d / "sa.key"),
                "--service-cluster-ip-range", net.service_cidr,
                "--service-node-port-range", net.node_port_range,
                "--authorization-mode", "Node,RBAC",
                "--enable-admission-plugins", "NodeRestriction",
                "--enable-bootstrap-token-auth", "--allow-privileged", "--profiling=false",
                "--v", "1",
            ]  # fmt: skip
        common = [
            "--authentication-kubeconfig", "{kc}", "--authorization-kubeconfig", "{kc}", "--kubeconfig", "{kc}",
            "--bind-address", "127.0.0.1", "--leader-elect=false", "--profiling=false", "--v", "1",
        ]  # fmt: skip
        if component == "kube-controller-manager":
            kc = str(d / "kube-controller-manager.kubeconfig")
            return [exe, component] + [a.format(kc=kc) for a in common] + [
                "--client-ca-file", str(d / "ca.crt"), "--root-ca-file", str(d / "ca.crt"),
                "--cluster-signing-cert-file", str(d / "ca.crt"), "--cluster-signing-key-file", str(d / "ca.key"),
                "--service-account-private-key-file", str(d / "sa.key"),
                "--use-service-account-credentials",
                "--controllers", "*,bootstrapsigner,tokencleaner",
                "--allocate-node-cidrs=false", "--service-cluster-ip-range", net.service_cidr,
            ]  # fmt: skip
        if component == "kube-scheduler":
            kc = str(d / "kube-scheduler.kubeconfig")
            return [exe, component] + [a.format(kc=kc) for a in common]
        raise ValueError(f"unknown control-plane component {component!r}")

    def start(self, timeout: float = 120.0) -> None:
        """Start (or complete) the control plane and wait until the apiserver is ready."""
        binary.binary()
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.pki_dir / "apiserver.crt").exists():
            self._write_files()
        self.host.create_cgroups()
        self.host.boot()
        # the controllers read the RBAC policy the apiserver bootstraps: they start once it is ready
        for group in (COMPONENTS[:2], COMPONENTS[2:]):
            for component in group:
                if self.host.pid(component) is None:
                    self.host.spawn(component, self._argv(component))
            self.wait_ready(timeout, group)

    def admin_kubeconfig(self) -> Path:
        return self.pki_dir / "admin.kubeconfig"

    def _admin_client(self, timeout: float) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        ctx.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        return httpx.Client(base_url=self.server, verify=ctx, timeout=timeout)

    def wait_ready(self, timeout: float = 120.0, components: tuple[str, ...] = COMPONENTS) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        with self._admin_client(timeout=5.0) as client:
            while time.monotonic() < deadline:
                for component in components:
                    if self.host.pid(component) is None:
                        raise MachineError(f"{component} exited: {self.host.log_tail(component)}")
                try:
                    r = client.get("/readyz")
                    if r.status_code == 200:
                        return
                    last = f"HTTP {r.status_code} {r.text[-300:]}"
                except httpx.HTTPError as e:
                    last = str(e)
                time.sleep(0.5)
        raise MachineError(f"apiserver {self.server} not ready in {timeout:.0f}s: {last}")

    def stop(self) -> None:
        """Stop every component (kept: the data, so start() resumes the same cluster)."""
        for component in reversed(COMPONENTS):
            self.host.stop(component)

    def destroy(self) -> None:
        self.host.teardown()
