"""Configuration files of a Kubernetes node and control plane: pure text generation, no I/O.

The settings are the ones these machines need (see the Kubernetes notes): cgroup v1 with the
cgroupfs driver under the machine's own cgroup root, no host-wide kernel setting ever written
(kubelet's protectKernelDefaults, kube-proxy's conntrack sizes 0), a CNI bridge with a per-node pod
CIDR, images pulled through the bundled registry.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from opencs.machine import RegistryAuth

CONTAINERD_SOCK = "/run/containerd/containerd.sock"  # inside the machine's private /run/containerd
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins


@dataclass(frozen=True)
class ClusterNetwork:
    """The cluster-wide address plan (spec §6: container_cidr, service_cidr, node_cidr_mask)."""

    pod_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    node_cidr_mask: int = 24
    dns_domain: str = "cluster.local"
    node_port_range: str = "30000-32767"

    def __post_init__(self) -> None:
        pods, svcs = ipaddress.ip_network(self.pod_cidr), ipaddress.ip_network(self.service_cidr)
        if pods.overlaps(svcs):
            raise ValueError(f"pod CIDR {pods} overlaps service CIDR {svcs}")
        if not pods.prefixlen <= self.node_cidr_mask <= 28:
            raise ValueError(f"node_cidr_mask {self.node_cidr_mask} must be in [{pods.prefixlen}, 28]")

    def node_pod_cidr(self, index: int) -> str:
        """The pod CIDR of the index-th node (0-based)."""
        subnets = ipaddress.ip_network(self.pod_cidr).subnets(new_prefix=self.node_cidr_mask)
        for i, net in enumerate(subnets):
            if i == index:
                return str(net)
        raise ValueError(f"pod CIDR {self.pod_cidr} has no room for node #{index}")

    @property
    def apiserver_service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr)[1])

    @property
    def dns_service_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr)[10])


def containerd_toml(node_dir: Path, sandbox_image: str, address: str = CONTAINERD_SOCK,
                    auth: RegistryAuth | None = None, oci_binary: str = "") -> str:
    """containerd 1.6 (config version 2) with the CRI plugin; state on the machine's private tmpfs,
    the API on `address`. `oci_binary`: the OCI runtime the runc v2 shim runs (runc when empty; crun
    takes the same command line). `auth`: the credential CRI pulls from that registry with when a pod names
    no imagePullSecret (`registry.configs."<host>".auth`: containerd 1.6 still reads it beside
    `config_path`, whose hosts.toml has no credentials before 2.x; it applies to every hosts.toml
    entry of that host, docker.io's mirror included). The file then holds a secret: mode 0600."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    creds = "" if auth is None else f"""  [{cri}.registry.configs.{json.dumps(auth.registry)}.auth]
    username = {json.dumps(auth.username)}
    password = {json.dumps(auth.password)}
"""
    binary = f"        BinaryName = {json.dumps(oci_binary)}\n" if oci_binary else ""
    return f"""version = 2
root = {json.dumps(str(node_dir / "containerd"))}
state = "/run/containerd"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = {json.dumps(address)}

[ttrpc]
  address = "/run/containerd/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = {json.dumps(str(node_dir / "containerd-opt"))}

[{cri}]
  sandbox_image = {json.dumps(sandbox_image)}
  # runc cannot set a negative oom_score_adj here (no CAP_SYS_RESOURCE in the bounding set)
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
{binary}  [{cri}.cni]
    bin_dir = {json.dumps(CNI_BIN_DIR)}
    conf_dir = {json.dumps(str(node_dir / "cni" / "net.d"))}
    max_conf_num = 1
  [{cri}.registry]
    config_path = {json.dumps(str(node_dir / "certs.d"))}
{creds}"""


def registry_hosts(registry: str) -> dict[str, str]:
    """certs.d/<host>/hosts.toml files: docker.io and the registry itself, both served over HTTP
    by the bundled registry (`registry` is host:port). Returns {relative path: text}."""
    mirror = f"""[host."http://{registry}"]
  capabilities = ["pull", "resolve"]
"""
    return {
        "docker.io/hosts.toml": 'server = "https://registry-1.docker.io"\n\n' + mirror,
        f"{registry}/hosts.toml": f'server = "http://{registry}"\n\n' + mirror,
    }


def cni_conflist(node_pod_cidr: str, ipam_dir: Path, bridge: str = "cni0") -> str:
    """A bridge (cni0) with host-local IPAM over the node's pod CIDR; routes between nodes are set
    by the caller (kindnet style), so no masquerade and no overlay."""
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            "name": "opencs",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": node_pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(ipam_dir),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


@dataclass(frozen=True)
class KubeletSettings:
    node_name: str
    node_ip: str
    cgroup: str  # the machine's top cgroup: kubelet's cgroupRoot
    pki_dir: Path  # ca.crt, kubelet.crt, kubelet.key (serving)
    network: ClusterNetwork = field(default_factory=ClusterNetwork)
    system_reserved: dict[str, str] = field(default_factory=dict)  # so allocatable matches the instance type
    max_pods: int = 110
    pod_logs_dir: Path | None = None
    resolv_conf: Path | None = None
    runtime_socket: str = CONTAINERD_SOCK
    cpu_policy: str = "none"  # spec §6.3 cpu_policy: none | static


def kubelet_config(s: KubeletSettings) -> str:
    cfg: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": s.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(s.pki_dir / "kubelet.crt"),
        "tlsPrivateKeyFile": str(s.pki_dir / "kubelet.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(s.pki_dir / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{s.runtime_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{s.cgroup}",
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        # never systemCgroups: that moves every host process
        "kubeletCgroups": f"/{s.cgroup}/kubelet",
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "maxOpenFiles": 20000,
        "protectKernelDefaults": True,  # kubelet only checks them; the machine masks the host's values
        "makeIPTablesUtilChains": True,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "0%",
            "nodefs.inodesFree": "0%",
            "imagefs.available": "0%",
            "imagefs.inodesFree": "0%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "clusterDomain": s.network.dns_domain,
        "clusterDNS": [s.network.dns_service_ip],
        "resolvConf": str(s.resolv_conf) if s.resolv_conf else "",
        "maxPods": s.max_pods,
        "serializeImagePulls": False,
        # no pull rate limit: images come from the bundled registry on this host, and a pull over the
        # limit (default 5/s, burst 10) is not queued but fails ("pull QPS exceeded") into a 10 s back-off;
        # an untagged image (busybox = :latest) is pulled on every pod start
        "registryPullQPS": 0,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "registerNode": True,
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "staticPodPath": "",
    }
    if s.pod_logs_dir is not None:
        cfg["podLogsDir"] = str(s.pod_logs_dir)
    if s.system_reserved:
        cfg["systemReserved"] = dict(s.system_reserved)
    if s.cpu_policy == "static":  # exclusive CPUs for Guaranteed pods need some CPU reserved
        cfg["cpuManagerPolicy"] = "static"
        cfg.setdefault("systemReserved", {}).setdefault("cpu", "100m")
    return yaml.safe_dump(cfg, sort_keys=False)


def kube_proxy_config(kubeconfig: Path, node_name: str, node_ip: str, network: ClusterNetwork, mode: str) -> str:
    if mode not in ("iptables", "nftables"):
        raise ValueError(f"proxy mode {mode!r}: only iptables and nftables work here (the kernel has no IPVS)")
    cfg: dict[str, Any] = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": mode,
        "hostnameOverride": node_name,
        "bindAddress": node_ip,
        "clusterCIDR": network.pod_cidr,
        "healthzBindAddress": f"{node_ip}:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "oomScoreAdj": 0,
        # the conntrack table and its timeouts are host-global: 0 = leave them alone (as k3s does)
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
            "udpTimeout": "0s",
            "udpStreamTimeout": "0s",
        },
        # localhost NodePorts need route_localnet; keep kube-proxy's sysctl writes to none
        "iptables": {"localhostNodePorts": False},
        "nodePortAddresses": [f"{node_ip}/32"],
    }
    return yaml.safe_dump(cfg, sort_keys=False)
