"""The application engine interface (spec §10, §13): one cluster's runtime for Compose stacks.

The project rules (opencs.services.projects) decide *what* a project should be — its template, per
service scale, stopped services, pinned images, the blue-green split — and an AppEngine makes the
cluster's engine so and reports what it sees, as the typed values below. No engine library object,
exception or raw service spec crosses this seam: engines raise AppEngineError (with the code the
user sees) and return dataclasses.

Swarm (opencs.engines.swarm.apps) is the first implementation; opencs.engines.fake.apps is an
in-memory one for unit tests of the rules. Every mutating method is idempotent: a task stage re-run
after a crash calls it again with the same arguments.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from opencs.compose import StackModel
from opencs.compose.release import GREEN, RELEASE_LABEL

__all__ = ["GREEN", "RELEASE_LABEL"]  # the labels of a blue-green release's new version


class AppEngineError(Exception):
    """An application engine operation failed; `code` is the error code the user sees."""

    def __init__(self, message: str, code: str = "DeployFailed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class EngineUnavailable(AppEngineError):
    """No manager of the cluster answers (the rules answer 503)."""

    def __init__(self, message: str, code: str = "NoManager") -> None:
        super().__init__(message, code)


class EngineUnreachable(AppEngineError):
    """The engine did not answer a call (connection refused, timeout...)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"engine error: {detail}", "EngineError")
        self.detail = detail


class VolumeDriverMissing(AppEngineError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "VolumeDriverUnavailable")


# ---------------------------------------------------------------- typed values


@dataclass(frozen=True)
class AppNode:
    """A member of the cluster whose engine runs containers."""

    node_id: str
    ip: str
    local: bool = False  # its engine shares this host's kernel


@dataclass(frozen=True)
class ContainerRef:
    """Where one container of a service runs (for signals and stops)."""

    node: AppNode
    container_id: str


class LogStream(Protocol):
    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None:
        """Ends the stream from any thread (a follower that went away)."""


@dataclass(frozen=True)
class ContainerView:
    container_id: str
    name: str
    node_ip: str
    ip: str
    running: bool
    status: str
    health: str  # success | failure | starting | unknown


@dataclass
class AppService:
    """One live service of a stack."""

    service_id: str
    full_name: str
    # running | completed (one-shot, exited 0) | failed (exited non-zero, not restarted again)
    # | stopped | stopping | updating | starting | degraded (restarting after failures)
    state: str
    created: str = ""
    updated: str = ""
    force_update: int = 0
    containers: list[ContainerView] = field(default_factory=list)
    refs: list[ContainerRef] = field(default_factory=list)
    problem: str = ""  # failed/degraded: the exit code, the engine's reason and (failed) the last log lines


@dataclass
class AppSnapshot:
    """One look at the live services of a project (or all projects) of a cluster."""

    services: dict[str, AppService] = field(default_factory=dict)  # by full name

    def service(self, full_name: str) -> AppService | None:
        return self.services.get(full_name)

    def state_of(self, full_name: str) -> str:
        svc = self.services.get(full_name)
        return svc.state if svc is not None else "missing"


@dataclass(frozen=True)
class PublishedPort:
    port: int
    protocol: str
    service: str  # the live service's full name
    project: str | None  # None: not a service of a stack


@dataclass(frozen=True)
class TaskAddress:
    task_id: str
    addr: str
    port: int


@dataclass(frozen=True)
class RoutedPort:
    """A service's container port labelled for routing, with its running tasks' ways in."""

    project: str
    service: str
    release: str
    target_port: int
    domains: str  # the label's value, as written
    tasks: tuple[TaskAddress, ...] = ()


@dataclass(frozen=True)
class VolumeRef:
    name: str
    container_id: str


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    driver: str
    mountpoint: str
    scope: str
    labels: dict[str, str]
    refs: tuple[VolumeRef, ...] = ()


@dataclass(frozen=True)
class NodeVolumes:
    hostname: str
    volumes: tuple[VolumeInfo, ...]


@dataclass
class DeployInput:
    """The per-service inputs of a deploy beside the model."""

    replicas: dict[str, int] = field(default_factory=dict)
    stopped: Collection[str] = ()
    images: dict[str, str] = field(default_factory=dict)  # service -> pinned image reference
    force: dict[str, int] = field(default_factory=dict)  # service -> ForceUpdate counter


Progress = Callable[[str], None]


class AppEngine(abc.ABC):
    """One cluster's application runtime."""

    # ------------------------------------------------------------ facts

    @abc.abstractmethod
    def nodes(self) -> list[AppNode]:
        """The members that run containers."""

    @abc.abstractmethod
    def ipvs(self) -> bool:
        """Can the nodes do VIP load balancing (else dnsrr endpoints and host-mode ports)?"""

    @abc.abstractmethod
    def lacks_filesystem(self, fstype: str) -> bool:
        """True when the nodes share this host's kernel and it has no `fstype` (nfs...)."""

    @abc.abstractmethod
    def network_problems(self, names: Collection[str]) -> dict[str, str]:
        """Of these networks (a template's external ones), those services cannot attach to: missing,
        or not a swarm overlay network — name → why."""

    # ------------------------------------------------------------ images and ports

    @abc.abstractmethod
    def resolve_image(self, image: str) -> str:
        """The registry's digest of `image`; AppEngineError(code ImageNotFound) when unknown."""

    @abc.abstractmethod
    def image_on_every_node(self, image: str) -> bool:
        """Is `image` present on every node (an image that no registry has but the nodes do)?"""

    @abc.abstractmethod
    def published_ports(self) -> list[PublishedPort]:
        """Every port the cluster's live services publish."""

    # ------------------------------------------------------------ stacks

    @abc.abstractmethod
    def deploy(self, model: StackModel, state: DeployInput, *, only: Iterable[str] | None = None,
               prune: bool = True) -> dict[str, str]:
        """Converge the stack (only: just these services; prune: remove services the model lacks);
        returns service -> created | updated | scaled | unchanged | removed."""

    @abc.abstractmethod
    def scale_service(self, project: str, full_name: str, replicas: int) -> bool:
        """Set one replicated service's replica count and nothing else, on the first manager that
        answers. False when the live service is not the project's replicated service."""

    @abc.abstractmethod
    def wait_converged(self, model: StackModel, services: Iterable[str], *, timeout: float,
                       since: float | None = None, progress: Progress | None = None,
                       unchanged: Collection[str] = ()) -> None:
        """Until every named service runs its desired tasks (healthy, settled) or completed (exited 0,
        not restarted). AppEngineError with code ContainerFailed (the message names the service,
        its exit code and last log lines) / SchedulingFailed / Timeout when it will not.
        `unchanged`: services the deploy before left as they were, so that a rolled-back update
        they show is an earlier one's, not this deploy's failure."""

    @abc.abstractmethod
    def remove_services(self, project: str, *, release: str | None = None, keep: Collection[str] = ()) -> None:
        """Remove the project's services (release GREEN: only the new version's; "blue": all but
        those), except those named in `keep`."""

    @abc.abstractmethod
    def wait_gone(self, project: str, *, release: str | None = None, timeout: float = 60.0) -> None:
        """Until no node runs a container of the project (or of that release)."""

    @abc.abstractmethod
    def remove_networks(self, project: str, *, release: str | None = None, timeout: float = 30.0) -> None:
        """Remove the project's networks (or that release's), retrying while endpoints detach."""

    @abc.abstractmethod
    def remove_project_volumes(self, project: str) -> list[str]:
        """Remove the stack's volumes on every node; returns what could not be removed."""

    # ------------------------------------------------------------ observing and containers

    @abc.abstractmethod
    def snapshot(self, project: str | None, *, containers: bool) -> AppSnapshot:
        """The live services (containers: ask every node's engine for its containers)."""

    @abc.abstractmethod
    def signal(self, targets: list[ContainerRef], signal: str) -> list[str]:
        """Send `signal` to each container; returns the errors."""

    @abc.abstractmethod
    def stop_containers(self, targets: list[ContainerRef], timeout: int) -> list[str]:
        """Stop each container with `timeout` seconds of grace; returns the errors."""

    def container_logs(self, target: ContainerRef, tail: int) -> str:
        """The last `tail` lines of one container's output (stdout and stderr, with timestamps)."""
        raise AppEngineError("this engine cannot show container logs", "LogsUnsupported")

    def open_logs(self, target: ContainerRef, *, follow: bool, tail: int | None, since: float | None) -> LogStream:
        """One container's output (stdout and stderr) as lines `<RFC 3339 time> <text>\n`; with
        `follow`, new lines as they come until the container ends or the stream is closed."""
        raise AppEngineError("this engine cannot show container logs", "LogsUnsupported")

    # ------------------------------------------------------------ routing

    @abc.abstractmethod
    def routed_ports(self) -> list[RoutedPort]:
        """The routing-labelled ports of every stack with their running tasks' addresses."""

    # ------------------------------------------------------------ volumes

    @abc.abstractmethod
    def node_volumes(self, node: AppNode) -> NodeVolumes:
        """The volumes on one node, with the containers using them (EngineUnreachable if down)."""

    @abc.abstractmethod
    def create_volume(self, node: AppNode, name: str, driver: str, options: dict[str, str],
                      labels: dict[str, str]) -> VolumeInfo:
        """Create a volume on one node (VolumeDriverMissing; AppEngineError VolumeCreateFailed)."""

    @abc.abstractmethod
    def remove_volume(self, node: AppNode, name: str) -> None:
        """Remove a volume from one node (absent: nothing to do)."""

    @abc.abstractmethod
    def probe_mount(self, node: AppNode, name: str) -> None:
        """Mount the volume in a throw-away container on that node (AppEngineError
        VolumeMountFailed with the engine's own error)."""


class AppEngines(Protocol):
    """The application engines of the clusters, by cluster id."""

    def for_cluster(self, cluster_id: str) -> AppEngine: ...
