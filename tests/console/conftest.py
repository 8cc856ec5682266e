"""The console's in-process fixtures: a control plane without workers and the console mounted on its app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from opencs.api.app import create_app
from opencs.composition import ControlPlane, build
from opencs.config import Settings
from opencs.console.app import mount


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    rt = build(Settings(data_dir=tmp_path / "data", workers=0))  # tasks stay pending: no nodes are made
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def http(plane: ControlPlane) -> Iterator[TestClient]:
    app = create_app(plane)
    mount(app, plane)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
