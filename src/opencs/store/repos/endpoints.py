"""What the endpoint manager (master_url) reads and writes of the clusters: which clusters to serve,
their managers, the endpoint's port and server certificate, and master_url itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

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

    def scan(self, cluster_types: tuple[str, ...] = ("swarm",)) -> tuple[dict[str, EndpointTarget], set[int]]:
        """The clusters of these types to serve (with their managers) and every port some live cluster holds."""
        with self.db.session() as s:
            # the port alone out of spec: the whole column holds each endpoint's certificate and key,
            # and at 10,000 clusters decoding it every pass (once a second) was most of the pass
            port = Cluster.spec["appapi_port"].as_integer().label("port")
            live = s.execute(
                select(Cluster.cluster_id, Cluster.state, Cluster.master_url, port, Cluster.cluster_type)
                .where(Cluster.state != "deleted")
            ).all()
            serve = {r.cluster_id: r for r in live if r.state in SERVE_STATES and r.cluster_type in cluster_types}
            nodes = s.execute(
                select(InstanceRow.cluster_id, InstanceRow.role, InstanceRow.swarm_node_id, InstanceRow.docker_host,
                       InstanceRow.state)
                .where(InstanceRow.cluster_id.in_(list(serve)))
                .order_by(InstanceRow.created)
            ).all() if serve else []  # fmt: skip
        taken: set[int] = set()
        for r in live:
            if r.port is not None:
                taken.add(int(r.port))
        targets = {cid: EndpointTarget(cid, r.state, r.master_url or "", cluster_type=r.cluster_type)
                   for cid, r in serve.items()}
        for n in nodes:
            t = targets[n.cluster_id]
            t.has_nodes = True
            if n.role == "manager" and n.swarm_node_id and n.docker_host and n.state == "running":
                t.managers.append(n.docker_host)
        return targets, taken

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
