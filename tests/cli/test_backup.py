"""`opencs backup` / `opencs restore` (opencs.cli.backup_cmd, opencs.store.backup) on both stores:
every table comes back as it was, the secrets key with it (a restored AccessKey secret decrypts);
a damaged archive and a restore over a live data dir are refused before anything is written."""

from __future__ import annotations

import io
import secrets
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, select

from opencs.cli.backup_cmd import make_backup, read_backup, restore_backup
from opencs.composition import build
from opencs.config import Settings
from opencs.store.backup import BackupError
from tests.conftest import PG_URL, _pg_admin


@pytest.fixture
def target_url(database_url: str | None) -> Iterator[str | None]:
    """Where to restore: a second fresh database of the same kind (SQLite: the new data dir's)."""
    if database_url is None:
        yield None
        return
    name = "opencs_r_" + secrets.token_hex(4)
    _pg_admin(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def tables(url: str) -> dict[str, list[tuple[Any, ...]]]:
    engine = create_engine(url)
    meta = MetaData()
    meta.reflect(engine)
    with engine.connect() as c:
        out = {t.name: sorted(c.execute(select(t)).all(), key=repr) for t in meta.sorted_tables}
    engine.dispose()
    return out


def test_backup_and_restore_bring_every_row_back(tmp_path: Path, database_url: str | None,
                                                 target_url: str | None) -> None:
    src = Settings(data_dir=tmp_path / "a", database_url=database_url, workers=0, local_nodes=False)
    plane = build(src)
    account, ak, secret = plane.accounts.create_account("team-b")
    plane.close()
    (src.data_dir / "tls").mkdir()
    (src.data_dir / "tls" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nx\n")
    manifest = make_backup(src, tmp_path / "b.tar.gz")
    assert (tmp_path / "b.tar.gz").stat().st_mode & 0o777 == 0o600
    assert manifest["store"]["revision"]  # type: ignore[index]
    assert {"secret.key", "tls/ca.pem"} <= set(manifest["files"])  # type: ignore[arg-type]

    dst = Settings(data_dir=tmp_path / "r", database_url=target_url, workers=0, local_nodes=False)
    restore_backup(dst, tmp_path / "b.tar.gz", force=False)
    assert tables(dst.resolved_database_url) == tables(src.resolved_database_url)
    assert (dst.data_dir / "secret.key").read_bytes() == (src.data_dir / "secret.key").read_bytes()
    assert (dst.data_dir / "tls" / "ca.pem").read_bytes() == (src.data_dir / "tls" / "ca.pem").read_bytes()
    plane = build(dst)
    try:  # the secret of the restored key decrypts with the restored secrets key
        assert plane.keys.active_secret(ak) == secret
        assert any(a == account for a, _, _ in plane.accounts.accounts())
    finally:
        plane.close()
    with pytest.raises(BackupError, match="--force"):  # the data dir has a store now
        restore_backup(dst, tmp_path / "b.tar.gz", force=False)
    restore_backup(dst, tmp_path / "b.tar.gz", force=True)


def test_a_damaged_archive_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    src = Settings(data_dir=tmp_path / "a", workers=0, local_nodes=False)
    build(src).close()
    make_backup(src, tmp_path / "b.tar.gz")
    manifest, members = read_backup(tmp_path / "b.tar.gz")
    members["secret.key"] = b"x" + members["secret.key"][1:]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar, tarfile.open(tmp_path / "b.tar.gz") as old:
        for m in old.getmembers():
            data = members.get(m.name) or old.extractfile(m).read()  # type: ignore[union-attr]
            tar.addfile(m, io.BytesIO(data))
    (tmp_path / "bad.tar.gz").write_bytes(buf.getvalue())
    dst = Settings(data_dir=tmp_path / "r", workers=0, local_nodes=False)
    with pytest.raises(BackupError, match="secret.key is missing or damaged"):
        restore_backup(dst, tmp_path / "bad.tar.gz", force=False)
    assert not dst.data_dir.exists()
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(BackupError, match="not a readable backup"):
        read_backup(tmp_path / "junk.tar.gz")
