"""The clusters' image registry: Debian's `docker-registry` (distribution v2), run by the control plane.

Nodes pull through it (`--registry-mirror`), so no node ever needs the internet. The registry is a
detached process (own session, parent = init) so it survives control-plane restarts; its PID is
recorded in `data_dir/registry.pid` and a restarted control plane adopts it instead of starting a
second one. Processes are only ever signalled by that recorded PID, after checking
`/proc/PID/cmdline` really is our docker-registry with our config file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import httpx
import yaml

from opencs.procs import alive, cmdline
from opencs.registry.tokens import TokenAuthConfig

log = logging.getLogger(__name__)

REGISTRY_BIN = Path("/usr/bin/docker-registry")


class RegistryError(RuntimeError):
    pass


def _split_listen(listen: str) -> tuple[str, int]:
    """'host:port' / '[v6]:port' / ':port' -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen must be host:port, got {listen!r}")
    return host.strip("[]"), int(port)


class BundledRegistry:
    """Run (or adopt) one docker-registry serving `data_dir` on `listen`.

    `notify_url`/`notify_token`: the registry POSTs its events (push/pull/delete) there as
    `application/vnd.docker.distribution.events.v1+json` with `Authorization: Bearer <token>`.
    """

    def __init__(
        self,
        data_dir: Path,
        listen: str = "127.0.0.1:5000",
        notify_url: str | None = None,
        notify_token: str | None = None,
        *,
        token_auth: TokenAuthConfig | None = None,
        binary: Path = REGISTRY_BIN,
        start_timeout: float = 15.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.listen = listen
        self.host, self.port = _split_listen(listen)
        self.notify_url = notify_url
        self.notify_token = notify_token
        self.token_auth = token_auth  # Docker token authentication (None: anyone may push and pull)
        self.binary = binary
        self.start_timeout = start_timeout
        self.config_path = self.data_dir / "config.yml"
        self.pid_path = self.data_dir / "registry.pid"
        self.log_path = self.data_dir / "registry.log"
        self.storage_dir = self.data_dir / "storage"
        self.pid: int | None = None
        self.adopted = False  # True if ensure_running found it already running

    # -- addresses ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL to reach the registry (a wildcard listen address is reached via loopback)."""
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def healthy(self, timeout: float = 2.0) -> bool:
        try:
            r = httpx.get(f"{self.url}/v2/", timeout=timeout)
        except httpx.HTTPError:
            return False
        # with token authentication /v2/ answers 401 and the realm's address: alive just the same
        return r.status_code == 200 or (self.token_auth is not None and r.status_code == 401)

    # -- config ---------------------------------------------------------------------------------

    def _http_secret(self) -> str:
        # Persisted so upload state survives a registry restart and the config stays identical
        # across restarts (which is what lets us adopt a running registry).
        path = self.data_dir / "http-secret"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        value = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return value

    def render_config(self) -> str:
        config: dict[str, object] = {
            "version": 0.1,
            # distribution logs notification endpoint headers (the bearer token) at info level,
            # so stay at warn. HTTP access lines are a separate stream and are still written.
            "log": {"level": "warn", "fields": {"service": "opencs-registry"}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {
                "addr": self.listen,
                "secret": self._http_secret(),
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        if self.token_auth is not None:
            config["auth"] = self.token_auth.render()
        if self.notify_url:
            endpoint: dict[str, object] = {
                "name": "opencs",
                "url": self.notify_url,
                "timeout": "2s",
                "threshold": 5,
                "backoff": "1s",
            }
            if self.notify_token:
                endpoint["headers"] = {"Authorization": [f"Bearer {self.notify_token}"]}
            config["notifications"] = {"endpoints": [endpoint]}
        return str(yaml.safe_dump(config, sort_keys=True))

    def _write_private(self, path: Path, text: str) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    # -- process bookkeeping --------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Serialises ensure_running/stop between control-plane workers sharing data_dir.
        with open(self.data_dir / "registry.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _is_ours(self, pid: int) -> bool:
        argv = cmdline(pid)
        return (
            alive(pid)
            and bool(argv)
            and os.path.basename(argv[0]) == "docker-registry"
            and str(self.config_path) in argv
        )

    def recorded_pid(self) -> int | None:
        """PID from the PID file if that process is alive and really our docker-registry."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self._is_ours(pid) else None

    def _check_bindable(self, settle: float = 0.0) -> None:
        """Fail fast (and clearly) if the registry could not bind `listen`.

        Probing by binding rather than connecting: some networks accept any outbound TCP connect,
        and what matters is whether the address exists here and the port is free. `settle`: how
        long a port still held by a registry we have just stopped may take to be released.
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        deadline = time.monotonic() + settle
        with socket.socket(family, socket.SOCK_STREAM) as s:
            # Same as Go's listener: TIME_WAIT leftovers of a previous registry do not block us.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            while True:
                try:
                    s.bind((self.host, self.port))
                    return
                except OSError as e:
                    if e.errno == errno.EADDRINUSE and time.monotonic() < deadline:
                        time.sleep(0.05)
                        continue
                    self._bind_failed(e)

    def _bind_failed(self, e: OSError) -> NoReturn:
        if e.errno == errno.EADDRINUSE:
            raise RegistryError(f"{self.listen} is already in use by another process") from e
        if e.errno == errno.EADDRNOTAVAIL:
            raise RegistryError(f"{self.host} is not an address of this host (bridge not up?)") from e
        raise RegistryError(f"cannot bind {self.listen}: {e}") from e

    def _log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    def _spawn(self) -> int:
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        # `sh ... &` + `setsid`: the registry gets its own session and is re-parented to init as
        # soon as sh exits, so it is not our child (no zombie, survives our exit). In a
        # non-interactive sh the background child is not a group leader, so setsid(1) does not
        # fork and $! is the registry's own PID (after exec). sh itself records that PID: if this
        # control plane is killed while waiting for sh, the PID file still names the registry and
        # the next start adopts or stops it instead of finding its port taken by an orphan.
        script = (
            'umask 077; cd "$1" && setsid "$2" serve "$3" >>"$4" 2>&1 </dev/null & '
            'pid=$!; echo "$pid" >"$5.tmp" && mv -f "$5.tmp" "$5"; echo "$pid"'
        )
        out = subprocess.run(
            [
                "/bin/sh",
                "-c",
                script,
                "sh",
                str(self.data_dir),
                str(self.binary),
                str(self.config_path),
                str(self.log_path),
                str(self.pid_path),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return int(out.stdout.strip())

    def _orphans(self) -> list[int]:
        """Our docker-registry processes that no PID file names (e.g. an older opencs that was
        killed between spawning the registry and recording it). Identified by the exact config
        path of this data dir on their command line, never by a name alone."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and self._is_ours(int(entry.name)):
                found.append(int(entry.name))
        return found

    def wait_running(self, timeout: float) -> None:
        """Until the recorded registry answers: after a restart by another process of the data dir
        (its lock is held while it restarts). RegistryError if none is recorded or it never answers."""
        with self._lock():
            pid = self.recorded_pid()
        if pid is None:
            raise RegistryError(f"no docker-registry of {self.data_dir} is running")
        self._wait_healthy(pid, timeout)

    def _wait_healthy(self, pid: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not alive(pid):
                raise RegistryError(f"docker-registry (pid {pid}) exited; log tail:\n{self._log_tail()}")
            # Until exec completes the PID may still show sh/setsid; only trust our own binary.
            if self._is_ours(pid) and self.healthy(timeout=1.0):
                return
            if time.monotonic() > deadline:
                raise RegistryError(
                    f"docker-registry (pid {pid}) did not answer {self.url}/v2/ within {timeout:.0f}s; "
                    f"log tail:\n{self._log_tail()}"
                )
            time.sleep(0.02)

    def _terminate(self, pid: int, grace: float = 5.0) -> None:
        if not self._is_ours(pid):
            return
        with contextlib.suppress(ProcessLookupError):  # it may exit between the check and the kill
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        # Re-check identity before SIGKILL: never signal a PID that was recycled meanwhile.
        if self._is_ours(pid):
            log.warning("docker-registry pid %d ignored SIGTERM, sending SIGKILL", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + grace
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
        if alive(pid):
            raise RegistryError(f"docker-registry pid {pid} did not exit")

    # -- public ---------------------------------------------------------------------------------

    @staticmethod
    def _without_notifications(config: str) -> object:
        parsed = yaml.safe_load(config)
        if isinstance(parsed, dict):
            parsed.pop("notifications", None)
        return parsed

    def recorded_notify_url(self) -> str | None:
        """Where the registry of the written config sends its push notifications (None: nowhere)."""
        try:
            parsed = yaml.safe_load(self.config_path.read_text())
        except (FileNotFoundError, yaml.YAMLError):
            return None
        endpoints = (parsed.get("notifications") or {}).get("endpoints") or [] if isinstance(parsed, dict) else []
        return str(endpoints[0].get("url")) if endpoints and isinstance(endpoints[0], dict) else None

    def _adoptable(self, recorded: str, config: str, any_notifications: bool) -> bool:
        if recorded == config:
            return True
        return any_notifications and self._without_notifications(recorded) == self._without_notifications(config)

    def ensure_running(self, any_notifications: bool = False) -> int:
        """Start the registry, or adopt the recorded one if it runs with the same config.

        `any_notifications`: adopt one whose config differs only in where it sends its push
        notifications (a process that does not own them must not take them from the one that does).
        Returns the PID. Blocks until GET /v2/ answers 200.
        """
        if not self.binary.exists():
            raise RegistryError(f"{self.binary} not found (apt-get install docker-registry)")
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.storage_dir.mkdir(exist_ok=True, mode=0o700)
        with self._lock():
            config = self.render_config()
            pid = self.recorded_pid()
            stopped = False
            if pid is not None:
                try:
                    same = self._adoptable(self.config_path.read_text(), config, any_notifications)
                except FileNotFoundError:
                    same = False
                if same:
                    try:
                        self._wait_healthy(pid, timeout=min(self.start_timeout, 5.0))
                        self.pid, self.adopted = pid, True
                        log.info("adopted running docker-registry pid %d on %s", pid, self.listen)
                        return pid
                    except RegistryError:
                        log.warning("recorded docker-registry pid %d is unresponsive; restarting", pid)
                else:
                    log.info("registry config changed; restarting docker-registry pid %d", pid)
                self._terminate(pid)
                stopped = True
            self.pid_path.unlink(missing_ok=True)
            for orphan in self._orphans():
                log.warning("stopping unrecorded docker-registry pid %d of this data dir", orphan)
                self._terminate(orphan)
                stopped = True
            self._check_bindable(settle=2.0 if stopped else 0.0)
            self._write_private(self.config_path, config)
            started = time.monotonic()
            pid = self._spawn()
            try:
                self._wait_healthy(pid, self.start_timeout)
            except RegistryError:
                self._terminate(pid)
                self.pid_path.unlink(missing_ok=True)
                raise
            self.pid, self.adopted = pid, False
            log.info(
                "started docker-registry pid %d on %s in %.2fs", pid, self.listen, time.monotonic() - started
            )
            return pid

    def stop(self) -> None:
        """Stop the recorded registry (if it is really ours) and forget its PID."""
        if not self.data_dir.exists():
            return
        with self._lock():
            pid = self.recorded_pid()
            if pid is not None:
                self._terminate(pid)
            self.pid_path.unlink(missing_ok=True)
            self.pid = None
