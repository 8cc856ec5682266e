"""The README's quick start, followed line by line: its ``sh`` blocks are read from README.md and run
as they stand, in ``bash -e``, against a real server making a real 2-node Swarm (local nodes,
prefix ``oqa``, 10.232.0.0/24). Only these lines differ, and each is asserted to be in the README:

- ``scripts/run-server.sh &``: this test starts the same ``opencs server`` itself (a free port,
  ``./opencs-data``, where it writes ``admin-credentials.json`` as a first start does);
- ``http://127.0.0.1:8990``: that server's URL;
- ``. .venv/bin/activate``: this checkout's virtualenv.

The browser paragraph is checked as far as a page goes here (the console answers at the URL the
README names with its sign-in page); tests/console/test_console_e2e.py drives the rest in Chromium.
Teardown destroys what the server made, by the ids in its data dir, even when a line fails.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.clusterkit import destroy_everything, node_env, require_local_nodes
from tests.conftest import ServerProcess

PREFIX, SUBNET = "oqa", "10.232.0.0/24"  # every oc[a-z] is taken; oqa is no one else's either
README = Path(__file__).resolve().parents[2] / "README.md"
SERVER_LINE = "scripts/run-server.sh &"
ENDPOINT = "http://127.0.0.1:8990"
ACTIVATE = ". .venv/bin/activate"


def quick_start() -> tuple[list[str], str]:
    """The section's text and its sh blocks."""
    text = README.read_text()
    section = text[text.index("## Quick start"):]
    section = section[:section.index("\nThe same calls through an official SDK")]
    return re.findall(r"```sh\n(.*?)```", section, re.S), section


def test_the_quick_start_is_the_console_and_the_cli() -> None:
    blocks, section = quick_start()
    assert [b.splitlines()[0].split("#")[0].strip() for b in blocks] == [SERVER_LINE, ACTIVATE]
    assert f"{ENDPOINT}/console/" in section and "admin-credentials.json" in section
    assert all(line.startswith(("opencs ", "eval ", "printf ", "AK=", "SK=", "CID=", ". ")) or not line
               for line in blocks[1].splitlines())  # the CLI, nothing else


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    require_local_nodes()
    data = tmp_path / "opencs-data"
    srv = ServerProcess(data, env={**node_env(PREFIX, SUBNET), "OPENCS_MONITOR_INTERVAL": "0"})
    try:
        srv.start(timeout=90)
        # a first start without OPENCS_BOOTSTRAP_* writes this file (opencs server's bootstrap)
        fd = os.open(data / "admin-credentials.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"access_key_id": srv.ak, "access_key_secret": srv.secret}, f)
        yield srv
    finally:
        srv.kill()
        destroy_everything(data, PREFIX, SUBNET)


@pytest.mark.integration
@pytest.mark.docker
@pytest.mark.slow
def test_the_quick_start_runs_as_written(server: ServerProcess, tmp_path: Path) -> None:
    blocks, _ = quick_start()
    assert blocks[0].startswith(SERVER_LINE)  # started by the fixture

    page = httpx.get(f"{server.url}/console/", follow_redirects=True, timeout=30)
    assert page.status_code == 200 and "Sign in" in page.text

    script = blocks[1]
    assert script.count(ACTIVATE) == 1 and ENDPOINT in script
    venv = Path(sys.executable).parent
    script = script.replace(ACTIVATE, f". {venv / 'activate'}").replace(ENDPOINT, server.url)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENCS_", "DOCKER_")) and k not in ("VIRTUAL_ENV",)}
    env.update(HOME=str(home), OPENCS_CONFIG=str(home / ".opencs" / "config.json"),
               DOCKER_CONFIG=str(tmp_path / "docker-config"))
    p = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=1200)
    assert p.returncode == 0, f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    out = p.stdout
    assert "demo" in out and "running" in out  # clusters list
    assert "Project web created" in out and "Project web: running" in out
    assert "Service web_web: scaled to 3" in out
    assert re.search(r"^\S+ \| serving$", out, re.M)  # projects logs: '<container> | <line>'
    assert re.search(r"Z  task ", out)  # events: time, kind, reason ...
    assert "web_web" in out and "REPLICAS" in out  # docker service ls through the cluster's certificate
    assert "trigger_url" in out
    assert f"Task {json.loads((tmp_path / 'demo.json').read_text())['task_id']} succeeded" in p.stderr
