"""Host plumbing for the local provider: bridge, netns+veth, cgroup v1, process checks, leftovers.

Everything here works on names it is *given* (read from an instance's state file by the caller);
nothing discovers objects by pattern except `leftovers()`, which only reports.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PIDS = CGROUP_ROOT / "pids"
NETNS_DIR = Path("/run/netns")
# Serialises the FORWARD rule and the "is table ip filter empty" check across every provider on the host
# (a test run and a real server use different roots and bridges but share iptables).
HOST_LOCK = Path("/run/lock/opencs-localnet.lock")
IFNAME_MAX = 15
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REQUIRED_BINARIES = ("ip", "iptables", "unshare", "nsenter", "setsid")


class HostCommandError(RuntimeError):
    pass


SOCKET_ROOT = Path("/run/opencs")


def socket_dir(root_dir: Path) -> Path:
    """The short dir of a root's sockets (named, not made)."""
    return SOCKET_ROOT / hashlib.sha256(str(Path(root_dir).absolute()).encode()).hexdigest()[:12]


def socket_path(root_dir: Path, instance_id: str) -> Path:
    """Where an instance's docker API socket lives. Not under root_dir: a unix socket path is at most
    107 bytes, and data dirs (a test's tmp dir, /var/lib/...) can be long. One short dir per root."""
    d = socket_dir(root_dir)
    # 0711: reachable, not listable; each socket keeps its own mode (dockerd's is root:docker 0660)
    d.mkdir(mode=0o711, parents=True, exist_ok=True)
    return d / f"{instance_id}.sock"


def remove_socket(root_dir: Path, instance_id: str) -> None:
    sock = socket_path(root_dir, instance_id)
    sock.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty: other instances of this root still live
        sock.parent.rmdir()


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise HostCommandError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """flock() on a file; each call opens its own description, so it also excludes other threads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# --- names -------------------------------------------------------------------------------------------


def tag_len(prefix: str) -> int:
    return IFNAME_MAX - len(prefix) - 1


def node_names(prefix: str, instance_id: str) -> tuple[str, str]:
    """(netns == cgroup name, host veth name), derived once at create time and then stored."""
    tag = instance_id[2 : 2 + tag_len(prefix)]
    return f"{prefix}n{tag}", f"{prefix}v{tag}"


def node_name_re(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(prefix)}[nv][a-z0-9]{{{tag_len(prefix)}}}$")


# --- bridge / netns ----------------------------------------------------------------------------------


def link_exists(name: str) -> bool:
    return (Path("/sys/class/net") / name).exists()


def ensure_bridge(bridge: str, gw_cidr: str) -> None:
    """Idempotent step by step (a control plane killed between two steps leaves a half-made bridge
    that the next call completes); the caller holds the provider's lock."""
    if not link_exists(bridge):
        run("ip", "link", "add", bridge, "type", "bridge")
    run("ip", "addr", "replace", gw_cidr, "dev", bridge)  # replace: adds it, or keeps it
    run("ip", "link", "set", bridge, "up")
    # br_netfilter is built in with bridge-nf-call-iptables=1: a FORWARD policy DROP (set by a host
    # dockerd, say) would otherwise cut node<->node traffic on the bridge.
    rule = ("FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT")
    with file_lock(HOST_LOCK):
        if run("iptables", "-w", "-C", *rule, check=False).returncode != 0:
            run("iptables", "-w", "-I", *rule)


def remove_bridge(bridge: str) -> None:
    rule = ("FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT")
    with file_lock(HOST_LOCK):
        removed = False
        while run("iptables", "-w", "-C", *rule, check=False).returncode == 0:
            run("iptables", "-w", "-D", *rule)
            removed = True
        # iptables-nft created "table ip filter" for our rule; drop it if nothing else uses it now
        rest = [
            ln
            for ln in run("iptables", "-w", "-S", check=False).stdout.splitlines()
            if not re.fullmatch(r"-P \w+ ACCEPT", ln)
        ]
        if removed and not rest and shutil.which("nft"):
            run("nft", "delete", "table", "ip", "filter", check=False)
    if link_exists(bridge):
        run("ip", "link", "del", bridge, check=False)


def ensure_netns(netns: str, veth: str, bridge: str, ip_cidr: str) -> None:
    """netns with eth0 (ip_cidr) paired to host veth on the bridge. No default route on purpose:
    a node can reach only its subnet, so nothing leaks to the internet by accident."""
    if not (NETNS_DIR / netns).exists():
        run("ip", "netns", "add", netns)
    if not link_exists(veth):
        # a netns kept from before may still hold an eth0 whose peer is gone
        run("ip", "-n", netns, "link", "del", "eth0", check=False)
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    run("ip", "-n", netns, "addr", "replace", ip_cidr, "dev", "eth0")
    run("ip", "link", "set", veth, "master", bridge, "up")
    run("ip", "-n", netns, "link", "set", "eth0", "up")
    run("ip", "-n", netns, "link", "set", "lo", "up")


def delete_netns(netns: str, veth: str) -> None:
    if (NETNS_DIR / netns).exists():
        run("ip", "netns", "del", netns, check=False)
    # the veth normally dies with the netns (asynchronously in the kernel); wait briefly, then force
    for _ in range(40):
        if not link_exists(veth):
            return
        time.sleep(0.05)
    run("ip", "link", "del", veth, check=False)


# --- cgroups -----------------------------------------------------------------------------------------


def hierarchies() -> list[Path]:
    """Every cgroup mount under /sys/fs/cgroup (v1 controllers, name=systemd, unified)."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split(" ", 1)[0]
        mnt = Path(left.split(" ")[4])
        if fstype in ("cgroup", "cgroup2") and mnt.parent == CGROUP_ROOT:
            out.append(mnt)
    return out


# v1 hierarchies a local machine's processes join: pids first (how its processes are found), the
# others so that its limits and usage figures cover its daemons, not only its containers
NODE_CGROUPS = ("pids", "cpu", "cpuacct", "memory", "blkio")


def cg_create(name: str, controllers: tuple[str, ...] = NODE_CGROUPS) -> None:
    for c in controllers:
        (CGROUP_ROOT / c / name).mkdir(exist_ok=True)


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def cg_set_limits(name: str, cpus: float | None, memory_bytes: int | None) -> None:
    """Limits on the node's own cgroup; dockerd's --cgroup-parent puts every container below it."""
    cpu = CGROUP_ROOT / "cpu" / name
    if cpus is not None:
        period = int((cpu / "cpu.cfs_period_us").read_text())
        _write(cpu / "cpu.cfs_quota_us", str(max(1000, int(cpus * period))))
    elif cpu.exists():
        _write(cpu / "cpu.cfs_quota_us", "-1")
    mem = CGROUP_ROOT / "memory" / name
    if mem.exists():
        _write(mem / "memory.limit_in_bytes", str(memory_bytes) if memory_bytes is not None else "-1")
    elif memory_bytes is not None:
        raise HostCommandError(f"no memory cgroup {mem}")


def cg_pids(name: str) -> list[int]:
    pids: list[int] = []
    top = PIDS / name
    if not top.is_dir():
        return pids
    for d, _dirs, files in os.walk(top):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError):
                pids += [int(x) for x in Path(d, "cgroup.procs").read_text().split()]
    return pids


def _thaw(name: str) -> None:
    # frozen (paused) containers ignore SIGKILL until thawed
    top = CGROUP_ROOT / "freezer" / name
    if top.is_dir():
        for d, _dirs, files in os.walk(top):
            if "freezer.state" in files:
                with contextlib.suppress(OSError):
                    _write(Path(d, "freezer.state"), "THAWED")


def cg_kill_all(name: str, timeout: float = 10.0) -> None:
    """SIGKILL every process of the node, by PID from its pids cgroup, until it is empty."""
    _thaw(name)
    deadline = time.monotonic() + timeout
    while pids := cg_pids(name):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise HostCommandError(f"cannot empty cgroup {name}: {pids}")
        time.sleep(0.05)


def cg_remove(name: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    for h in hierarchies():
        top = h / name
        if not top.is_dir():
            continue
        for d, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(t[0])):  # deepest first
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:  # EBUSY while the last tasks finish exiting
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise HostCommandError(f"cannot remove cgroup {d}: {e}") from e
                    time.sleep(0.05)


# --- processes ---------------------------------------------------------------------------------------


def pid_alive_in(pid: int | None, cgroup: str) -> bool:
    """Alive, not a zombie, and in the node's (top) pids cgroup. A SIGKILLed dockerd reparented to
    PID 1 can linger as a zombie, and a PID can be reused, so kill -0 is not enough."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        state = stat[stat.rindex(")") + 2]
        procs = (PIDS / cgroup / "cgroup.procs").read_text().split()
    except (OSError, ValueError):
        return False
    return state not in ("Z", "X") and str(pid) in procs


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return total


def ping_unix(sock_path: Path, timeout: float = 1.0) -> bool:
    """GET /_ping over the engine's unix socket (no client library: this runs in tight loops)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(sock_path))
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            buf = b""
            while chunk := s.recv(4096):
                buf += chunk
    except OSError:
        return False
    return buf.startswith(b"HTTP/1.") and b" 200 " in buf.split(b"\r\n", 1)[0] and buf.endswith(b"OK")


def mounts_under(path: Path) -> list[str]:
    p = str(path).rstrip("/")
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split(" ")[4]
        if mnt == p or mnt.startswith(p + "/"):
            out.append(mnt)
    return out


# --- leftovers ---------------------------------------------------------------------------------------


def leftovers(prefix: str, bridge: str, root_dir: Path | None = None) -> list[str]:
    """Anything on the host that belongs to a provider with this prefix/bridge (empty list = clean)."""
    rx = node_name_re(prefix)
    found: list[str] = []
    net = Path("/sys/class/net")
    found += [f"link {n}" for n in sorted(os.listdir(net)) if n == bridge or rx.match(n)]
    if NETNS_DIR.is_dir():
        found += [f"netns {n}" for n in sorted(os.listdir(NETNS_DIR)) if rx.match(n)]
    for h in hierarchies():
        found += [f"cgroup {h / n}" for n in sorted(os.listdir(h)) if rx.match(n) and (h / n).is_dir()]
    if PIDS.is_dir():
        for n in sorted(os.listdir(PIDS)):
            if rx.match(n):
                found += [f"process {pid} in cgroup {n}" for pid in cg_pids(n)]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split(" ")[4]
        if (mnt.startswith(str(NETNS_DIR) + "/") and rx.match(mnt.rsplit("/", 1)[1])) or (
            root_dir is not None and mnt.startswith(str(root_dir).rstrip("/") + "/")
        ):
            found.append(f"mount {mnt}")
    ipt = run("iptables", "-w", "-S", check=False).stdout.splitlines()
    found += [f"iptables {r}" for r in ipt if re.search(rf"(^|\s){re.escape(bridge)}(\s|$)", r)]
    if root_dir is not None and root_dir.is_dir():
        found += [f"dir {p}" for p in sorted(root_dir.iterdir()) if p.name.startswith("i-")]
    if root_dir is not None:
        sock_dir = socket_path(root_dir, "i-probe").parent
        found += [f"socket {p}" for p in sorted(sock_dir.glob("*.sock"))]
        with contextlib.suppress(OSError):
            sock_dir.rmdir()  # socket_path() made it; leave nothing behind
    return found


# --- host check ----------------------------------------------------------------------------------------


def probe_host(runtime_binaries: tuple[str, ...]) -> str | None:
    """What is missing for the local provider and a node runtime, or None."""
    if os.geteuid() != 0:
        return "must run as root (network namespaces, cgroups, a node runtime per machine)"
    path = os.environ.get("PATH", "") + ":" + STD_PATH
    missing = [b for b in (*runtime_binaries, *REQUIRED_BINARIES) if shutil.which(b, path=path) is None]
    if missing:
        return "binaries not found: " + ", ".join(missing)
    if not (PIDS / "cgroup.procs").exists():
        return f"no cgroup v1 pids hierarchy at {PIDS}"
    try:
        p = subprocess.run(["unshare", "--net", "--", "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot create a network namespace: {e}"
    if p.returncode != 0:
        return f"cannot create a network namespace: {p.stderr.strip()}"
    return None
