"""Shared fixtures: runtimes on SQLite and PostgreSQL, signed test clients, real server processes."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import httpx
import pytest
from starlette.testclient import TestClient

from opencs.auth import signature as sig

if TYPE_CHECKING:
    from opencs.store.db import Database

PG_URL = os.environ.get("OPENCS_TEST_PG_URL", "")


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test (needs OPENCS_TEST_PG_URL)."""
    if not PG_URL:
        pytest.skip("OPENCS_TEST_PG_URL not set (.ci/run starts Debian's postgresql and sets it)")
    name = "opencs_t_" + secrets.token_hex(4)
    _pg_admin(f"CREATE DATABASE {name}")
    base = PG_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        _pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """Run a test on both stores."""
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("pg_url")


@pytest.fixture
def runtime(tmp_path: Path, database_url: str | None) -> Iterator[Any]:
    from opencs.composition import build
    from opencs.config import Settings
    from opencs.providers import hostclaims

    rt = build(Settings(data_dir=tmp_path / "data", database_url=database_url, workers=0,
                        task_plugins=["tests.plugins.sdk_tasks"]))
    try:
        yield rt
    finally:
        rt.close()
        hostclaims.release(tmp_path / "data")  # the host-wide claims index keeps nothing of this test


@pytest.fixture
def db(tmp_path: Path, database_url: str | None) -> Iterator[Database]:
    """A migrated store of its own on SQLite and on PostgreSQL (`database_url`): the store's and the
    console's state tests."""
    from opencs.config import Settings
    from opencs.store.db import Database, migrate

    d = Database(Settings(data_dir=tmp_path, database_url=database_url).resolved_database_url)
    migrate(d.engine)
    try:
        yield d
    finally:
        d.close()


# the kind of a test is a marker, not a folder: a module that starts real processes declares
# `pytestmark = pytest.mark.integration`; real nodes (docker), PostgreSQL and server_factory imply it.
# `-m "not integration"` runs the rest, without root
_REAL_FIXTURES = {"server_factory", "pg_url"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        real = item.get_closest_marker("docker") or item.get_closest_marker("postgres")
        if real or _REAL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


class Signer:
    """Signs requests like the official SDKs do (for negative tests we tamper afterwards)."""

    def __init__(self, ak: str, secret: str, scheme: str = sig.ROA) -> None:
        self.ak, self.secret, self.scheme = ak, secret, scheme

    def headers(self, method: str, path: str, query: dict[str, str] | list[tuple[str, str]] | None = None,
                body: bytes = b"",
                *, nonce: str | None = "auto", date: float | None = None, host: str = "testserver",
                content_type: str | None = "application/json") -> dict[str, str]:
        when = time.time() if date is None else date
        h = {
            "accept": "application/json",
            "host": host,
            "x-acs-version": "2015-12-15",
            "date": formatdate(when, usegmt=True),
            "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)),
        }
        if self.scheme == sig.ROA:
            h["x-acs-signature-method"] = "HMAC-SHA1"
            h["x-acs-signature-version"] = "1.0"
        if nonce:
            h["x-acs-signature-nonce"] = str(uuid.uuid4()) if nonce == "auto" else nonce
        if body and content_type:
            h["content-type"] = content_type
        # a list keeps repeated keys in their order (the canonical form sorts by name only, stably)
        pairs = sorted(query.items()) if isinstance(query, dict) else list(query or [])
        return sig.sign_headers(method=method, path=path, query=pairs, headers=h,
                                body=body, access_key_id=self.ak, secret=self.secret, scheme=self.scheme)

    def url(self, path: str, query: dict[str, str] | None = None) -> str:
        return path + ("?" + urlencode(query) if query else "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A real `opencs server` subprocess; killed by its PID in teardown."""

    def __init__(self, data_dir: Path, database_url: str | None = None, env: dict[str, str] | None = None,
                 workers: int = 2, host: str = "127.0.0.1", args: list[str] | None = None,
                 scheme: str = "http", connect_host: str | None = None) -> None:
        self.data_dir = data_dir
        # host/args: `opencs server` flags; scheme/connect_host: how this test reaches it
        self.host, self.args, self.scheme = host, list(args or []), scheme
        self.connect_host = connect_host or ("127.0.0.1" if host in ("0.0.0.0", "::") else host)
        self.database_url = database_url
        self.port = free_port()
        self.ak = "LTAItest" + secrets.token_hex(6)
        self.secret = secrets.token_urlsafe(24)
        self.env = {**os.environ, "OPENCS_BOOTSTRAP_ACCESS_KEY_ID": self.ak,
                    "OPENCS_BOOTSTRAP_ACCESS_KEY_SECRET": self.secret, **(env or {})}
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    @property
    def endpoint(self) -> str:
        return f"{self.connect_host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.endpoint}"

    @property
    def ca_file(self) -> Path:
        """The CA the server generated in its data dir (HTTPS without --tls-cert)."""
        return self.data_dir / "tls" / "ca.pem"

    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.scheme == "https" else True

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "opencs.cli.main", "server", "--host", self.host, "--port",
               str(self.port), "--data-dir", str(self.data_dir), "--workers", str(self.workers), *self.args]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=logf, stderr=subprocess.STDOUT)
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=0.5, verify=self.verify()).status_code == 200:
                    return self
            except (httpx.HTTPError, OSError):  # OSError: the CA file is not written yet
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self, sig_: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig_)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[ServerProcess] = []

    def make(**kw: Any) -> ServerProcess:
        data_dir = kw.pop("data_dir", tmp_path / f"srv{len(started)}")
        s = ServerProcess(data_dir, **kw)
        started.append(s)
        return s

    try:
        yield make
    finally:
        for s in started:
            s.kill()


# signed in-process clients of the control-plane API (any test directory may use them)
@pytest.fixture
def app(runtime: Any) -> Any:
    from opencs.api.app import create_app

    return create_app(runtime)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def existing_cluster(runtime: Any) -> str:
    """A running Swarm cluster of the first account as a store row (no nodes): a target whose
    request bodies are validated (a cluster the caller's account does not have is 404 first)."""
    from opencs.store.db import utcnow
    from opencs.store.models import Cluster

    cid, now = "c" + "e" * 32, utcnow()
    with runtime.db.session() as s:
        s.add(Cluster(cluster_id=cid, name="existing", state="running", size=1, region_id="local", spec={},
                      created=now, updated=now))
    return cid


@pytest.fixture
def creds(runtime: Any) -> tuple[str, str]:
    return runtime.keys.create("test")


@pytest.fixture(params=[sig.ROA, sig.ACS3])
def signer(request: pytest.FixtureRequest, creds: tuple[str, str]) -> Signer:
    return Signer(*creds, scheme=request.param)
