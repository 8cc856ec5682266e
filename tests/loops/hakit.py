"""Several control-plane processes on one PostgreSQL database and one data dir (issue 13 item 2), for
the HA test and bench/ha.py: start and kill -9 them by name, tell who holds a duty or runs a task,
and probe master_url and routed traffic continuously to measure the gap a takeover leaves."""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import select

from opencs.config import Settings
from opencs.sdk import Client
from opencs.sdk.app import mtls_context
from opencs.store.db import Database
from opencs.store.models import InstanceRow, Lease, Task
from tests.clusterkit import node_env
from tests.conftest import free_port
from tests.routing.conftest import fetch

SERVERS, WORKERS = ("server-a", "server-b"), ("worker-a", "worker-b")
__all__ = ["SERVERS", "WORKERS", "Fleet", "Probe", "fetch", "master_url_probe", "routed_probe"]


class Fleet:
    """2 `opencs server` + 2 `opencs worker` processes sharing `pg_url` and `data`; killed by PID."""

    def __init__(self, tmp: Path, pg_url: str, prefix: str, subnet: str, env: dict[str, str] | None = None) -> None:
        self.tmp, self.data, self.pg_url = tmp, tmp / "data", pg_url
        self.prefix, self.subnet = prefix, subnet
        self.ak, self.secret = "LTAIha" + secrets.token_hex(6), secrets.token_urlsafe(24)
        self.env = {**os.environ, **node_env(prefix, subnet), "OPENCS_MONITOR_INTERVAL": "1",
                    "OPENCS_TASK_LEASE_SECONDS": "5", "OPENCS_USAGE_INTERVAL": "0",
                    "OPENCS_BOOTSTRAP_ACCESS_KEY_ID": self.ak, "OPENCS_BOOTSTRAP_ACCESS_KEY_SECRET": self.secret,
                    **(env or {})}
        self.ports = {name: free_port() for name in SERVERS}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: list[str] = []
        self.db = Database(Settings(data_dir=self.data, database_url=pg_url).resolved_database_url)

    # ------------------------------------------------------------ processes

    def start(self, name: str, timeout: float = 60.0) -> float:
        """Start `name` and wait until it serves (a server: /healthz; a worker: its log says so); the
        seconds that took. A start that does not finish says where the process is and what its
        database sessions wait on."""
        self.data.mkdir(parents=True, exist_ok=True)
        base = [sys.executable, "-m", "opencs.cli.main"]
        common = ["--data-dir", str(self.data), "--database-url", self.pg_url, "--workers", "2"]
        cmd = base + (["server", "--port", str(self.ports[name]), *common] if name in SERVERS else ["worker", *common])
        log_file = self.tmp / f"{name}.log"
        ready_before = log_file.read_bytes().count(b"opencs worker running") if log_file.exists() else 0
        t0 = time.monotonic()
        with open(log_file, "ab") as log:
            self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        while time.monotonic() - t0 < timeout:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited:\n{log_file.read_text()[-3000:]}")
            if name in SERVERS:
                try:
                    if httpx.get(f"http://127.0.0.1:{self.ports[name]}/healthz", timeout=0.5).status_code == 200:
                        return time.monotonic() - t0
                except httpx.HTTPError:
                    pass
            elif log_file.read_bytes().count(b"opencs worker running") > ready_before:
                return time.monotonic() - t0
            time.sleep(0.1)
        raise RuntimeError(f"{name} not up in {timeout}s\n{self.diagnose(name)}")

    def diagnose(self, name: str) -> str:
        """The stacks of `name` (py-spy, where installed), the fleet's database sessions with what
        blocks them, and the end of its log."""
        out = []
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if os.path.exists(spy):
            dump = subprocess.run([spy, "dump", "--pid", str(self.pid(name))], capture_output=True, text=True,
                                  timeout=30)
            out.append(dump.stdout or dump.stderr)
        with psycopg.connect(self.pg_url) as c:
            out += [repr(row) for row in c.execute(
                "SELECT pid, state, wait_event_type, wait_event, pg_blocking_pids(pid), now() - xact_start, "
                "left(query, 200) FROM pg_stat_activity WHERE datname = current_database()")]
        out.append((self.tmp / f"{name}.log").read_text()[-3000:])
        return "\n".join(out)

    def errors(self) -> str:
        """Every ERROR record (a failed task stage's traceback included) in the processes' logs."""
        out = []
        for log_file in sorted(self.tmp.glob("*.log")):
            lines = log_file.read_text(errors="replace").splitlines()
            starts = [i for i, line in enumerate(lines) if " ERROR " in line]
            for i in starts:
                block = [lines[i]]
                block += itertools.takewhile(lambda ln: not ln[:4].isdigit(), lines[i + 1:i + 60])
                out.append(f"--- {log_file.name}\n" + "\n".join(block))
        return "\n".join(out) or "(no ERROR in the processes' logs)"

    def start_all(self) -> None:
        for name in (*SERVERS, *WORKERS):  # one after the other: the first one migrates the store
            self.start(name)

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def kill9(self, name: str) -> float:
        """SIGKILL `name` (no clean release of anything); the time it died."""
        p = self.procs[name]
        p.send_signal(signal.SIGKILL)
        p.wait(15)
        self.killed.append(name)
        return time.monotonic()

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(15)
        self.db.close()

    def api(self) -> Client:
        """A control-plane client of a live server (any of them serves every request)."""
        for name in SERVERS:
            if name in self.procs and self.procs[name].poll() is None:
                return Client(f"http://127.0.0.1:{self.ports[name]}", self.ak, self.secret)
        raise RuntimeError("no server is running")

    # ------------------------------------------------------------ the store's view

    def _name(self, owner: str | None) -> str | None:
        try:
            pid = int((owner or "").split(":")[1])
        except (IndexError, ValueError):
            return None
        return next((n for n, p in self.procs.items() if p.pid == pid and p.poll() is None), None)

    def holder(self, duty: str) -> str | None:
        """Which process holds `duty` now (None: nobody, or one that is dead)."""
        with self.db.session() as s:
            row = s.get(Lease, duty)
            return self._name(row.holder) if row is not None and row.expires > time.time() else None

    def wait_holder(self, duty: str, timeout: float = 30.0) -> str:
        end = time.time() + timeout
        while (name := self.holder(duty)) is None:
            assert time.time() < end, f"nobody holds {duty}"
            time.sleep(0.1)
        return name

    def task(self, task_id: str) -> Task:
        with self.db.session() as s:
            row = s.get(Task, task_id)
            assert row is not None
            return row

    def task_owner(self, task_id: str) -> str | None:
        t = self.task(task_id)
        return self._name(t.owner) if t.state == "running" else None

    def wait_owned(self, task_id: str, stage: str | None = None, timeout: float = 120.0) -> str | None:
        """The process running `task_id` once it is in `stage` (None if the task ended first)."""
        end = time.time() + timeout
        while time.time() < end:
            t = self.task(task_id)
            if t.state in ("success", "fail"):
                return None
            owner = self._name(t.owner) if t.state == "running" else None
            if owner is not None and (stage is None or t.current_stage == stage):
                return owner
            time.sleep(0.02)
        raise AssertionError(f"task {task_id} never reached {stage}")

    def active_tasks(self) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(Task.task_id).where(Task.state.in_(("pending", "running")))))

    def instances(self) -> dict[str, str]:
        with self.db.session() as s:
            return {r.instance_id: r.state for r in s.scalars(select(InstanceRow))}


class Probe:
    """Calls `check` every `every` s in a thread; the gap is the longest time between two successes."""

    def __init__(self, name: str, check: Callable[[], bool], every: float = 0.05) -> None:
        self.name, self.check, self.every = name, check, every
        self.failures = 0
        self._last_ok: float | None = None
        self._gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"probe-{name}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ok = self.check()
            except Exception:
                ok = False
            now = time.monotonic()
            if ok:
                if self._last_ok is not None:
                    self._gap = max(self._gap, now - self._last_ok)
                self._last_ok = now
            else:
                self.failures += 1
            self._stop.wait(self.every)

    def start(self, timeout: float = 60.0) -> Probe:
        self._thread.start()
        end = time.time() + timeout
        while self._last_ok is None:
            assert time.time() < end, f"{self.name} never answered"
            time.sleep(0.05)
        return self

    def window(self) -> None:
        """Start measuring the gap afresh (one phase of a test)."""
        self._gap, self.failures = 0.0, 0

    def gap(self) -> float:
        """The longest time without a success so far in this window (an outage still going on counts)."""
        ongoing = time.monotonic() - self._last_ok if self._last_ok is not None else float("inf")
        return max(self._gap, ongoing)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def master_url_probe(master_url: str, certs: Any) -> Probe:
    """The Docker API through master_url (mutual TLS with the cluster's certificate): GET /_ping."""
    client = httpx.Client(verify=mtls_context(certs), timeout=1.0)

    def check() -> bool:
        return client.get(f"{master_url}/_ping").status_code == 200

    return Probe("master_url", check)


def routed_probe(port: int, host: str) -> Probe:
    def check() -> bool:
        status, body = fetch(port, host, timeout=1.0)
        return status == 200 and body.startswith("v")

    return Probe("routing", check)
