"""RecentReads: a hot read's value is reused only while this process wrote none of its tables and
for at most its recheck time; a failed read is not kept."""

from __future__ import annotations

import pytest
from sqlalchemy import false, update

from opencs.store.changes import RecentReads
from opencs.store.db import Database
from opencs.store.models import Base


def test_a_value_is_read_again_after_a_write_to_its_tables_or_its_recheck_time(db: Database) -> None:
    reads: list[str] = []

    def read(value: str) -> str:
        reads.append(value)
        return value

    kept: RecentReads[str, str] = RecentReads(db.changes, ("accounts",), recheck=60.0)
    assert kept.get("k", lambda: read("v1")) == "v1"
    assert kept.get("k", lambda: read("v2")) == "v1" and reads == ["v1"]  # from memory
    with db.session() as s:  # another table: still the value of before
        s.execute(update(Base.metadata.tables["clusters"]).where(false()).values(name="x"))
    assert kept.get("k", lambda: read("v2")) == "v1"
    with db.session() as s:  # its table, even a write that changed no row
        s.execute(update(Base.metadata.tables["accounts"]).where(false()).values(name="x"))
    assert kept.get("k", lambda: read("v3")) == "v3"
    assert kept.get("other", lambda: read("o1")) == "o1"  # per key
    assert reads == ["v1", "v3", "o1"]

    def fails() -> str:
        raise LookupError("gone")

    with pytest.raises(LookupError):
        kept.get("missing", fails)
    assert kept.get("missing", lambda: read("m1")) == "m1"  # the failure was not kept

    brief: RecentReads[str, str] = RecentReads(db.changes, ("accounts",), recheck=0.0)
    assert brief.get("k", lambda: read("b1")) == "b1"
    assert brief.get("k", lambda: read("b2")) == "b2"  # older than its recheck time: read again
