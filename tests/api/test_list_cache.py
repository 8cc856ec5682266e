"""GET /clusters is served from a cached body; it must never hide a change: this process's writes
show at once (ORM or Core, committed), another process's within LIST_RECHECK_SECONDS."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from opencs.services import clusters as clusters_mod
from opencs.store.db import Database, utcnow
from opencs.store.models import Cluster


def _add(db: Database, name: str) -> None:
    now = utcnow()
    with db.session() as s:
        s.add(Cluster(cluster_id=f"c{name:0>32}", name=name, state="running", size=1, region_id="local",
                      master_url="", spec={}, created=now, updated=now))


def _names(rt: Any) -> list[str]:
    return [c["name"] for c in json.loads(rt.clusters.list_json())]


def test_own_writes_show_at_once(runtime: Any) -> None:
    assert _names(runtime) == []
    _add(runtime.db, "a")
    assert _names(runtime) == ["a"]
    body = runtime.clusters.cached_list_json()
    assert body is not None and json.loads(body)[0]["name"] == "a"  # served without the database

    # a Core UPDATE that leaves `updated` alone (so the database stamp cannot see it)
    with runtime.db.engine.begin() as conn:
        conn.execute(update(Cluster).values(state="stopped"))
    assert runtime.clusters.cached_list_json() is None
    assert json.loads(runtime.clusters.list_json())[0]["state"] == "stopped"

    # a rolled-back write changes nothing but is not served from a stale entry either
    with pytest.raises(RuntimeError), runtime.db.session() as s:
        s.get(Cluster, "c" + "a".rjust(32, "0")).name = "renamed"
        s.flush()
        raise RuntimeError("abort")
    assert _names(runtime) == ["a"]


def test_reads_do_not_invalidate(runtime: Any) -> None:
    _add(runtime.db, "a")
    runtime.clusters.list_json()
    runtime.clusters.get(runtime.clusters.list()[0]["cluster_id"])
    runtime.clusters.page(1, 10)
    assert runtime.clusters.cached_list_json() is not None


def test_other_process_writes_show_after_recheck(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _names(runtime) == []
    other = Database(runtime.db.url)  # another process sharing the database: its own engine
    try:
        _add(other, "b")
        assert _names(runtime) == []  # within the recheck interval the cached body stands
        monkeypatch.setattr(clusters_mod, "LIST_RECHECK_SECONDS", 0.05)
        time.sleep(0.06)
        assert runtime.clusters.cached_list_json() is None
        assert _names(runtime) == ["b"]
    finally:
        other.close()


def test_a_write_behind_the_newest_stamp_shows(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process's write whose `updated` is older than the newest one (its clock behind, or
    its commit after a later-stamped one): the (count, newest updated) of the table stays the same,
    the row's own stamp does not."""
    _add(runtime.db, "a")
    _add(runtime.db, "b")
    assert _names(runtime) == ["a", "b"]
    other = Database(runtime.db.url)
    try:
        with other.engine.begin() as conn:
            conn.execute(update(Cluster).where(Cluster.name == "a")
                         .values(state="stopped", updated=utcnow() - timedelta(hours=1)))
        monkeypatch.setattr(clusters_mod, "LIST_RECHECK_SECONDS", 0.0)
        assert [c["state"] for c in json.loads(runtime.clusters.list_json())] == ["stopped", "running"]
    finally:
        other.close()


def test_only_changed_clusters_are_rendered_again(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in "abc":
        _add(runtime.db, n)
    runtime.clusters.list_json()
    rendered: list[str] = []
    real = clusters_mod.render_view
    monkeypatch.setattr(clusters_mod, "render_view", lambda row: rendered.append(row.name) or real(row))
    with runtime.db.session() as s:
        s.get(Cluster, "c" + "b".rjust(32, "0")).size = 7
    body = runtime.clusters.list_json()
    assert rendered == ["b"]
    assert [c["size"] for c in json.loads(body)] == [1, 7, 1]
    # the same bytes as rendering every cluster anew
    assert body == json.dumps(runtime.clusters.list(), separators=(",", ":"), ensure_ascii=False).encode()
    # a deleted cluster leaves the list
    with runtime.db.session() as s:
        s.get(Cluster, "c" + "a".rjust(32, "0")).state = "deleted"
    assert _names(runtime) == ["b", "c"]
