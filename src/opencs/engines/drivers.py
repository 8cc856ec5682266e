"""DriverSet: the cluster drivers of one process, keyed by cluster type, behind the ClusterDriver
interface itself — each call goes to the driver of the cluster it names (its type as the store
records it), so the cluster rules in services/ stay the same for every engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from opencs.engines.driver import (
    ClusterDriver,
    ClusterPKI,
    Credentials,
    DriverError,
    MemberHealth,
    NodeConfig,
)
from opencs.machine import HostShell, NodeRuntime, RegistryAuth

if TYPE_CHECKING:
    from opencs.engines.apps import AppEngine
    from opencs.store.models import InstanceRow

_T = TypeVar("_T")


class DriverSet(ClusterDriver):
    """`default` serves free machines and clusters of unknown type; `type_of(cluster_id)` is the
    cluster's recorded type (None if it has none)."""

    def __init__(self, default: ClusterDriver, others: list[ClusterDriver],
                 type_of: Callable[[str], str | None]) -> None:
        self.default = default
        self.drivers: dict[str, ClusterDriver] = {d.cluster_type.lower(): d for d in (default, *others)}
        self.type_of = type_of
        self.cluster_type = default.cluster_type
        self._types: dict[str, str] = {}

    def for_type(self, cluster_type: str) -> ClusterDriver:
        t = cluster_type.lower()
        for d in self.drivers.values():
            if t == d.cluster_type.lower() or t in d.accepts:
                return d
        raise DriverError(f"cluster_type {cluster_type!r} is not offered by this server (it makes "
                          f"{', '.join(sorted(self.drivers))} clusters)", "ClusterTypeNotSupported")

    def of(self, cluster_id: str) -> ClusterDriver:
        t = self._types.get(cluster_id)
        if t is None:
            t = (self.type_of(cluster_id) or "").lower()
            if t:  # a cluster's type never changes: asked once (every call on a cluster dispatches here)
                self._types[cluster_id] = t
        for d in self.drivers.values():
            if t == d.cluster_type.lower() or t in d.accepts:
                return d
        return self.default

    def by_type(self, pick: Callable[[ClusterDriver], _T | None]) -> dict[str, _T]:
        """What `pick` makes of each engine (its usage reader, its death reader), under every cluster
        type the store may record for it (lower case); engines for which it is None are left out."""
        out: dict[str, _T] = {}
        for d in self.drivers.values():
            if (got := pick(d)) is not None:
                out.update(dict.fromkeys({d.cluster_type.lower(), *d.accepts}, got))
        return out

    @property
    def runtimes(self) -> dict[str, NodeRuntime]:
        """Every engine's node runtime by name (the providers boot the one an instance asks for)."""
        out: dict[str, NodeRuntime] = {}
        for d in self.drivers.values():
            try:
                out[d.node_runtime.name] = d.node_runtime
            except DriverError:
                continue
        return out

    # ------------------------------------------------------------ dispatch

    @property
    def node_runtime(self) -> NodeRuntime:
        return self.default.node_runtime

    def check(self, cluster_type: str, spec: Mapping[str, Any]) -> str:
        return self.for_type(cluster_type).check(cluster_type, spec)

    def check_machine(self, cluster_id: str, provider: str) -> None:
        self.of(cluster_id).check_machine(cluster_id, provider)

    def probe_machine(self, cluster_id: str, provider: str, host_ip: str, shell: HostShell) -> None:
        self.of(cluster_id).probe_machine(cluster_id, provider, host_ip, shell)

    def managers_for(self, cluster_id: str, size: int) -> int:
        return self.of(cluster_id).managers_for(cluster_id, size)

    def node_config(self, pki: ClusterPKI | None, instance_id: str, registry: str | None,
                    pull_auth: RegistryAuth | None = None) -> NodeConfig:
        d = self.of(pki.cluster_id) if pki is not None else self.default
        return d.node_config(pki, instance_id, registry, pull_auth)

    def create(self, cluster_id: str, first_instance_id: str) -> str:
        return self.of(cluster_id).create(cluster_id, first_instance_id)

    def join(self, cluster_id: str, size: int) -> None:
        self.of(cluster_id).join(cluster_id, size)

    def set_managers(self, cluster_id: str, want: int) -> None:
        self.of(cluster_id).set_managers(cluster_id, want)

    def remove_node(self, cluster_id: str, instance_id: str) -> None:
        self.of(cluster_id).remove_node(cluster_id, instance_id)

    def reset_node(self, cluster_id: str, instance_id: str) -> None:
        self.of(cluster_id).reset_node(cluster_id, instance_id)

    def delete(self, cluster_id: str) -> None:
        self.of(cluster_id).delete(cluster_id)

    def credentials(self, pki: ClusterPKI, user_cert_pem: str, user_key_pem: str) -> Credentials:
        return self.of(pki.cluster_id).credentials(pki, user_cert_pem, user_key_pem)

    def health(self, cluster_id: str) -> dict[str, MemberHealth] | None:
        return self.of(cluster_id).health(cluster_id)

    def member_health(self, cluster_id: str, members: Sequence[InstanceRow]) -> dict[str, MemberHealth] | None:
        return self.of(cluster_id).member_health(cluster_id, members)

    def api_url(self, cluster_id: str) -> str:
        return self.of(cluster_id).api_url(cluster_id)

    def manager_endpoints(self, cluster_id: str) -> list[str]:
        return self.of(cluster_id).manager_endpoints(cluster_id)

    def app_engine(self, cluster_id: str) -> AppEngine:
        return self.of(cluster_id).app_engine(cluster_id)
