"""One HAProxy process per control plane, in master-worker mode, managed by PID.

* Started detached (own session, parent = init) so that traffic keeps flowing while the control
  plane restarts; the master's PID is in ``haproxy.pid`` and a restarted control plane adopts it
  after checking ``/proc/PID/cmdline`` really is haproxy with our config file. Processes are only
  ever signalled by that recorded PID, never by name.
* Every change is a new ``haproxy.cfg`` (checked with ``haproxy -c`` first, then swapped in
  atomically) and SIGUSR2 to the master: it re-executes itself with the new file and the new
  worker takes over the listening sockets of the old one (HAProxy 2.x master-worker passes them
  through the master CLI socketpair), so no connection is refused during a reload; the old worker
  finishes its connections and leaves (``hard-stop-after`` bounds that).
* ``reload()`` returns once the master reports the reload done and a fresh worker is up (master
  CLI ``show proc``), so callers know the new config is what answers from then on.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from opencs.procs import alive, cmdline

log = logging.getLogger("opencs.routing")

HAPROXY_BIN = "/usr/sbin/haproxy"


class HAProxyError(RuntimeError):
    pass


def find_binary() -> Path | None:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin:/usr/bin")
    return Path(found) if found else None








@dataclass
class ProcInfo:
    """What the master CLI's ``show proc`` says."""

    master_pid: int
    reloads: int
    failed: int
    workers: list[int]  # current workers
    old_workers: list[int]  # still finishing connections of a previous config


def parse_show_proc(text: str) -> ProcInfo:
    master_pid = reloads = failed = 0
    workers: list[int] = []
    old: list[int] = []
    section = ""
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            section = "old" if "old workers" in s else "workers" if "workers" in s else section
            if "programs" in s:
                section = "programs"
            continue
        parts = s.split()
        if len(parts) >= 3 and parts[1] == "master":
            master_pid = int(parts[0])
            reloads = int(parts[2])
            if "[failed:" in s:
                with contextlib.suppress(ValueError):
                    failed = int(s.split("[failed:", 1)[1].split("]", 1)[0])
        elif len(parts) >= 2 and parts[1] == "worker" and parts[0].isdigit():
            (old if section == "old" else workers).append(int(parts[0]))
    return ProcInfo(master_pid, reloads, failed, workers, old)


class HAProxy:
    """Run (or adopt) one haproxy master in ``directory`` with config file ``haproxy.cfg``."""

    def __init__(self, directory: Path, binary: Path | None = None, *, start_timeout: float = 10.0) -> None:
        self.dir = Path(directory).resolve()
        self.binary = binary if binary is not None else (find_binary() or Path(HAPROXY_BIN))
        self.start_timeout = start_timeout
        self.config_path = self.dir / "haproxy.cfg"
        self.pid_path = self.dir / "haproxy.pid"
        self.log_path = self.dir / "haproxy.log"
        self.master_socket = self.dir / "master.sock"

    # ------------------------------------------------------------ facts

    def available(self) -> bool:
        return self.binary.exists() and os.access(self.binary, os.X_OK)

    def _is_ours(self, pid: int) -> bool:
        argv = cmdline(pid)
        return alive(pid) and bool(argv) and os.path.basename(argv[0]).startswith("haproxy") \
            and str(self.config_path) in argv

    def recorded_pid(self) -> int | None:
        """The master's PID if the PID file names a live haproxy running our config."""
        try:
            pid = int(self.pid_path.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        return pid if self._is_ours(pid) else None

    def running_config(self) -> str | None:
        if self.recorded_pid() is None:
            return None
        try:
            return self.config_path.read_text()
        except FileNotFoundError:
            return None

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------ master CLI

    def show_proc(self, timeout: float = 2.0) -> ProcInfo:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.master_socket))
            s.sendall(b"show proc;quit\n")  # quit: the master CLI keeps connections open
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        return parse_show_proc(b"".join(chunks).decode(errors="replace"))

    def _try_show_proc(self) -> ProcInfo | None:
        try:
            return self.show_proc()
        except (OSError, ValueError):
            return None  # the master is re-executing itself: its CLI is back in a moment

    # ------------------------------------------------------------ config

    def check(self, config: str) -> None:
        """``haproxy -c`` on the text; HAProxyError with haproxy's own words if it is refused."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.dir / "haproxy.cfg.check"
        tmp.write_text(config)
        try:
            r = subprocess.run([str(self.binary), "-W", "-c", "-f", str(tmp)], capture_output=True, text=True,
                               timeout=30)
        finally:
            tmp.unlink(missing_ok=True)
        if r.returncode != 0:
            out = (r.stderr or r.stdout).strip()
            alerts = [x for x in out.splitlines() if "[ALERT]" in x] or out.splitlines()
            raise HAProxyError("haproxy refused the generated config: " + " | ".join(alerts)[-2000:])

    def _write_config(self, config: str) -> None:
        tmp = self.config_path.with_suffix(".cfg.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(config)
        os.replace(tmp, self.config_path)  # atomic: the master re-reads this path on reload

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # serialises start/reload/stop between threads and processes sharing the directory
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.dir / "haproxy.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ------------------------------------------------------------ process

    def _spawn(self) -> int:
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        # `sh … &` + setsid: haproxy gets its own session and init as parent as soon as sh exits,
        # so it outlives us and never becomes our zombie; $! is haproxy's own PID after exec.
        # -W: master-worker in the foreground (its output goes to the log), -S: master CLI.
        script = 'cd "$1" && setsid "$2" -W -S "$3" -f "$4" -p "$5" >>"$6" 2>&1 </dev/null & echo $!'
        out = subprocess.run(["/bin/sh", "-c", script, "sh", str(self.dir), str(self.binary),
                              str(self.master_socket), str(self.config_path), str(self.pid_path),
                              str(self.log_path)], check=True, capture_output=True, text=True, timeout=10)
        return int(out.stdout.strip())

    def _wait_ready(self, pid: int, *, after_reloads: int = -1, failed_before: int = -1,
                    timeout: float | None = None) -> ProcInfo:
        """Until the master (``pid``) has done more than ``after_reloads`` reloads and a current
        worker runs; a reload the master reports as failed raises."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while True:
            if not alive(pid):
                raise HAProxyError(f"haproxy (pid {pid}) exited; log tail:\n{self.log_tail()}")
            info = self._try_show_proc() if self._is_ours(pid) else None
            if info is not None:
                if failed_before >= 0 and info.failed > failed_before:
                    raise HAProxyError(f"haproxy reload failed; log tail:\n{self.log_tail()}")
                if info.reloads > after_reloads and info.workers:
                    return info
            if time.monotonic() > deadline:
                raise HAProxyError(f"haproxy (pid {pid}) not ready after {timeout or self.start_timeout:.0f}s; "
                                   f"log tail:\n{self.log_tail()}")
            time.sleep(0.02)

    def _terminate(self, pid: int, grace: float = 5.0) -> None:
        if not self._is_ours(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # the master stops its workers and exits
        deadline = time.monotonic() + grace
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._is_ours(pid):  # identity re-checked: never signal a recycled PID
            log.warning("haproxy master pid %d ignored SIGTERM, sending SIGKILL", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + grace
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)

    # ------------------------------------------------------------ public

    def apply(self, config: str) -> str:
        """Make haproxy serve ``config``: start it, adopt it, or reload it (only if the text
        changed). Returns what was done: started | adopted | reloaded | unchanged."""
        if not self.available():
            raise HAProxyError(f"{self.binary} not found (apt-get install haproxy)")
        with self._lock():
            pid = self.recorded_pid()
            current = None
            if pid is not None:
                with contextlib.suppress(FileNotFoundError):
                    current = self.config_path.read_text()
                if current == config and self._try_show_proc() is not None:
                    return "unchanged"
            self.check(config)
            if pid is not None:
                info = self._try_show_proc() or self._wait_ready(pid)
                self._write_config(config)
                os.kill(pid, signal.SIGUSR2)
                try:
                    self._wait_ready(pid, after_reloads=info.reloads, failed_before=info.failed)
                except HAProxyError:
                    if current is not None:  # put back what the running workers serve
                        self._write_config(current)
                    raise
                return "reloaded"
            self.pid_path.unlink(missing_ok=True)
            self.master_socket.unlink(missing_ok=True)
            self._write_config(config)
            pid = self._spawn()
            try:
                self._wait_ready(pid)
            except HAProxyError:
                self._terminate(pid)
                raise
            log.info("started haproxy master pid %d (%s)", pid, self.config_path)
            return "started"

    def reload(self) -> None:
        """Reload with the current file (for tests and operators)."""
        with self._lock():
            pid = self.recorded_pid()
            if pid is None:
                raise HAProxyError("haproxy is not running")
            info = self._try_show_proc() or self._wait_ready(pid)
            os.kill(pid, signal.SIGUSR2)
            self._wait_ready(pid, after_reloads=info.reloads, failed_before=info.failed)

    def wait_drained(self, timeout: float = 10.0) -> bool:
        """Until no old worker is left (every connection accepted under a previous config is
        done); False if some are still busy after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            info = self._try_show_proc()
            if info is not None and not info.old_workers:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the recorded master (if it really is ours) and its workers; forget the PID."""
        if not self.dir.exists():
            return
        with self._lock():
            pid = self.recorded_pid()
            if pid is not None:
                self._terminate(pid)
                log.info("stopped haproxy master pid %d", pid)
            self.pid_path.unlink(missing_ok=True)
            self.master_socket.unlink(missing_ok=True)
