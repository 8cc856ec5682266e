"""SwarmDriver: the cluster driver of Docker Swarm clusters (moved from services/nodes.py).

A machine becomes a Swarm node through its Docker engine (the provider starts it with the
NodeConfig of node_config()); membership goes through the engines' API. Every method is
idempotent and records each membership change in the NodeBook as soon as the engine made it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from docker.errors import DockerException

from opencs.engines import swarm
from opencs.engines.driver import (
    CLUSTER_LABEL,
    ClusterDriver,
    ClusterPKI,
    Credentials,
    DriverError,
    MemberHealth,
    NodeBook,
    NodeConfig,
    NoManager,
    TLSFiles,
    run_parallel,
)
from opencs.engines.swarm.events import SwarmDeathReader
from opencs.engines.swarm.node import DockerEngine
from opencs.engines.swarm.usage import SwarmUsageReader
from opencs.machine import RegistryAuth
from opencs.pki.ca import CertAuthority

if TYPE_CHECKING:
    from opencs.engines.apps import AppEngine
    from opencs.store.models import InstanceRow

log = logging.getLogger("opencs.nodes")

MANAGERS_FROM_SIZE_3 = 3
TLS_PORT = 2376
F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def _engine_errors() -> Iterator[None]:
    """Docker SDK and swarm errors leave as DriverError (the services never see docker's types)."""
    try:
        yield
    except DriverError:
        raise
    except swarm.SwarmError as e:
        raise DriverError(str(e), "SwarmError") from e
    except (DockerException, OSError) as e:
        raise DriverError(str(e) or type(e).__name__, "EngineError") from e


def _translated(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _engine_errors():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class SwarmDriver(ClusterDriver):
    cluster_type = "swarm"
    accepts = ("swarm", "aliyun")

    def __init__(self, book: NodeBook, runtime: DockerEngine | None = None,
                 app_engine_factory: Callable[[Callable[[], list[str]]], AppEngine] | None = None) -> None:
        self.book = book
        self._runtime = runtime or DockerEngine()
        # builds SwarmAppEngine from a callable returning the managers' engine hosts (preference order)
        self._app_engine_factory = app_engine_factory
        self._health_conns = swarm.EngineConnections()  # the monitor asks each manager every pass
        self._usage, self._deaths = SwarmUsageReader(), SwarmDeathReader()

    # ------------------------------------------------------------ configuration

    @property
    def node_runtime(self) -> DockerEngine:
        return self._runtime

    def managers_for(self, cluster_id: str, size: int) -> int:
        """One manager for 1-2 nodes; three (raft quorum survives one loss) from size 3."""
        return MANAGERS_FROM_SIZE_3 if size >= MANAGERS_FROM_SIZE_3 else 1

    def node_config(self, pki: ClusterPKI | None, instance_id: str, registry: str | None,
                    pull_auth: RegistryAuth | None = None) -> NodeConfig:
        """A server cert of the cluster's CA for the engine's tcp://IP:2376, the bundled registry
        as mirror. Free machines get no TLS endpoint. No pull credential in the engine: services
        carry the node credential with them (opencs.engines.swarm.stack.registry_login)."""
        cfg = NodeConfig(labels={"opencs.instance": instance_id},
                         registry_mirror=f"http://{registry}" if registry else None,
                         insecure_registries=[registry] if registry else [])
        if pki is not None:
            cfg.labels[CLUSTER_LABEL] = pki.cluster_id
            ca = CertAuthority(cert_pem=pki.ca_cert_pem, key_pem=pki.ca_key_pem)

            def tls_for(ip: str) -> TLSFiles:
                server = ca.issue_server(instance_id, ips=[ip], dns_names=[instance_id])
                return TLSFiles(ca_pem=ca.cert_pem, cert_pem=server.cert_pem, key_pem=server.key_pem)

            cfg.tls_for_ip = tls_for
        return cfg

    def credentials(self, pki: ClusterPKI, user_cert_pem: str, user_key_pem: str) -> Credentials:
        return Credentials(kind="certs", ca_pem=pki.ca_cert_pem, cert_pem=user_cert_pem, key_pem=user_key_pem)

    # ------------------------------------------------------------ managers

    def _managers(self, cluster_id: str) -> list[InstanceRow]:
        return [r for r in self.book.of_cluster(cluster_id) if r.role == "manager" and r.swarm_node_id]

    def _reachable_manager(self, cluster_id: str, exclude: str = "") -> InstanceRow | None:
        for r in self._managers(cluster_id):
            if r.instance_id == exclude:
                continue
            try:
                if swarm.local_state(r.docker_host)["is_manager"]:
                    return r
            except Exception as e:
                log.info("manager %s not reachable: %s", r.private_ip, e)
        return None

    def _leader(self, cluster_id: str) -> InstanceRow:
        r = self._reachable_manager(cluster_id)
        if r is None:
            raise NoManager(cluster_id)
        return r

    def manager_endpoints(self, cluster_id: str) -> list[str]:
        first = self._leader(cluster_id)
        return [first.docker_host] + [r.docker_host for r in self._managers(cluster_id)
                                      if r.instance_id != first.instance_id and r.docker_host]

    def api_url(self, cluster_id: str) -> str:
        mgrs = self._managers(cluster_id)
        return f"https://{mgrs[0].private_ip}:{TLS_PORT}" if mgrs else ""

    def app_engine(self, cluster_id: str) -> AppEngine:
        if self._app_engine_factory is None:
            raise DriverError("no application engine is configured for Swarm clusters", "NoAppEngine")
        return self._app_engine_factory(lambda: self.manager_endpoints(cluster_id))

    def usage_reader(self) -> SwarmUsageReader:
        return self._usage

    def death_reader(self) -> SwarmDeathReader:
        return self._deaths

    # ------------------------------------------------------------ membership

    @_translated
    def create(self, cluster_id: str, first_instance_id: str) -> str:
        """The swarm starts on one node, which becomes the first manager (idempotent)."""
        r = self.book.get(first_instance_id)
        if r is None:
            raise DriverError(f"instance {first_instance_id} vanished", "InstanceNotFound")
        swarm.init(r.docker_host, r.private_ip)
        st = swarm.local_state(r.docker_host)
        self.book.set_membership(first_instance_id, "manager", st["node_id"])
        return str(st["swarm_id"])

    @_translated
    def join(self, cluster_id: str, size: int) -> None:
        rows = [r for r in self.book.of_cluster(cluster_id) if r.state == "running"]
        if not rows:
            raise DriverError("cluster has no running instance", "NoInstances")
        if not any(r.role == "manager" and r.swarm_node_id for r in rows):
            raise DriverError(f"cluster {cluster_id} has no swarm yet", "NoManager")
        leader = self._leader(cluster_id)
        tokens = swarm.join_tokens(leader.docker_host)
        swarm_id = swarm.local_state(leader.docker_host)["swarm_id"]
        want = self.managers_for(cluster_id, size)
        n_mgr = len(self._managers(cluster_id))
        # managers join one at a time (each changes the raft quorum); workers all at once
        workers: list[InstanceRow] = []
        for r in rows:
            if r.swarm_node_id and r.role:
                continue
            if n_mgr < want:
                node_id = swarm.join(r.docker_host, r.private_ip, [leader.private_ip], tokens["manager"], swarm_id)
                self.book.set_membership(r.instance_id, "manager", node_id)
                n_mgr += 1
            else:
                workers.append(r)

        def join_worker(iid: str) -> None:
            r = next(w for w in workers if w.instance_id == iid)
            node_id = swarm.join(r.docker_host, r.private_ip, [leader.private_ip], tokens["worker"], swarm_id)
            self.book.set_membership(iid, "worker", node_id)

        run_parallel(join_worker, [w.instance_id for w in workers])
        self.set_managers(cluster_id, want)
        ids_ = [r.swarm_node_id for r in self.book.of_cluster(cluster_id) if r.swarm_node_id]
        swarm.wait_ready(leader.docker_host, ids_, timeout=60)

    @_translated
    def set_managers(self, cluster_id: str, want: int) -> None:
        leader = self._leader(cluster_id)
        rows = [r for r in self.book.of_cluster(cluster_id) if r.swarm_node_id]
        mgrs = [r for r in rows if r.role == "manager"]
        workers = [r for r in rows if r.role == "worker"]
        while len(mgrs) < want and workers:
            w = workers.pop(0)
            swarm.set_role(leader.docker_host, w.swarm_node_id, "manager")
            self.book.set_membership(w.instance_id, "manager", w.swarm_node_id)
            mgrs.append(w)
        leader_ids = {m.node_id for m in swarm.members(leader.docker_host) if m.leader}
        for m in reversed(mgrs):
            if len(mgrs) <= want:
                break
            if m.swarm_node_id in leader_ids:
                continue
            swarm.set_role(leader.docker_host, m.swarm_node_id, "worker")
            self.book.set_membership(m.instance_id, "worker", m.swarm_node_id)
            mgrs.remove(m)
        swarm.wait_managers(leader.docker_host, [m.swarm_node_id for m in mgrs], timeout=60)

    @_translated
    def remove_node(self, cluster_id: str, instance_id: str) -> None:
        """Drain, demote, leave and `docker node rm` one member (idempotent)."""
        r = self.book.get(instance_id)
        if r is None:
            return
        others = [m for m in self._managers(cluster_id) if m.instance_id != r.instance_id]
        if r.swarm_node_id and others:
            mgr = self._reachable_manager(cluster_id, exclude=r.instance_id)
            if mgr is not None:
                try:
                    if r.role == "manager":
                        swarm.set_role(mgr.docker_host, r.swarm_node_id, "worker")
                    swarm.drain(mgr.docker_host, r.swarm_node_id)
                except Exception as e:
                    log.info("drain/demote of %s: %s", r.private_ip, e)
                swarm.leave(r.docker_host)
                swarm.remove(mgr.docker_host, r.swarm_node_id)
        else:
            swarm.leave(r.docker_host)
        self.book.set_membership(r.instance_id, "", "")

    def reset_node(self, cluster_id: str, instance_id: str) -> None:
        r = self.book.get(instance_id)
        if r is not None and r.swarm_node_id:
            self.remove_node(cluster_id, instance_id)

    def delete(self, cluster_id: str) -> None:
        """Nothing beyond the machines: the swarm ends with its engines."""

    def health(self, cluster_id: str) -> dict[str, MemberHealth] | None:
        return self.member_health(cluster_id, self.book.of_cluster(cluster_id))

    def member_health(self, cluster_id: str, members: Sequence[InstanceRow]) -> dict[str, MemberHealth] | None:
        for r in members:
            if r.role == "manager" and r.state == "running":
                try:
                    got = swarm.members(r.docker_host, self._health_conns)
                except Exception:
                    continue
                return {m.node_id: MemberHealth(m.node_id, m.state) for m in got}
        return None
