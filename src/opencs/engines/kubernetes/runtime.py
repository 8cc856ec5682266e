"""The node runtime of Kubernetes clusters, as a provider boots it on a machine: a small supervisor
(the machine's "init") that sets up what Kubernetes needs in the machine's namespaces and keeps the
machine's units running — containerd always, then whatever the cluster driver installs (etcd and
the control plane on a master, kubelet and kube-proxy on every node).

A unit is a file `k8s/units/<name>.sh` in the machine directory (`exec <argv>`); the supervisor
starts each one, restarts it 2 s after it exits, and stops looking after it once its file is gone.
Its PID is in `k8s/run/<name>.pid`, its output in `k8s/log/<name>.log`. So a machine that reboots
(the provider re-runs the boot plan after a crash) comes back with every unit it had, as a real
node comes back with its systemd units; the driver only writes files and reads the cluster's API.
"""

from __future__ import annotations

import hashlib
import logging
import shlex
import shutil
import socket
from pathlib import Path

from opencs.engines.kubernetes import binary
from opencs.engines.kubernetes.config import CNI_BIN_DIR, containerd_toml, registry_hosts
from opencs.machine import BootPlan, MachineInfo, RuntimeSettings

log = logging.getLogger(__name__)

STATE_DIR = "k8s"  # the machine's "system disk": re-imaging wipes it
DEFAULT_PAUSE = "opencs/pause:3.10"  # repository:tag in the bundled registry (opencs.registry.pause)
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
ROUTE_PROTO = "188"  # routes to other nodes' pod CIDRs carry this protocol number: ours to replace
CGROUP_ROOT = Path("/sys/fs/cgroup")
# kubelet's root inside the machine, bound from k8s/kubelet: its unix sockets (pod-resources, device
# plugins) need a path under the 107-byte limit, whatever the data directory's length
KUBELET_ROOT = "/var/lib/kubelet"
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_BINARIES = ("containerd", "runc", "nsenter", "unshare", "setsid", "iptables", "ip", "mount")
# The OCI runtime behind containerd's runc v2 shim. crun (C) takes runc's command line; a container
# start costs it about half runc's CPU (no Go runtime, no copy of its own binary per `init`), which is
# what 30 pods at once on two cores wait for.
OCI_RUNTIMES = ("crun", "runc")
# crun refuses a cgroup v1 host whose unified hierarchy has any controller ("hybrid mode not
# supported"); this host's offers hugetlb only, which the v1 managers (kubelet's, runc's) do not use
# there either. The node's own mount namespace gets an empty file bound over it (the host keeps its own).
CGROUP2_CONTROLLERS = Path("/sys/fs/cgroup/unified/cgroup.controllers")

# The kernel settings kubelet insists on (protectKernelDefaults) are global to the host: inside the
# machine's mount namespace files with kubelet's values are bound over them, so kubelet is content
# and the host keeps its own values.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}

# Runs as the machine's first process (PID in engine.pid), already in its netns, mount and UTS
# namespaces and its pids cgroup (the provider's launcher did that).
SUPERVISOR = r"""
set -e
if [ "$OCS_CG_HIER" = auto ]; then  # a shared host's own cgroup v1 hierarchies (the pids one is joined)
  OCS_CG_HIER=$(grep ' - cgroup ' /proc/self/mountinfo | cut -d' ' -f5 | grep '^/sys/fs/cgroup/[^/]*$' |
    grep -v '^/sys/fs/cgroup/pids$' || true)
fi
for h in $OCS_CG_HIER; do
  mkdir -p "$h/$OCS_CG"
  if [ -e "$h/cpuset.cpus" ]; then  # a new cpuset is empty: nothing could join it
    [ -n "$(cat "$h/$OCS_CG/cpuset.cpus")" ] || cat "$h/cpuset.cpus" > "$h/$OCS_CG/cpuset.cpus"
    [ -n "$(cat "$h/$OCS_CG/cpuset.mems")" ] || cat "$h/cpuset.mems" > "$h/$OCS_CG/cpuset.mems"
  fi
  echo $$ > "$h/$OCS_CG/cgroup.procs"
done
# kubelet needs shared propagation for pod volumes; the host stays the master, never a peer
mount --make-rshared /
[ ! -e /etc/machine-id ] || mount --bind "$K/machine-id" /etc/machine-id
# the kernel settings kubelet insists on are host-wide: files with its values are bound over them here
for s in $OCS_SYSCTLS; do mount --bind "$K/sysctl-$(echo "$s" | tr / _)" "/proc/sys/$s"; done
# crun: no cgroup v2 controller seen in this machine (see CGROUP2_CONTROLLERS)
[ -z "$OCS_CG2_MASK" ] || mount --bind "$K/empty" "$OCS_CG2_MASK"
# the machine's own netns; a shared host's forwarding is its owner's (required on, never written)
[ "$OCS_SHARED_HOST" = 1 ] || echo 1 > /proc/sys/net/ipv4/ip_forward
set +e
if [ -s "$K/routes" ]; then
  while read -r dst via; do
    ip route replace "$dst" ${via:+via "$via"} dev "${OCS_DEV:-eth0}" proto "$OCS_PROTO"
  done < "$K/routes"
fi
U=$K/units R=$K/run L=$K/log
mkdir -p "$U" "$R" "$L"
rm -f "$R"/*.pid "$R"/*.loop
alive() { [ -n "$1" ] && s=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ "$s" != Z ] && [ "$s" != X ]; }
unit() {
  while [ -e "$U/$1.sh" ]; do
    echo "--- start $(date +%Y-%m-%dT%H:%M:%S)" >> "$L/$1.log"
    sh "$U/$1.sh" >> "$L/$1.log" 2>&1 &
    echo $! > "$R/$1.pid"
    wait $!
    echo "--- exited ($?) $(date +%Y-%m-%dT%H:%M:%S)" >> "$L/$1.log"
    rm -f "$R/$1.pid"
    sleep 2
  done
  rm -f "$R/$1.loop"
}
stop() {
  for p in "$R"/*.loop; do [ -e "$p" ] && kill "$(cat "$p")" 2>/dev/null; done
  for p in "$R"/*.pid; do [ -e "$p" ] && kill "$(cat "$p")" 2>/dev/null; done
  exit 0
}
trap stop TERM INT
echo "supervisor up: $(ls "$U")"
while :; do
  for f in "$U"/*.sh; do
    [ -e "$f" ] || continue
    n=${f##*/}; n=${n%.sh}
    alive "$(cat "$R/$n.loop" 2>/dev/null)" && continue
    unit "$n" &
    echo $! > "$R/$n.loop"
  done
  sleep 1 &
  wait $!
done
"""


def missing_host_binaries(oci: str = "runc") -> list[str]:
    """Host programs a node needs (Debian: containerd runc containernetworking-plugins iptables, and
    crun when that is the OCI runtime)."""
    missing = [b for b in dict.fromkeys((*HOST_BINARIES, oci)) if shutil.which(b, path=STD_PATH) is None]
    missing += [f"CNI plugin {p}" for p in CNI_PLUGINS if not Path(CNI_BIN_DIR, p).exists()]
    return missing


def cni_bridge(instance_id: str, shared_host: bool) -> str:
    """The node's CNI bridge: cni0 in a machine's own netns, a name of the node's on a shared host."""
    return f"ocb{instance_id.removeprefix('i-')[:12]}" if shared_host else "cni0"


def forward_tag(instance_id: str) -> str:
    """The comment on the FORWARD rules a node on a shared host adds for pod traffic."""
    return f"opencs-node:{instance_id}"


def host_cleanup(instance_id: str) -> str:
    """What a node on a shared host made there outside its directories, removed by its names: its CNI
    bridge, its routes (protocol ROUTE_PROTO), its FORWARD rules, and the chains of kube-proxy and
    kubelet (KUBE-*) and of the portmap plugin (CNI-HOSTPORT-*): a host that has KUBE-SERVICES
    already is refused by the probe, so those are the node's."""
    return f"""
ip link del {shlex.quote(cni_bridge(instance_id, True))} 2>/dev/null
ip -o route show proto {ROUTE_PROTO} | while read -r dst _; do ip route del "$dst" proto {ROUTE_PROTO}; done
for ipt in iptables ip6tables; do
  command -v $ipt >/dev/null 2>&1 || continue
  for t in filter nat mangle raw; do
    rules=$($ipt -t $t -S 2>/dev/null) || continue
    echo "$rules" | grep -E -- '^-A [A-Z]+ .*(-j (KUBE|CNI-HOSTPORT)-|{forward_tag(instance_id)})' | sed 's/^-A /-D /' |
      while read -r r; do eval "$ipt -t $t $r"; done
    chains=$(echo "$rules" | sed -n -E 's/^-N ((KUBE|CNI-HOSTPORT)-[^ ]+)$/\\1/p')
    for c in $chains; do $ipt -t $t -F "$c"; done
    for c in $chains; do $ipt -t $t -X "$c"; done
  done
done
true
"""


def v1_hierarchies() -> list[Path]:
    """Every cgroup v1 mount directly under /sys/fs/cgroup (the controllers and name=systemd)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        mnt = Path(left.split(" ")[4])
        if right.split(" ", 1)[0] == "cgroup" and mnt.parent == CGROUP_ROOT:
            out.append(mnt)
    return out


def _has_cgroup2_controllers() -> bool:
    """A hybrid host whose unified hierarchy offers a controller (crun refuses to run there)."""
    try:
        return bool(CGROUP2_CONTROLLERS.read_text().strip())
    except OSError:
        return False


def unit_script(argv: list[str], env: dict[str, str] | None = None) -> str:
    """A unit file: the component replaces the shell (its PID is the unit's)."""
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted((env or {}).items()))
    return f"{exports}exec {shlex.join(argv)}\n"


def registry_host(settings: RuntimeSettings) -> str | None:
    """host:port of the bundled registry the node pulls through (docker.io's mirror)."""
    mirror = settings.registry_mirror
    return mirror.split("://", 1)[-1].rstrip("/") if mirror else None


class KubernetesNodeRuntime:
    """containerd (CRI) under the supervisor; kubelet, kube-proxy and the control plane come as units."""

    name = "kubernetes"
    state_dirs = (STATE_DIR,)
    log_name = "node.log"

    def __init__(self, pause_image: str = DEFAULT_PAUSE, oci_runtime: str = "") -> None:
        """`oci_runtime`: crun or runc; empty: crun where installed, else runc (logged)."""
        if oci_runtime not in ("", *OCI_RUNTIMES):
            raise ValueError(f"OCI runtime {oci_runtime!r}: one of {', '.join(OCI_RUNTIMES)}")
        self.pause_image = pause_image  # repository:tag, pulled from the bundled registry
        self._oci = oci_runtime
        self._fallback_logged = False

    @property
    def oci_runtime(self) -> str:
        """The OCI runtime new machines run containers with (a machine keeps the one it booted with
        until it boots again)."""
        if self._oci:
            return self._oci
        if shutil.which("crun", path=STD_PATH):
            return "crun"
        if not self._fallback_logged:
            self._fallback_logged = True
            log.warning("crun is not installed: Kubernetes nodes run containers with runc, whose "
                        "container starts cost about twice the CPU (apt-get install crun)")
        return "runc"

    @property
    def required_binaries(self) -> tuple[str, ...]:
        return ("containerd", "runc", self.oci_runtime, "iptables", "ip", "mount",
                str(binary.bin_dir() / "kubernetes"), *(str(Path(CNI_BIN_DIR, p)) for p in CNI_PLUGINS))

    def tls_port(self, settings: RuntimeSettings) -> int | None:
        return None  # no Docker TLS endpoint: clients use the apiserver with a kubeconfig

    def sandbox_image(self, settings: RuntimeSettings) -> str:
        reg = registry_host(settings)
        return f"{reg}/{self.pause_image}" if reg else f"registry.k8s.io/{self.pause_image.split('/')[-1]}"

    def boot_plan(self, machine: MachineInfo, settings: RuntimeSettings) -> BootPlan:
        k = machine.dir / STATE_DIR
        toml = f"{STATE_DIR}/containerd.toml"  # 0600: it may hold the node's registry credential
        # on a shared host: runc, which the probe found on its PATH (its crun, if any, is not asked for)
        oci = "runc" if machine.shared_host else self.oci_runtime
        oci_binary = (shutil.which(oci, path=STD_PATH) or oci) if oci != "runc" else ""
        files = {
            toml: containerd_toml(k, self.sandbox_image(settings), str(machine.api_socket), settings.registry_auth,
                                  oci_binary),
            f"{STATE_DIR}/units/containerd.sh": unit_script(
                ["containerd", "--config", str(k / "containerd.toml"), "--log-level", "warn"]),
            # kubelet and cadvisor tell nodes apart by it; stable across re-images of the same instance
            f"{STATE_DIR}/machine-id": hashlib.md5(machine.instance_id.encode()).hexdigest() + "\n",
            **{f"{STATE_DIR}/sysctl-{p.replace('/', '_')}": v + "\n" for p, v in KUBELET_SYSCTLS.items()},
            f"{STATE_DIR}/empty": "",
        }
        if reg := registry_host(settings):
            files.update({f"{STATE_DIR}/certs.d/{rel}": text for rel, text in registry_hosts(reg).items()})
        pids = CGROUP_ROOT / "pids"
        shared = ({"OCS_CG_HIER": "auto", "OCS_SHARED_HOST": "1", "OCS_DEV": machine.device}
                  if machine.shared_host else {})
        return BootPlan(
            argv=["/bin/sh", "-c", SUPERVISOR, "ocs-k8s-node"],
            env={
                "K": str(k),
                "OCS_CG": machine.cgroup,
                "OCS_CG_HIER": " ".join(str(h) for h in v1_hierarchies() if h != pids),
                "OCS_SYSCTLS": " ".join(KUBELET_SYSCTLS),
                "OCS_PROTO": ROUTE_PROTO,
                "OCS_CG2_MASK": str(CGROUP2_CONTROLLERS) if oci == "crun" and _has_cgroup2_controllers() else "",
                **shared,
            },
            # containerd's state (shims, sockets, pod netns) and /var/log/containers stay private
            tmpfs=["/run/containerd", "/var/log"],
            binds={"/var/lib/cni": f"{STATE_DIR}/cni-cache", KUBELET_ROOT: f"{STATE_DIR}/kubelet"},
            files=files,
            private=frozenset({toml}),
            log_name=self.log_name,
            host_cleanup=host_cleanup(machine.instance_id) if machine.shared_host else "",
        )

    def answers(self, api_socket: Path, timeout: float = 1.0) -> bool:
        """containerd accepts connections on the machine's API socket."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(str(api_socket))
            return True
        except OSError:
            return False

    def release_host(self, endpoint: str, remove_cluster_work: bool, timeout: float = 60.0) -> None:
        raise NotImplementedError("Kubernetes nodes run on machines opencs owns (the local provider) only")
