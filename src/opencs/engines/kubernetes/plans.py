"""What a machine runs as a Kubernetes master or node: its files (certificates, kubeconfigs, configs)
and its units (argv of each component), as pure data. The driver writes a plan into the machine's
`k8s/` directory; the machine's supervisor (runtime.py) runs the units.

Control plane: embedded etcd on the machine's loopback only (its own netns: no other machine can
reach it), kube-apiserver on https://<machine ip>:6443 (RBAC and the Node authorizer on),
kube-controller-manager (allocates each node's pod CIDR, signs with the cluster CA) and
kube-scheduler. Node: kubelet (cgroupfs driver under the machine's cgroup, no host-wide kernel
setting) and kube-proxy (iptables or nftables). Node certificates are minted directly from the
cluster CA (kubelet client CN=system:node:<name> in O=system:nodes, its serving certificate for
the node IP), so a node joins without a bootstrap round.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opencs.engines.kubernetes import binary
from opencs.engines.kubernetes.config import (
    ClusterNetwork,
    KubeletSettings,
    cni_conflist,
    kube_proxy_config,
    kubelet_config,
)
from opencs.engines.kubernetes.kubeconfig import kubeconfig
from opencs.engines.kubernetes.pki import FRONT_PROXY_CLIENT, ClusterPKI
from opencs.engines.kubernetes.runtime import KUBELET_ROOT, STD_PATH, unit_script
from opencs.engines.kubernetes.topology import (
    APISERVER_PORT,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    Member,
    etcd_client_urls,
    etcd_initial_cluster,
    haproxy_config,
    server_url,
)
from opencs.pki import IssuedCert

CONTROL_PLANE_UNITS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
NODE_UNITS = ("kubelet", "kube-proxy")
MASTER_TAINT = "node-role.kubernetes.io/control-plane=:NoSchedule"
CNI_CONFLIST = "cni/net.d/10-opencs.conflist"


@dataclass
class Plan:
    files: dict[str, tuple[str, int]] = field(default_factory=dict)  # path under k8s/ -> (text, mode)
    units: dict[str, list[str]] = field(default_factory=dict)  # unit name -> argv

    def add_pair(self, name: str, cred: IssuedCert) -> None:
        self.files[f"pki/{name}.crt"] = (cred.cert_pem, 0o644)
        self.files[f"pki/{name}.key"] = (cred.key_pem, 0o600)


def control_plane(k: Path, pki: ClusterPKI, me: Member, masters: Sequence[Member], net: ClusterNetwork,
                  etcd_fsync: bool = True, endpoint_ip: str = "") -> Plan:
    """The control plane of one master (`me`, one of `masters`); `k` is the machine's k8s/ directory,
    `endpoint_ip` the address clients dial when it is not the master's own (the load balancer)."""
    p, d, exe = Plan(), k / "pki", str(binary.binary())
    local, ha = server_url(me.ip), len(masters) > 1
    p.files["pki/ca.crt"] = (pki.ca.cert_pem, 0o644)
    p.files["pki/ca.key"] = (pki.ca.key_pem, 0o600)
    p.files["pki/sa.key"] = (pki.sa_key_pem, 0o600)
    p.files["pki/sa.pub"] = (pki.sa_pub_pem, 0o644)
    p.files["pki/front-proxy-ca.crt"] = (pki.front_proxy_ca().cert_pem, 0o644)
    ips = [me.ip, *([endpoint_ip] if endpoint_ip else [])]
    p.add_pair("apiserver", pki.apiserver(ips, net.apiserver_service_ip, net.dns_domain))
    p.add_pair("apiserver-kubelet-client", pki.client("kube-apiserver-kubelet-client", ["system:masters"]))
    # the controller manager and scheduler talk to their own master's apiserver: with leader
    # election, losing it hands their leases to another master's
    for user in ("system:kube-controller-manager", "system:kube-scheduler"):
        short = user.split(":", 1)[1]
        p.files[f"pki/{short}.kubeconfig"] = (kubeconfig(local, pki.ca.cert_pem, pki.client(user), user=short), 0o600)
    admin = pki.admin("opencs-admin")
    p.add_pair("admin", admin)
    p.files["pki/admin.kubeconfig"] = (kubeconfig(local, pki.ca.cert_pem, admin, user="admin"), 0o600)
    if ha:
        p.files["pki/etcd-ca.crt"] = (pki.etcd_ca().cert_pem, 0o644)
        p.add_pair("etcd", pki.etcd_member(me.name, me.ip))
        p.add_pair("apiserver-etcd-client", pki.etcd_client("kube-apiserver-etcd-client"))
    p.units["etcd"] = _etcd(exe, k, me, masters, etcd_fsync)
    p.units["kube-apiserver"] = _apiserver(exe, d, me, masters, net)
    common = ["--bind-address", "127.0.0.1", f"--leader-elect={str(ha).lower()}", "--profiling=false", "--v", "1"]
    kc = str(d / "kube-controller-manager.kubeconfig")
    p.units["kube-controller-manager"] = [
        exe, "kube-controller-manager", "--kubeconfig", kc,
        "--authentication-kubeconfig", kc, "--authorization-kubeconfig", kc, *common,
        "--client-ca-file", str(d / "ca.crt"), "--root-ca-file", str(d / "ca.crt"),
        "--cluster-signing-cert-file", str(d / "ca.crt"), "--cluster-signing-key-file", str(d / "ca.key"),
        "--service-account-private-key-file", str(d / "sa.key"), "--use-service-account-credentials",
        # each node's pod CIDR (Node.spec.podCIDR): the driver routes it and writes the node's CNI range
        "--allocate-node-cidrs", "--cluster-cidr", net.pod_cidr,
        "--node-cidr-mask-size", str(net.node_cidr_mask), "--service-cluster-ip-range", net.service_cidr,
        "--node-monitor-grace-period", "20s",
        # each controller has a client of its own (service-account credentials) limited to 20/s, burst
        # 30: a ReplicaSet of 30 makes 30 pods and 30 events, so its last pods came ~1.5 s after the first
        "--kube-api-qps", "100", "--kube-api-burst", "200",
    ]  # fmt: skip
    kc = str(d / "kube-scheduler.kubeconfig")
    p.units["kube-scheduler"] = [
        exe, "kube-scheduler", "--kubeconfig", kc,
        "--authentication-kubeconfig", kc, "--authorization-kubeconfig", kc, *common,
    ]  # fmt: skip
    return p


def _etcd(exe: str, k: Path, me: Member, masters: Sequence[Member], fsync: bool) -> list[str]:
    """One master: on its loopback only (its own netns: nothing else reaches it); several: a static
    cluster over the nodes' bridge, TLS both ways with etcd's own CA (other clusters share the bridge)."""
    argv = [exe, "etcd", "--name", me.name, "--data-dir", str(k / "etcd"), "--log-level", "warn",
            "--quota-backend-bytes", str(2 << 30), *([] if fsync else ["--unsafe-no-fsync"])]
    if len(masters) == 1:
        return [*argv,
                "--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
                "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
                "--initial-cluster", f"{me.name}=http://127.0.0.1:2380"]  # fmt: skip
    d = k / "pki"
    return [*argv,
            "--listen-client-urls", f"https://{me.ip}:{ETCD_CLIENT_PORT},https://127.0.0.1:{ETCD_CLIENT_PORT}",
            "--advertise-client-urls", f"https://{me.ip}:{ETCD_CLIENT_PORT}",
            "--listen-peer-urls", f"https://{me.ip}:{ETCD_PEER_PORT}",
            "--initial-advertise-peer-urls", f"https://{me.ip}:{ETCD_PEER_PORT}",
            "--initial-cluster", etcd_initial_cluster(masters), "--initial-cluster-state", "new",
            "--initial-cluster-token", "opencs-" + "-".join(sorted(m.name for m in masters))[:200],
            "--cert-file", str(d / "etcd.crt"), "--key-file", str(d / "etcd.key"),
            "--client-cert-auth", "--trusted-ca-file", str(d / "etcd-ca.crt"),
            "--peer-cert-file", str(d / "etcd.crt"), "--peer-key-file", str(d / "etcd.key"),
            "--peer-client-cert-auth", "--peer-trusted-ca-file", str(d / "etcd-ca.crt")]  # fmt: skip


def _apiserver(exe: str, d: Path, me: Member, masters: Sequence[Member], net: ClusterNetwork) -> list[str]:
    if len(masters) == 1:
        etcd = ["--etcd-servers", "http://127.0.0.1:2379"]
    else:
        etcd = ["--etcd-servers", etcd_client_urls(masters), "--etcd-cafile", str(d / "etcd-ca.crt"),
                "--etcd-certfile", str(d / "apiserver-etcd-client.crt"),
                "--etcd-keyfile", str(d / "apiserver-etcd-client.key")]
    return [
        exe, "kube-apiserver",
        "--advertise-address", me.ip, "--bind-address", me.ip, "--secure-port", str(APISERVER_PORT), *etcd,
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
        # opencs's kubeconfig endpoint (loops/endpoints.py) checks revocation, then passes the user
        # on as a front proxy; nothing else holds a front-proxy-ca leaf
        "--requestheader-client-ca-file", str(d / "front-proxy-ca.crt"),
        "--requestheader-allowed-names", FRONT_PROXY_CLIENT,
        "--requestheader-username-headers", "X-Remote-User",
        "--requestheader-group-headers", "X-Remote-Group",
        "--requestheader-extra-headers-prefix", "X-Remote-Extra-",
        "--authorization-mode", "Node,RBAC",
        "--enable-admission-plugins", "NodeRestriction",
        "--allow-privileged", "--profiling=false", "--v", "1",
    ]  # fmt: skip


def load_balancer(k: Path, ip: str, masters: Sequence[Member]) -> Plan:
    """The HA form's apiserver endpoint: HAProxy in the foreground as the machine's unit."""
    cfg = k / "haproxy.cfg"
    return Plan(files={"haproxy.cfg": (haproxy_config(ip, masters), 0o644)},
                units={"haproxy": [shutil.which("haproxy", path=STD_PATH) or "haproxy", "-db", "-f", str(cfg)]})


@dataclass(frozen=True)
class NodeSettings:
    name: str  # the Node's name (the instance id)
    ip: str
    cgroup: str  # the machine's top cgroup: kubelet's cgroupRoot
    runtime_socket: str  # containerd's API (the machine's api_socket)
    server: str  # https://<apiserver>:6443
    network: ClusterNetwork = field(default_factory=ClusterNetwork)
    proxy_mode: str = "iptables"
    master: bool = False  # tainted NoSchedule: workloads go to workers
    system_reserved: dict[str, str] = field(default_factory=dict)
    cpu_policy: str = "none"
    labels: dict[str, str] = field(default_factory=dict)  # set by the kubelet at registration
    taints: tuple[str, ...] = ()  # key=value:Effect, likewise (the master's taint comes with `master`)
    exe: str = ""  # the Kubernetes binary where the node runs ("": this server's)


def node(k: Path, pki: ClusterPKI, s: NodeSettings) -> Plan:
    """kubelet and kube-proxy of one machine (masters are nodes too, tainted)."""
    p, d, exe = Plan(), k / "pki", s.exe or str(binary.binary())
    p.files["pki/ca.crt"] = (pki.ca.cert_pem, 0o644)
    p.add_pair("kubelet", pki.kubelet_serving(s.name, s.ip))
    kc = kubeconfig(s.server, pki.ca.cert_pem, pki.kubelet_client(s.name), user=f"system:node:{s.name}")
    p.files["pki/kubelet.kubeconfig"] = (kc, 0o600)
    kc = kubeconfig(s.server, pki.ca.cert_pem, pki.client("system:kube-proxy"), user="kube-proxy")
    p.files["pki/kube-proxy.kubeconfig"] = (kc, 0o600)
    # pods with dnsPolicy Default get this: the machines have no upstream resolver
    p.files["resolv.conf"] = ("options ndots:1\n", 0o644)
    ks = KubeletSettings(
        node_name=s.name, node_ip=s.ip, cgroup=s.cgroup, pki_dir=d, network=s.network,
        system_reserved=s.system_reserved, pod_logs_dir=k / "pod-logs", resolv_conf=k / "resolv.conf",
        runtime_socket=s.runtime_socket, cpu_policy=s.cpu_policy,
    )  # fmt: skip
    p.files["kubelet.yaml"] = (kubelet_config(ks), 0o644)
    proxy = kube_proxy_config(d / "kube-proxy.kubeconfig", s.name, s.ip, s.network, s.proxy_mode)
    p.files["kube-proxy.yaml"] = (proxy, 0o644)
    p.units["kubelet"] = [
        exe, "kubelet", "--config", str(k / "kubelet.yaml"), "--kubeconfig", str(d / "kubelet.kubeconfig"),
        "--root-dir", KUBELET_ROOT, "--cert-dir", str(d),
        "--hostname-override", s.name, "--node-ip", s.ip,
        *_registration(s), "--v", "1",
    ]  # fmt: skip
    p.units["kube-proxy"] = [exe, "kube-proxy", "--config", str(k / "kube-proxy.yaml"), "--v", "1"]
    return p


def _registration(s: NodeSettings) -> list[str]:
    """The labels and taints the Node is registered with (so no pod lands before they are on it)."""
    taints = [*([MASTER_TAINT] if s.master else []), *s.taints]
    labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
    return [*(["--register-with-taints", ",".join(taints)] if taints else []),
            *(["--node-labels", labels] if labels else [])]


def cni(k: Path, pod_cidr: str, bridge: str = "cni0") -> Plan:
    """The node's CNI bridge over its pod CIDR (containerd picks up the file when it appears)."""
    return Plan(files={CNI_CONFLIST: (cni_conflist(pod_cidr, k / "cni" / "ipam", bridge), 0o644)})


def _write(path: Path, text: str, mode: int) -> bool:
    """Atomically, only if different; True if written."""
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def install(k: Path, plan: Plan, keep: frozenset[str] = frozenset()) -> None:
    """Write a plan into a machine's k8s/ directory: files first (never re-issued when present: a
    running component keeps its certificate), then the units, which the supervisor starts."""
    for rel, (text, mode) in plan.files.items():
        path = k / rel
        if rel.startswith("pki/") and path.exists() and rel not in keep:
            continue
        _write(path, text, mode)
    for name, argv in plan.units.items():
        _write(k / "units" / f"{name}.sh", unit_script(argv), 0o644)
