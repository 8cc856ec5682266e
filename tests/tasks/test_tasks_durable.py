"""Durable tasks: a server killed with SIGKILL mid-task resumes it after restart; several worker
processes on one PostgreSQL never run the same task twice (issue 2, item 6)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from opencs.composition import build
from opencs.config import Settings
from tests.conftest import Signer

pytestmark = pytest.mark.integration  # starts real server processes (not only in-process apps)

PLUGIN_ENV = {"OPENCS_TASK_PLUGINS": "tests.plugins.slow_tasks", "OPENCS_TASK_LEASE_SECONDS": "3",
              "OPENCS_MONITOR_INTERVAL": "0"}


def journal(path: Path) -> list[list[str]]:
    return [ln.split(":") for ln in path.read_text().splitlines()] if path.exists() else []


def submit(data_dir: Path, database_url: str | None, params: dict[str, Any], n: int = 1) -> list[str]:
    rt = build(Settings(data_dir=data_dir, database_url=database_url, workers=0, local_nodes=False,
                               task_plugins=["tests.plugins.slow_tasks"]))
    try:
        return [rt.tasks.submit("test_slow", params) for _ in range(n)]
    finally:
        rt.close()


def get_task(server: Any, task_id: str) -> dict[str, Any]:
    s = Signer(server.ak, server.secret)
    path = f"/tasks/{task_id}"
    r = httpx.get(f"http://{server.endpoint}{path}", headers=s.headers("GET", path, host=server.endpoint))
    assert r.status_code == 200, r.text
    return r.json()


def wait_state(server: Any, task_id: str, states: tuple[str, ...], timeout: float = 30) -> dict[str, Any]:
    end = time.time() + timeout
    while time.time() < end:
        t = get_task(server, task_id)
        if t["state"] in states:
            return t
        time.sleep(0.1)
    raise AssertionError(f"{task_id} not in {states} after {timeout}s: {t}")


@pytest.mark.slow
def test_sigkill_mid_task_resumes_after_restart(server_factory: Any, tmp_path: Path, database_url: Any) -> None:
    jpath = tmp_path / "journal"
    env = {**PLUGIN_ENV, "OPENCS_TEST_JOURNAL": str(jpath), "PYTHONPATH": str(Path(__file__).parents[2])}
    data = tmp_path / "data"
    srv = server_factory(data_dir=data, database_url=database_url, env=env).start()
    (tid,) = submit(data, database_url, {"s1": 0.1, "s2": 3.0, "s3": 0.1})
    # wait until stage two is running, then kill -9 the whole server
    end = time.time() + 20
    while not any(r[1] == "two" and r[2] == "begin" for r in journal(jpath)):
        assert time.time() < end, "stage two never started"
        time.sleep(0.05)
    t = get_task(srv, tid)
    assert t["state"] == "running" and t["current_stage"] == "two"
    first_pid = srv.proc.pid
    srv.kill()
    srv2 = server_factory(data_dir=data, database_url=database_url, env=env)
    srv2.ak, srv2.secret = srv.ak, srv.secret
    srv2.env.update(OPENCS_BOOTSTRAP_ACCESS_KEY_ID=srv.ak, OPENCS_BOOTSTRAP_ACCESS_KEY_SECRET=srv.secret)
    srv2.start()
    t = wait_state(srv2, tid, ("success", "fail"))
    assert t["state"] == "success", t
    assert [s["state"] for s in t["stages"]] == ["success"] * 3
    rows = journal(jpath)
    # stage one ran once (not repeated after the restart); two was interrupted and re-run by the new process
    assert [r for r in rows if r[1] == "one" and r[2] == "end"].__len__() == 1
    two = [(r[2], int(r[3])) for r in rows if r[1] == "two"]
    assert ("begin", first_pid) in two and ("end", srv2.proc.pid) in two
    assert ("end", first_pid) not in two
    assert [r for r in rows if r[1] == "three"] and all(int(r[3]) == srv2.proc.pid for r in rows if r[1] == "three")


@pytest.mark.slow
def test_failed_stage_rolls_back_and_reports(server_factory: Any, tmp_path: Path) -> None:
    jpath = tmp_path / "journal"
    env = {**PLUGIN_ENV, "OPENCS_TEST_JOURNAL": str(jpath), "PYTHONPATH": str(Path(__file__).parents[2])}
    data = tmp_path / "data"
    srv = server_factory(data_dir=data, env=env).start()
    (tid,) = submit(data, None, {"fail_at": "two"})
    t = wait_state(srv, tid, ("success", "fail"))
    assert t["state"] == "fail"
    assert t["error"]["code"] == "TestFailure" and "rolled back" in t["error"]["message"]
    assert [s["state"] for s in t["stages"]] == ["success", "fail", "pending"]
    assert any(r[2] == "rollback" for r in journal(jpath))


@pytest.mark.slow
@pytest.mark.postgres
def test_several_workers_on_postgres_never_run_a_task_twice(pg_url: str, tmp_path: Path) -> None:
    jpath = tmp_path / "journal"
    env = {**os.environ, **PLUGIN_ENV, "OPENCS_TEST_JOURNAL": str(jpath),
           "PYTHONPATH": str(Path(__file__).parents[2])}
    data = tmp_path / "data"
    # all processes share the database and the secret key file
    tids = submit(data, pg_url, {"s1": 0.01, "s2": 0.02, "s3": 0.01}, n=40)
    procs = []
    try:
        for i in range(3):
            with open(tmp_path / f"w{i}.log", "w") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "opencs.cli.main", "worker", "--data-dir", str(data), "--database-url",
                     pg_url, "--workers", "3"], env=env, stdout=subprocess.DEVNULL, stderr=log))
        rt = build(Settings(data_dir=data, database_url=pg_url, workers=0, local_nodes=False,
                                   task_plugins=["tests.plugins.slow_tasks"]))
        try:
            end = time.time() + 90
            while time.time() < end:
                states = [rt.tasks.get(t).state for t in tids]
                if all(s == "success" for s in states):
                    break
                time.sleep(0.3)
            assert all(s == "success" for s in states), states
        finally:
            rt.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
    rows = journal(jpath)
    begins = [(r[0], r[1]) for r in rows if r[2] == "begin"]
    assert len(begins) == len(set(begins)) == 40 * 3, "a stage ran twice"
    assert len({r[3] for r in rows}) >= 2, "work was not shared between processes"
