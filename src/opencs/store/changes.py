"""A generation number per table, bumped whenever this process writes to the table, so that hot
reads (GET /clusters) can answer from a cached body without asking the database each time.

Writes from *other* processes sharing the database are not seen here: readers that cache on a
generation must also re-check the database now and then (see ClusterService.list_json).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from sqlalchemy import Engine, event

_DIRTY = "opencs_dirty_tables"
ANY = "*"  # a write whose table could not be told


class TableChanges:
    def __init__(self, engine: Engine) -> None:
        self._gen: defaultdict[str, int] = defaultdict(int)
        self._lock = threading.Lock()
        event.listen(engine, "after_cursor_execute", self._on_execute)
        event.listen(engine, "commit", self._on_commit)
        event.listen(engine.pool, "checkin", self._on_checkin)

    def generation(self, table: str) -> int:
        # a plain dict read: cheap enough for the event loop, atomic under the GIL
        return self._gen[table] + self._gen[ANY]

    def _bump(self, tables: set[str]) -> None:
        with self._lock:
            for t in tables:
                self._gen[t] += 1

    # A reader may refetch between our bump and the database's commit and cache the old rows under
    # the new generation; bumping again at commit and once more when the connection goes back to
    # the pool (after the commit is done) invalidates such an entry.

    def _on_execute(self, conn: Any, _cursor: Any, _stmt: Any, _params: Any, context: Any, _many: bool) -> None:
        if not (context.isinsert or context.isupdate or context.isdelete):
            return
        table = getattr(getattr(getattr(context.compiled, "statement", None), "table", None), "name", None)
        tables = {str(table) if table else ANY}
        conn.info.setdefault(_DIRTY, set()).update(tables)
        self._bump(tables)

    def _on_commit(self, conn: Any) -> None:
        if tables := conn.info.get(_DIRTY):
            self._bump(tables)

    def _on_checkin(self, _dbapi_conn: Any, record: Any) -> None:
        if record is not None and (tables := record.info.pop(_DIRTY, None)):
            self._bump(tables)


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class RecentReads(Generic[K, V]):
    """Values read from the store (a reply's JSON), reused while this process wrote none of
    `tables` since and for at most `recheck` seconds (for the writes of other processes sharing
    the database). A hot read (GET /clusters/{id} under bench/load.py) then costs the event loop a
    dict lookup instead of an ORM query. What `read` raises is not kept."""

    def __init__(self, changes: TableChanges, tables: tuple[str, ...], recheck: float,
                 size: int = 10_000) -> None:
        self.changes, self.tables, self.recheck, self.size = changes, tables, recheck, size
        self._kept: dict[K, tuple[tuple[int, ...], float, V]] = {}

    def get(self, key: K, read: Callable[[], V]) -> V:
        # stamped before the read: a write meanwhile moves the generation, and the next ask reads again
        stamp, now = tuple(self.changes.generation(t) for t in self.tables), time.monotonic()
        hit = self._kept.get(key)
        if hit is not None and hit[0] == stamp and now - hit[1] < self.recheck:
            return hit[2]
        value = read()
        if len(self._kept) >= self.size:
            self._kept.clear()
        self._kept[key] = (stamp, now, value)
        return value
