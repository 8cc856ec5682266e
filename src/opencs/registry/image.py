"""Build a real Docker image from the host's static busybox and push it with the Registry HTTP API v2.

Nodes have no internet, so `image: busybox` in a compose file must resolve through the bundled
registry (`--registry-mirror`): `seed_busybox()` puts `library/busybox:latest` there.

The image is deterministic (sorted entries, fixed mtimes/owners, gzip mtime 0, canonical JSON), so
its digest only changes when the host's busybox binary (or zlib) changes.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import platform
import subprocess
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_TAR_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

BUSYBOX = Path("/bin/busybox")
INDEX_HTML = b"hello from opencs busybox\n"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Fixed timestamp for tar mtimes and the config's "created" (2024-01-01T00:00:00Z).
EPOCH = 1704067200
CREATED = "2024-01-01T00:00:00Z"


class PushError(RuntimeError):
    pass


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes = field(repr=False)

    @functools.cached_property
    def digest(self) -> str:
        return sha256_digest(self.data)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest}


@dataclass(frozen=True)
class Image:
    layers: tuple[Blob, ...]
    config: Blob
    manifest: bytes = field(repr=False)

    @property
    def digest(self) -> str:
        """Manifest digest, as the registry reports it in Docker-Content-Digest."""
        return sha256_digest(self.manifest)


def _canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def build_manifest(layers: Sequence[Blob], config: Blob) -> bytes:
    return _canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": config.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
        }
    )


def _docker_arch() -> str:
    # The layer carries the host's busybox binary, so the image architecture is the host's.
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


# -- layer --------------------------------------------------------------------------------------


def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = linkname
    info.mtime = EPOCH
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    out = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True, timeout=10)
    return sorted({a for a in out.stdout.split() if a and "/" not in a and a != "busybox"})


def build_layer_tar(busybox: Path = BUSYBOX) -> bytes:
    """Uncompressed layer tar: bin/busybox + one symlink per applet, etc/, tmp/, www/."""
    binary = busybox.read_bytes()
    files: dict[str, tuple[bytes, int]] = {
        "bin/busybox": (binary, 0o755),
        "etc/passwd": (
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
            0o644,
        ),
        "etc/group": (b"root:x:0:\nnobody:x:65534:\n", 0o644),
        "www/index.html": (INDEX_HTML, 0o644),
    }
    dirs = {"bin": 0o755, "etc": 0o755, "root": 0o700, "tmp": 0o1777, "www": 0o755}
    links = {f"bin/{applet}": "busybox" for applet in busybox_applets(busybox)}

    entries: list[tuple[str, tarfile.TarInfo, bytes | None]] = []
    for name, mode in dirs.items():
        entries.append((name, _tarinfo(name + "/", tarfile.DIRTYPE, mode), None))
    for name, (data, mode) in files.items():
        entries.append((name, _tarinfo(name, tarfile.REGTYPE, mode, size=len(data)), data))
    for name, target in links.items():
        entries.append((name, _tarinfo(name, tarfile.SYMTYPE, 0o777, linkname=target), None))
    entries.sort(key=lambda e: e[0])

    buf = io.BytesIO()
    # PAX only adds extended headers when a field needs them; none do here, so output is plain ustar.
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for _, info, payload in entries:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return buf.getvalue()


def _gzip(data: bytes) -> bytes:
    buf = io.BytesIO()
    # filename="" and mtime=0 keep the gzip header free of anything that changes between runs.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def build_image(layer_tars: Sequence[bytes], cmd: Sequence[str] = ("sh",)) -> Image:
    """Docker image (manifest v2 schema 2) from uncompressed layer tars."""
    layers = tuple(Blob(LAYER_TAR_GZIP, _gzip(t)) for t in layer_tars)
    config = Blob(
        CONFIG_V1,
        _canonical_json(
            {
                "architecture": _docker_arch(),
                "os": "linux",
                "created": CREATED,
                "config": {"Cmd": list(cmd), "Env": [DEFAULT_PATH]},
                "rootfs": {"type": "layers", "diff_ids": [sha256_digest(t) for t in layer_tars]},
                "history": [{"created": CREATED, "created_by": "opencs: static busybox layer"}],
            }
        ),
    )
    return Image(layers=layers, config=config, manifest=build_manifest(layers, config))


@functools.lru_cache(maxsize=4)
def _busybox_image_cached(path: str, _size: int, _mtime_ns: int) -> Image:
    return build_image([build_layer_tar(Path(path))])


def build_busybox_image(busybox: Path = BUSYBOX) -> Image:
    """The busybox image; cached per binary (path, size, mtime) since building takes ~0.1 s."""
    st = os.stat(busybox)
    return _busybox_image_cached(str(busybox), st.st_size, st.st_mtime_ns)


# -- push ---------------------------------------------------------------------------------------


def _check(resp: httpx.Response, *expected: int) -> httpx.Response:
    if resp.status_code not in expected:
        raise PushError(
            f"{resp.request.method} {resp.request.url.path}: HTTP {resp.status_code} {resp.text[:300]}"
        )
    return resp


def push_blob(client: httpx.Client, repository: str, blob: Blob) -> bool:
    """Upload one blob unless present. Returns True if it was uploaded."""
    if client.head(f"/v2/{repository}/blobs/{blob.digest}").status_code == 200:
        return False
    start = _check(client.post(f"/v2/{repository}/blobs/uploads/"), 202)
    location = start.headers.get("Location")
    if not location:
        raise PushError("registry returned no upload Location")
    # Location may be relative and already carries upload state (_state=...). httpx's `params=`
    # would replace that query, so merge the digest into the URL explicitly.
    url = start.request.url.join(location).copy_merge_params({"digest": blob.digest})
    _check(
        client.put(url, content=blob.data, headers={"Content-Type": "application/octet-stream"}),
        201,
    )
    return True


def push_image(
    registry_url: str,
    repository: str,
    tag: str,
    layers: Sequence[Blob],
    config: Blob,
    *,
    timeout: float = 60.0,
    auth: httpx.Auth | None = None,
) -> str:
    """Push blobs (monolithic upload) then the v2 manifest. Returns the manifest digest."""
    manifest = build_manifest(layers, config)
    digest = sha256_digest(manifest)
    with httpx.Client(base_url=registry_url.rstrip("/"), timeout=timeout, auth=auth) as client:
        for blob in (*layers, config):
            push_blob(client, repository, blob)
        resp = _check(
            client.put(
                f"/v2/{repository}/manifests/{tag}", content=manifest, headers={"Content-Type": MANIFEST_V2}
            ),
            201,
        )
    returned = resp.headers.get("Docker-Content-Digest")
    if returned and returned != digest:
        raise PushError(f"registry stored manifest as {returned}, expected {digest}")
    return digest


def manifest_digest(registry_url: str, repository: str, tag: str, timeout: float = 10.0,
                    auth: httpx.Auth | None = None) -> str | None:
    """Digest of repository:tag's v2 manifest in the registry, None if absent."""
    resp = httpx.head(
        f"{registry_url.rstrip('/')}/v2/{repository}/manifests/{tag}",
        headers={"Accept": MANIFEST_V2},
        timeout=timeout,
        auth=auth,
    )
    if resp.status_code == 404:
        return None
    _check(resp, 200)
    digest: str | None = resp.headers.get("Docker-Content-Digest")
    return digest


@dataclass(frozen=True)
class SeedResult:
    digest: str
    pushed: bool  # False: the same manifest was already there
    seconds: float


def seed_busybox(
    registry_url: str,
    repository: str = "library/busybox",
    tag: str = "latest",
    busybox: Path = BUSYBOX,
    auth: httpx.Auth | None = None,
) -> SeedResult:
    """Make `repository:tag` the busybox image. Idempotent: one HEAD when already up to date."""
    started = time.monotonic()
    image = build_busybox_image(busybox)
    if manifest_digest(registry_url, repository, tag, auth=auth) == image.digest:
        return SeedResult(image.digest, False, time.monotonic() - started)
    digest = push_image(registry_url, repository, tag, image.layers, image.config, auth=auth)
    return SeedResult(digest, True, time.monotonic() - started)
