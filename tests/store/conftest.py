"""Fixtures of the store tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from opencs.config import Settings
from opencs.store.db import Database, migrate


@pytest.fixture
def db(tmp_path: Path, database_url: str | None) -> Iterator[Database]:
    """A migrated store on SQLite and on PostgreSQL (`database_url`)."""
    d = Database(Settings(data_dir=tmp_path, database_url=database_url).resolved_database_url)
    migrate(d.engine)
    try:
        yield d
    finally:
        d.close()
