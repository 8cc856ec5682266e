"""A machine for Kubernetes components: a network namespace, an address, a state directory and a
cgroup, as a provider hands them out, plus running processes inside it.

One "holder" process per machine owns the machine's mount and UTS namespaces (made once, with the
mounts every component needs); each component is then started with nsenter into the holder's
namespaces and joins the machine's cgroup in every hierarchy first, so that teardown finds all of
it (daemons, shims, containers) by cgroup and PID, never by process name. Every process is detached
(setsid --fork: parent is init), so a restart of the caller neither kills nor orphans-as-zombies it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

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

# Runs as the holder inside the machine's netns and fresh mount+UTS namespaces. Joining the cgroup
# comes first so that nothing of the machine escapes it; the PID file is written last (= ready).
_HOLDER = r"""
set -e
for f in $OCS_CG_PROCS; do echo $$ > "$f"; done
echo "$OCS_HOSTNAME" > /proc/sys/kernel/hostname
mkdir -p "$OCS_DIR/.cg"
# sysfs must be remounted to show this netns' devices; keep the host cgroup tree across it (while
# the mounts are still slaves: between shared peers the lazy umount would take the copy with it)
mount --rbind /sys/fs/cgroup "$OCS_DIR/.cg"
mount -t sysfs sysfs /sys
mount --rbind "$OCS_DIR/.cg" /sys/fs/cgroup
umount -l "$OCS_DIR/.cg"
# kubelet needs shared propagation for pod volumes; the host stays the master, never a peer
mount --make-rshared /
# private runtime state (containerd's sockets, shims, pod netns) and logs (/var/log/containers)
mount -t tmpfs -o mode=0711 ocsrun /run/containerd
mount -t tmpfs -o mode=0755 ocslog /var/log
[ ! -e /etc/machine-id ] || mount --bind "$OCS_DIR/machine-id" /etc/machine-id
mount --bind "$OCS_DIR/cni-cache" /var/lib/cni
for s in $OCS_SYSCTLS; do mount --bind "$OCS_DIR/sysctl/$(echo "$s" | tr / _)" "/proc/sys/$s"; done
# do not pin other machines' netns files
umount -l /run/netns 2>/dev/null || true
echo $$ > "$OCS_DIR/holder.pid"
exec sleep infinity
"""

# Runs a component: join the cgroup, record the PID, become the component.
_SPAWN = r"""
for f in $OCS_CG_PROCS; do echo $$ > "$f" || exit 125; done
echo $$ > "$OCS_PIDFILE"
exec "$@"
"""


class MachineError(RuntimeError):
    pass


@dataclass(frozen=True)
class Machine:
    """What a provider hands out. `name` is also the Kubernetes node name and the hostname."""

    name: str
    ip: str
    netns: str  # /run/netns/<netns>
    root_dir: Path  # this machine's state; everything opencs writes for it lives here
    cgroup: str  # top cgroup (a single path component) in every cgroup v1 hierarchy

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"machine name must be a DNS label: {self.name!r}")
        if "/" in self.cgroup or not self.cgroup or self.cgroup.startswith("."):
            raise ValueError(f"cgroup must be one path component: {self.cgroup!r}")


def hierarchies(v1_only: bool = False) -> list[Path]:
    """Every cgroup mount directly under /sys/fs/cgroup (v1 controllers, name=systemd, unified)."""
    out = []
    kinds = ("cgroup",) if v1_only else ("cgroup", "cgroup2")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        mnt = Path(left.split(" ")[4])
        if right.split(" ", 1)[0] in kinds and mnt.parent == CGROUP_ROOT:
            out.append(mnt)
    return out


def _pids_hierarchy() -> Path:
    return CGROUP_ROOT / "pids"


class MachineHost:
    """Processes of one machine. All state is in files under machine.root_dir, so a new instance
    (after a restart of the caller) sees the same processes."""

    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.dir = Path(machine.root_dir).absolute()
        self.run_dir = self.dir / "run"

    # --- cgroups ------------------------------------------------------------------------------

    def _cg_procs(self) -> str:
        # v1 only: in the unified tree runc may enable controllers below the machine's cgroup, and
        # cgroup2 then refuses processes in it ("no internal processes")
        return " ".join(str(h / self.m.cgroup / "cgroup.procs") for h in hierarchies(v1_only=True))

    def create_cgroups(self, cpus: float | None = None, memory_bytes: int | None = None) -> None:
        for h in hierarchies():
            d = h / self.m.cgroup
            d.mkdir(exist_ok=True)
            if (h / "cpuset.cpus").exists():  # a new cpuset is empty: nothing could join it
                for f in ("cpuset.cpus", "cpuset.mems"):
                    if not (d / f).read_text().strip():
                        (d / f).write_text((h / f).read_text())
        cpu = CGROUP_ROOT / "cpu" / self.m.cgroup
        if cpus is not None and cpu.is_dir():
            period = int((cpu / "cpu.cfs_period_us").read_text())
            (cpu / "cpu.cfs_quota_us").write_text(str(max(1000, int(cpus * period))))
        mem = CGROUP_ROOT / "memory" / self.m.cgroup
        if memory_bytes is not None and mem.is_dir():
            (mem / "memory.limit_in_bytes").write_text(str(memory_bytes))

    def pids(self) -> list[int]:
        out: list[int] = []
        top = _pids_hierarchy() / self.m.cgroup
        for d, _dirs, files in os.walk(top):
            if "cgroup.procs" in files:
                with contextlib.suppress(OSError):
                    out += [int(x) for x in Path(d, "cgroup.procs").read_text().split()]
        return out

    def kill_all(self, timeout: float = 15.0) -> None:
        """SIGKILL every process of the machine, by PID from its cgroup, until none is left."""
        freezer = CGROUP_ROOT / "freezer" / self.m.cgroup
        for d, _dirs, files in os.walk(freezer):  # frozen tasks ignore SIGKILL until thawed
            if "freezer.state" in files:
                with contextlib.suppress(OSError):
                    Path(d, "freezer.state").write_text("THAWED")
        deadline = time.monotonic() + timeout
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise MachineError(f"{self.m.name}: cannot empty cgroup {self.m.cgroup}: {pids}")
            time.sleep(0.05)

    def remove_cgroups(self, timeout: float = 10.0) -> None:
        """Remove the machine's cgroup tree in every hierarchy (runc makes some in cgroup2 too)."""
        deadline = time.monotonic() + timeout
        for h in hierarchies():
            top = h / self.m.cgroup
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
                            raise MachineError(f"cannot remove cgroup {d}: {e}") from e
                        time.sleep(0.05)

    # --- processes ----------------------------------------------------------------------------

    def _env(self, **extra: str) -> dict[str, str]:
        return {
            "PATH": STD_PATH,
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "OCS_DIR": str(self.dir),
            "OCS_CG_PROCS": self._cg_procs(),
            **extra,
        }

    def pid(self, name: str) -> int | None:
        """PID of a running component (alive, not a zombie, inside this machine's cgroup)."""
        try:
            pid = int((self.run_dir / f"{name}.pid").read_text().strip())
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (OSError, ValueError):
            return None
        if stat[stat.rindex(")") + 2] in ("Z", "X") or pid not in self.pids():
            return None
        return pid

    def holder_pid(self) -> int | None:
        return self.pid("holder")

    def boot(self, timeout: float = 15.0) -> int:
        """Start the holder (the machine's mount/UTS namespaces) unless it runs. Returns its PID."""
        if pid := self.holder_pid():
            return pid
        if not (NETNS_DIR / self.m.netns).exists():
            raise MachineError(f"{self.m.name}: network namespace {self.m.netns} does not exist")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "cni-cache").mkdir(exist_ok=True)
        sysctl_dir = self.dir / "sysctl"
        sysctl_dir.mkdir(exist_ok=True)
        for path, value in KUBELET_SYSCTLS.items():
            (sysctl_dir / path.replace("/", "_")).write_text(value + "\n")
        mid = self.dir / "machine-id"
        if not mid.exists():
            mid.write_text(os.urandom(16).hex() + "\n")  # kubelet/cadvisor tell nodes apart by it
        # mount points the holder needs on the host (empty directories, nothing is mounted there)
        for p in (Path("/run/containerd"), Path("/var/lib/cni")):
            p.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "holder.pid").unlink(missing_ok=True)
        (self.dir / "holder.pid").unlink(missing_ok=True)
        env = self._env(OCS_HOSTNAME=self.m.name, OCS_SYSCTLS=" ".join(KUBELET_SYSCTLS))
        cmd = [
            "setsid", "--fork",
            "unshare", "--mount", "--uts", "--propagation", "slave", "--",
            "nsenter", f"--net={NETNS_DIR / self.m.netns}", "--",
            "/bin/sh", "-c", _HOLDER, "ocs-holder",
        ]  # fmt: skip
        with open(self.run_dir / "holder.log", "ab") as log:
            subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                pid = int((self.dir / "holder.pid").read_text())
                os.replace(self.dir / "holder.pid", self.run_dir / "holder.pid")
                return pid
            time.sleep(0.02)
        raise MachineError(f"{self.m.name}: namespace holder did not start: {self.log_tail('holder')}")

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Start a component inside the machine (its netns, mount and UTS namespaces, cgroup), with
        stdout/stderr appended to run/<name>.log. Returns its PID once it has joined the cgroup."""
        holder = self.holder_pid()
        if holder is None:
            raise MachineError(f"{self.m.name}: not booted")
        pidfile = self.run_dir / f"{name}.pid"
        pidfile.unlink(missing_ok=True)
        cmd = [
            "setsid", "--fork",
            "nsenter", f"--target={holder}", "--mount", "--uts", "--net", "--",
            "/bin/sh", "-c", _SPAWN, f"ocs-{name}", *argv,
        ]  # fmt: skip
        with open(self.run_dir / f"{name}.log", "ab") as log:
            log.write(f"--- start {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(argv)}\n".encode())
            log.flush()
            subprocess.run(
                cmd, env=self._env(OCS_PIDFILE=str(pidfile), **(env or {})), stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, check=True,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if pid := self.pid(name):
                return pid
            time.sleep(0.02)
        raise MachineError(f"{self.m.name}: {name} did not start: {self.log_tail(name)}")

    def stop(self, name: str, grace: float = 10.0) -> None:
        """SIGTERM a component by its recorded PID, SIGKILL after `grace` seconds."""
        pid = self.pid(name)
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.pid(name) == pid:
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def log_tail(self, name: str, lines: int = 8) -> str:
        try:
            text = (self.run_dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    def mounts(self) -> list[str]:
        """Host mounts under the machine's directory (a clean machine has none)."""
        p = str(self.dir)
        return [
            ln.split(" ")[4]
            for ln in Path("/proc/self/mountinfo").read_text().splitlines()
            if ln.split(" ")[4] == p or ln.split(" ")[4].startswith(p + "/")
        ]

    def teardown(self) -> None:
        """Kill everything of the machine and remove its cgroups (the netns is the provider's)."""
        self.kill_all()
        self.remove_cgroups()
        for p in self.run_dir.glob("*.pid"):
            p.unlink()
