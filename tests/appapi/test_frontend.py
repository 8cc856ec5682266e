"""The per-cluster Application API endpoint (master_url) against a real 2-node swarm: the docker
CLI over mTLS through the proxy, refused handshakes, dispatch to the ASGI app, persistence."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import queue
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from opencs.appapi import route
from opencs.appapi.frontend import ClusterFrontend
from opencs.appapi.tlsstream import server_context
from opencs.composition import ControlPlane, endpoint_manager
from opencs.loops.endpoints import EndpointManager
from opencs.pki.ca import CertAuthority
from opencs.store.models import Cluster, InstanceRow
from tests.clusterkit import create_cluster, node_runtime, write_certs

pytestmark = pytest.mark.integration  # real TLS listeners, and real nodes in some tests

PORTS = (28900, 28949)  # outside the blocks data dirs are allocated (opencs.providers.hostclaims.Pool)
PORTS_B = (28950, 28999)  # a second data dir while the module's first one lives: its own block
SERVICE = "oca-ticker"


# ---------------------------------------------------------------- routing (no nodes)


@pytest.mark.parametrize(
    ("path", "target", "app_path"),
    [
        ("/projects/", "app", "/projects/"),
        ("/projects", "app", "/projects"),
        ("/v1.41/projects/web/start", "app", "/projects/web/start"),
        ("/services/", "app", "/services/"),
        ("/services/web_db/scale", "app", "/services/web_db/scale"),
        ("/service/test_web/start", "app", "/service/test_web/start"),  # spec §10.20's example
        ("/volumes/create", "app", "/volumes/create"),
        ("/volumes", "app", "/volumes"),
        # versioned /services and /volumes are the Docker API (docker service ls, docker volume ls)
        ("/v1.41/services", "engine", None),
        ("/v1.41/volumes", "engine", None),
        ("/v1.41/info", "engine", None),
        ("/_ping", "engine", None),
        ("/projectsX", "engine", None),
        ("/v1.41/containers/json", "engine", None),
    ],
)
def test_route(path: str, target: str, app_path: str | None) -> None:
    r = route(path)
    assert r.target == target
    if app_path:
        assert r.path == app_path


# ---------------------------------------------------------------- a stand-in for opencs.appapi.app


async def stand_in_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes what the frontend handed over (until the real app exists)."""
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                scope["state"]["from_lifespan"] = "yes"
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    data = json.dumps({
        "cluster_id": scope["state"]["cluster_id"], "request_id": scope["state"]["request_id"],
        "from_lifespan": scope["state"].get("from_lifespan"), "method": scope["method"], "path": scope["path"],
        "query": scope["query_string"].decode(), "body": body.decode(),
    }).encode()  # fmt: skip
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


# ---------------------------------------------------------------- helpers


@dataclass
class Env:
    rt: ControlPlane
    cid: str
    mgr: EndpointManager
    certs: Path
    tmp: Path

    @property
    def port(self) -> int:
        p = self.mgr.port(self.cid)
        assert p is not None
        return p

    def docker(self, *args: str, certs: Path | None = None, input: bytes | None = None, timeout: float = 60,
               check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(docker_cmd(self, certs or self.certs, *args), input=input, capture_output=True,
                              timeout=timeout, check=check, env=docker_env(self.tmp))

    def out(self, *args: str, **kw: Any) -> str:
        return self.docker(*args, **kw).stdout.decode()

    def client_tls(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.certs / "ca.pem"))
        ctx.load_cert_chain(str(self.certs / "cert.pem"), str(self.certs / "key.pem"))
        return ctx

    def https(self, host: str = "127.0.0.1") -> httpx.Client:
        # trust_env=False: REQUESTS_CA_BUNDLE/SSL_CERT_FILE in this environment must not replace our CA
        return httpx.Client(base_url=f"https://{host}:{self.port}", verify=self.client_tls(), trust_env=False,
                            timeout=20)


def docker_cmd(env: Env, certs: Path, *args: str) -> list[str]:
    return ["docker", "--tlsverify", f"--tlscacert={certs / 'ca.pem'}", f"--tlscert={certs / 'cert.pem'}",
            f"--tlskey={certs / 'key.pem'}", "-H", f"tcp://127.0.0.1:{env.port}", *args]


def docker_env(tmp: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    e["DOCKER_CONFIG"] = str(tmp / "docker-config")  # never the user's ~/.docker
    return e


def manager_socket(rt: ControlPlane, cid: str) -> str:
    with rt.db.session() as s:
        r = s.scalars(select(InstanceRow).where(InstanceRow.cluster_id == cid, InstanceRow.role == "manager")).first()
        assert r is not None
        return r.docker_host


def wait_for(fn: Any, timeout: float = 60, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def cluster_row(rt: ControlPlane, cid: str) -> Cluster:
    with rt.db.session() as s:
        c = s.get(Cluster, cid)
        assert c is not None
        return c


def set_state(rt: ControlPlane, cid: str, state: str) -> None:
    with rt.db.session() as s:
        c = s.get(Cluster, cid)
        assert c is not None
        c.state = state


def tls_client(ca_pem: str, cert: tuple[str, str] | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca_pem)
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


def refused(port: int, ctx: ssl.SSLContext) -> str:
    """The TLS error the server answers with (the handshake, or with TLS 1.3 the first read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n")
                data = tls.recv(100)
        except (ssl.SSLError, ConnectionResetError) as e:
            return str(e)
    raise AssertionError(f"the server answered {data!r}")


# ---------------------------------------------------------------- the cluster


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("appapi")
    with node_runtime(tmp / "d", prefix="oca", subnet="10.216.0.0/24", appapi=False,
                      appapi_port_range=PORTS) as rt:
        cid = create_cluster(rt, 2, name="oca-appapi")
        certs = write_certs(rt, cid, tmp / "certs")
        e = Env(rt, cid, endpoint_manager(rt, app_factory=lambda: stand_in_app), certs, tmp)
        e.mgr.start()
        try:
            yield e
        finally:
            e.mgr.stop()  # a test may have replaced it (restart)
            assert not any(t.name == "opencs-appapi" for t in threading.enumerate())


def test_master_url_and_docker_info(env: Env) -> None:
    c = cluster_row(env.rt, env.cid)
    assert c.master_url == f"https://127.0.0.1:{env.port}"
    assert c.spec["appapi_port"] == env.port and PORTS[0] <= env.port <= PORTS[1]
    assert "BEGIN" not in json.dumps(c.spec["appapi_tls"]["key_enc"])  # stored encrypted
    info = json.loads(env.out("info", "--format", "{{json .}}"))
    assert info["Swarm"]["LocalNodeState"] == "active"
    assert info["Swarm"]["ControlAvailable"] is True
    assert info["Swarm"]["Nodes"] == 2
    nodes = env.out("node", "ls", "--format", "{{.Status}} {{.ManagerStatus}}").split("\n")
    assert sorted(n.strip() for n in nodes if n) == ["Ready", "Ready Leader"]


def test_service_logs_exec_events(env: Env) -> None:
    since = int(time.time()) - 1
    script = "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.3; done"
    env.out("service", "create", "--detach", "--name", SERVICE, "--endpoint-mode", "dnsrr", "--no-resolve-image",
            "--constraint", "node.role==manager", "busybox", "sh", "-c", script)
    try:
        assert SERVICE in env.out("service", "ls", "--format", "{{.Name}}")
        wait_for(lambda: "Running" in env.out("service", "ps", SERVICE, "--format", "{{.CurrentState}}"),
                 what="the task to run")

        # logs -f streams: lines arrive while the stream stays open; then the CLI is killed
        proc = subprocess.Popen(docker_cmd(env, env.certs, "service", "logs", "-f", "--raw", SERVICE),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=docker_env(env.tmp))
        lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in iter(proc.stdout.readline, b"")],  # type: ignore[union-attr]
                         daemon=True).start()
        try:
            got = [lines.get(timeout=20) for _ in range(4)]
        finally:
            proc.kill()
            proc.wait(10)
        assert all(g.startswith(b"tick-") for g in got), got
        # the proxy notices the client left and lets go of the engine stream
        wait_for(lambda: env.mgr._frontends[env.cid].connections == 0, 15, "the streams to close")

        # exec (the container runs on the manager: the proxy reaches the manager's engine only)
        ctr = wait_for(lambda: env.out("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={SERVICE}")
                       .strip(), what="the container")
        assert env.out("exec", ctr, "echo", "hi") == "hi\n"
        # stdin ends first (TLS close_notify from the CLI); the output must still come back
        assert env.out("exec", "-i", ctr, "cat", input=b"hello\n") == "hello\n"
        blob = os.urandom(3 * 1024 * 1024)
        assert env.out("exec", "-i", ctr, "md5sum", input=blob).split()[0] == hashlib.md5(blob).hexdigest()
        assert env.docker("exec", ctr, "sh", "-c", "exit 3", check=False).returncode == 3
        # a request body (a tar archive) through the proxy: docker cp
        src = env.tmp / "payload.txt"
        src.write_text("copied through the proxy\n")
        env.out("cp", str(src), f"{ctr}:/tmp/payload.txt")
        assert env.out("exec", ctr, "cat", "/tmp/payload.txt") == "copied through the proxy\n"

        until = int(time.time()) + 1
        events = env.out("events", "--since", str(since), "--until", str(until), "--format",
                         "{{.Type}} {{.Action}}", timeout=30)
        assert "service create" in events and "container start" in events, events
    finally:
        env.docker("service", "rm", SERVICE, check=False)


def test_wrong_or_missing_client_certificate_is_refused(env: Env) -> None:
    ca_pem = (env.certs / "ca.pem").read_text()
    other = CertAuthority.create("another cluster")
    foreign = other.issue_client("intruder")
    bad = env.tmp / "other-certs"
    bad.mkdir(exist_ok=True)
    (bad / "ca.pem").write_text(ca_pem)  # trusts our server; only the client certificate is foreign
    (bad / "cert.pem").write_text(foreign.cert_pem)
    (bad / "key.pem").write_text(foreign.key_pem)
    (bad / "key.pem").chmod(0o600)

    assert "unknown ca" in refused(env.port, tls_client(ca_pem, (str(bad / "cert.pem"), str(bad / "key.pem"))))
    assert "certificate required" in refused(env.port, tls_client(ca_pem, None))
    r = env.docker("info", certs=bad, check=False, timeout=30)
    assert r.returncode != 0 and b"certificate" in r.stderr, r.stderr
    # our server certificate names 127.0.0.1 and localhost, issued by the cluster CA
    with env.https() as c:
        assert c.get("/_ping").text == "OK"
    with env.https("localhost") as c:
        assert c.get("/_ping").status_code == 200


def test_malformed_request_gets_400(env: Env) -> None:
    ctx = env.client_tls()
    with socket.create_connection(("127.0.0.1", env.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400 "), data


def test_projects_services_volumes_go_to_the_app(env: Env) -> None:
    with env.https() as c:  # one keep-alive connection for several app requests
        r = c.get("/projects/", params={"q": "web"})
        assert r.status_code == 200
        body = r.json()
        assert body["cluster_id"] == env.cid and body["path"] == "/projects/" and body["query"] == "q=web"
        assert body["from_lifespan"] == "yes"
        assert r.headers["x-acs-request-id"] == body["request_id"]
        r = c.post("/v1.41/projects/", json={"name": "web", "template": "x"})
        assert r.json()["path"] == "/projects/" and json.loads(r.json()["body"])["name"] == "web"
        assert c.get("/services/web_db").json()["path"] == "/services/web_db"
        assert c.post("/volumes/create", json={"name": "v"}).json()["method"] == "POST"
        # and the Docker API next to it, on a new connection each time (Connection: close)
        assert c.get("/v1.41/services").json() == []
        assert "Swarm" in c.get("/v1.41/info").json()


def test_unreachable_manager_answers_502(env: Env) -> None:
    sock = manager_socket(env.rt, env.cid)
    with env.rt.db.session() as s:
        row = s.scalars(select(InstanceRow).where(InstanceRow.docker_host == sock)).one()
        row.docker_host = "unix:///nonexistent/oca/docker.sock"
    try:
        env.mgr.sync()
        with env.https() as c:
            r = c.get("/v1.41/info")
        assert r.status_code == 502 and "no swarm manager reachable" in r.json()["message"]
        r2 = env.docker("info", check=False, timeout=30)
        assert r2.returncode != 0
    finally:
        with env.rt.db.session() as s:
            s.scalars(select(InstanceRow).where(InstanceRow.docker_host.like("%nonexistent%"))).one().docker_host = sock
        env.mgr.sync()
    with env.https() as c:
        assert c.get("/_ping").status_code == 200


def test_next_manager_is_tried(env: Env) -> None:
    """A dead manager first in line: the frontend falls through to the next one."""
    c = cluster_row(env.rt, env.cid)
    ca = CertAuthority(c.ca_cert_pem or "", env.rt.box.decrypt(c.ca_key_enc or ""))
    srv = ca.issue_server("test-frontend", ips=["127.0.0.1"])
    good = manager_socket(env.rt, env.cid)

    async def main() -> int:
        f = ClusterFrontend(env.cid, server_context(ca.cert_pem, srv.cert_pem, srv.key_pem), None,
                            ["unix:///nonexistent/a.sock", good], "127.0.0.1", 0)
        await f.start()
        assert f._server is not None
        port = f._server.sockets[0].getsockname()[1]
        try:
            async with httpx.AsyncClient(verify=env.client_tls(), trust_env=False) as cl:
                r = await cl.get(f"https://127.0.0.1:{port}/v1.41/version")
                assert r.status_code == 200 and r.json()["ApiVersion"] == "1.41"
                # no app configured: the extension routes say so
                assert (await cl.get(f"https://127.0.0.1:{port}/projects/")).status_code == 503
        finally:
            await f.stop()
        return port

    asyncio.run(main())


def test_listener_follows_the_cluster_state_and_survives_a_restart(env: Env) -> None:
    port, url = env.port, cluster_row(env.rt, env.cid).master_url
    cert = cluster_row(env.rt, env.cid).spec["appapi_tls"]["cert"]
    set_state(env.rt, env.cid, "failed")
    try:
        env.mgr.sync()
        assert env.mgr.port(env.cid) is None
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        set_state(env.rt, env.cid, "running")
    env.mgr.sync()
    assert env.mgr.port(env.cid) == port

    # a new manager (a control-plane restart) reuses the port, the URL and the certificate
    env.mgr.stop()
    mgr2 = endpoint_manager(env.rt, app_factory=lambda: stand_in_app)
    mgr2.start()
    env.mgr = mgr2  # the fixture stops whichever is current
    assert mgr2.port(env.cid) == port
    c = cluster_row(env.rt, env.cid)
    assert c.master_url == url and c.spec["appapi_tls"]["cert"] == cert
    assert json.loads(env.out("info", "--format", "{{json .Swarm.NodeID}}"))


def test_cluster_tasks_wait_for_the_endpoint(env: Env) -> None:
    """With appapi on, a cluster is "running" only with its endpoint's master_url; delete stops it."""
    env.rt.settings.appapi, env.rt._appapi = True, env.mgr  # what ControlPlane.start sets up
    try:
        cid2 = create_cluster(env.rt, 1, name="oca-appapi-2")
        c = cluster_row(env.rt, cid2)  # no sleep: set before the task reported success
        port2 = env.mgr.port(cid2)
        assert c.state == "running" and port2 and port2 != env.port
        assert c.master_url == f"https://127.0.0.1:{port2}"
        certs2 = write_certs(env.rt, cid2, env.tmp / "certs2")
        # each endpoint serves its own swarm, and only to its own cluster's certificate
        assert json.loads(env.out("info", "--format", "{{json .Swarm.Nodes}}")) == 2
        env2 = Env(env.rt, cid2, env.mgr, certs2, env.tmp)
        assert json.loads(env2.out("info", "--format", "{{json .Swarm.Nodes}}")) == 1
        ca2 = (certs2 / "ca.pem").read_text()
        assert "unknown ca" in refused(port2, tls_client(ca2, (str(env.certs / "cert.pem"),
                                                                str(env.certs / "key.pem"))))
        tid = env.rt.clusters.delete(cid2)
        assert env.rt.tasks.wait(tid, 60).state == "success"
        wait_for(lambda: env.mgr.port(cid2) is None, 10, "the endpoint to stop")
        assert cluster_row(env.rt, cid2).master_url == ""
    finally:
        env.rt.settings.appapi, env.rt._appapi = False, None


def test_runtime_starts_and_stops_the_manager(tmp_path: Path) -> None:
    from opencs.composition import build
    from opencs.config import Settings

    rt = build(Settings(data_dir=tmp_path / "d", local_nodes=False, workers=0, monitor_interval=0,
                               appapi_port_range=PORTS_B))
    try:
        rt.start()
        mgr = rt._appapi
        assert isinstance(mgr, EndpointManager) and mgr._thread is not None and mgr._thread.is_alive()
        thread = mgr._thread
    finally:
        rt.close()
    assert not thread.is_alive()
