"""Which account owns a cluster or a task: the 404-as-if-absent rule of another account's resources.

Ownership never changes once a row exists, so known owners are kept in memory; the whole
cluster -> account map is re-read when this process wrote the clusters table or a second passed
(rows written by other processes), and an unknown id is asked for on its own.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from opencs.errors import NotCached


class OwnerStore(Protocol):
    def cluster_accounts(self) -> dict[str, str]: ...

    def cluster_account(self, cluster_id: str) -> str | None: ...

    def task_account(self, task_id: str) -> str | None: ...

    def instance_cluster(self, instance_id: str) -> str | None: ...


class Generation(Protocol):
    def generation(self, table: str) -> int: ...


class ResourceOwners:
    RECHECK_SECONDS = 1.0

    def __init__(self, store: OwnerStore, changes: Generation) -> None:
        self.store = store
        self.changes = changes
        self._clusters: dict[str, str] = {}
        self._accounts: frozenset[str] = frozenset()  # the accounts in _clusters
        self._stamp: tuple[int, float] = (-1, 0.0)
        self._tasks: dict[str, str] = {}
        self._lock = threading.Lock()

    def clusters(self) -> dict[str, str]:
        """cluster_id -> account, fresh to within RECHECK_SECONDS for other processes' writes."""
        if not self._fresh():
            gen, now = self.changes.generation("clusters"), time.monotonic()  # before the read
            fresh = self.store.cluster_accounts()
            with self._lock:
                self._clusters, self._accounts, self._stamp = fresh, frozenset(fresh.values()), (gen, now)
        return self._clusters

    def _fresh(self) -> bool:
        gen, now = self.changes.generation("clusters"), time.monotonic()
        return gen == self._stamp[0] and now - self._stamp[1] <= self.RECHECK_SECONDS

    def cached_clusters(self) -> dict[str, str]:
        """`clusters` from memory, for a caller on the event loop: NotCached when it would re-read."""
        if not self._fresh():
            raise NotCached("clusters")
        return self._clusters

    def cached_only_owner(self, account_id: str) -> bool:
        self.cached_clusters()
        return self._accounts <= {account_id}

    def cached_cluster(self, cluster_id: str) -> str:
        """The account of a known cluster from memory (an owner never changes; a cluster deleted
        since is the route's 404): NotCached for an id not known."""
        acct = self._clusters.get(cluster_id)
        if acct is None:
            raise NotCached(cluster_id)
        return acct

    def cached_task(self, task_id: str) -> str:
        """The account of a known task from memory (NotCached for an id not known)."""
        acct = self._tasks.get(task_id)
        if acct is None:
            raise NotCached(task_id)
        return acct

    def only_owner(self, account_id: str) -> bool:
        """Whether every cluster belongs to this account (one tenant), without a pass over them:
        a list request asks it, and at 10,000 clusters the pass was 5 % of the process's time."""
        self.clusters()
        return self._accounts <= {account_id}

    def cluster(self, cluster_id: str) -> str | None:
        acct = self.clusters().get(cluster_id)
        if acct is None:
            acct = self.store.cluster_account(cluster_id)
            if acct is not None:
                with self._lock:
                    self._clusters[cluster_id] = acct
                    self._accounts = self._accounts | {acct}
        return acct

    def member_of(self, instance_id: str) -> str | None:
        """The cluster an instance is a node of now (None: free or gone). Never cached: membership
        changes, and a node credential must stop counting the moment its node left."""
        return self.store.instance_cluster(instance_id)

    def task(self, task_id: str) -> str | None:
        acct = self._tasks.get(task_id)
        if acct is None:
            acct = self.store.task_account(task_id)
            if acct is not None:
                if len(self._tasks) > 50_000:
                    self._tasks.clear()
                self._tasks[task_id] = acct
        return acct
