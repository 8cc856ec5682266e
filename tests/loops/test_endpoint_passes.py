"""The endpoint manager's periodic pass reads every cluster and node only when the store's change
mark moved (this process's writes, or another process's sharing the database) or FULL_SCAN_AFTER
passed; passes it skips are not reported to on_pass. On both stores; no listener is started (the
clusters have no nodes yet)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import update

from opencs.loops import endpoints as endpoints_mod
from opencs.loops.endpoints import EndpointManager, EndpointSettings
from opencs.secretbox import SecretBox
from opencs.store.db import Database, migrate, utcnow
from opencs.store.models import Cluster, InstanceRow
from opencs.store.repos.endpoints import EndpointRepo


def test_periodic_passes_read_the_store_only_after_a_change(tmp_path: Path, database_url: str | None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url = database_url or f"sqlite:///{tmp_path / 'opencs.db'}"
    db = Database(url)
    migrate(db.engine)
    other = Database(url)  # another process sharing the store: its own engine, its own generations
    now = utcnow()
    with db.session() as s:
        s.add(Cluster(cluster_id="c-a", name="a", state="running", spec={}, created=now, updated=now))
    scans: list[int] = []
    passes: list[float] = []
    repo = EndpointRepo(db)
    real_scan = repo.scan

    def scan(types: tuple[str, ...] = ("swarm",)) -> dict[str, object]:
        got = real_scan(types)
        scans.append(len(got))
        return got  # type: ignore[return-value]

    monkeypatch.setattr(repo, "scan", scan)

    def app_factory() -> object:
        raise AssertionError("no app: no endpoint starts here")

    manager = EndpointManager(EndpointSettings(), repo, SecretBox(Fernet.generate_key()), app_factory,  # type: ignore[arg-type]
                              on_pass=passes.append)

    async def run() -> None:
        manager._lock = asyncio.Lock()
        await manager._reconcile(periodic=True)  # the first: a full pass
        await manager._reconcile(periodic=True)  # nothing changed
        assert (len(scans), len(passes)) == (1, 1)

        with other.session() as s:  # another process adds a cluster
            s.add(Cluster(cluster_id="c-b", name="b", state="running", spec={}, created=utcnow(), updated=utcnow()))
        await manager._reconcile(periodic=True)
        assert scans == [1, 2] and len(passes) == 2
        await manager._reconcile(periodic=True)
        assert len(scans) == 2

        with other.session() as s:  # ... a node of it (no cluster row changes)
            s.add(InstanceRow(instance_id="i-1", provider="local", cluster_id="c-b", role="manager", state="pending",
                              created=utcnow(), updated=utcnow()))
        await manager._reconcile(periodic=True)
        assert len(scans) == 3
        with other.engine.begin() as conn:  # ... and updates it without naming `updated` (the onupdate bumps it)
            conn.execute(update(InstanceRow).values(state="running"))
        await manager._reconcile(periodic=True)
        assert len(scans) == 4

        with db.engine.begin() as conn:  # this process's write, stamped as old as it gets
            conn.execute(update(Cluster).where(Cluster.cluster_id == "c-a").values(state="failed", updated=now))
        await manager._reconcile(periodic=True)
        assert scans[-1] == 1 and len(scans) == 5

        monkeypatch.setattr(endpoints_mod, "FULL_SCAN_AFTER", 0.0)  # then everything now and then
        await manager._reconcile(periodic=True)
        assert len(scans) == 6
        monkeypatch.setattr(endpoints_mod, "FULL_SCAN_AFTER", 60.0)
        await manager._reconcile()  # sync(): always a full pass
        assert len(scans) == 7 and len(passes) == 7

    try:
        asyncio.run(run())
    finally:
        other.close()
        db.close()
