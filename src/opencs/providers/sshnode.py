"""A node runtime booted on an SSH-registered host (the Kubernetes runtime: containerd under its
supervisor, then kubelet and kube-proxy as units), the way the local provider boots one in a
machine — but on a host opencs does not own, so everything it makes there is named by the
instance id and removed by those names:

    /var/lib/opencs-node/<instance id>/   the machine directory (boot plan files, state, logs, the
                                          runtime's API socket), uploaded over SFTP
    cgroup /opencs-<instance id>          in every v1 hierarchy: every process of the node, found
                                          and killed by it, never by name
    a mount namespace of its own          (unshare, propagation slave: nothing mounted there is
                                          seen by the host) with the plan's tmpfs and binds
    BootPlan.host_cleanup                 what the runtime made in the host's network namespace
                                          (its bridge, routes, iptables chains), recorded with the
                                          host at boot and run at teardown

The node is started detached (setsid) and outlives the SSH connection; the control plane finds it
again by the PID file and the cgroup.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from opencs.machine import BOOT_MOUNTS, BootPlan, HostShell, MachineInfo

NODE_ROOT = Path("/var/lib/opencs-node")
START_TIMEOUT = 60.0

# Runs on the host in a new mount namespace (propagation slave), detached: joins the node's pids
# cgroup first, records its PID, shows its own netns in /sys, makes the plan's binds and tmpfs,
# then execs the runtime. Arguments: <dir> <cgroup> <n binds> (path, source)... <n tmpfs> (path)... argv.
LAUNCH = r"""
set -e
OCS_DIR=$1 CG=$2; shift 2
mkdir -p "/sys/fs/cgroup/pids/$CG"
echo $$ > "/sys/fs/cgroup/pids/$CG/cgroup.procs"
echo $$ > "$OCS_DIR/engine.pid"
""" + BOOT_MOUNTS + r"""
exec "$@"
"""


@dataclass(frozen=True)
class SshNode:
    """A node runtime on a host, as recorded with the host when it was booted."""

    runtime: str
    dir: str
    cgroup: str
    socket: str  # the runtime's API socket on the host
    device: str
    log_name: str
    cleanup: str  # BootPlan.host_cleanup
    launch: str = ""  # the command that starts it (again, after the host rebooted or it was killed)

    @classmethod
    def of(cls, raw: dict[str, str]) -> SshNode:
        return cls(**raw)

    @classmethod
    def made(cls, runtime: str, m: MachineInfo, plan: BootPlan) -> SshNode:
        return cls(runtime=runtime, dir=str(m.dir), cgroup=m.cgroup, socket=str(m.api_socket), device=m.device,
                   log_name=plan.log_name, cleanup=plan.host_cleanup, launch=launch_command(m, plan))


def machine(instance_id: str, ip: str, hostname: str, device: str) -> MachineInfo:
    d = NODE_ROOT / instance_id
    return MachineInfo(instance_id=instance_id, ip=ip, hostname=hostname, dir=d, cgroup=f"opencs-{instance_id}",
                       api_socket=d / "api.sock", shared_host=True, device=device)


def device_of(shell: HostShell, ip: str) -> str:
    """The host's link that carries its address `ip` (the nodes' network)."""
    r = shell.run(f"ip -o addr show to {shlex.quote(ip)}", 30)
    words = r.stdout.split()
    if r.status != 0 or len(words) < 2:
        raise OSError(f"the host has no link with the address {ip}: {(r.stderr or r.stdout).strip()}")
    return words[1].split("@")[0]


def launch_command(m: MachineInfo, plan: BootPlan) -> str:
    env = {"PATH": "$PATH", "HOME": "/root", "LANG": "C.UTF-8", **plan.env}
    mounts = [str(len(plan.binds))]
    for node_path, sub in plan.binds.items():
        mounts += [node_path, str(m.dir / sub)]
    mounts += [str(len(plan.tmpfs)), *plan.tmpfs]
    argv = ["setsid", "--fork", "unshare", "--mount", "--propagation", "slave", "--",
            "/bin/sh", "-c", LAUNCH, "ocs-node", str(m.dir), m.cgroup, *mounts, *plan.argv]
    exports = " ".join(f"{k}=" + ('"$PATH"' if v == "$PATH" else shlex.quote(v)) for k, v in env.items())
    log = shlex.quote(str(m.dir / plan.log_name))
    return f"cd / && env -i {exports} {shlex.join(argv)} </dev/null >>{log} 2>&1"


def boot(shell: HostShell, m: MachineInfo, plan: BootPlan, node: SshNode) -> None:
    """Upload the plan's files and start the runtime detached (the caller waits for it to answer)."""
    files = {str(m.dir / rel): (text.encode(), 0o600 if rel in plan.private else 0o644)
             for rel, text in plan.files.items()}
    r = shell.run(f"mkdir -p {shlex.quote(str(m.dir))} && chmod 0700 {shlex.quote(str(m.dir))}", 30)
    if r.status != 0:
        raise OSError(f"cannot make {m.dir} on the host: {r.stderr.strip()}")
    shell.put(files)
    start(shell, node)


def start(shell: HostShell, node: SshNode) -> None:
    """(Re)start the node like a machine powering on: what is left of it in its cgroup is killed first."""
    d = shlex.quote(node.dir)
    r = shell.run(f"{_procs(node)}\n{_kill(node, 0)}\nrm -f {d}/engine.pid {shlex.quote(node.socket)}\n"
                  f"{node.launch}", 30)
    if r.status != 0:
        raise OSError(f"the node did not start: {r.stderr.strip() or r.stdout.strip()}")


def keep_up(shell: HostShell, node: SshNode, answers: Callable[[], bool]) -> bool:
    """After a restart of the control plane: start the node again if it is not running (reboot
    semantics, as the local provider's adopt); True if it had to."""
    if alive(shell, node):
        return False
    start(shell, node)
    wait_up(shell, node, answers)
    return True


def alive_script(node: SshNode) -> str:
    d, cg = shlex.quote(node.dir), shlex.quote(node.cgroup)
    return (f"p=$(cat {d}/engine.pid 2>/dev/null) && grep -q \":pids:/{node.cgroup}$\" /proc/\"$p\"/cgroup "
            f"2>/dev/null && [ -S {shlex.quote(node.socket)} ] && echo up; : {cg}")


def alive(shell: HostShell, node: SshNode) -> bool:
    """The node's first process runs in its cgroup and its API socket exists."""
    r = shell.run(alive_script(node), 30)
    return r.stdout.strip() == "up"


def log_tail(shell: HostShell, node: SshNode, lines: int = 5) -> str:
    logs = " ".join(shlex.quote(f"{node.dir}/{p}") for p in (node.log_name, "k8s/log/containerd.log"))
    r = shell.run(f"tail -q -n {lines} {logs} 2>/dev/null", 30)
    return " | ".join(r.stdout.strip().splitlines()[-2 * lines:]) or "(no log)"


def _procs(node: SshNode) -> str:
    """A shell function listing every process of the node (its pids cgroup and those below)."""
    pids = shlex.quote(f"/sys/fs/cgroup/pids/{node.cgroup}")
    return f"procs() {{ [ -d {pids} ] && find {pids} -name cgroup.procs -exec cat {{}} + 2>/dev/null; }}"


def _kill(node: SshNode, grace: int) -> str:
    """Wait up to `grace` tenths of a second while the supervisor stops its units, then SIGKILL what is
    left (the containers, their shims) until nothing is (at most 10 s more)."""
    d, cg = shlex.quote(node.dir), node.cgroup
    sup = f"p=$(cat {d}/engine.pid 2>/dev/null) && grep -q \":pids:/{cg}$\" /proc/\"$p\"/cgroup 2>/dev/null"
    return f"""i=0
while [ -n "$(procs)" ] && [ $i -lt {grace + 100} ]; do
  {{ [ $i -lt {grace} ] && {sup}; }} || kill -KILL $(procs) 2>/dev/null
  sleep 0.1; i=$((i + 1))
done"""


def teardown_script(node: SshNode) -> str:
    """Stop the supervisor (it stops its units), kill what is left in the cgroup, remove the cgroups
    (deepest first, every hierarchy), what the runtime made in the host's netns, and the directory."""
    d, cg = shlex.quote(node.dir), node.cgroup
    return f"""
{_procs(node)}
p=$(cat {d}/engine.pid 2>/dev/null) && grep -q ":pids:/{cg}$" /proc/"$p"/cgroup 2>/dev/null && kill -TERM "$p"
{_kill(node, 50)}
left=$(procs)
[ -z "$left" ] || {{ echo "processes still in cgroup {cg}: $left" >&2; exit 1; }}
for i in 1 2 3 4 5 6 7 8 9 10; do
  busy=
  for h in /sys/fs/cgroup/*; do
    [ -d "$h/{cg}" ] || continue
    find "$h/{cg}" -depth -type d -exec rmdir {{}} \\; 2>/dev/null
    [ ! -d "$h/{cg}" ] || busy="$busy $h/{cg}"
  done
  [ -n "$busy" ] || break
  sleep 0.2
done
[ -z "$busy" ] || {{ echo "cgroups left:$busy" >&2; exit 1; }}
{node.cleanup}
rm -rf {d} || {{ echo "cannot remove {node.dir}" >&2; exit 1; }}
rmdir {shlex.quote(str(NODE_ROOT))} 2>/dev/null
true
"""


class TeardownFailed(OSError):
    """The host answered, but something of the node could not be removed (named in the message)."""


def teardown(shell: HostShell, node: SshNode) -> None:
    r = shell.run(teardown_script(node), 90)
    if r.status != 0:
        raise TeardownFailed(f"removing the node from the host failed: {(r.stderr or r.stdout).strip()[-500:]}")


def wait_up(shell: HostShell, node: SshNode, answers: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not (alive(shell, node) and answers()):
        if time.monotonic() > deadline:
            raise OSError(f"the node did not come up in {timeout:.0f}s: {log_tail(shell, node)}")
        time.sleep(0.5)
