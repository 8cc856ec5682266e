"""Consistent copies of the store while servers use it, and putting one back.

SQLite: the online backup API copies every page inside one read transaction, so the copy is the
database as of one commit while writers go on (WAL mode). PostgreSQL: ``pg_dump`` reads inside one
snapshot transaction (custom format), ``pg_restore`` replaces the objects it holds in one
transaction. The password of a PostgreSQL URL goes to the tools through PGPASSWORD, never argv.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url

SQLITE, POSTGRESQL = "sqlite", "postgresql"


class BackupError(Exception):
    """A copy or a restore of the store could not be made (the message says why)."""


@dataclass(frozen=True)
class StoreCopy:
    kind: str  # sqlite | postgresql
    revision: str  # the migration the copied store is at


def kind_of(url: str) -> str:
    name = make_url(url).drivername
    if name.startswith("sqlite"):
        return SQLITE
    if name.startswith("postgresql"):
        return POSTGRESQL
    raise BackupError(f"cannot back up a {name} database (SQLite and PostgreSQL only)")


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite database has nothing to back up")
    return Path(url.database)


def _pg(url: str) -> tuple[list[str], dict[str, str]]:
    """libpq arguments and environment for pg_dump/pg_restore."""
    u = make_url(url)
    env = {**os.environ, **({"PGPASSWORD": u.password} if u.password else {})}
    plain = u.set(drivername="postgresql", password=None)
    return ["--dbname", plain.render_as_string(hide_password=False)], env


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BackupError(f"{name} is not installed (apt-get install postgresql-client)")
    return path


def _revision_sqlite(path: Path) -> str:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as c:
        row = c.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row else ""


def dump(url: str, dest: Path) -> StoreCopy:
    """Copy the store at `url` into the file `dest`."""
    kind = kind_of(url)
    if kind == SQLITE:
        src_path = _sqlite_path(make_url(url))
        if not src_path.is_file():
            raise BackupError(f"no store at {src_path}")
        src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)  # all pages in one step: one consistent snapshot
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            ok = dst.execute("PRAGMA integrity_check").fetchone()
        finally:
            src.close()
            dst.close()
        if not ok or ok[0] != "ok":
            raise BackupError(f"the copy of {src_path} failed its integrity check: {ok}")
        return StoreCopy(SQLITE, _revision_sqlite(dest))
    args, env = _pg(url)
    out = subprocess.run([_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
                          "--file", str(dest), *args], capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise BackupError(f"pg_dump failed: {out.stderr.strip()}")
    listing = subprocess.run([_tool("pg_restore"), "--list", str(dest)], capture_output=True, text=True,
                             timeout=600)
    if listing.returncode != 0 or "TABLE DATA public alembic_version" not in listing.stdout:
        raise BackupError("the dump holds no opencs store (no alembic_version table)")
    return StoreCopy(POSTGRESQL, _revision_pg(url))


def _revision_pg(url: str) -> str:
    args, env = _pg(url)
    out = subprocess.run([_tool("psql"), "-AtX", "-c", "SELECT version_num FROM alembic_version", *args],
                         capture_output=True, text=True, env=env, timeout=60)
    return out.stdout.strip() if out.returncode == 0 else ""


def has_store(url: str) -> bool:
    """Does `url` already hold an opencs store (restoring over it needs --force)?"""
    if kind_of(url) == SQLITE:
        return _sqlite_path(make_url(url)).exists()
    return bool(_revision_pg(url))


def load(url: str, src: Path, kind: str) -> None:
    """Put the copy `src` (made by dump) back as the store at `url`. No server may use it meanwhile."""
    if kind != kind_of(url):
        raise BackupError(f"the backup holds a {kind} store; {make_url(url).drivername} was given "
                          "(restore into the same kind of database)")
    if kind == SQLITE:
        target = _sqlite_path(make_url(url))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".restore")
        shutil.copyfile(src, tmp)
        os.chmod(tmp, 0o600)
        for stale in (Path(f"{target}-wal"), Path(f"{target}-shm")):  # pages of the old database
            stale.unlink(missing_ok=True)
        os.replace(tmp, target)
        return
    args, env = _pg(url)
    out = subprocess.run([_tool("pg_restore"), "--clean", "--if-exists", "--no-owner", "--no-privileges",
                          "--single-transaction", "--exit-on-error", *args, str(src)],
                         capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise BackupError(f"pg_restore failed: {out.stderr.strip()}")
