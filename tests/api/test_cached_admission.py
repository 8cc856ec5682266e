"""The signature check and authorization from memory (SignedApiMiddleware on the event loop): every
lookup answers what the store would, or NotCached; a change made in this process (a key disabled, a
policy attached) is never answered from before it, and an answer is never older than its cache time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from opencs.api.authorize import Authorizer
from opencs.composition import ControlPlane, build
from opencs.config import Settings
from opencs.errors import ApiError, NotCached
from opencs.services.keys import KeyService
from opencs.services.ownership import ResourceOwners


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    p = build(Settings(data_dir=tmp_path / "d", workers=0, local_nodes=False))
    try:
        yield p
    finally:
        p.close()


def test_a_cached_secret_is_the_stored_one_and_forgotten_when_the_key_changes(
        plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = plane.keys
    ak, secret = keys.create("t")
    with pytest.raises(NotCached):
        keys.cached_secret(ak)  # never asked: the caller must ask the store
    assert keys.active_secret(ak) == secret
    assert keys.cached_secret(ak) == secret
    keys.set_status(ak, "disabled")
    with pytest.raises(NotCached):
        keys.cached_secret(ak)  # not the secret of before the change
    assert keys.active_secret(ak) is None
    assert keys.cached_secret(ak) is None  # a disabled key's answer is cached too: refused
    keys.set_status(ak, "active")
    assert keys.active_secret(ak) == secret
    keys.delete(ak)
    with pytest.raises(NotCached):
        keys.cached_secret(ak)
    unknown = "LTAInosuchkey"
    assert keys.active_secret(unknown) is None and keys.cached_secret(unknown) is None
    monkeypatch.setattr(KeyService, "CACHE_SECONDS", 0.0)  # a change by another process: at most this old
    with pytest.raises(NotCached):
        keys.cached_secret(unknown)


def _doc(action: str, resource: str) -> str:
    return json.dumps({"Version": "1", "Statement": [{"Effect": "Allow", "Action": action, "Resource": resource}]})


def test_a_cached_principal_is_forgotten_when_a_policy_changes(plane: ControlPlane,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    acc = plane.accounts
    account, _owner_ak, _ = acc.create_account("team-c")
    acc.create_user(account, "carol")
    info, _ = acc.create_key(account, "carol")
    ak = info.access_key_id
    with pytest.raises(NotCached):
        acc.cached_principal(ak)
    who = acc.principal(ak)
    assert who is not None and who.statements == ()
    assert acc.cached_principal(ak) == who
    acc.create_policy(account, "read-c1", _doc("cs:DescribeClusterDetail", "*"))
    acc.attach(account, "carol", "read-c1")
    with pytest.raises(NotCached):
        acc.cached_principal(ak)  # attached in this process: never the principal of before
    after = acc.principal(ak)
    assert after is not None and len(after.statements) == 1
    assert acc.cached_principal(ak) == after
    acc.detach(account, "carol", "read-c1")
    with pytest.raises(NotCached):
        acc.cached_principal(ak)
    acc.principal(ak)
    monkeypatch.setattr(type(acc), "CACHE_SECONDS", 0.0)
    with pytest.raises(NotCached):
        acc.cached_principal(ak)


class _Owners:
    def __init__(self) -> None:
        self.clusters = {"c1": "A", "c2": "B"}
        self.tasks = {"t1": "A"}
        self.reads = 0

    def cluster_accounts(self) -> dict[str, str]:
        self.reads += 1
        return dict(self.clusters)

    def cluster_account(self, cluster_id: str) -> str | None:
        self.reads += 1
        return self.clusters.get(cluster_id)

    def task_account(self, task_id: str) -> str | None:
        self.reads += 1
        return self.tasks.get(task_id)

    def instance_cluster(self, instance_id: str) -> str | None:
        return None


class _Generation:
    def __init__(self) -> None:
        self.n = 0

    def generation(self, table: str) -> int:
        return self.n


def test_owners_from_memory_never_read_and_never_answer_a_stale_map() -> None:
    store, gen = _Owners(), _Generation()
    owners = ResourceOwners(store, gen)
    for ask in (lambda: owners.cached_cluster("c1"), lambda: owners.cached_task("t1"), owners.cached_clusters,
                lambda: owners.cached_only_owner("A")):
        with pytest.raises(NotCached):
            ask()
    assert store.reads == 0  # from memory only
    assert owners.cluster("c1") == "A" and owners.task("t1") == "A"
    reads = store.reads
    assert owners.cached_cluster("c1") == "A" and owners.cached_task("t1") == "A"
    assert owners.cached_clusters() == {"c1": "A", "c2": "B"}
    assert owners.cached_only_owner("A") is False  # B has a cluster
    with pytest.raises(NotCached):
        owners.cached_cluster("c3")  # not known: it may be another process's new cluster
    assert store.reads == reads
    gen.n += 1  # this process wrote the clusters table: the map may miss a cluster or an account
    with pytest.raises(NotCached):
        owners.cached_clusters()
    with pytest.raises(NotCached):
        owners.cached_only_owner("A")
    assert owners.cached_cluster("c1") == "A"  # an owner never changes
    owners.RECHECK_SECONDS = 0.0
    owners.clusters()
    with pytest.raises(NotCached):
        owners.cached_clusters()  # older than RECHECK_SECONDS


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "state": {}, "client": ("127.0.0.1", 5000),
            "scheme": "http", "headers": [], "query_string": b""}


def _outcome(f: Any, *args: Any) -> Any:
    try:
        adm = f(*args)
    except ApiError as e:
        return type(e).__name__, e.status, e.code
    return adm.principal, adm.action, adm.resource, adm.mutating, adm.list_filter is None


def test_admit_cached_decides_as_admit_or_asks_for_the_store(plane: ControlPlane) -> None:
    acc = plane.accounts
    store, gen = _Owners(), _Generation()
    account, owner_ak, _ = acc.create_account("team-d")
    store.clusters = {"c1": account, "c2": "another", "c3": account}
    store.tasks = {"t1": account, "t2": "another"}
    acc.create_user(account, "dave")
    dave_ak = acc.create_key(account, "dave")[0].access_key_id
    acc.create_policy(account, "read-c1", _doc("cs:DescribeClusterDetail", f"acs:cs:*:{account}:cluster/c1"))
    acc.attach(account, "dave", "read-c1")
    authz = Authorizer(acc, ResourceOwners(store, gen), "local")
    asks = [(ak, m, p) for ak in (owner_ak, dave_ak) for m, p in (
        ("GET", "/clusters/c1"), ("GET", "/clusters/c2"), ("GET", "/clusters/c3"), ("GET", "/clusters/c1/nodes"),
        ("GET", "/tasks/t1"), ("GET", "/tasks/t2"), ("GET", "/clusters"), ("GET", "/version"))]
    for ak, m, p in asks:
        with pytest.raises(NotCached):  # nothing in memory yet
            authz.admit_cached(_scope(m, p), ak)
    decided = {(ak, m, p): _outcome(authz.admit, _scope(m, p), ak) for ak, m, p in asks}
    assert decided[(dave_ak, "GET", "/clusters/c1")][1:3] == ("cs:DescribeClusterDetail",
                                                              f"acs:cs:local:{account}:cluster/c1")
    assert decided[(dave_ak, "GET", "/clusters/c3")] == ("RamForbidden", 403, "Forbidden.RAM")
    assert decided[(owner_ak, "GET", "/clusters/c2")] == ("NotFound", 404, "ErrorClusterNotFound")
    assert decided[(owner_ak, "GET", "/tasks/t2")] == ("NotFound", 404, "ErrorTaskNotFound")
    reads = store.reads
    for ak, m, p in asks:  # now from memory, the same decision each
        assert _outcome(authz.admit_cached, _scope(m, p), ak) == decided[(ak, m, p)], (ak, m, p)
    assert store.reads == reads
    for m, p in (("PUT", "/clusters/c1"), ("DELETE", "/clusters/c1"), ("GET", "/clusters/c1/certs"),
                 ("POST", "/clusters"), ("GET", "/")):
        with pytest.raises(NotCached):  # a call that writes (its refusal is put on record): in a thread
            authz.admit_cached(_scope(m, p), owner_ak)
    with pytest.raises(NotCached):
        authz.admit_cached(_scope("GET", "/clusters/c9"), owner_ak)  # an unknown cluster
    acc.detach(account, "dave", "read-c1")
    with pytest.raises(NotCached):  # the policy changed: never the decision of before
        authz.admit_cached(_scope("GET", "/clusters/c1"), dave_ak)


def test_a_hot_routes_store_read_runs_on_the_loop_on_sqlite_only() -> None:
    import asyncio
    import threading
    from types import SimpleNamespace

    from opencs.api.store_reads import store_read

    def request(url: str) -> Any:
        plane = SimpleNamespace(settings=SimpleNamespace(resolved_database_url=url))
        return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(services=plane)))

    async def where(url: str) -> tuple[int, int]:
        return threading.get_ident(), await store_read(request(url), threading.get_ident)

    loop_thread, reader = asyncio.run(where("sqlite:////tmp/x.db"))
    assert reader == loop_thread  # WAL: a read never waits for a writer
    loop_thread, reader = asyncio.run(where("postgresql+psycopg://u@h/db"))
    assert reader != loop_thread  # a round trip: a worker thread waits for it
