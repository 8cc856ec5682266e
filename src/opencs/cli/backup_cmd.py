"""`opencs backup` and `opencs restore`: the store, the PKI and the secrets key in one archive.

The archive (tar.gz, mode 0600: it holds the key that opens every secret) has ``manifest.json``
(format, time, version, the store's kind and migration, a SHA-256 per member), the store copy
(``store.sqlite`` or ``store.pgdump``, opencs.store.backup: consistent while servers run), the
secrets key, and the files of the data dir that the store does not hold: the API's TLS CA and
certificate (``tls/``), SSH provider keys (``ssh/``), the bootstrap credentials and the registry
notification token. Cluster CAs and client certificates live in the store (keys encrypted with the
secrets key). Node state (``nodes/``) and registry images are the machines', not the control
plane's, and are not copied. A restore checks every member against the manifest before writing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import typer

from opencs import __version__
from opencs.cli.server_cmd import DATA_DIR_OPT, DB_OPT
from opencs.config import Settings

FORMAT = "opencs-backup/1"
DATA_FILES = ("admin-credentials.json", "registry-notify.token")
DATA_DIRS = ("tls", "ssh")
KEY_MEMBER = "secret.key"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _data_members(data_dir: Path) -> dict[str, Path]:
    out = {name: data_dir / name for name in DATA_FILES if (data_dir / name).is_file()}
    for d in DATA_DIRS:
        for p in sorted((data_dir / d).rglob("*")) if (data_dir / d).is_dir() else []:
            if p.is_file():
                out[p.relative_to(data_dir).as_posix()] = p
    return out


def make_backup(settings: Settings, archive: Path) -> dict[str, object]:
    """Write the archive; returns its manifest."""
    from opencs.store import backup as store_backup

    key = settings.resolved_secret_key_file
    if not key.is_file():
        raise store_backup.BackupError(f"no secrets key at {key}: nothing this data dir encrypted could be read back")
    with tempfile.TemporaryDirectory(prefix="opencs-backup-") as tmp:
        kind = store_backup.kind_of(settings.resolved_database_url)
        store_file = Path(tmp) / ("store.sqlite" if kind == store_backup.SQLITE else "store.pgdump")
        copy = store_backup.dump(settings.resolved_database_url, store_file)
        members = {store_file.name: store_file.read_bytes(), KEY_MEMBER: key.read_bytes()}
        members.update({name: p.read_bytes() for name, p in _data_members(settings.data_dir).items()})
    manifest: dict[str, object] = {
        "format": FORMAT, "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "opencs": __version__,
        "store": {"kind": copy.kind, "file": store_file.name, "revision": copy.revision},
        "files": {name: _sha(data) for name, data in members.items()},
    }
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp_archive = archive.with_name(archive.name + ".partial")
    fd = os.open(tmp_archive, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        for name, data in [("manifest.json", json.dumps(manifest, indent=1).encode()), *members.items()]:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o600, int(datetime.now(UTC).timestamp())
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp_archive, archive)
    return manifest


def read_backup(archive: Path) -> tuple[dict[str, object], dict[str, bytes]]:
    """The manifest and members of an archive, every member checked against its SHA-256."""
    from opencs.store.backup import BackupError

    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            raw = {m.name: tar.extractfile(m).read() for m in tar.getmembers()  # type: ignore[union-attr]
                   if m.isfile()}
    except (OSError, tarfile.TarError) as e:
        raise BackupError(f"{archive} is not a readable backup: {e}") from None
    manifest = json.loads(raw.pop("manifest.json", b"{}") or b"{}")
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{archive} is not an {FORMAT} archive")
    files: dict[str, str] = manifest["files"]
    for name, digest in files.items():
        if name not in raw or _sha(raw[name]) != digest:
            raise BackupError(f"{archive}: member {name} is missing or damaged (SHA-256 mismatch)")
    unknown = set(raw) - set(files)
    if unknown or any(n.startswith("/") or ".." in Path(n).parts for n in files):
        raise BackupError(f"{archive}: unexpected members {sorted(unknown)[:3]}")
    return manifest, raw


def restore_backup(settings: Settings, archive: Path, *, force: bool) -> dict[str, object]:
    """Put the archive's store, secrets key and files in place (the servers must be stopped)."""
    from opencs.store import backup as store_backup

    manifest, members = read_backup(archive)
    store: dict[str, str] = manifest["store"]  # type: ignore[assignment]
    url, key = settings.resolved_database_url, settings.resolved_secret_key_file
    if not force and (store_backup.has_store(url) or key.exists()):
        raise store_backup.BackupError(f"{settings.data_dir} already has a store or a secrets key: stop its servers "
                                       "and pass --force to replace them")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="opencs-restore-") as tmp:
        copy = Path(tmp) / store["file"]
        copy.write_bytes(members[store["file"]])
        store_backup.load(url, copy, store["kind"])
    for name, data in members.items():
        if name == store["file"]:
            continue
        target = key if name == KEY_MEMBER else settings.data_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return manifest


def register(app: typer.Typer) -> None:
    @app.command("backup")
    def backup(output: Path = typer.Option(None, "--output", "-o", help="The archive to write "
                                           "(default: ./opencs-backup-<UTC time>.tar.gz)."),
               data_dir: Path = DATA_DIR_OPT, database_url: str | None = DB_OPT) -> None:
        """Back up the store, the PKI and the secrets key (consistent while servers run)."""
        from opencs.store.backup import BackupError

        out = output or Path(f"opencs-backup-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.tar.gz")
        try:
            manifest = make_backup(Settings(data_dir=data_dir, database_url=database_url), out)
        except BackupError as e:
            typer.echo(f"Error: {e}", err=True)
            raise typer.Exit(1) from None
        typer.echo(json.dumps({"archive": str(out), "bytes": out.stat().st_size, "store": manifest["store"],
                               "files": sorted(manifest["files"])}))  # type: ignore[call-overload]

    @app.command("restore")
    def restore(archive: Path, data_dir: Path = DATA_DIR_OPT, database_url: str | None = DB_OPT,
                force: bool = typer.Option(False, "--force", help="Replace an existing store and key.")) -> None:
        """Restore a backup into a data dir / database whose servers are stopped."""
        from opencs.store.backup import BackupError

        try:
            manifest = restore_backup(Settings(data_dir=data_dir, database_url=database_url), archive, force=force)
        except BackupError as e:
            typer.echo(f"Error: {e}", err=True)
            raise typer.Exit(1) from None
        typer.echo(json.dumps({"restored": str(archive), "created": manifest["created"], "store": manifest["store"]}))
