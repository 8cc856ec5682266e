"""The Kubernetes clusters' master_url (opencs.appapi.kube_frontend) against a stand-in apiserver
that, like kube-apiserver with `--requestheader-*`, accepts only the front-proxy CA's
`front-proxy-client` and reads who calls from X-Remote-User/X-Remote-Group: a recorded certificate
passes with its CN and O, identity headers the client forges are dropped, a sub-user cannot claim
system:masters, a revoked one gets a 401 Status on its next connection, an expired one fails the
handshake; a watch streams chunk by chunk and an upgraded connection (exec) carries bytes both ways.
Then a real kube-apiserver (with etcd, on loopback, no node) started with the master plan's flags:
kubectl through the endpoint is the certificate's user to it (auth whoami), RBAC applies to a
sub-user, a watch streams, a revoked certificate reaches nothing. A whole cluster (exec,
port-forward, the official client): tests/engines/kubernetes/test_k8s_access.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h11
import httpx
import pytest

from opencs.appapi.kube_frontend import KubeFrontend
from opencs.appapi.tlsstream import client_context, server_context
from opencs.engines.kubernetes.pki import FRONT_PROXY_CLIENT, ClusterPKI
from opencs.pki.ca import CertAuthority, serial_hex
from opencs.services.accounts import Principal
from opencs.services.cluster_certs import CertificateRefused
from tests.conftest import free_port

pytestmark = pytest.mark.integration  # real TLS listeners on 127.0.0.1

CID = "ckubefrontendtest"


async def stand_in_apiserver(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """/headers: what arrived and from which client certificate; /watch: three chunks 0.3 s apart;
    an Upgrade: 101, then every byte echoed."""
    conn = h11.Connection(h11.SERVER)
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            conn.receive_data(await reader.read(65536))
            continue
        break
    assert isinstance(ev, h11.Request)
    peer = writer.get_extra_info("peercert") or {}
    cn = next((v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"), "")
    headers = [(k.decode(), v.decode()) for k, v in ev.headers]
    if any(k == "upgrade" for k, _ in headers):
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
        return
    if ev.target == b"/watch":
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        for i in range(3):
            line = json.dumps({"type": "ADDED", "n": i, "at": time.monotonic()}).encode() + b"\n"
            writer.write(b"%x\r\n%s\r\n" % (len(line), line))
            await writer.drain()
            await asyncio.sleep(0.3)
        writer.write(b"0\r\n\r\n")
    else:
        body = json.dumps({"proxy_cn": cn, "headers": headers}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


@dataclass
class StubGuard:
    """identify() as opencs.services.cluster_certs does it, over a table of serials."""

    who: dict[str, Principal] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)

    def identify(self, cluster_id: str, serial: str) -> Principal:
        if serial in self.revoked:
            raise CertificateRefused(f"certificate {serial} was revoked")
        if serial not in self.who:
            raise CertificateRefused(f"certificate {serial} is unknown", code="CertificateUnknown")
        return self.who[serial]

    def kube_admission(self, who: Principal, cluster_id: str, method: str, path: str) -> None:
        return None  # the audit trail of the real guard: test_the_endpoint_manager_serves_kubernetes_clusters


@dataclass
class Env:
    url: str
    tmp: Path
    cluster_ca: CertAuthority  # account owners' certificates
    user_ca: CertAuthority  # sub-users'
    guard: StubGuard

    @property
    def ca_pem(self) -> str:
        return self.cluster_ca.cert_pem

    def client(self, ca: CertAuthority, cn: str, groups: list[str], owner: bool,
               lifetime: dt.timedelta = dt.timedelta(hours=1)) -> tuple[str, str]:
        issued = ca.issue_client(cn, rsa=False, lifetime=lifetime, orgs=groups)
        serial = serial_hex(issued.cert_pem)
        self.guard.who[serial] = Principal("AK" + serial[:6], "1", "u" + serial[:6], cn, owner, ())
        cert, key = self.tmp / f"{serial}.crt", self.tmp / f"{serial}.key"
        cert.write_text(issued.cert_pem)
        key.write_text(issued.key_pem)
        return str(cert), str(key)

    def http(self, cert: tuple[str, str]) -> httpx.Client:
        ctx = ssl.create_default_context(cadata=self.ca_pem)
        ctx.load_cert_chain(*cert)
        return httpx.Client(base_url=self.url, verify=ctx, trust_env=False, timeout=10)


def stand_in_apiserver_context(pki: ClusterPKI, tmp_path: Path) -> ssl.SSLContext:
    """TLS of a stand-in kube-apiserver: its serving certificate, and only front-proxy clients."""
    api = pki.apiserver(["127.0.0.1"], "10.96.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=pki.front_proxy_ca().cert_pem)
    ctx.verify_mode = ssl.CERT_REQUIRED
    (tmp_path / "api.pem").write_text(api.cert_pem + api.key_pem)
    ctx.load_cert_chain(str(tmp_path / "api.pem"))
    return ctx


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    import threading

    pki = ClusterPKI.create(CID)
    user_ca = CertAuthority.create(f"opencs cluster {CID} users")
    up_port, port = free_port(), free_port()
    up_ctx = stand_in_apiserver_context(pki, tmp_path)
    fp = pki.front_proxy_client()
    server = pki.ca.issue_server("opencs-kube-endpoint", ips=["127.0.0.1"])
    guard = StubGuard()
    front = KubeFrontend(CID, server_context(pki.ca.cert_pem, server.cert_pem, server.key_pem,
                                             [pki.ca.cert_pem, user_ca.cert_pem]),
                         client_context(pki.ca.cert_pem, fp.cert_pem, fp.key_pem),
                         [f"https://127.0.0.1:{up_port}"], "127.0.0.1", port, guard)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def main() -> None:
        up = await asyncio.start_server(stand_in_apiserver, "127.0.0.1", up_port, ssl=up_ctx)
        await front.start()
        started.set()
        try:
            await stop.wait()
        finally:
            await front.stop()
            up.close()

    task = loop.create_task(main())
    t = threading.Thread(target=loop.run_until_complete, args=(task,), daemon=True)
    t.start()
    assert started.wait(10)
    try:
        yield Env(f"https://127.0.0.1:{port}", tmp_path, pki.ca, user_ca, guard)
    finally:
        loop.call_soon_threadsafe(stop.set)
        t.join(10)
        loop.close()


def test_identity_revocation_and_expiry(env: Env) -> None:
    front_ca, user_ca = env.cluster_ca, env.user_ca
    owner = env.client(front_ca, "1:owner", ["system:masters"], owner=True)
    with env.http(owner) as c:
        got = c.get("/headers", headers={"X-Remote-User": "forged", "X-Remote-Group": "system:masters",
                                         "Authorization": "Bearer stolen", "Impersonate-User": "x"}).json()
    h = got["headers"]
    assert got["proxy_cn"] == FRONT_PROXY_CLIENT
    assert [v for k, v in h if k == "x-remote-user"] == ["1:owner"]
    assert [v for k, v in h if k == "x-remote-group"] == ["system:masters"]
    assert not [k for k, _ in h if k in ("authorization", "impersonate-user")]

    # a sub-user's certificate (the users' CA) never passes system:masters on
    dev = env.client(user_ca, "1:dev", ["system:masters", "opencs", "team"], owner=False)
    with env.http(dev) as c:
        h = c.get("/headers").json()["headers"]
    assert [v for k, v in h if k == "x-remote-user"] == ["1:dev"]
    assert [v for k, v in h if k == "x-remote-group"] == ["team"]

    # revoked: the next connection gets a 401 Status and reaches nothing
    env.guard.revoked.add(serial_hex(Path(dev[0]).read_text()))
    with env.http(dev) as c:
        r = c.get("/headers")
    assert r.status_code == 401 and r.json()["kind"] == "Status" and r.json()["reason"] == "Unauthorized"
    assert r.json()["Code"] == "CertificateRevoked"
    # unknown to opencs (a certificate of the cluster CA it did not record, e.g. a component's)
    with env.http(_unrecorded(env, front_ca)) as c:
        assert c.get("/headers").json()["Code"] == "CertificateUnknown"
    # expired: OpenSSL refuses it at the handshake
    old = env.client(front_ca, "1:owner", ["system:masters"], owner=True, lifetime=dt.timedelta(seconds=1))
    time.sleep(1.5)
    with env.http(old) as c, pytest.raises(httpx.HTTPError):
        c.get("/headers")


def test_watch_streams_and_upgrade_splices(env: Env) -> None:
    front_ca = env.cluster_ca
    owner = env.client(front_ca, "1:owner", ["system:masters"], owner=True)
    seen = []
    with env.http(owner) as c, c.stream("GET", "/watch") as r:
        for line in r.iter_lines():
            if line:
                seen.append((json.loads(line)["n"], time.monotonic()))
    assert [n for n, _ in seen] == [0, 1, 2]
    assert seen[2][1] - seen[0][1] > 0.4  # each event as it came, not the whole body at the end

    ctx = ssl.create_default_context(cadata=env.ca_pem)
    ctx.load_cert_chain(*owner)
    host, port = env.url.removeprefix("https://").split(":")
    with socket.create_connection((host, int(port)), 10) as raw, ctx.wrap_socket(raw, server_hostname=host) as s:
        s.sendall(b"GET /api/v1/namespaces/default/pods/p/exec HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101")
        s.sendall(b"hello exec")
        echoed = b""
        while len(echoed) < 10:
            echoed += s.recv(4096)
        assert echoed == b"hello exec"


def _unrecorded(env: Env, ca: CertAuthority) -> tuple[str, str]:
    issued = ca.issue_client("system:node:x", rsa=False, orgs=["system:nodes"])
    cert, key = env.tmp / "unrecorded.crt", env.tmp / "unrecorded.key"
    cert.write_text(issued.cert_pem)
    key.write_text(issued.key_pem)
    return str(cert), str(key)


@pytest.fixture
def real_apiserver(tmp_path: Path) -> Iterator[tuple[ClusterPKI, str]]:
    """etcd and kube-apiserver on loopback, no node: the apiserver's argv is the master plan's own
    (opencs.engines.kubernetes.plans), so its --requestheader-* flags are what clusters run with."""
    import subprocess

    from opencs.engines.kubernetes import binary
    from opencs.engines.kubernetes.config import ClusterNetwork
    from opencs.engines.kubernetes.plans import _apiserver
    from opencs.engines.kubernetes.topology import Member

    try:
        exe = str(binary.binary())
    except binary.BinaryMissing as e:
        pytest.skip(str(e))
    pki = ClusterPKI.create(CID)
    d = tmp_path / "pki"
    d.mkdir()
    api = pki.apiserver(["127.0.0.1"], "10.96.0.1")
    for name, text in {"ca.crt": pki.ca.cert_pem, "apiserver.crt": api.cert_pem, "apiserver.key": api.key_pem,
                       "sa.key": pki.sa_key_pem, "sa.pub": pki.sa_pub_pem,
                       "front-proxy-ca.crt": pki.front_proxy_ca().cert_pem,
                       "apiserver-kubelet-client.crt": api.cert_pem,
                       "apiserver-kubelet-client.key": api.key_pem}.items():
        (d / name).write_text(text)
    etcd_port, peer, port = free_port(), free_port(), free_port()
    argv = _apiserver(exe, d, Member("m", "127.0.0.1"), [Member("m", "127.0.0.1")], ClusterNetwork())
    argv[argv.index("--secure-port") + 1] = str(port)
    argv[argv.index("--etcd-servers") + 1] = f"http://127.0.0.1:{etcd_port}"
    procs = [subprocess.Popen([exe, "etcd", "--data-dir", str(tmp_path / "etcd"), "--unsafe-no-fsync",
                               "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                               "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                               "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                               "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                               "--initial-cluster", f"default=http://127.0.0.1:{peer}", "--log-level", "error"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    log = open(tmp_path / "apiserver.log", "wb")  # noqa: SIM115 - closed in teardown
    procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
    try:
        ctx = ssl.create_default_context(cadata=pki.ca.cert_pem)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"https://127.0.0.1:{port}/readyz", verify=ctx, timeout=2).status_code in (200, 401, 403):
                    break
            except httpx.HTTPError:
                pass
            assert procs[1].poll() is None, (tmp_path / "apiserver.log").read_text()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("kube-apiserver did not answer in 120 s")
        yield pki, f"https://127.0.0.1:{port}"
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
        log.close()


def test_a_real_apiserver_takes_the_front_proxys_word(real_apiserver: tuple[ClusterPKI, str], tmp_path: Path) -> None:
    """kubectl through the endpoint: the apiserver sees the certificate's user and groups (auth
    whoami), RBAC applies to a sub-user, a watch streams, a revoked certificate reaches nothing."""
    import subprocess
    import threading

    import yaml

    pki, upstream = real_apiserver
    user_ca = CertAuthority.create(f"opencs cluster {CID} users")
    port = free_port()
    fp = pki.front_proxy_client()
    server = pki.ca.issue_server("opencs-kube-endpoint", ips=["127.0.0.1"])
    guard = StubGuard()
    front = KubeFrontend(CID, server_context(pki.ca.cert_pem, server.cert_pem, server.key_pem,
                                             [pki.ca.cert_pem, user_ca.cert_pem]),
                         client_context(pki.ca.cert_pem, fp.cert_pem, fp.key_pem), [upstream], "127.0.0.1", port,
                         guard)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()

    async def main() -> None:
        await front.start()
        started.set()
        try:
            await stop.wait()
        finally:
            await front.stop()

    t = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    t.start()
    assert started.wait(10)
    env = Env(f"https://127.0.0.1:{port}", tmp_path, pki.ca, user_ca, guard)

    def kubeconfig(name: str, ca: CertAuthority, cn: str, groups: list[str], owner: bool) -> Path:
        import base64

        cert, key = env.client(ca, cn, groups, owner)
        b64 = {k: base64.b64encode(Path(v).read_bytes()).decode() for k, v in (("c", cert), ("k", key))}
        doc = {"apiVersion": "v1", "kind": "Config", "current-context": "x",
               "clusters": [{"name": "x", "cluster": {"server": env.url, "certificate-authority-data":
                                                     base64.b64encode(pki.ca.cert_pem.encode()).decode()}}],
               "users": [{"name": "x", "user": {"client-certificate-data": b64["c"], "client-key-data": b64["k"]}}],
               "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}]}
        path = tmp_path / name
        path.write_text(yaml.safe_dump(doc))
        return path

    from opencs.engines.kubernetes.binary import bin_dir

    exe = str(bin_dir() / "kubectl")

    def kubectl(kc: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([exe, "--kubeconfig", str(kc), "--request-timeout", "20s", *args],
                              capture_output=True, text=True, timeout=60)

    try:
        owner = kubeconfig("owner", pki.ca, "1:owner", ["system:masters"], True)
        who = kubectl(owner, "auth", "whoami", "-o", "json")
        assert who.returncode == 0, who.stderr
        info = json.loads(who.stdout)["status"]["userInfo"]
        assert info["username"] == "1:owner" and "system:masters" in info["groups"], info
        assert kubectl(owner, "create", "namespace", "team").returncode == 0
        watch = subprocess.Popen([exe, "--kubeconfig", str(owner), "get", "configmaps", "-n", "team", "--watch",
                                  "-o", "name"], stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(2)
            assert kubectl(owner, "create", "configmap", "-n", "team", "seen-live").returncode == 0
            assert watch.stdout is not None
            lines = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and "configmap/seen-live" not in lines:
                lines.append(watch.stdout.readline().strip())
            assert "configmap/seen-live" in lines, lines  # streamed while the watch stays open
        finally:
            watch.kill()
            watch.wait(10)
        dev = kubeconfig("dev", user_ca, "1:dev", ["system:masters", "opencs"], False)
        refused = kubectl(dev, "get", "namespaces")
        assert refused.returncode != 0 and 'User "1:dev" cannot list resource "namespaces"' in refused.stderr, \
            refused.stderr
        guard.revoked.add(next(s for s, p in guard.who.items() if p.user_name == "1:owner"))
        gone = kubectl(owner, "get", "namespaces")
        assert gone.returncode != 0 and "must be logged in" in gone.stderr, gone.stderr  # kubectl's words for 401
    finally:
        loop.call_soon_threadsafe(stop.set)
        t.join(10)
        loop.close()


def test_the_endpoint_manager_serves_kubernetes_clusters(tmp_path: Path) -> None:
    """Wiring: the endpoint manager starts the checking endpoint of a (managed) Kubernetes cluster,
    writes it as master_url, and the kubeconfig of GET /k8s/{id}/user_config (recorded, owner's)
    passes through it with the front-proxy credential derived from the cluster's CA in the store."""
    import base64
    import threading

    import yaml

    from opencs.composition import build, endpoint_manager
    from opencs.config import Settings
    from opencs.engines.kubernetes.frontproxy import FrontProxyBackends
    from opencs.store.db import utcnow
    from opencs.store.models import Cluster, InstanceRow
    from opencs.store.tenancy import ROOT_ACCOUNT_ID

    plane = build(Settings(data_dir=tmp_path / "data", workers=0, local_nodes=False))
    pki = ClusterPKI.create(CID)
    now = utcnow()
    with plane.db.session() as s:
        s.add(Cluster(cluster_id=CID, name="kube", cluster_type="ManagedKubernetes", state="running", size=1,
                      region_id="local", account_id=ROOT_ACCOUNT_ID, spec={}, created=now, updated=now,
                      ca_cert_pem=pki.ca.cert_pem, ca_key_enc=plane.box.encrypt(pki.ca.key_pem)))
        s.add(InstanceRow(instance_id="i-kubefrontendtest0001", provider="fake", cluster_id=CID, role="worker",
                          state="running", created=now, updated=now))
    up_port = free_port()
    up_ctx = stand_in_apiserver_context(pki, tmp_path)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    started = threading.Event()

    async def upstream() -> None:
        up = await asyncio.start_server(stand_in_apiserver, "127.0.0.1", up_port, ssl=up_ctx)
        started.set()
        await stop.wait()
        up.close()

    t = threading.Thread(target=loop.run_until_complete, args=(upstream(),), daemon=True)
    t.start()
    assert started.wait(10)
    mgr = endpoint_manager(plane)  # its backends, but for the apiserver: the stand-in
    mgr.kube = FrontProxyBackends(lambda cid: f"https://127.0.0.1:{up_port}", plane.cluster_certs.cluster_ca)
    try:
        mgr.start()
        mgr.sync()
        master_url = plane.clusters.get_row(CID).master_url
        assert master_url == mgr.url(mgr.port(CID) or 0), master_url
        doc = yaml.safe_load(plane.cluster_certs.issue_kubeconfig(CID, None, 60)["config"])
        assert doc["clusters"][0]["cluster"]["server"] == master_url
        user = doc["users"][0]["user"]
        (tmp_path / "c.pem").write_bytes(base64.b64decode(user["client-certificate-data"]))
        (tmp_path / "k.pem").write_bytes(base64.b64decode(user["client-key-data"]))
        ctx = ssl.create_default_context(cadata=base64.b64decode(
            doc["clusters"][0]["cluster"]["certificate-authority-data"]).decode())
        ctx.load_cert_chain(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))
        got = httpx.get(f"{master_url}/headers", verify=ctx, trust_env=False, timeout=10).json()
        h = got["headers"]
        assert got["proxy_cn"] == FRONT_PROXY_CLIENT
        assert [v for k, v in h if k == "x-remote-user"] == [f"{ROOT_ACCOUNT_ID}:owner"]
        assert [v for k, v in h if k == "x-remote-group"] == ["system:masters"]

        # mutating calls go on the audit trail (who, verb, path, the apiserver's status), reads and bodies do not
        pods = f"{master_url}/api/v1/namespaces/default/pods"
        made = httpx.post(f"{pods}?fieldManager=x", verify=ctx, trust_env=False, timeout=10,
                          json={"kind": "Secret", "data": {"token": "c2VjcmV0LWluLWJvZHk="}})
        assert made.status_code == 200
        assert httpx.delete(f"{pods}/web", verify=ctx, trust_env=False, timeout=10).status_code == 200
        deadline = time.monotonic() + 10  # written once the apiserver's reply was passed on
        while len(trail := [e for e in plane.audit.query(ROOT_ACCOUNT_ID, limit=100)
                            if e.action.startswith("k8s:")]) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(e.action, e.resource.split(f"cluster/{CID}")[1], e.outcome) for e in trail] == [
            ("k8s:create", "/api/v1/namespaces/default/pods", "200"),
            ("k8s:delete", "/api/v1/namespaces/default/pods/web", "200")]
        assert trail[0].user_name == "owner" and trail[0].source == "127.0.0.1" and trail[0].request_id
        assert "c2VjcmV0" not in repr(plane.audit.query(None, limit=1000)) and plane.audit.verify().ok
    finally:
        mgr.stop()
        loop.call_soon_threadsafe(stop.set)
        t.join(10)
        loop.close()
        plane.close()
