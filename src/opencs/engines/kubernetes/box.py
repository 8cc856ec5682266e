"""A machine of a Kubernetes cluster as the driver uses it: where its k8s/ directory, network
namespace, cgroup and containerd socket are, its units' logs; writing plans into it, setting its
routes, stopping its units. A local machine (Box) is all on this host; a node on an SSH-registered
host (SshBox, booted by the ssh provider) is reached through its HostShell."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from opencs.engines.driver import DriverError, EngineMachine
from opencs.engines.kubernetes import network, plans
from opencs.engines.kubernetes.runtime import ROUTE_PROTO, STATE_DIR, cni_bridge, forward_tag, unit_script
from opencs.machine import HostShell

if TYPE_CHECKING:
    from opencs.store.models import InstanceRow


@dataclass(frozen=True)
class Box:
    """One machine of the cluster as the driver uses it."""

    name: str  # the Node's name: the instance id
    ip: str
    k: Path  # the machine's k8s/ directory
    netns: str
    cgroup: str
    socket: str  # containerd's API (the machine's api_socket)

    @classmethod
    def of(cls, r: InstanceRow | EngineMachine) -> Box:
        d = r.details or {}
        if not d.get("dir") or not d.get("netns"):
            raise DriverError(f"instance {r.instance_id} is not a local machine: Kubernetes nodes run on the "
                              "local provider only", "ProviderUnsupported")
        return cls(r.instance_id, r.private_ip, Path(d["dir"]) / STATE_DIR, d["netns"], d.get("cgroup") or d["netns"],
                   d.get("unix_socket") or r.docker_host.removeprefix("unix://"))

    bridge = "cni0"  # its CNI bridge, in its own netns
    exe = ""  # the Kubernetes binary: this server's

    def log_tail(self, unit: str, lines: int = 6) -> str:
        try:
            text = (self.k / "log" / f"{unit}.log").read_text(errors="replace")
        except OSError:
            return f"{unit}: no log"
        return f"{unit}: " + " | ".join(text.strip().splitlines()[-lines:])

    def install(self, plan: plans.Plan) -> None:
        plans.install(self.k, plan)

    def sync_routes(self, routes: dict[str, str], pod_cidr: str) -> None:
        network.sync_routes(self.netns, routes)

    def stop_units(self, units: tuple[str, ...]) -> None:
        stop_units(self, units)


class NodeBox(Protocol):
    """What the driver does with a node, wherever it runs (Box, SshBox)."""

    @property
    def name(self) -> str: ...
    @property
    def ip(self) -> str: ...
    @property
    def k(self) -> Path: ...
    @property
    def cgroup(self) -> str: ...
    @property
    def socket(self) -> str: ...
    @property
    def bridge(self) -> str: ...
    @property
    def exe(self) -> str: ...

    def log_tail(self, unit: str, lines: int = 6) -> str: ...

    def install(self, plan: plans.Plan) -> None: ...

    def sync_routes(self, routes: dict[str, str], pod_cidr: str) -> None: ...

    def stop_units(self, units: tuple[str, ...]) -> None: ...


@dataclass(frozen=True)
class SshBox:
    """A worker node on an SSH-registered host: its machine directory, cgroup and containerd socket
    are on the host (the ssh provider booted the runtime there, sshnode.py in providers), reached by
    its HostShell; routes and FORWARD rules go into the host's own network namespace, by our names."""

    name: str
    ip: str
    k: Path  # on the host
    cgroup: str
    socket: str
    device: str  # the host's link to the nodes' network
    shell: HostShell
    exe: str = ""  # the Kubernetes binary on the host ("": found at install)

    @classmethod
    def of(cls, r: InstanceRow, shell: HostShell) -> SshBox:
        d = r.details or {}
        return cls(r.instance_id, r.private_ip, Path(d["node_dir"]) / STATE_DIR, d["cgroup"], d["node_socket"],
                   d.get("device") or "eth0", shell)

    @property
    def bridge(self) -> str:
        return cni_bridge(self.name, True)

    def _run(self, script: str, what: str) -> str:
        try:
            r = self.shell.run(script, 60)
        except OSError as e:
            raise DriverError(f"{self.name}: {what}: {e}", "SshUnreachable") from None
        if r.status != 0:
            raise DriverError(f"{self.name}: {what}: {(r.stderr or r.stdout).strip()[-300:]}", "NodeFailed")
        return r.stdout

    def log_tail(self, unit: str, lines: int = 6) -> str:
        try:
            text = self.shell.run(f"tail -n {lines} {shlex.quote(str(self.k / 'log' / f'{unit}.log'))}", 30).stdout
        except OSError:
            return f"{unit}: no log"
        return f"{unit}: " + " | ".join(text.strip().splitlines()[-lines:])

    def install(self, plan: plans.Plan) -> None:
        """As plans.install: certificates already there are kept (a running component keeps its own)."""
        have = set(self._run(f"ls {shlex.quote(str(self.k / 'pki'))} 2>/dev/null; true", "reading pki/").split())
        files = {str(self.k / rel): (text.encode(), mode) for rel, (text, mode) in plan.files.items()
                 if not (rel.startswith("pki/") and rel.removeprefix("pki/") in have)}
        files.update({str(self.k / "units" / f"{u}.sh"): (unit_script(argv).encode(), 0o644)
                      for u, argv in plan.units.items()})
        try:
            self.shell.put(files)
        except OSError as e:
            raise DriverError(f"{self.name}: uploading its plan: {e}", "SshUnreachable") from None

    def sync_routes(self, routes: dict[str, str], pod_cidr: str) -> None:
        """Our routes (protocol ROUTE_PROTO) exactly `routes`, and pod traffic let through the host's
        FORWARD chain (a Docker host drops what it does not know) by rules carrying our tag."""
        q, dev, tag = shlex.quote, shlex.quote(self.device), forward_tag(self.name)
        lines = [f"ip route replace {q(dst)} {f'via {q(via)} ' if via else ''}dev {dev} proto {ROUTE_PROTO}"
                 for dst, via in sorted(routes.items())]
        want = " ".join(sorted(routes))
        lines.append(f"for d in $(ip -o route show proto {ROUTE_PROTO} | cut -d' ' -f1); do case ' {want} ' in "
                     f"*\" $d \"*) ;; *) ip route del \"$d\" proto {ROUTE_PROTO};; esac; done")
        for side in ("-s", "-d"):
            rule = f"FORWARD {side} {q(pod_cidr)} -m comment --comment {q(tag)} -j ACCEPT"
            lines.append(f"iptables -C {rule} 2>/dev/null || iptables -I {rule}")
        self._run("set -e\n" + "\n".join(lines), "setting its routes")

    def stop_units(self, units: tuple[str, ...]) -> None:
        u = self.k / "units"
        r = self.k / "run"
        script = " ".join(f"rm -f {shlex.quote(str(u / f'{x}.sh'))};" for x in units) + "".join(
            f" p=$(cat {shlex.quote(str(r / f'{x}.pid'))} 2>/dev/null) && grep -q ':pids:/{self.cgroup}' "
            f"/proc/\"$p\"/cgroup 2>/dev/null && kill -TERM \"$p\";" for x in units) + " true"
        self._run(script, "stopping its units")


def stop_units(m: Box, units: tuple[str, ...]) -> None:
    """Remove units from a machine (the supervisor stops restarting them) and stop them."""
    for u in units:
        (m.k / "units" / f"{u}.sh").unlink(missing_ok=True)
    for u in units:
        try:
            pid = int((m.k / "run" / f"{u}.pid").read_text())
            cgroups = Path(f"/proc/{pid}/cgroup").read_text()
        except (OSError, ValueError):
            continue
        # by PID, and only if that PID is still a process of this machine (its pids cgroup)
        if any(line.split(":")[1] == "pids" and line.split(":")[2].startswith(f"/{m.cgroup}")
               for line in cgroups.splitlines() if line.count(":") >= 2):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
