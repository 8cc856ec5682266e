"""HTTPS on the control-plane API, against real `opencs server` processes (issue 14).

Clients we did not write (aliyun-python-sdk-core with CS and RAM request classes, the Tea
alibabacloud-cs20151215 SDK), this project's SDK and CLI, over TLS with the generated CA; and a
peer beyond loopback: a network namespace this test creates, joined to the host by a veth pair
(torn down by name). Traffic goes only to loopback and to the veth pair's own addresses.
"""

from __future__ import annotations

import json
import secrets
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from opencs.cli.main import app
from opencs.config import Settings
from opencs.pki import CertAuthority, fingerprint
from opencs.pki.server_tls import cert_sans
from opencs.sdk import Client
from opencs.sdk.errors import TransportError
from tests.conftest import ServerProcess, Signer
from tests.sdks import REGION

pytestmark = pytest.mark.integration  # starts real server processes (not only in-process apps)

MONITOR_OFF = {"OPENCS_MONITOR_INTERVAL": "0"}

# a client run inside the namespace: one request, the status and body on stdout
NS_CLIENT = r"""
import http.client, json, ssl, sys
a = json.loads(sys.argv[1])
if a["scheme"] == "https":
    conn = http.client.HTTPSConnection(a["host"], a["port"], timeout=10,
                                       context=ssl.create_default_context(cafile=a["ca"]))
else:
    conn = http.client.HTTPConnection(a["host"], a["port"], timeout=10)
conn.request("GET", a["path"], headers=a["headers"])
r = conn.getresponse()
print(json.dumps({"status": r.status, "body": r.read().decode()}))
"""

RAM_CLIENT = r"""
import sys
from aliyunsdkcore.client import AcsClient
from aliyunsdkram.request.v20150501.CreateAccessKeyRequest import CreateAccessKeyRequest
c = AcsClient(sys.argv[1], sys.argv[2], "cn-beijing", auto_retry=False)
c.add_endpoint("cn-beijing", "Ram", sys.argv[3])
req = CreateAccessKeyRequest()
req.set_protocol_type("http")
try:
    print(c.do_action_with_exception(req))
except Exception as e:
    print(type(e).__name__, e)
"""


@dataclass(frozen=True)
class Netns:
    name: str
    host_ip: str  # the host's end of the veth pair
    ns_ip: str

    def request(self, scheme: str, port: int, path: str, headers: dict[str, str], ca: Path | None = None
                ) -> dict[str, Any]:
        arg = json.dumps({"scheme": scheme, "host": self.host_ip, "port": port, "path": path,
                          "headers": headers, "ca": str(ca) if ca else None})
        out = subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", NS_CLIENT, arg],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@pytest.fixture
def netns() -> Iterator[Netns]:
    if shutil.which("ip") is None or _ip("netns", "list", check=False).returncode != 0:
        pytest.skip("needs root and iproute2 (network namespaces)")
    tag = secrets.token_hex(3)
    name, veth_host, veth_ns = f"ocstls{tag}", f"vth{tag}", f"vtn{tag}"
    used = _ip("-4", "-o", "addr").stdout
    third = next(n for n in (secrets.randbelow(250) + 1 for _ in range(50)) if f"10.254.{n}." not in used)
    host_ip, ns_ip = f"10.254.{third}.1", f"10.254.{third}.2"
    try:
        _ip("netns", "add", name)
        _ip("link", "add", veth_host, "type", "veth", "peer", "name", veth_ns, "netns", name)
        _ip("addr", "add", f"{host_ip}/30", "dev", veth_host)
        _ip("link", "set", veth_host, "up")
        _ip("-n", name, "addr", "add", f"{ns_ip}/30", "dev", veth_ns)
        _ip("-n", name, "link", "set", veth_ns, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        yield Netns(name, host_ip, ns_ip)
    finally:
        _ip("netns", "del", name, check=False)  # takes the veth pair with it
        _ip("link", "del", veth_host, check=False)


def seed_cluster(data_dir: Path) -> str:
    """A cluster row with a CA and a client certificate, as a finished create leaves it."""
    from opencs.composition import build
    from opencs.store.db import utcnow
    from opencs.store.models import Cluster

    rt = build(Settings(data_dir=data_dir, workers=0, local_nodes=False))
    ca = CertAuthority.create("tls-test cluster")
    client = ca.issue_client("user")
    cid = "c" + secrets.token_hex(16)
    now = utcnow()
    try:
        with rt.db.session() as s:
            s.add(Cluster(cluster_id=cid, name="tls", state="running", size=0, region_id="local", spec={},
                          ca_cert_pem=ca.cert_pem, ca_key_enc=rt.box.encrypt(ca.key_pem),
                          client_cert_pem=client.cert_pem, client_key_enc=rt.box.encrypt(client.key_pem),
                          master_url="https://127.0.0.1:17000", created=now, updated=now))
    finally:
        rt.close()
    return cid


def signed(srv: ServerProcess, path: str) -> dict[str, str]:
    return Signer(srv.ak, srv.secret).headers("GET", path, host=srv.endpoint)


# ---------------------------------------------------------------------- plain HTTP beyond loopback


def test_secret_reply_refused_over_plain_http_beyond_loopback(tmp_path: Path, netns: Netns) -> None:
    data = tmp_path / "data"
    cid = seed_cluster(data)
    srv = ServerProcess(data, workers=0, host="0.0.0.0", args=["--insecure-http"], env=MONITOR_OFF)
    try:
        srv.start()
        path = f"/clusters/{cid}/certs"
        captured = signed(srv, path)
        far = netns.request("http", srv.port, path, captured)
        assert far["status"] == 403, far
        err = json.loads(far["body"])
        assert err["Code"] == "HttpsRequired" and "HTTPS" in err["Message"] and err["RequestId"]
        assert "PRIVATE KEY" not in far["body"]
        # RAM CreateAccessKey (a new secret) from that peer through sdk-core over plain HTTP: refused too
        ram = subprocess.run(["ip", "netns", "exec", netns.name, sys.executable, "-c", RAM_CLIENT, srv.ak, srv.secret,
                              f"{netns.host_ip}:{srv.port}"], capture_output=True, text=True, timeout=60)
        assert "HttpsRequired" in ram.stdout, ram.stdout + ram.stderr
        # the refused request's nonce is spent: replaying what crossed the network in clear text fails
        replay = httpx.get(f"http://127.0.0.1:{srv.port}{path}", headers=captured, trust_env=False)
        assert replay.json()["Code"] == "SignatureNonceUsed", replay.text
        # a reply without secrets still goes to that peer; loopback gets the key as before
        assert netns.request("http", srv.port, f"/clusters/{cid}", signed(srv, f"/clusters/{cid}"))["status"] == 200
        near = httpx.get(f"http://127.0.0.1:{srv.port}{path}", headers=signed(srv, path), trust_env=False)
        assert near.status_code == 200 and "PRIVATE KEY" in near.json()["key"]
        srv.stop()
        srv.start()  # the warning is logged at every start
        assert srv.log.read_text().count("WARNING opencs: --insecure-http") == 2
    finally:
        srv.kill()


def test_non_loopback_address_serves_https_with_matching_sans(tmp_path: Path, netns: Netns) -> None:
    data = tmp_path / "data"
    cid = seed_cluster(data)
    srv = ServerProcess(data, workers=0, host=netns.host_ip, scheme="https", env=MONITOR_OFF)
    try:
        srv.start()  # no TLS option given: HTTPS with a generated certificate
        served = ssl.get_server_certificate((netns.host_ip, srv.port))
        ips, dns = cert_sans(served)
        assert netns.host_ip in ips and "127.0.0.1" in ips and "localhost" in dns
        assert f"opencs API at https://{netns.host_ip}:{srv.port}" in srv.log.read_text()
        # plain HTTP gets no reply from a TLS port
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{srv.endpoint}/healthz", trust_env=False, timeout=5)
        # the peer in the namespace, trusting the CA, gets the secret over HTTPS (host name = IP verified)
        path = f"/clusters/{cid}/certs"
        reply = netns.request("https", srv.port, path, signed(srv, path), ca=srv.ca_file)
        assert reply["status"] == 200 and "PRIVATE KEY" in json.loads(reply["body"])["key"]
    finally:
        srv.kill()


# ---------------------------------------------------------------------- official SDKs over HTTPS


@pytest.fixture(scope="module")
def wild(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """`opencs server --host 0.0.0.0`: HTTPS with the generated certificate."""
    srv = ServerProcess(tmp_path_factory.mktemp("https") / "data", workers=0, host="0.0.0.0", scheme="https",
                        env=MONITOR_OFF)
    try:
        yield srv.start()
    finally:
        srv.kill()


def _core(srv: ServerProcess, verify: str | None) -> Any:
    from aliyunsdkcore.client import AcsClient

    c = AcsClient(srv.ak, srv.secret, REGION, auto_retry=False, timeout=30, connect_timeout=10, verify=verify)
    c.add_endpoint(REGION, "CS", srv.endpoint)
    c.add_endpoint(REGION, "Ram", srv.endpoint)
    return c


def test_sdk_core_cs_and_ram_over_https(wild: ServerProcess) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ClientException
    from aliyunsdkcs.request.v20151215.DescribeClustersRequest import DescribeClustersRequest
    from aliyunsdkram.request.v20150501.ListUsersRequest import ListUsersRequest

    client = _core(wild, str(wild.ca_file))
    cs = DescribeClustersRequest()
    cs.set_protocol_type("https")  # the CS classes default to http
    assert json.loads(client.do_action_with_exception(cs)) == []
    ram = ListUsersRequest()
    assert ram.get_protocol_type() == "https"  # left at its default
    # the RAM API (issue 10), read through the TLS session
    users = json.loads(client.do_action_with_exception(ram))
    assert users["RequestId"] and "owner" in [u["UserName"] for u in users["Users"]["User"]]
    # a client that does not trust the CA fails the handshake
    untrusting = _core(wild, None)
    for req in (ListUsersRequest(), cs):
        with pytest.raises(ClientException, match="CERTIFICATE_VERIFY_FAILED"):
            untrusting.do_action_with_exception(req)


def test_tea_sdk_over_https(wild: ServerProcess) -> None:
    from alibabacloud_cs20151215 import models
    from alibabacloud_cs20151215.client import Client as TeaClient
    from alibabacloud_tea_openapi.utils_models import Config

    def tea(ca: str | None) -> Any:
        return TeaClient(Config(access_key_id=wild.ak, access_key_secret=wild.secret, region_id=REGION,
                                endpoint=wild.endpoint, protocol="https", ca=ca, read_timeout=30000))

    # first: the Tea core keeps one requests session per endpoint, whose verified keep-alive
    # connection a later client would reuse without a handshake
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        tea(None).describe_clusters_v1(models.DescribeClustersV1Request())
    reply = tea(str(wild.ca_file)).describe_clusters_v1(models.DescribeClustersV1Request())
    assert reply.status_code == 200 and reply.body.clusters == []


def test_opencs_sdk_and_cli_verify(wild: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Client(wild.url, wild.ak, wild.secret, ca_file=str(wild.ca_file)) as cs:
        assert cs.list_clusters() == []
    with Client(wild.url, wild.ak, wild.secret, retries=0) as cs, pytest.raises(TransportError, match="not trusted"):
        cs.list_clusters()

    monkeypatch.setenv("OPENCS_CONFIG", str(tmp_path / "cfg" / "config.json"))
    for var in ("OPENCS_ENDPOINT", "OPENCS_ACCESS_KEY_ID", "OPENCS_ACCESS_KEY_SECRET", "OPENCS_CA_FILE",
                "OPENCS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    base = ["configure", "--endpoint", wild.url, "--access-key-id", wild.ak, "--access-key-secret", wild.secret,
            "--scheme", "roa"]
    runner = CliRunner()
    fp = fingerprint(wild.ca_file.read_text())
    wrong = runner.invoke(app, [*base, "--ca-fingerprint", "00" * 32])
    assert wrong.exit_code == 1 and not (tmp_path / "cfg" / "config.json").exists()
    refused = runner.invoke(app, base, input="n\n")
    assert refused.exit_code == 1 and not (tmp_path / "cfg" / "config.json").exists()
    assert runner.invoke(app, ["clusters", "list"]).exit_code == 2  # nothing configured
    confirmed = runner.invoke(app, base, input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert fp[:2].upper() + ":" in confirmed.output  # the fingerprint was shown for confirmation
    assert runner.invoke(app, ["clusters", "list"]).exit_code == 0
    scripted = runner.invoke(app, [*base, "--profile", "ci", "--ca-fingerprint", fp.upper()])
    assert scripted.exit_code == 0, scripted.output
    assert runner.invoke(app, ["--profile", "ci", "clusters", "list"]).exit_code == 0
    exported = runner.invoke(app, ["ca", "export", "--data-dir", str(wild.data_dir)])
    assert exported.exit_code == 0 and exported.output.strip() == wild.ca_file.read_text().strip()


def test_brought_certificate(tmp_path: Path) -> None:
    ca = CertAuthority.create("my company CA")
    leaf = ca.issue_server("opencs.test", dns_names=["opencs.test"])
    (tmp_path / "cert.pem").write_text(leaf.cert_pem)
    (tmp_path / "key.pem").write_text(leaf.key_pem)
    (tmp_path / "ca.pem").write_text(ca.cert_pem)
    srv = ServerProcess(tmp_path / "data", workers=0, scheme="https", env=MONITOR_OFF,
                        args=["--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"),
                              "--public-url", "https://opencs.test:443"])
    srv.ca_file.parent.mkdir(parents=True)
    srv.ca_file.write_text(ca.cert_pem)  # how this test's health check trusts it
    try:
        srv.start()
        with Client(srv.url, srv.ak, srv.secret, ca_file=str(tmp_path / "ca.pem")) as cs:
            assert cs.list_clusters() == []
        assert "opencs API at https://opencs.test:443" in srv.log.read_text()
    finally:
        srv.kill()
    bad = subprocess.run([sys.executable, "-m", "opencs.cli.main", "server", "--host", "127.0.0.1", "--data-dir",
                          str(tmp_path / "d2"), "--tls-cert", str(tmp_path / "cert.pem")],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "--tls-key" in bad.stderr
