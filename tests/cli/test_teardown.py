"""`opencs teardown` refusals and the no-op case (tests/providers/test_two_servers.py tears down real nodes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opencs.cli.main import app
from opencs.providers import hostclaims

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="opencs teardown needs root")


def test_a_missing_data_dir_is_a_usage_error(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["teardown", "--data-dir", str(tmp_path / "nope")])
    assert r.exit_code == 2
    assert "no data dir" in r.output or "must run as root" in r.output


@root_only
def test_refused_while_a_server_holds_the_data_dir(tmp_path: Path) -> None:
    use = hostclaims.DataDirUse(tmp_path)
    try:
        r = CliRunner().invoke(app, ["teardown", "--data-dir", str(tmp_path)])
        assert r.exit_code == 1 and "stop it first" in r.output
    finally:
        use.release()


@root_only
def test_a_data_dir_without_nodes_or_claims_is_left_as_it_is(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["teardown", "--data-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"data_dir": str(tmp_path.resolve()), "destroyed_nodes": [], "released": None}
