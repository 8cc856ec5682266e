"""A machine of a Kubernetes cluster as the driver uses it: where its k8s/ directory, network
namespace, cgroup and containerd socket are, its units' logs; stopping its units."""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from opencs.engines.driver import DriverError, EngineMachine
from opencs.engines.kubernetes.runtime import STATE_DIR

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

    def log_tail(self, unit: str, lines: int = 6) -> str:
        try:
            text = (self.k / "log" / f"{unit}.log").read_text(errors="replace")
        except OSError:
            return f"{unit}: no log"
        return f"{unit}: " + " | ".join(text.strip().splitlines()[-lines:])


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
