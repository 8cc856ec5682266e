"""What the endpoint manager (master_url) reads and writes of the clusters: which clusters to serve,
their managers, the endpoint's port and server certificate, and master_url itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from opencs.store.db import Database, utcnow
from opencs.store.models import Cluster, InstanceRow

SERVE_STATES = ("launching", "running", "scaling", "updating")


@dataclass
class EndpointTarget:
    cluster_id: str
    state: str
    master_url: str
    has_nodes: bool = False
    managers: list[str] = field(default_factory=list)  # docker_host of live managers, oldest first
    cluster_type: str = "swarm"


@dataclass(frozen=True)
class EndpointTls:
    ca_pem: str
    tls: dict[str, Any]  # {"cert", "key_enc", "sans"}
    port: int | None


# (CA certificate PEM, CA key (encrypted), current tls dict) -> a new tls dict, or None to keep it
TlsRenewal = Callable[[str, str, dict[str, Any]], dict[str, Any] | None]


class EndpointRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    def change_mark(self) -> tuple[Any, ...]:
        """Changes when a scan may find something new: this process's writes to the two tables (their
        generations, read first) and, for other processes', (count, newest `updated`) of each table,
        two index reads. Not exact for another process's write whose `updated` is older than the
        newest one (a commit after a later-stamped one): the manager reads everything now and then."""
        changes = self.db.changes
        mark: list[Any] = [changes.generation("clusters"), changes.generation("instances")]
        with self.db.reader.connect() as conn:
            for table in (Cluster, InstanceRow):
                mark.extend(conn.execute(select(func.count(), func.max(table.updated)).select_from(table)).one())
        return tuple(mark)

    def scan(self, cluster_types: tuple[str, ...] = ("swarm",)) -> dict[str, EndpointTarget]:
        """The clusters of these types to serve, with their managers.

        Run once a second in the API's process: at 10,000 clusters it was a third of the time the
        process held the GIL. So plain rows read by position (a Row's attribute access costs ten
        times as much), the members found by a join rather than a 10,000-id IN list, only the
        columns it reads, and the ports apart (ports_taken: needed only to start an endpoint)."""
        serving = (Cluster.state.in_(SERVE_STATES), Cluster.cluster_type.in_(cluster_types))
        with self.db.reader.connect() as conn:
            live = conn.execute(select(Cluster.cluster_id, Cluster.state, Cluster.master_url, Cluster.cluster_type)
                                .where(*serving)).all()
            nodes = conn.execute(
                select(InstanceRow.cluster_id, InstanceRow.role, InstanceRow.swarm_node_id, InstanceRow.docker_host,
                       InstanceRow.state)
                .join(Cluster, Cluster.cluster_id == InstanceRow.cluster_id)
                .where(*serving)
                .order_by(InstanceRow.created)
            ).all() if live else []  # fmt: skip
        targets = {r[0]: EndpointTarget(r[0], r[1], r[2] or "", cluster_type=r[3]) for r in live}
        for cid, role, node_id, docker_host, state in nodes:
            t = targets.get(cid) if cid is not None else None
            if t is None:  # its cluster changed state between the two reads
                continue
            t.has_nodes = True
            if role == "manager" and node_id and docker_host and state == "running":
                t.managers.append(docker_host)
        return targets

    def ports_taken(self) -> set[int]:
        """Every port some live cluster holds: the port alone out of spec (the whole column holds
        each endpoint's certificate and key)."""
        port = Cluster.spec["appapi_port"].as_integer()
        with self.db.reader.connect() as conn:
            got = conn.execute(select(port).where(Cluster.state != "deleted", port.is_not(None))).scalars()
            return {int(p) for p in got}

    def endpoint_tls(self, cluster_id: str, renew: TlsRenewal) -> EndpointTls:
        """The endpoint's certificate, renewed under the cluster's row lock when `renew` says so."""
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id, with_for_update=True)
            if c is None or not (c.ca_cert_pem and c.ca_key_enc):
                raise LookupError(f"cluster {cluster_id} has no CA")
            spec = dict(c.spec or {})
            tls = spec.get("appapi_tls") or {}
            new = renew(c.ca_cert_pem, c.ca_key_enc, tls)
            if new is not None:
                tls = spec["appapi_tls"] = new
                c.spec = spec  # a new dict: SQLAlchemy sees the JSON column change
            port = spec.get("appapi_port")
            return EndpointTls(c.ca_cert_pem, tls, int(port) if port is not None else None)

    def persist_port(self, cluster_id: str, port: int) -> None:
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id, with_for_update=True)
            if c is not None and (c.spec or {}).get("appapi_port") != port:
                c.spec = {**(c.spec or {}), "appapi_port": port}

    def set_master_url(self, cluster_id: str, url: str) -> None:
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id, with_for_update=True)
            # never resurrect the master_url of a cluster being deleted meanwhile
            if c is not None and c.state in SERVE_STATES and c.master_url != url:
                c.master_url, c.updated = url, utcnow()
