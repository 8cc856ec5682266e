"""Where nodes come from: the provider interface.

A provider hands out *instances* (the spec's ECS instances): machines that run a Docker engine.
The cluster code only ever sees this interface, never which provider made a node.
"""

from __future__ import annotations

import abc
import builtins
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from opencs.machine import HostShell, RegistryAuth


class InstanceState(enum.StrEnum):
    PENDING = "pending"  # being created
    RUNNING = "running"  # engine answers
    STOPPED = "stopped"  # engine stopped on purpose
    UNHEALTHY = "unhealthy"  # should run, but the engine does not answer
    DESTROYED = "destroyed"


@dataclass(frozen=True)
class TLSMaterial:
    """PEM material for an engine's TCP endpoint (server side) or a client of it."""

    ca_pem: str
    cert_pem: str
    key_pem: str


@dataclass
class InstanceSpec:
    """What to create. `tls` is the server certificate for the engine's tcp://IP:2376 endpoint;
    the provider is told nothing else about the cluster."""

    tls: TLSMaterial | None = None
    # or: make the server certificate once the provider knows the instance's IP (a certificate
    # must name the address clients dial, and the provider assigns it)
    tls_factory: Callable[[str], TLSMaterial] | None = None
    # caller-chosen id ("i-" + 20 lowercase alphanumerics): the store records it *before* the
    # provider creates anything, so a crash mid-create leaves no instance the store does not know
    instance_id: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # engine labels (dockerd --label)
    registry_mirror: str | None = None  # e.g. "http://10.199.0.1:5000"
    insecure_registries: list[str] = field(default_factory=list)
    registry_auth: RegistryAuth | None = None  # the node's pull credential (kept 0600, like the TLS key)
    cpus: float | None = None  # resource limits mapped from instance_type (None: unlimited)
    memory_bytes: int | None = None
    runtime: str = ""  # the node runtime the cluster engine wants ("": the provider's default, Docker)


@dataclass
class Instance:
    instance_id: str  # "i-" + 20 lowercase alphanumerics
    provider: str  # "local" | "ssh" | ...
    private_ip: str
    state: InstanceState
    docker_host: str  # how the control plane reaches the engine: unix:///... or tcp://IP:2376
    tls_port: int | None = 2376  # TCP TLS port clients with the cluster certs use
    hostname: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # provider-specific, JSON-serialisable


class ProviderUnavailable(Exception):
    """The provider cannot work on this machine (not root, no dockerd, ...). The message names
    what is missing; the API turns it into a clear 4xx."""


class InstanceNotFound(Exception):
    pass


class RegistrationFailed(Exception):
    """Registering an existing host failed. `code` is the API error code; the message names what
    failed and never contains a credential."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do beyond the interface every provider has: declared, never probed."""

    creates: bool = True  # makes new machines (create/start/stop); False: existing hosts only
    registers: bool = False  # takes existing hosts by registration (register())
    reimages: bool = True  # reset() wipes the node's disk; False: it only removes what the cluster made
    tls_endpoint: bool = True  # machines serve the node runtime's API on a TLS port with the cluster's certs


class HostNetwork(Protocol):
    """A network the provider's nodes share with this host (the local provider's bridge): host
    services the nodes use, such as the bundled registry, listen on its gateway address."""

    @property
    def gateway_address(self) -> str | None: ...

    def ensure_network(self) -> str:
        """Create the network if needed; returns the gateway address."""
        ...


class Provider(abc.ABC):
    name: str
    capabilities: Capabilities = Capabilities()

    @abc.abstractmethod
    def check(self) -> None:
        """Raise ProviderUnavailable naming what is missing; return if usable."""

    @abc.abstractmethod
    def create(self, spec: InstanceSpec) -> Instance:
        """Create and start one instance; return once its engine answers."""

    @abc.abstractmethod
    def start(self, instance_id: str) -> Instance: ...

    @abc.abstractmethod
    def stop(self, instance_id: str) -> Instance: ...

    @abc.abstractmethod
    def reset(self, instance_id: str, spec: InstanceSpec) -> Instance:
        """Wipe the engine's data (like re-imaging a disk) and start it fresh with `spec`."""

    @abc.abstractmethod
    def destroy(self, instance_id: str) -> None:
        """Remove everything of the instance; idempotent (unknown id is not an error)."""

    @abc.abstractmethod
    def inspect(self, instance_id: str) -> Instance:
        """Real state now; raise InstanceNotFound."""

    @abc.abstractmethod
    def list(self) -> list[Instance]: ...

    def adopt(self) -> builtins.list[Instance]:
        """After a control-plane restart: find our instances again, restart crashed engines
        (reboot semantics). Default: just list."""
        return self.list()

    # --- capabilities (see Capabilities) ----------------------------------------------------------

    def host_network(self) -> HostNetwork | None:
        """The network the nodes share with this host, if the provider has one."""
        return None

    def host_shell(self, instance_id: str) -> HostShell | None:
        """Commands on the instance's host as its registered login (hosts opencs does not own: what
        an engine probes before it would make one a node); None for machines of opencs's own."""
        return None

    def register(self, target: str, *, password: str | None = None, private_key: str | None = None,
                 known_host_key: str | None = None, remote_socket: str | None = None) -> Instance:
        """Take an existing host (capabilities.registers); raise RegistrationFailed naming why."""
        raise ProviderUnavailable(f"the {self.name} provider does not register existing hosts")

    def close(self) -> None:
        """Release what the provider holds in this process (connections, threads); not the nodes."""
        return None
