"""Machines and node runtimes: the vocabulary shared by providers and cluster engines.

A provider hands out *machines*: an address, a directory, a cgroup, and a way to run processes in
them (on this host: a network namespace plus private mount and UTS namespaces). What runs on a
machine to make it a cluster node — the Docker engine for Swarm, containerd and kubelet for
Kubernetes — is a *node runtime*, which belongs to the cluster engine (engines/swarm/node.py).
The provider asks the runtime for a BootPlan at every boot (reboot semantics after a crash) and
runs it inside the machine; it never knows what the plan starts.

Providers and engines do not import each other (the layer contract); both import this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class RegistryAuth:
    """A credential the node's runtime pulls from one registry with (the bundled registry's node
    credential): it lives in files of mode 0600 only, and its repr never shows the password."""

    registry: str  # host:port, as the runtime names the registry
    username: str
    password: str = field(repr=False)

    def to_json(self) -> str:
        return json.dumps({"registry": self.registry, "username": self.username, "password": self.password})

    @classmethod
    def from_json(cls, text: str) -> RegistryAuth:
        raw = json.loads(text)
        return cls(str(raw["registry"]), str(raw["username"]), str(raw["password"]))


@dataclass(frozen=True)
class RuntimeSettings:
    """What the cluster engine asked for this node (InstanceSpec minus the machine's own limits),
    with TLS as files the provider wrote into the machine directory."""

    labels: dict[str, str] = field(default_factory=dict)
    registry_mirror: str | None = None
    insecure_registries: list[str] = field(default_factory=list)
    tls_files: dict[str, str] | None = None  # {"ca", "cert", "key"}: paths of PEM files
    registry_auth: RegistryAuth | None = None  # what the runtime pulls the cluster's private images with


@dataclass(frozen=True)
class MachineInfo:
    """One machine as a node runtime sees it."""

    instance_id: str
    ip: str
    hostname: str
    dir: Path  # private to this machine; survives reboots, wiped (state_dirs) by re-imaging
    cgroup: str  # the machine's cgroup name in every hierarchy (/<cgroup>)
    api_socket: Path  # where the runtime must serve its API for the control plane (unix socket)
    # a host opencs does not own (registered by SSH): its network namespace and kernel settings are
    # the host's, so the runtime changes none of them, names what it makes by the instance id and
    # says in BootPlan.host_cleanup how to remove it; `device` is the host's link to the nodes' network
    shared_host: bool = False
    device: str = "eth0"


# A provider's launcher, in the machine's new mount namespace, before it execs the runtime: /sys for the
# machine's netns, then the plan's binds and tmpfs. Arguments: <n binds> (node path, source)...,
# <n tmpfs> (node path)...; $OCS_DIR is the machine directory.
BOOT_MOUNTS = r"""mkdir -p "$OCS_DIR/.cg"
# sysfs must be remounted to show this netns' devices; keep the host cgroup tree across it
mount --rbind /sys/fs/cgroup "$OCS_DIR/.cg"
mount -t sysfs sysfs /sys
mount --rbind "$OCS_DIR/.cg" /sys/fs/cgroup
umount -l "$OCS_DIR/.cg"
n=$1; shift
while [ "$n" -gt 0 ]; do mkdir -p "$1" "$2"; mount --bind "$2" "$1"; shift 2; n=$((n - 1)); done
n=$1; shift
while [ "$n" -gt 0 ]; do mkdir -p "$1"; mount -t tmpfs -o mode=0711 ocsrun "$1"; shift; n=$((n - 1)); done"""


@dataclass(frozen=True)
class BootPlan:
    """What the provider runs inside the machine at boot, after it made the machine's namespaces
    and joined its cgroup: private tmpfs directories, bind mounts from the machine directory, files
    written first, then `argv` exec'd as the node's first process (its PID is the runtime's)."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    tmpfs: list[str] = field(default_factory=list)  # node paths that get a private tmpfs
    binds: dict[str, str] = field(default_factory=dict)  # node path -> subdirectory of MachineInfo.dir
    files: dict[str, str] = field(default_factory=dict)  # path relative to MachineInfo.dir -> content
    private: frozenset[str] = frozenset()  # those of `files` that hold a secret: written with mode 0600
    log_name: str = "node.log"  # in MachineInfo.dir: the runtime's output
    # on a shared host: a POSIX sh script the provider runs there once the node's processes are gone,
    # removing what the runtime made outside its directories (iptables rules, routes, links), by the
    # names it gave them
    host_cleanup: str = ""


class NodeRuntime(Protocol):
    """A cluster engine's node software, as a provider runs it on its machines."""

    @property
    def name(self) -> str: ...

    @property
    def state_dirs(self) -> tuple[str, ...]:
        """Subdirectories of the machine directory that re-imaging wipes (the "system disk")."""
        ...

    @property
    def log_name(self) -> str: ...

    @property
    def required_binaries(self) -> tuple[str, ...]:
        """Programs the host must have for this runtime (checked with the provider's own)."""
        ...

    def tls_port(self, settings: RuntimeSettings) -> int | None:
        """The TCP port the runtime serves with the cluster's certificates, if it does."""
        ...

    def boot_plan(self, machine: MachineInfo, settings: RuntimeSettings) -> BootPlan: ...

    def answers(self, api_socket: Path, timeout: float = 1.0) -> bool:
        """Does the runtime's API answer on this unix socket (MachineInfo.api_socket, or a tunnel to it)?"""
        ...

    def release_host(self, endpoint: str, remove_cluster_work: bool, timeout: float = 60.0) -> None:
        """On a host the provider does not own (registered by SSH): leave the cluster and, if asked,
        remove what the cluster ran there; the host's own workloads stay."""
        ...


@dataclass(frozen=True)
class ShellResult:
    """What a command on a host answered."""

    status: int
    stdout: str
    stderr: str


class HostShell(Protocol):
    """Commands on a host the provider reaches but does not own (an SSH-registered machine), as the
    login it was registered with: what a cluster engine probes such a host with before it would
    make it a node."""

    def run(self, script: str, timeout: float = 60.0) -> ShellResult:
        """Run a POSIX shell script (the login's shell, its PATH); raises OSError if the host cannot
        be reached."""
        ...

    def put(self, files: Mapping[str, tuple[bytes, int]]) -> None:
        """Write files on the host ({path: (content, mode)}, over SFTP: parents made, each replaced
        atomically); raises OSError."""
        ...
