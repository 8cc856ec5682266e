"""The pod sandbox ("pause") image, built by the project: a small static C program compiled with the
host's gcc, one layer, pushed into the bundled registry like busybox (opencs.registry.image).

Like upstream's pause it sleeps until told to stop and reaps the zombies of its pod; it is compiled
once per source and compiler into the opencs cache directory, and the image is deterministic.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import httpx

from opencs.registry.image import Image, SeedResult, _tarinfo, build_image, manifest_digest, push_image

PAUSE_REPOSITORY = "opencs/pause"
PAUSE_TAG = "3.10"

PAUSE_C = r"""
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = stop;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = reap;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    for (;;) pause();
}
"""


class PauseBuildError(RuntimeError):
    pass


def _cache_dir() -> Path:
    return Path(os.environ.get("OPENCS_CACHE_DIR") or Path.home() / ".cache" / "opencs") / "pause"


def build_pause_binary(gcc: str = "gcc") -> Path:
    """Compile the pause program (static, stripped) unless this source+compiler was built before."""
    cc = shutil.which(gcc)
    if cc is None:
        raise PauseBuildError("gcc not found: it builds the pod sandbox (pause) image (apt-get install gcc libc6-dev)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    tag = hashlib.sha256((PAUSE_C + version).encode()).hexdigest()[:16]
    out = _cache_dir() / tag / "pause"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.parent / "pause.c"
    src.write_text(PAUSE_C)
    tmp = out.with_suffix(".tmp")
    p = subprocess.run(
        [cc, "-static", "-Os", "-s", "-o", str(tmp), str(src)], capture_output=True, text=True, timeout=120
    )
    if p.returncode != 0:
        raise PauseBuildError(f"gcc could not build the pause program: {p.stderr.strip()[-500:]}")
    os.replace(tmp, out)
    return out


def build_pause_image(binary: Path | None = None) -> Image:
    data = (binary or build_pause_binary()).read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_tarinfo("pause", tarfile.REGTYPE, 0o755, size=len(data)), io.BytesIO(data))
    return build_image([buf.getvalue()], cmd=("/pause",))


def seed_pause(registry_url: str, repository: str = PAUSE_REPOSITORY, tag: str = PAUSE_TAG,
               auth: httpx.Auth | None = None) -> SeedResult:
    """Make repository:tag the pause image in the registry. Idempotent: one HEAD when up to date."""
    started = time.monotonic()
    image = build_pause_image()
    if manifest_digest(registry_url, repository, tag, auth=auth) == image.digest:
        return SeedResult(image.digest, False, time.monotonic() - started)
    digest = push_image(registry_url, repository, tag, image.layers, image.config, auth=auth)
    return SeedResult(digest, True, time.monotonic() - started)
