from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from opencs.auth import signature as sig
from tests.conftest import Signer


@pytest.fixture
def app(runtime: Any) -> Any:
    from opencs.api.app import create_app

    return create_app(runtime)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def creds(runtime: Any) -> tuple[str, str]:
    return runtime.keys.create("test")


@pytest.fixture(params=[sig.ROA, sig.ACS3])
def signer(request: pytest.FixtureRequest, creds: tuple[str, str]) -> Signer:
    return Signer(*creds, scheme=request.param)
