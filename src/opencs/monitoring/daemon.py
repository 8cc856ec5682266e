"""One detached helper process run by PID: started in its own session (re-parented to init, so it
survives a control-plane restart and is adopted by the next one), recorded in a PID file, and only
ever signalled after /proc/PID/cmdline shows our binary with our config file."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from opencs.procs import alive, cmdline


class DaemonError(RuntimeError):
    pass


class Daemon:
    def __init__(self, name: str, binary: Path, config: Path, args: list[str], workdir: Path) -> None:
        self.name, self.binary, self.config, self.args, self.workdir = name, binary, config, args, workdir
        self.pid_path = workdir / f"{name}.pid"
        self.log_path = workdir / f"{name}.log"

    def _is_ours(self, pid: int) -> bool:
        argv = cmdline(pid)
        return alive(pid) and bool(argv) and os.path.basename(argv[0]) == self.binary.name and any(
            str(self.config) in a for a in argv)

    def _recorded(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def pid(self) -> int | None:
        pid = self._recorded()
        return pid if pid is not None and self._is_ours(pid) else None

    def start(self) -> int:
        if not self.binary.exists():
            raise DaemonError(f"{self.binary} is not installed (apt-get install {self.name})")
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # sh records the PID itself: a control plane killed while waiting still leaves it named
        script = ('umask 077; cd "$1"; log=$2; pidf=$3; shift 3; '
                  'setsid "$@" >>"$log" 2>&1 </dev/null & pid=$!; '
                  'echo "$pid" >"$pidf.tmp" && mv -f "$pidf.tmp" "$pidf"; echo "$pid"')
        out = subprocess.run(["/bin/sh", "-c", script, "sh", str(self.workdir), str(self.log_path),
                              str(self.pid_path), str(self.binary), *self.args],
                             check=True, capture_output=True, text=True, timeout=10)
        return int(out.stdout.strip())

    def wait_ready(self, url: str, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pid = self._recorded()  # just forked, it may not show our binary's command line yet
            if pid is None or not alive(pid):
                raise DaemonError(f"{self.name} exited: {self.log_tail()}")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200 and self._is_ours(pid):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise DaemonError(f"{self.name} not ready after {timeout:.0f}s: {self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            end = time.monotonic() + timeout
            while alive(pid) and time.monotonic() < end:
                time.sleep(0.1)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)

    def log_tail(self, n: int = 8) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return "(no log)"
