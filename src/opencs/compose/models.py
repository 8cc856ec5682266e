"""The stack model a Compose template becomes: services, networks and volumes as the engine
adapter deploys them, plus the labels and names opencs reads back from the engines."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from opencs.compose.load import ComposeError

NAMESPACE_LABEL = "com.docker.stack.namespace"
IMAGE_LABEL = "com.docker.stack.image"
PROJECT_LABEL = "opencs.project"
SERVICE_LABEL = "opencs.service"
HASH_LABEL = "opencs.config-hash"
ROUTING_LABEL_PREFIX = "aliyun.routing.port_"  # aliyun.routing.port_<container port>: domains
DEFAULT_NETWORK = "default"
PROJECT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
MAX_SERVICE_NAME = 63  # swarm service names are DNS labels

DEFAULT_MONITOR_NS = 5 * 10**9


@dataclass
class NetworkModel:
    key: str  # name in the template
    name: str  # name on the engine
    external: bool = False
    driver: str = "overlay"
    driver_opts: dict[str, str] = field(default_factory=dict)
    attachable: bool = True
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    ipam: dict[str, Any] | None = None


@dataclass
class VolumeModel:
    key: str
    name: str
    external: bool = False
    driver: str = "local"
    driver_opts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    cluster_volume: bool = False  # created with POST /volumes/create


@dataclass
class ServiceModel:
    name: str  # in the template
    full_name: str  # <project>_<name> (the swarm service and the API's service id)
    image: str
    spec: dict[str, Any]  # Engine API ServiceSpec
    mode: str  # replicated | global
    replicas: int | None
    depends_on: list[str]
    definition: dict[str, Any]
    extensions: dict[str, Any]
    published: list[tuple[int, str, str]]  # (published port, protocol, mode)
    latest_image: bool = False

    @property
    def stop_grace_ns(self) -> int:
        """How long the engine waits after SIGTERM before it kills a container (nanoseconds)."""
        return int(self.spec["TaskTemplate"]["ContainerSpec"].get("StopGracePeriod", 10 * 10**9))


@dataclass
class StackModel:
    project: str
    version: str
    services: dict[str, ServiceModel]
    networks: dict[str, NetworkModel]
    volumes: dict[str, VolumeModel]
    levels: list[list[str]]  # dependency order: level 0 first
    warnings: list[str] = field(default_factory=list)
    ipvs: bool = True

    @property
    def order(self) -> list[str]:
        return [s for lvl in self.levels for s in lvl]

    def host_ports(self) -> list[tuple[int, str, str]]:
        """(published port, protocol, service) of every published port."""
        return [(p, proto, s.name) for s in self.services.values() for p, proto, _ in s.published]


@dataclass
class Options:
    ipvs: bool = True
    # name → {"driver": engine driver, "options": {...}, "labels": {...}} of the cluster's volumes
    cluster_volumes: dict[str, dict[str, Any]] = field(default_factory=dict)


def validate_project_name(name: Any) -> str:
    if not isinstance(name, str) or not PROJECT_NAME_RE.match(name):
        raise ComposeError(
            f"invalid project name {name!r}: 1-64 letters, digits and '-', not starting with '-'",
            "name", "InvalidParameter.Name",
        )
    return name


def truthy(v: Any) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def int_label(v: str, path: str, what: str) -> int:
    try:
        n = int(str(v).strip())
    except ValueError:
        raise ComposeError(f"{what} must be an integer, got {v!r}", path, "InvalidTemplate.Label") from None
    if n < 0:
        raise ComposeError(f"{what} must not be negative, got {n}", path, "InvalidTemplate.Label")
    return n
