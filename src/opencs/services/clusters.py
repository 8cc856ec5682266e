"""Clusters: the state machine of spec §4 and the cluster object of §5.1."""

from __future__ import annotations

import builtins
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from opencs import ids
from opencs.engines.driver import ClusterDriver, DriverError
from opencs.errors import BadRequest, Conflict, NotFound, ProviderNotAvailable, ValidationFailed
from opencs.pki.ca import CertAuthority
from opencs.providers.base import InstanceNotFound, Provider, ProviderUnavailable
from opencs.secretbox import SecretBox
from opencs.store.changes import RecentReads
from opencs.store.db import utcnow
from opencs.store.models import Cluster, InstanceRow
from opencs.store.repos.clusters import VIEW_COLUMNS, ClusterGone, ClusterRepo, NameTaken
from opencs.store.repos.instances import InstanceRepo
from opencs.store.repos.tasks import TaskRepo

# operations that change membership need a settled cluster
BUSY_OK_FOR_DELETE = ("running", "failed", "stopped")

STATES = (
    "launching", "running", "failed", "starting", "stopping", "stopped",
    "restarting", "updating", "scaling", "deleting", "deleted",
)  # fmt: skip


# How late GET /clusters may show a change made by another process sharing the database (several
# API/worker processes on PostgreSQL); this process's own writes show at once.
LIST_RECHECK_SECONDS = 1.0


class TaskSubmitter(Protocol):
    """Submits a durable task, atomically with the caller's unit of work when `session` is given."""

    def submit(self, task_type: str, params: dict[str, Any] | None = None, *, cluster_id: str | None = None,
               target_type: str = "", target_id: str = "", session: Any = None, after: str | None = None) -> str: ...


class CreateRequest(Protocol):
    """A validated CreateCluster body (api/schemas.py); read-only."""

    @property
    def name(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def cluster_type(self) -> str: ...

    @property
    def password(self) -> str | None: ...

    @property
    def region_id(self) -> str: ...

    @property
    def network_mode(self) -> str: ...

    @property
    def vpc_id(self) -> str: ...

    @property
    def vswitch_id(self) -> str: ...

    @property
    def subnet_cidr(self) -> str: ...

    @property
    def instance_type(self) -> str: ...

    def stored_spec(self) -> dict[str, Any]:
        """What the store keeps of the body: no secret; the engine's settings and view extras."""
        ...


class SizeRequest(Protocol):
    @property
    def size(self) -> int: ...


@dataclass(frozen=True)
class _Size:
    size: int


@dataclass(frozen=True)
class _ListCache:
    generation: int  # the store's generation of the clusters table when it was built
    keys: list[tuple[str, Any]]  # (cluster_id, updated) of the rows the body shows, in its order
    checked: float  # monotonic time of the last keys query
    body: bytes


def _ts(d: Any) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%SZ") if d else ""


def render_view(row: Any) -> dict[str, Any]:
    """The Cluster object of spec §5.1 (plus a few fields today's SDKs read) from a view row of the
    store (VIEW_COLUMNS, spec's "view" and "routing_url", read by position: a row's attribute
    access costs ten times as much). An engine's own fields (spec["view"], made from the create
    body: Kubernetes versions, CIDRs, what had no effect) come first; the common ones are never
    replaced."""
    *common, extra, routing_url = row
    view = dict(extra) if isinstance(extra, dict) else {}
    view.update(zip(VIEW_COLUMNS, common, strict=True))
    view["created"], view["updated"] = _ts(view["created"]), _ts(view["updated"])
    view["routing_url"] = routing_url or ""
    return view


def cluster_view(c: Cluster) -> dict[str, Any]:
    """render_view of a Cluster row."""
    spec = c.spec or {}
    return render_view((*(getattr(c, k) for k in VIEW_COLUMNS), spec.get("view"), spec.get("routing_url")))


def _fragment(view: dict[str, Any]) -> bytes:
    return json.dumps(view, separators=(",", ":"), ensure_ascii=False).encode()


def _not_found(cluster_id: str) -> NotFound:
    return NotFound(f"Cluster {cluster_id} not found", code="ErrorClusterNotFound")


def check_remove(cluster_id: str, ip: str, r: InstanceRow, members: list[InstanceRow]) -> None:
    """A cluster keeps at least one node and at least one manager."""
    if len(members) <= 1:
        raise Conflict("Cannot remove the last node of a cluster: delete the cluster instead", code="ErrorLastNode")
    managers = [m for m in members if m.role == "manager"]
    if r.role == "manager" and len(managers) <= 1:
        raise Conflict(f"{ip} is the cluster's only swarm manager and cannot be removed", code="ErrorLastManager")


def check_reset(instance_id: str, r: InstanceRow, members: list[InstanceRow]) -> None:
    """Resetting the only manager of a multi-node cluster would orphan the others."""
    managers = [m for m in members if m.role == "manager"]
    if r.role == "manager" and len(managers) <= 1 and len(members) > 1:
        raise Conflict(f"{instance_id} is the only swarm manager: resetting it would orphan the other nodes",
                       code="ErrorLastManager")


class ClusterService:
    def __init__(self, clusters: ClusterRepo, instances: InstanceRepo, box: SecretBox, tasks: TaskSubmitter,
                 providers: Mapping[str, Provider], driver: ClusterDriver, max_cluster_size: int) -> None:
        self.repo = clusters
        self.instances = instances
        self.box = box
        self.tasks = tasks
        self.providers = providers  # shared with the composition root
        self.driver = driver
        self.max_cluster_size = max_cluster_size
        self._list_cache: _ListCache | None = None
        self._list_lock = threading.Lock()
        self._fragments: dict[str, tuple[Any, bytes]] = {}  # cluster_id -> (updated, its JSON object)
        changes = clusters.db.changes
        self._details: RecentReads[str, bytes] = RecentReads(changes, ("clusters",), LIST_RECHECK_SECONDS)
        self._nodes: RecentReads[tuple[str, int, int], bytes] = RecentReads(
            changes, ("clusters", "instances"), LIST_RECHECK_SECONDS)

    def check_provider(self, name: str = "local") -> None:
        prov = self.providers.get(name)
        if prov is None:
            raise ProviderNotAvailable(f"node provider {name!r} is not configured on this server")
        try:
            prov.check()
        except ProviderUnavailable as e:
            raise ProviderNotAvailable(str(e)) from None

    def cached_list_json(self) -> bytes | None:
        """GET /clusters from memory if nothing changed it: no write by this process since (the
        store's table generation) and the database was asked less than LIST_RECHECK_SECONDS ago
        (for writes of other processes sharing it). Cheap enough to call in the event loop."""
        c = self._list_cache
        if (c is not None and c.generation == self.repo.generation()
                and time.monotonic() - c.checked < LIST_RECHECK_SECONDS):
            return c.body
        return None

    def list_json(self) -> bytes:
        """GET /clusters as JSON bytes. Each cluster's object is kept rendered with the `updated`
        it was read with; the store's (cluster_id, updated) of every live cluster, one narrow
        query, tells which ones changed (whichever process wrote them), and only those are read
        and rendered again."""
        if (body := self.cached_list_json()) is not None:
            return body
        with self._list_lock:  # one rebuild at a time: they share the fragments
            generation = self.repo.generation()  # before the query: a write meanwhile misses
            keys = self.repo.view_keys()
            c = self._list_cache
            if c is not None and c.keys == keys:
                self._list_cache = _ListCache(generation, keys, time.monotonic(), c.body)
                return c.body
            frags = self._fragments
            stale = [cid for cid, updated in keys if (f := frags.get(cid)) is None or f[0] != updated]
            gone = set(stale)
            # a few changed: those rows; many (the first list): all of them in one read
            for row in self.repo.view_rows(stale if len(stale) <= 500 else None):
                view = render_view(row)
                frags[view["cluster_id"]] = (row.updated, _fragment(view))
                gone.discard(view["cluster_id"])
            live = {cid for cid, _ in keys} - gone  # gone: deleted between the two reads
            for cid in [cid for cid in frags if cid not in live]:
                del frags[cid]
            shown = [(cid, frags[cid][0]) for cid, _ in keys if cid in live]
            body = b"[" + b",".join(frags[cid][1] for cid, _ in shown) + b"]"
            self._list_cache = _ListCache(generation, shown, time.monotonic(), body)
            return body

    def list(self) -> list[dict[str, Any]]:
        return [render_view(r) for r in self.repo.view_rows()]

    def page(self, page_number: int, page_size: int) -> dict[str, Any]:
        total, rows = self.repo.page(page_number, page_size)
        return {
            "clusters": [render_view(r) for r in rows],
            "page_info": {"page_number": page_number, "page_size": page_size, "total_count": total},
        }

    def get_row(self, cluster_id: str) -> Cluster:
        c = self.repo.get(cluster_id)
        if c is None or c.state == "deleted":
            raise _not_found(cluster_id)
        return c

    def type_of(self, cluster_id: str) -> str | None:
        """The live cluster's type in lower case, None if there is no such cluster."""
        c = self.repo.get(cluster_id)
        return c.cluster_type.lower() if c is not None and c.state != "deleted" else None

    def get(self, cluster_id: str) -> dict[str, Any]:
        return cluster_view(self.get_row(cluster_id))

    def get_json(self, cluster_id: str) -> bytes:
        """`get` as JSON, from memory while nothing changed it (as fresh as GET /clusters)."""
        return self._details.get(cluster_id, lambda: _fragment(self.get(cluster_id)))

    def nodes_json(self, cluster_id: str, page_number: int = 1, page_size: int = 100) -> bytes:
        """`nodes` as JSON, from memory while nothing changed them (as fresh as GET /clusters)."""
        return self._nodes.get((cluster_id, page_number, page_size),
                               lambda: _fragment(self.nodes(cluster_id, page_number, page_size)))

    # ------------------------------------------------------------ lifecycle (spec §5.4–5.9)

    def _check_size(self, size: int) -> None:
        if size > self.max_cluster_size:
            raise ValidationFailed(
                f"Field 'size': at most {self.max_cluster_size} nodes per cluster on this server",
                code="InvalidParameter.Size",
            )

    def _engine_check(self, cluster_type: str, spec: dict[str, Any]) -> str:
        """The engine's word on a create body (type offered, settings possible here), as a 4xx."""
        try:
            return self.driver.check(cluster_type, spec)
        except DriverError as e:
            if e.code == "EngineUnavailable":
                raise ProviderNotAvailable(e.message) from None
            raise BadRequest(e.message, code=e.code) from None

    def create(self, body: CreateRequest) -> tuple[str, str]:
        spec = body.stored_spec()
        ctype = self._engine_check(body.cluster_type, spec)
        self._check_size(body.size)
        self.check_provider()
        cid = ids.cluster_id()
        # the cluster's own CA: engines and master_url get server certs, owners client certs (cluster_certs.py)
        ca = CertAuthority.create(f"opencs cluster {cid}")
        now = utcnow()
        row = Cluster(
            cluster_id=cid, name=body.name, cluster_type=ctype, state="launching", size=body.size,
            region_id=body.region_id or "local", network_mode=body.network_mode, vpc_id=body.vpc_id,
            vswitch_id=body.vswitch_id, subnet_cidr=body.subnet_cidr, instance_type=body.instance_type,
            agent_version="opencs-0.1", spec=spec,
            password_enc=self.box.encrypt(body.password) if body.password else None,
            ca_cert_pem=ca.cert_pem, ca_key_enc=self.box.encrypt(ca.key_pem),
            created=now, updated=now,
        )  # fmt: skip
        try:
            tid = self.repo.add(row, lambda s: self.tasks.submit("cluster_create", {"size": body.size},
                                                                 cluster_id=cid, session=s))
        except NameTaken:
            raise Conflict(f"A cluster named {body.name!r} already exists", code="ErrorClusterNameExists") from None
        return cid, tid

    def _transition(self, cluster_id: str, allowed: tuple[str, ...], new_state: str, task_type: str,
                    params: dict[str, Any], target_id: str = "") -> str:
        """Check the state, move to `new_state` and submit the task in one transaction."""

        def check(c: Cluster, _members: builtins.list[InstanceRow]) -> None:
            if c.state not in allowed:
                raise Conflict(
                    f"Cluster {cluster_id} is {c.state}: this operation needs it {' or '.join(allowed)}",
                    code="ErrorClusterStateConflict",
                )

        try:
            return self.repo.transition(
                cluster_id, check, new_state,
                lambda s: self.tasks.submit(task_type, params, cluster_id=cluster_id, session=s,
                                            target_id=target_id or cluster_id))
        except ClusterGone:
            raise _not_found(cluster_id) from None

    def scale(self, cluster_id: str, body: SizeRequest) -> str:
        self._check_size(body.size)
        c = self.get_row(cluster_id)
        if c.state == "scaling":
            self.check_provider()
            return self._rescale(cluster_id, body.size)
        if body.size == c.size:
            raise BadRequest(f"Cluster {cluster_id} already has {c.size} node(s)", code="InvalidParameter.Size")
        self.check_provider()
        return self._transition(cluster_id, ("running",), "scaling", "cluster_scale",
                                {"size": body.size, "previous_size": c.size})

    def _rescale(self, cluster_id: str, size: int) -> str:
        """A scale while a scale task runs: the last requested size wins. The same size again gets the
        running task; a task nobody claimed yet takes the new size; else a new task follows the running
        one, which stops at its next stage boundary (it is not rolled back: the new one converges from
        the members the cluster has then). Other tasks that change members stay a 409."""

        def check(c: Cluster, _members: builtins.list[InstanceRow]) -> None:
            if c.state != "scaling":
                raise Conflict(f"Cluster {cluster_id} is {c.state}: retry the scale", code="ErrorClusterStateConflict")

        def submit(s: Any) -> str:
            active = TaskRepo.active_of(s, "cluster", cluster_id, cluster_id)
            if active is None or active.task_type != "cluster_scale":
                raise Conflict(f"Cluster {cluster_id} is scaling ({active.task_type if active else 'ending'}): "
                               "this operation needs it running", code="ErrorClusterStateConflict")
            if int(active.params.get("size", -1)) == size:
                return active.task_id
            params = {"size": size, "previous_size": active.params.get("previous_size")}
            if TaskRepo.fold(s, active.task_id, params):
                return active.task_id
            tid = self.tasks.submit("cluster_scale", params, cluster_id=cluster_id, session=s, after=active.task_id)
            TaskRepo.supersede(s, active.task_id, tid)
            return tid

        try:
            return self.repo.transition(cluster_id, check, "scaling", submit)
        except ClusterGone:
            raise _not_found(cluster_id) from None

    def delete(self, cluster_id: str) -> str:
        return self._transition(cluster_id, BUSY_OK_FOR_DELETE, "deleting", "cluster_delete", {})

    def _member(self, cluster_id: str, what: str, match: Any) -> tuple[InstanceRow, builtins.list[InstanceRow]]:
        members = self.instances.of_cluster(cluster_id)
        for r in members:
            if match(r):
                return r, members
        raise NotFound(f"Cluster {cluster_id} has no node with {what}", code="ErrorNodeNotFound")

    def remove_node(self, cluster_id: str, ip: str, release_instance: bool) -> str:
        self.get_row(cluster_id)
        r, members = self._member(cluster_id, f"private_ip {ip}", lambda m: m.private_ip == ip)
        check_remove(cluster_id, ip, r, members)
        return self._transition(cluster_id, ("running",), "scaling", "cluster_remove_node",
                                {"instance_id": r.instance_id, "ip": ip, "release_instance": release_instance},
                                target_id=r.instance_id)

    def reset_node(self, cluster_id: str, instance_id: str) -> str:
        self.get_row(cluster_id)
        r, members = self._member(cluster_id, f"instance_id {instance_id}", lambda m: m.instance_id == instance_id)
        check_reset(instance_id, r, members)
        self.check_provider(r.provider)
        return self._transition(cluster_id, ("running",), "updating", "cluster_reset_node",
                                {"instance_id": instance_id}, target_id=instance_id)

    def attach(self, cluster_id: str, instance_ids: builtins.list[str]) -> tuple[builtins.list[dict[str, str]], str]:
        """Reserve free instances for the cluster (atomically) and submit the join task."""
        c = self.get_row(cluster_id)
        self._check_size(c.size + len(instance_ids))
        self._probe_hosts(cluster_id, instance_ids)

        def check(cl: Cluster | None, rows: dict[str, InstanceRow]) -> None:
            for iid in instance_ids:
                r = rows.get(iid)
                if r is None:
                    raise NotFound(f"Instance {iid} not found", code="ErrorInstanceNotFound")
                if r.cluster_id:
                    raise Conflict(f"Instance {iid} already belongs to cluster {r.cluster_id}",
                                   code="ErrorInstanceBusy")
                if r.state != "running":
                    raise Conflict(f"Instance {iid} is {r.state}, not running", code="ErrorInstanceNotReady")
                try:
                    self.driver.check_machine(cluster_id, r.provider)
                except DriverError as e:
                    raise ProviderNotAvailable(e.message) from None
            if cl is None or cl.state != "running":
                raise Conflict(f"Cluster {cluster_id} is {cl.state if cl else 'gone'}: attach needs it running",
                               code="ErrorClusterStateConflict")

        tid = self.repo.attach(cluster_id, instance_ids, check,
                               lambda s: self.tasks.submit("cluster_attach", {"instances": instance_ids},
                                                           cluster_id=cluster_id, session=s))
        return [{"code": "200", "instanceId": i, "message": "successful"} for i in instance_ids], tid

    def _probe_hosts(self, cluster_id: str, instance_ids: builtins.list[str]) -> None:
        """Hosts opencs does not own are asked, before the reservation, whether the engine could make
        them nodes (over SSH: it may take seconds, so outside the reservation's transaction)."""
        for iid in instance_ids:
            r = self.instances.get(iid)
            prov = self.providers.get(r.provider) if r is not None and not r.cluster_id else None
            if r is None or prov is None:
                continue  # the reservation's checks answer
            try:
                shell = prov.host_shell(iid)
            except InstanceNotFound:
                continue
            if shell is not None:
                try:
                    self.driver.probe_machine(cluster_id, r.provider, r.private_ip, shell)
                except DriverError as e:
                    raise ProviderNotAvailable(e.message) from None

    def scale_out(self, cluster_id: str, count: int) -> str:
        """POST /api/v2/clusters/{id} (spec §6.7): `count` more worker nodes."""
        c = self.get_row(cluster_id)
        return self.scale(cluster_id, _Size(c.size + count))

    def scale_workers(self, cluster_id: str, workers: int) -> str:
        """Legacy Kubernetes scale (spec §6.2): `workers` worker nodes besides the masters."""
        c = self.get_row(cluster_id)
        # the masters the engine keeps (none when the control plane is hosted: ManagedKubernetes)
        return self.scale(cluster_id, _Size(self.driver.managers_for(cluster_id, c.size) + workers))

    def remove_nodes(self, cluster_id: str, nodes: builtins.list[str], release: bool, drain: bool) -> str:
        """Spec §6.13: take worker nodes (by node name, instance id or IP) out, in one task."""
        self.get_row(cluster_id)
        members = self.instances.of_cluster(cluster_id)
        picked: builtins.list[InstanceRow] = []
        for n in nodes:
            r = next((m for m in members if n in (m.instance_id, m.private_ip, m.swarm_node_id)), None)
            if r is None:
                raise NotFound(f"Cluster {cluster_id} has no node {n!r}", code="ErrorNodeNotFound")
            if r.role == "manager":
                raise Conflict(f"{n} is a master: only worker nodes are removed (spec §6.13)",
                               code="ErrorMasterNode")
            picked.append(r)
        if len(picked) >= len(members):
            raise Conflict("Cannot remove every node of a cluster: delete the cluster instead", code="ErrorLastNode")
        ids_ = [r.instance_id for r in picked]
        return self._transition(cluster_id, ("running",), "scaling", "cluster_remove_node",
                                {"instance_ids": ids_, "release_instance": release, "drain": drain},
                                target_id=",".join(ids_)[:64])

    def nodes(self, cluster_id: str, page_number: int = 1, page_size: int = 100) -> dict[str, Any]:
        c = self.get_row(cluster_id)
        rows = self.instances.of_cluster(cluster_id)
        total = len(rows)
        rows = rows[(page_number - 1) * page_size: page_number * page_size]
        return {
            "nodes": [node_view(r, c) for r in rows],
            "page": {"page_number": page_number, "page_size": page_size, "total_count": total},
        }


def node_view(r: InstanceRow, c: Cluster | None) -> dict[str, Any]:
    """DescribeClusterNodes' node object."""
    return {
        "instance_id": r.instance_id,
        "instance_name": r.instance_id,
        "host_name": r.instance_id,
        "node_name": r.instance_id,
        "ip_address": [r.private_ip] if r.private_ip else [],
        "instance_role": {"manager": "Master", "worker": "Worker"}.get(r.role, ""),
        "role": r.role,
        "state": r.state,
        "instance_status": r.state,
        "node_status": r.health,
        "health": r.health,
        "swarm_node_id": r.swarm_node_id,
        "instance_type": c.instance_type if c else "",
        "source": r.provider,
        "is_aliyun_node": False,
        "docker_endpoint": (r.details or {}).get("tcp_endpoint") or "",  # None for ssh hosts: no TLS port
        "creation_time": _ts(r.created),
        "cluster_id": r.cluster_id or "",
    }
