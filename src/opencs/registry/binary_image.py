"""Images made of one static binary (CoreDNS as scripts/build-kubernetes.sh builds it), pushed into
the bundled registry like busybox. Building compresses tens of MB, so the image is built once per
binary (path, size, mtime) and kept in the opencs cache directory."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from pathlib import Path

import httpx

from opencs.registry.image import (
    CONFIG_V1,
    LAYER_TAR_GZIP,
    Blob,
    SeedResult,
    _tarinfo,
    build_image,
    build_manifest,
    manifest_digest,
    push_image,
    sha256_digest,
)


def _cache_dir() -> Path:
    return Path(os.environ.get("OPENCS_CACHE_DIR") or Path.home() / ".cache" / "opencs") / "images"


def _layer(binary: Path, name: str) -> bytes:
    data = binary.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tarinfo(name, tarfile.REGTYPE, 0o755, size=len(data)), io.BytesIO(data))
    return buf.getvalue()


def binary_image(binary: Path, name: str) -> tuple[Blob, Blob]:
    """(layer, config) of an image whose only file is /<name> and whose command it is."""
    st = binary.stat()
    key = hashlib.sha256(f"{binary.resolve()}:{st.st_size}:{st.st_mtime_ns}:{name}".encode()).hexdigest()[:16]
    d = _cache_dir() / f"{name}-{key}"
    try:
        layer = Blob(LAYER_TAR_GZIP, (d / "layer.tar.gz").read_bytes())
        return layer, Blob(CONFIG_V1, (d / "config.json").read_bytes())
    except OSError:
        pass
    image = build_image([_layer(binary, name)], cmd=(f"/{name}",))
    d.mkdir(parents=True, exist_ok=True)
    for fname, blob in (("layer.tar.gz", image.layers[0]), ("config.json", image.config)):
        tmp = d / f".{fname}.tmp"
        tmp.write_bytes(blob.data)
        os.replace(tmp, d / fname)
    return image.layers[0], image.config


def seed_binary(registry_url: str, repository: str, tag: str, binary: Path, name: str,
                auth: httpx.Auth | None = None) -> SeedResult:
    """Make repository:tag that image. Idempotent: one HEAD when up to date."""
    started = time.monotonic()
    layer, config = binary_image(binary, name)
    digest = sha256_digest(build_manifest([layer], config))
    if manifest_digest(registry_url, repository, tag, auth=auth) == digest:
        return SeedResult(digest, False, time.monotonic() - started)
    pushed = push_image(registry_url, repository, tag, [layer], config, timeout=300, auth=auth)
    return SeedResult(pushed, True, time.monotonic() - started)
