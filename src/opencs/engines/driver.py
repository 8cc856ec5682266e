"""The cluster driver interface: what a cluster engine (Swarm now, Kubernetes next) does for the
cluster rules, the way OpenStack Magnum's driver serves its conductor.

The services (opencs.services.clusters, cluster_tasks) own the rules and the store: sizes, which
node goes on a scale-down, rollbacks to the previous size, attach/remove checks. They get machines
from a provider and hand them to the driver, which makes them members of the engine's cluster
and reports what the engine sees. A driver never decides *what* the cluster should be, only
*how* the engine gets there; every method is idempotent (a task re-run after a crash calls it
again with the same arguments) and raises DriverError, never an engine library's exception.

The store's member rows (InstanceRow) are the driver's notebook: it records each membership
change as soon as the engine made it (set_membership), so a crash between two joins resumes
where it stopped.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from opencs.machine import HostShell, NodeRuntime, RegistryAuth

if TYPE_CHECKING:
    from opencs.engines.apps import AppEngine
    from opencs.engines.container_events import DeathReader
    from opencs.engines.usage import UsageReader
    from opencs.store.models import InstanceRow


log = logging.getLogger("opencs.nodes")


class DriverError(Exception):
    """An engine operation failed; `code` is the task error code the user sees."""

    def __init__(self, message: str, code: str = "EngineError") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class NoManager(DriverError):
    """No member of the cluster answers as a manager (control plane) right now."""

    def __init__(self, cluster_id: str) -> None:
        super().__init__(f"no reachable swarm manager in cluster {cluster_id}", "NoManager")


def run_parallel(fn: Callable[[str], None], items: list[str], code: str = "InstanceFailed") -> None:
    """Run `fn` on every instance id (up to 8 at once); fail once with every reason."""
    if not items:
        return
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
        for iid, fut in [(i, pool.submit(fn, i)) for i in items]:
            try:
                fut.result()
            except Exception as e:  # collect all, fail once with every reason
                log.warning("instance %s: %s", iid, e)
                errors.append(f"{iid}: {e}")
    if errors:
        raise DriverError("; ".join(errors), code)


@dataclass(frozen=True)
class TLSFiles:
    """PEM material: a node's server certificate, or a user's client certificate."""

    ca_pem: str
    cert_pem: str
    key_pem: str


@dataclass(frozen=True)
class ClusterPKI:
    """The cluster's own CA (key decrypted) — what a driver signs node and user certificates with."""

    cluster_id: str
    ca_cert_pem: str
    ca_key_pem: str
    # the endpoint handed to users (master_url: opencs's checking endpoint); "": the engine's own
    server: str = ""


@dataclass
class NodeConfig:
    """How the engine wants a machine's node runtime set up (the provider applies it): labels,
    the image registry, and a server certificate once the provider knows the machine's address."""

    labels: dict[str, str] = field(default_factory=dict)
    registry_mirror: str | None = None
    insecure_registries: list[str] = field(default_factory=list)
    tls_for_ip: Callable[[str], TLSFiles] | None = None
    runtime: str = ""  # the node runtime's name ("": the provider's default, the Docker engine)
    registry_auth: RegistryAuth | None = None  # the runtime pulls the cluster's private images with it


@dataclass(frozen=True)
class Credentials:
    """What a user needs to reach the cluster's engine API: certificates (Swarm); a kubeconfig
    (Kubernetes) is the other kind."""

    kind: str  # "certs" | "kubeconfig"
    ca_pem: str = ""
    cert_pem: str = ""
    key_pem: str = ""
    kubeconfig: str = ""


@dataclass(frozen=True)
class MemberHealth:
    """One member as the engine's control plane sees it."""

    member_id: str
    state: str  # ready | down | unknown | disconnected


class NodeBook(Protocol):
    """The store's member rows as a driver reads and writes them."""

    def of_cluster(self, cluster_id: str) -> list[InstanceRow]: ...

    def get(self, instance_id: str) -> InstanceRow | None: ...

    def set_membership(self, instance_id: str, role: str, member_id: str) -> None: ...


# Label of every machine made for a cluster, by its engine's node_config (its value: the cluster id).
CLUSTER_LABEL = "opencs.cluster"

# Label of a machine a cluster engine owns besides the cluster's nodes (its value: the cluster id):
# start-up reconciliation keeps such a machine while its cluster lives.
ENGINE_MACHINE_LABEL = "opencs.engine-machine"


@dataclass(frozen=True)
class EngineMachine:
    """A machine of the cluster's engine that is not a node of the cluster (a hosted control plane,
    a load balancer): never a row of the cluster's instances, so never listed or counted."""

    instance_id: str
    private_ip: str
    details: Mapping[str, Any]
    docker_host: str = ""


class EngineMachines(Protocol):
    """Where an engine gets its own machines (the composition root hands one to the drivers)."""

    def ensure(self, cluster_id: str, instance_id: str) -> EngineMachine:
        """The machine running, created under this id if it is not there (idempotent)."""
        ...

    def find(self, instance_id: str) -> EngineMachine | None: ...

    def destroy(self, instance_id: str) -> None: ...


class ClusterDriver(abc.ABC):
    """One cluster engine. `cluster_type` is the spec's value (\"swarm\", \"kubernetes\")."""

    cluster_type: str
    accepts: tuple[str, ...] = ()  # create bodies' cluster_type values it takes (lower case)

    def check(self, cluster_type: str, spec: Mapping[str, Any]) -> str:
        """Before anything is created: whether this engine makes a cluster of this type and these
        settings on this server. Returns the cluster type to record; DriverError if it cannot
        (code ClusterTypeNotSupported, InvalidParameter or EngineUnavailable)."""
        if cluster_type.lower() not in (self.accepts or (self.cluster_type.lower(),)):
            raise DriverError(f"cluster_type {cluster_type!r} is not offered by this server", "ClusterTypeNotSupported")
        return self.cluster_type

    def check_machine(self, cluster_id: str, provider: str) -> None:
        """Before a machine of `provider` is attached to the cluster: DriverError (code
        ProviderUnsupported) if this engine cannot make it a node."""
        return None  # by default any provider's machine (Swarm takes SSH-registered hosts)

    def probe_machine(self, cluster_id: str, provider: str, host_ip: str, shell: HostShell) -> None:
        """Before a host opencs does not own (`shell`: commands on it as its registered login) is
        attached: DriverError naming what the host lacks to become a node. Nothing is changed on it."""
        return None

    @property
    @abc.abstractmethod
    def node_runtime(self) -> NodeRuntime:
        """What runs on a machine to make it a node of this engine (providers boot it)."""

    @abc.abstractmethod
    def managers_for(self, cluster_id: str, size: int) -> int:
        """How many control-plane members the cluster has at `size` nodes."""

    @abc.abstractmethod
    def node_config(self, pki: ClusterPKI | None, instance_id: str, registry: str | None,
                    pull_auth: RegistryAuth | None = None) -> NodeConfig:
        """The node runtime settings of a machine (`pki` None: a free machine, no cluster TLS).
        `pull_auth` is the machine's node credential for `registry` (None: a free machine, or no
        bundled registry): an engine whose node runtime pulls images by itself, without a credential
        per workload, puts it into the NodeConfig; one that logs in per workload leaves it out."""

    @abc.abstractmethod
    def create(self, cluster_id: str, first_instance_id: str) -> str:
        """Start the cluster on its first member (a manager); returns the engine's cluster id."""

    @abc.abstractmethod
    def join(self, cluster_id: str, size: int) -> None:
        """Make every running machine of the cluster a ready member, with managers_for(cluster_id,
        size) managers (used by create, scale, attach and after a reset)."""

    @abc.abstractmethod
    def set_managers(self, cluster_id: str, want: int) -> None:
        """Promote or demote members until exactly `want` are managers (never the leader)."""

    @abc.abstractmethod
    def remove_node(self, cluster_id: str, instance_id: str) -> None:
        """Take a member out of the cluster (drain, demote, leave, forget); it stays a machine."""

    @abc.abstractmethod
    def reset_node(self, cluster_id: str, instance_id: str) -> None:
        """Before its machine is re-imaged: take the member out so that it can join again fresh."""

    @abc.abstractmethod
    def delete(self, cluster_id: str) -> None:
        """Release what the engine holds beyond the machines (the machines go with the provider)."""

    @abc.abstractmethod
    def credentials(self, pki: ClusterPKI, user_cert_pem: str, user_key_pem: str) -> Credentials:
        """What DescribeClusterCerts returns for this engine."""

    @abc.abstractmethod
    def health(self, cluster_id: str) -> dict[str, MemberHealth] | None:
        """Members by member id as the control plane sees them; None when no manager answers."""

    def member_health(self, cluster_id: str, members: Sequence[InstanceRow]) -> dict[str, MemberHealth] | None:
        """health() for a caller that already read the cluster's member rows (the health monitor
        reads every row in one query): an engine that needs only the rows saves the store a query
        per cluster per pass. Called from several threads at once."""
        return self.health(cluster_id)

    @abc.abstractmethod
    def api_url(self, cluster_id: str) -> str:
        """The engine's own API address for master_url when no Application API endpoint is served."""

    @abc.abstractmethod
    def manager_endpoints(self, cluster_id: str) -> list[str]:
        """The managers' engine endpoints, the one that answers as a manager first (NoManager if none)."""

    @abc.abstractmethod
    def app_engine(self, cluster_id: str) -> AppEngine:
        """The cluster's application runtime (stacks, services, blue-green slots)."""

    def usage_reader(self) -> UsageReader | None:
        """How the usage collector (issue 12 item 2) reads this engine's nodes and containers; one
        object for the process (it may keep connections). None: the engine's clusters are not read."""
        return None

    def death_reader(self) -> DeathReader | None:
        """Where the container-death watcher (issue 12 item 4) reads this engine's container exits."""
        return None


class ClusterDrivers(Protocol):
    """The composition root's drivers by cluster type."""

    def for_type(self, cluster_type: str) -> ClusterDriver: ...
