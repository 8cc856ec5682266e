"""Cluster rows: the list the API reads most, state transitions with their task, engine ids."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opencs.store.db import Database, utcnow
from opencs.store.models import Cluster, InstanceRow
from opencs.store.tenancy import owning_account

Submit = Callable[[Session], str]  # submits a task inside the caller's unit of work

# the columns of the cluster view (GET /clusters reads plain rows of these: its hottest read), in the
# view's order; then the two fields read out of spec (VIEW_ROW)
VIEW_COLUMNS = (
    "agent_version", "cluster_id", "cluster_type", "created", "external_loadbalancer_id", "master_url", "name",
    "network_mode", "region_id", "security_group_id", "size", "state", "updated", "vpc_id", "vswitch_id",
    "subnet_cidr", "instance_type",
)  # fmt: skip
# a view row: VIEW_COLUMNS, then spec's "view" (an engine's own fields) and "routing_url" alone: the
# whole spec holds the endpoint's certificate and key, and decoding it was most of a list's cost
VIEW_ROW = (*(getattr(Cluster, c) for c in VIEW_COLUMNS), Cluster.spec["view"].label("view"),
            Cluster.spec["routing_url"].as_string().label("routing_url"))
_LIVE = Cluster.state != "deleted"
_ORDER = (Cluster.created, Cluster.cluster_id)
_FIELDS = frozenset(("state", "size", "master_url", "spec"))


class NameTaken(Exception):
    """A live cluster already has this name."""


class ClusterGone(Exception):
    """No such cluster, or it is deleted."""


class ClusterRepo:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------ reads

    def generation(self) -> int:
        """Bumped by every write of this process to the clusters table."""
        return self.db.changes.generation("clusters")

    def view_keys(self) -> list[tuple[str, Any]]:
        """(cluster_id, updated) of the live clusters in the list's order: every write of a row
        changes its `updated` (the column's onupdate), so these tell which rows a cached list
        still shows as they are, whichever process wrote them."""
        with self.db.reader.connect() as conn:
            rows = conn.execute(select(Cluster.cluster_id, Cluster.updated).where(_LIVE).order_by(*_ORDER))
            return [(cid, updated) for cid, updated in rows]

    def view_rows(self, cluster_ids: list[str] | None = None) -> list[Any]:
        """Live clusters (these, or all) as plain rows of VIEW_ROW, in the list's order."""
        q = select(*VIEW_ROW).where(_LIVE).order_by(*_ORDER)
        if cluster_ids is not None:
            q = q.where(Cluster.cluster_id.in_(cluster_ids))
        with self.db.reader.connect() as conn:
            return list(conn.execute(q))

    def page(self, page_number: int, page_size: int) -> tuple[int, list[Any]]:
        """(live count, the page's plain rows of VIEW_ROW)."""
        with self.db.reader.connect() as conn:
            total = conn.scalar(select(func.count()).select_from(Cluster).where(_LIVE)) or 0
            rows = conn.execute(select(*VIEW_ROW).where(_LIVE).order_by(*_ORDER)
                                .offset((page_number - 1) * page_size).limit(page_size))
            return total, list(rows)

    def get(self, cluster_id: str) -> Cluster | None:
        """The row, deleted ones included."""
        with self.db.read() as s:
            return s.get(Cluster, cluster_id)

    def live_ids(self) -> set[str]:
        """Ids of the clusters not deleted (one column: the health monitor's per-pass read)."""
        with self.db.reader.connect() as conn:
            return set(conn.execute(select(Cluster.cluster_id).where(Cluster.state != "deleted")).scalars())

    def live(self) -> list[Cluster]:
        with self.db.read() as s:
            return list(s.scalars(select(Cluster).where(Cluster.state != "deleted")))

    # ------------------------------------------------------------ writes

    def add(self, row: Cluster, submit: Submit) -> str:
        """Insert a new cluster and submit its create task atomically; NameTaken if a live cluster
        has the name (also when a concurrent create won the race)."""
        try:
            with self.db.session() as s:
                row.account_id = row.account_id or owning_account()  # names are unique within an account
                if s.scalar(select(Cluster.cluster_id).where(Cluster.name == row.name, Cluster.state != "deleted",
                                                             Cluster.account_id == row.account_id)):
                    raise NameTaken(row.name)
                s.add(row)
                s.flush()
                return submit(s)
        except IntegrityError:
            raise NameTaken(row.name) from None

    def transition(self, cluster_id: str, check: Callable[[Cluster, list[InstanceRow]], None], new_state: str,
                   submit: Submit) -> str:
        """Check the cluster (and its members) inside one unit of work, move it to `new_state`
        and submit the task there: a concurrent request sees either nothing or both."""
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            if c is None or c.state == "deleted":
                raise ClusterGone(cluster_id)
            members = list(s.scalars(select(InstanceRow).where(InstanceRow.cluster_id == cluster_id)
                                     .order_by(InstanceRow.created)))
            check(c, members)
            c.state, c.updated = new_state, utcnow()
            return submit(s)

    def attach(self, cluster_id: str, instance_ids: list[str],
               check: Callable[[Cluster | None, dict[str, InstanceRow]], None], submit: Submit) -> str:
        """Reserve free instances for the cluster, move it to `scaling` and submit the join task,
        atomically. `check` sees the cluster and the instance rows first and raises to refuse."""
        with self.db.session() as s:
            rows = {r.instance_id: r for r in s.scalars(
                select(InstanceRow).where(InstanceRow.instance_id.in_(instance_ids)))}
            cl = s.get(Cluster, cluster_id)
            check(cl, rows)
            assert cl is not None  # check refuses a missing cluster
            for iid in instance_ids:
                rows[iid].cluster_id, rows[iid].role, rows[iid].updated = cluster_id, "", utcnow()
            cl.state, cl.updated = "scaling", utcnow()
            return submit(s)

    def update(self, cluster_id: str, **values: Any) -> bool:
        """Set fields of a cluster; False if it vanished."""
        unknown = set(values) - _FIELDS
        if unknown:
            raise ValueError(f"not a cluster field: {sorted(unknown)}")
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            if c is None:
                return False
            for k, v in values.items():
                setattr(c, k, v)
            c.updated = utcnow()
            return True

    def set_spec_key(self, cluster_id: str, key: str, value: Any) -> None:
        with self.db.session() as s:
            c = s.get(Cluster, cluster_id)
            if c is not None:
                c.spec = {**(c.spec or {}), key: value}
