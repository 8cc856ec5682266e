"""Issue 10 items 2, 3 and 5 against a real `opencs server` and a real one-node swarm: per-user cluster
certificates from the official SDK, the Docker SDK and the docker CLI on master_url and on the node
endpoint, revocation / a disabled key / expiry refused on the next connection, the sub-user's policies
on Application API calls, a signed trigger that redeploys once (a replay or a stale timestamp fires
nothing), and the audit entries of all of it. One cluster serves every test of the module."""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
from cryptography import x509
from cryptography.x509.oid import NameOID

from opencs.sdk import Client
from tests.clusterkit import destroy_everything, node_env, require_local_nodes
from tests.conftest import ServerProcess
from tests.sdks import core_call, core_client, sdk291

PREFIX, SUBNET = "ocu", "10.231.0.0/24"
TEMPLATE = """
version: '3'
services:
  app:
    image: busybox
    command: sleep 3600
    stop_grace_period: 1s
"""


@dataclass
class Env:
    srv: ServerProcess
    tmp: Path
    cid: str = ""
    owner: Client | None = None
    dev_key: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)  # every secret the run handed out (grepped for in the log)

    @property
    def c(self) -> Client:
        assert self.owner is not None
        return self.owner

    def master(self) -> str:
        return str(self.c.describe_cluster(self.cid)["master_url"])

    def write(self, name: str, certs: dict[str, str]) -> Path:
        d = self.tmp / name
        d.mkdir(exist_ok=True)
        for k in ("ca", "cert", "key"):
            (d / f"{k}.pem").write_text(certs[k])
        (d / "key.pem").chmod(0o600)
        self.secrets.append(_key_body(certs["key"]))
        return d


def _key_body(pem: str) -> str:
    """A line from the middle of a private key: it must never reach a log."""
    lines = [x for x in pem.splitlines() if x and not x.startswith("-----")]
    return lines[len(lines) // 2]


def ram(env: Env, name: str, **params: str) -> dict[str, Any]:
    import importlib

    from aliyunsdkcore.client import AcsClient

    c = AcsClient(env.srv.ak, env.srv.secret, "cn-beijing", auto_retry=False, timeout=30)
    c.add_endpoint("cn-beijing", "Ram", env.srv.endpoint)
    req = getattr(importlib.import_module(f"aliyunsdkram.request.v20150501.{name}Request"), f"{name}Request")()
    req.set_protocol_type("http")
    for k, v in params.items():
        getattr(req, f"set_{k}")(v)
    return json.loads(c.do_action_with_exception(req))


def sdk_certs(env: Env, ak: str, secret: str, minutes: int | None = None) -> dict[str, str]:
    """DescribeClusterCerts through aliyun-python-sdk-cs 2.9.1 (the Swarm-era class)."""
    req = sdk291("DescribeClusterCertsRequest")()
    req.set_ClusterId(env.cid)
    if minutes:
        req.add_query_param("TemporaryDurationMinutes", str(minutes))
    return core_call(core_client(env.srv.endpoint, ak, secret), req)


def docker_sdk(base: str, certs: Path) -> docker.DockerClient:
    tls = docker.tls.TLSConfig(client_cert=(str(certs / "cert.pem"), str(certs / "key.pem")),
                               ca_cert=str(certs / "ca.pem"), verify=True)
    client = docker.DockerClient(base_url=base.replace("https://", "tcp://"), tls=tls, version="1.41", timeout=30)
    client.api.trust_env = False  # REQUESTS_CA_BUNDLE would replace the cluster CA
    return client


def docker_cli(env: Env, certs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    e["DOCKER_CONFIG"] = str(env.tmp / "docker-config")
    host = env.master().replace("https://", "tcp://")
    return subprocess.run(["docker", "--tlsverify", f"--tlscacert={certs / 'ca.pem'}",
                           f"--tlscert={certs / 'cert.pem'}", f"--tlskey={certs / 'key.pem'}", "-H", host, *args],
                          capture_output=True, text=True, timeout=60, env=e)


def app_session(certs: Path) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would replace the cluster CA
    s.cert = (str(certs / "cert.pem"), str(certs / "key.pem"))
    s.verify = str(certs / "ca.pem")
    return s


def subject(pem: str) -> dict[str, str]:
    cert = x509.load_pem_x509_certificate(pem.encode())
    return {a.rfc4514_attribute_name: str(a.value) for a in cert.subject} | {
        "issuer": cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
        "days": str((cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).total_seconds() / 86400)}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    require_local_nodes()
    tmp = tmp_path_factory.mktemp("usercerts")
    srv = ServerProcess(tmp / "data", env={**node_env(PREFIX, SUBNET), "OPENCS_MONITOR_INTERVAL": "0"})
    e = Env(srv, tmp)
    try:
        srv.start()
        e.owner = Client(srv.url, srv.ak, srv.secret, retries=0)
        out = e.c.create_cluster({"name": "usercerts", "size": 1})
        e.c.wait_task(out["task_id"], timeout=180)
        e.cid = out["cluster_id"]
        e.secrets.append(srv.secret)
        # a sub-user who may get certificates and work with projects, and nothing else
        ram(e, "CreateUser", UserName="dev")
        key = ram(e, "CreateAccessKey", UserName="dev")["AccessKey"]
        e.dev_key = {"ak": key["AccessKeyId"], "secret": key["AccessKeySecret"]}
        e.secrets.append(key["AccessKeySecret"])
        doc = {"Version": "1", "Statement": [{"Effect": "Allow", "Resource": f"acs:cs:*:*:cluster/{e.cid}",
                                              "Action": ["cs:GetClusterCerts", "cs:DescribeProjects",
                                                         "cs:CreateProject", "cs:DescribeProject",
                                                         "cs:DescribeService"]}]}
        ram(e, "CreatePolicy", PolicyName="projects-only", PolicyDocument=json.dumps(doc))
        ram(e, "AttachPolicyToUser", UserName="dev", PolicyName="projects-only", PolicyType="Custom")
        yield e
    finally:
        srv.kill()
        destroy_everything(srv.data_dir, PREFIX, SUBNET)


@pytest.mark.docker
def test_each_user_gets_its_own_certificate(env: Env) -> None:
    owner = sdk_certs(env, env.srv.ak, env.srv.secret)
    dev = sdk_certs(env, env.dev_key["ak"], env.dev_key["secret"], minutes=30)
    assert owner["key"].startswith("-----BEGIN RSA PRIVATE KEY-----") and owner["serial"] != dev["serial"]
    so, sd = subject(owner["cert"]), subject(dev["cert"])
    assert (so["CN"], so["OU"], so["UID"]) == ("owner", "account 1000000000000001", env.srv.ak)
    assert (sd["CN"], sd["UID"]) == ("dev", env.dev_key["ak"])
    assert 364 < float(so["days"]) <= 365 and 29 / 1440 < float(sd["days"]) <= 30 / 1440
    # the owner's comes from the cluster CA (the nodes trust it too), the sub-user's from the users' CA
    assert so["issuer"] == f"opencs cluster {env.cid}" and sd["issuer"] == f"opencs cluster {env.cid} users"
    assert owner["ca"] == dev["ca"]  # both verify master_url's server certificate
    od, dd = env.write("owner", owner), env.write("dev", dev)

    base = env.master()
    assert docker_sdk(base, od).info()["Swarm"]["LocalNodeState"] == "active"
    assert docker_sdk(base, dd).ping() is True
    # the node endpoint (tcp://IP:2376) checks only the CA: the owner's certificate, never the sub-user's
    (node,) = env.c.cluster_nodes(env.cid)["nodes"]
    node_url = f"tcp://{node['ip_address'][0]}:2376"
    assert docker_sdk(node_url, od).version()["ApiVersion"]
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError, ssl.SSLError),
                       match=r"(?i)ssl|certificate|tls|alert"):
        docker_sdk(node_url, dd).version()
    states = env.c.request("GET", f"/clusters/{env.cid}/certs/states")["certs"]
    assert {(s["user_name"], s["state"]) for s in states} == {("owner", "valid"), ("dev", "valid")}


@pytest.mark.docker
def test_sub_user_policies_on_the_application_api(env: Env) -> None:
    dd, od = env.tmp / "dev", env.tmp / "owner"
    base = env.master()
    with pytest.raises(docker.errors.APIError) as e:
        docker_sdk(base, dd).containers.list()
    assert e.value.status_code == 403 and "cs:DescribeDockerApi" in str(e.value.explanation)
    dev = app_session(dd)
    assert dev.get(f"{base}/projects/", timeout=30).status_code == 200
    r = dev.post(f"{base}/projects/", json={"name": "web", "template": TEMPLATE}, timeout=120)
    assert r.status_code == 201, r.text
    end = time.time() + 120
    while (p := dev.get(f"{base}/projects/web", timeout=30).json())["current_state"] not in ("running", "failed"):
        assert time.time() < end, p
        time.sleep(0.5)
    assert p["current_state"] == "running"
    r = dev.delete(f"{base}/projects/web", timeout=30)
    assert r.status_code == 403 and r.json()["Code"] == "Forbidden.RAM" and r.json()["RequestId"]
    r = app_session(dd).post(f"{base}/services/web_app/scale", json={"web_app": 2}, timeout=30)
    assert r.status_code == 403
    assert app_session(od).get(f"{base}/projects/web", timeout=30).json()["current_state"] == "running"
    # the owner may use the Docker API; its mutating calls go on record too
    assert docker_cli(env, od, "volume", "create", "ocu-vol").returncode == 0
    entries = env.c.request("GET", "/audit", query={"limit": "1000"})["entries"]
    got = {(x["action"], x["user_name"], x["outcome"]) for x in entries}
    assert ("cs:CreateProject", "dev", "201") in got
    assert ("cs:DeleteProject", "dev", "403 Forbidden.RAM") in got
    assert ("cs:ScaleService", "dev", "403 Forbidden.RAM") in got
    assert ("cs:InvokeDockerApi", "owner", "201") in got
    certs = [x for x in entries if x["action"] == "cs:GetClusterCerts" and x["user_name"] == "dev"]
    assert certs and certs[0]["resource"].endswith(f"cluster/{env.cid}/cert/{subject_serial(dd)}")


def subject_serial(certs: Path) -> str:
    return format(x509.load_pem_x509_certificate((certs / "cert.pem").read_bytes()).serial_number, "x")


@pytest.mark.docker
def test_revoked_disabled_and_expired_certificates_are_refused(env: Env) -> None:
    second = env.write("owner2", env.c.cluster_certs(env.cid))
    assert docker_cli(env, second, "info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip() == "active"
    env.c.request("DELETE", f"/clusters/{env.cid}/certs/{subject_serial(second).upper()}")
    r = docker_cli(env, second, "info")
    assert r.returncode != 0 and "revoked" in r.stderr, r.stderr
    assert docker_cli(env, env.tmp / "owner", "info").returncode == 0  # the other certificate still works

    # a disabled AccessKey: its certificate is refused on an open keep-alive connection's next request
    base, dev = env.master(), app_session(env.tmp / "dev")
    assert dev.get(f"{base}/projects/", timeout=30).status_code == 200
    ram(env, "UpdateAccessKey", UserName="dev", UserAccessKeyId=env.dev_key["ak"], Status="Inactive")
    r = dev.get(f"{base}/projects/", timeout=30)
    assert r.status_code == 401 and r.json()["Code"] == "CertificateKeyInactive"
    ram(env, "UpdateAccessKey", UserName="dev", UserAccessKeyId=env.dev_key["ak"], Status="Active")
    assert app_session(env.tmp / "dev").get(f"{base}/projects/", timeout=30).status_code == 200

    # expiry: OpenSSL refuses it at the handshake (a certificate issued in-process with a 4 s lifetime)
    from opencs.composition import build
    from opencs.config import Settings

    plane = build(Settings(data_dir=env.srv.data_dir, workers=0, local_nodes=False))
    try:
        short = plane.cluster_certs.issue(env.cid, lifetime=dt.timedelta(seconds=4))
    finally:
        plane.close()
    brief = env.write("brief", {"ca": short.ca_pem, "cert": short.cert_pem, "key": short.key_pem})
    assert app_session(brief).get(f"{base}/projects/", timeout=30).status_code == 200
    expires = x509.load_pem_x509_certificate(short.cert_pem.encode()).not_valid_after_utc
    time.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 1.1)
    with pytest.raises(requests.exceptions.SSLError, match="expired"):
        app_session(brief).get(f"{base}/projects/", timeout=30)
    states = {s["serial"]: s["state"] for s in env.c.request("GET", f"/clusters/{env.cid}/certs/states")["certs"]}
    assert states[subject_serial(second)] == "revoked" and states[short.serial] == "expired"


def _signed_post(url: str, signing_secret: str, body: str, msg_id: str, age: float = 0) -> requests.Response:
    from standardwebhooks.webhooks import Webhook

    when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
               "webhook-signature": Webhook(signing_secret).sign(msg_id, when, body)}
    return requests.post(url, data=body.encode(), headers=headers, timeout=150)


@pytest.mark.docker
def test_signed_trigger_redeploys_once(env: Env) -> None:
    t = env.c.request("POST", f"/clusters/{env.cid}/triggers",
                      body={"project_id": "web", "action": "redeploy", "signed": True})
    env.secrets += [t["secret"], t["signing_secret"]]
    owner, base = app_session(env.tmp / "owner"), env.master()

    def containers() -> set[str]:
        return set(owner.get(f"{base}/services/web_app", timeout=30).json()["containers"])

    before = containers()
    url = f"{t['trigger_url']}&wait=true"
    r = _signed_post(url, t["signing_secret"], '{"ref": "main"}', "msg_deploy_1")
    assert r.status_code == 200 and r.json()["state"] == "success", r.text
    after = containers()
    assert after and not (after & before), "the signed call did not redeploy"
    for refused, status, code in (
        (_signed_post(url, t["signing_secret"], '{"ref": "main"}', "msg_deploy_1"), 409, "WebhookReplayed"),
        (_signed_post(url, t["signing_secret"], "{}", "msg_deploy_2", age=600), 403, "WebhookTimestampStale"),
        (requests.post(f"{url}&secret={t['secret']}", timeout=30), 401, "WebhookSignatureRequired"),
    ):
        assert (refused.status_code, refused.json()["Code"]) == (status, code), refused.text
    assert containers() == after, "a refused call redeployed"
    entries = env.c.request("GET", "/audit", query={"action": "cs:InvokeTrigger"})["entries"]
    assert [e["outcome"].split()[-1] if e["outcome"][0] == "4" else e["outcome"][:3] for e in entries] == [
        "202", "WebhookReplayed", "WebhookTimestampStale", "WebhookSignatureRequired"]


@pytest.mark.docker
def test_no_secret_in_the_server_log(env: Env) -> None:
    log = env.srv.log.read_text()
    assert log, "the server wrote no log"
    for secret in env.secrets:
        assert secret not in log
    assert "PRIVATE KEY" not in log and "whsec_" not in log
