"""Who reaches a Kubernetes cluster (issue 10 item 3), with the real kubectl and the official
`kubernetes` client against a real 1-master + 1-worker cluster: the kubeconfig's server is opencs's
endpoint (master_url), which checks each certificate against the record and passes the user on to
kube-apiserver as its front proxy. Before revocation everything works (list, a watch, exec, a
port-forward); a sub-user is who its certificate says (RBAC decides, so it is forbidden); revoking
the certificate, or disabling the AccessKey it was obtained with, is refused on the next connection;
an expired certificate is refused; a sub-user's certificate does not open the apiserver's own port.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509

from opencs.sdk import Client
from tests.clusterkit import destroy_everything
from tests.conftest import ServerProcess, free_port
from tests.engines.kubernetes.test_k8s_cluster import BODY, _settled, _wait, kube_env, require_kubernetes_host
from tests.sdks import core_call, core_client, ram_call, ram_client

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PREFIX, SUBNET = "oc1", "10.249.0.0/24"  # no other test uses them


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    require_kubernetes_host()
    data = tmp_path / "data"
    s = ServerProcess(data, env=kube_env(PREFIX, SUBNET, 5046))
    try:
        yield s.start(timeout=90)
    finally:
        s.kill()
        destroy_everything(data, PREFIX, SUBNET)


def _kubeconfig(client: Client, cid: str, path: Path, minutes: int | None = None) -> tuple[Path, str]:
    """The caller's kubeconfig written to `path`, and its certificate's serial (hex)."""
    # GET /certs of a Kubernetes cluster carries a kubeconfig too (spec §6.11), of any lifetime
    text = client.kubeconfig(cid).config if minutes is None else client.cluster_certs(cid, minutes=minutes).config
    path.write_text(text)
    user = yaml.safe_load(text)["users"][0]["user"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    return path, format(cert.serial_number, "x")


def _kubectl(kc: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
    return subprocess.run(["kubectl", "--kubeconfig", str(kc), "--request-timeout", "20s", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _pod(name: str, command: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", command]}]}}


def test_kubeconfig_endpoint_checks_revocation(server: ServerProcess, tmp_path: Path) -> None:
    from aliyunsdkcs.request.v20151215.CreateClusterRequest import CreateClusterRequest
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes import watch

    core = core_client(server.endpoint, server.ak, server.secret)
    owner = Client(server.url, server.ak, server.secret, retries=0)
    cid = core_call(core, CreateClusterRequest(), {**BODY, "name": "access", "num_of_nodes": 1})["cluster_id"]
    d = _settled(core, cid, "launching", 300)
    assert d["state"] == "running", d
    assert d["master_url"].startswith("https://127.0.0.1:")
    short, _ = _kubeconfig(owner, cid, tmp_path / "short", minutes=1)  # expires while the rest runs
    t_short = time.monotonic()
    first = _kubectl(short, "get", "nodes", "-o", "name")
    assert first.returncode == 0, first.stderr  # GET /certs' owner certificate (O=opencs: cluster-admin)

    kc, serial = _kubeconfig(owner, cid, tmp_path / "owner")
    assert yaml.safe_load(kc.read_text())["clusters"][0]["cluster"]["server"] == d["master_url"]
    nodes = _kubectl(kc, "get", "nodes", "-o", "name")
    assert nodes.returncode == 0 and nodes.stdout.count("node/") == 2, nodes.stderr
    who = _kubectl(kc, "auth", "whoami", "-o", "json")
    assert who.returncode == 0, who.stderr
    info = json.loads(who.stdout)["status"]["userInfo"]
    assert info["username"].endswith(":owner") and "system:masters" in info["groups"], info

    # the official client: a watch streams events as they happen, through the endpoint
    api = k8s_config.new_client_from_config(str(kc))
    v1 = k8s.CoreV1Api(api)
    v1.create_namespaced_pod("default", _pod("web", "mkdir -p /www && echo hello-pf > /www/index.html && "
                                                    "exec httpd -f -p 8080 -h /www"))
    seen = []
    for ev in watch.Watch().stream(v1.list_namespaced_pod, "default", timeout_seconds=120):
        seen.append(ev["type"])
        if ev["object"].metadata.name == "web" and ev["object"].status.phase == "Running":
            break
    assert seen[0] == "ADDED" and "MODIFIED" in seen, seen
    # exec and port-forward: upgraded connections through the endpoint
    ex = _kubectl(kc, "exec", "web", "--", "sh", "-c", "echo from-exec; cat /www/index.html")
    assert ex.returncode == 0 and ex.stdout.split() == ["from-exec", "hello-pf"], ex.stderr
    port = free_port()
    pf = subprocess.Popen(["kubectl", "--kubeconfig", str(kc), "port-forward", "pod/web", f"{port}:8080"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        got = _wait("port-forward answers", lambda: httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text, 30)
        assert got.strip() == "hello-pf"
    finally:
        pf.terminate()
        pf.wait(10)
    # mutating calls through master_url are on the audit trail (issue 10 item 6): the pod, the exec
    trail = {(e.action, e.resource.split(f"cluster/{cid}", 1)[-1], e.outcome, e.user_name)
             for e in owner.audit_log(limit=1000) if e.action.startswith("k8s:")}
    assert ("k8s:create", "/api/v1/namespaces/default/pods", "201", "owner") in trail, trail
    assert ("k8s:create", "/api/v1/namespaces/default/pods/web/exec", "101", "owner") in trail, trail

    # a sub-user: its own identity, no group; RBAC refuses it (the apiserver's 403, not opencs's 401)
    ram = ram_client(server.endpoint, server.ak, server.secret)
    ram_call(ram, "CreateUser", UserName="dev")
    ram_call(ram, "CreatePolicy", PolicyName="kubeconfig", PolicyDocument=json.dumps({"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "cs:DescribeClusterUserKubeconfig", "Resource": f"acs:cs:*:*:cluster/{cid}"}]}))
    ram_call(ram, "AttachPolicyToUser", PolicyType="Custom", PolicyName="kubeconfig", UserName="dev")
    key = ram_call(ram, "CreateAccessKey", UserName="dev")["AccessKey"]
    dev = Client(server.url, key["AccessKeyId"], key["AccessKeySecret"], retries=0)
    dev_kc, _ = _kubeconfig(dev, cid, tmp_path / "dev")
    refused = _kubectl(dev_kc, "get", "pods")
    assert refused.returncode != 0 and ':dev" cannot list resource "pods"' in refused.stderr, refused.stderr
    # the apiserver's own port is the owners': a sub-user's certificate (the users' CA) is refused there
    direct = _apiserver_address(server, cid)
    user = yaml.safe_load(dev_kc.read_text())["users"][0]["user"]
    (tmp_path / "dev.crt").write_bytes(base64.b64decode(user["client-certificate-data"]))
    (tmp_path / "dev.key").write_bytes(base64.b64decode(user["client-key-data"]))
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.load_cert_chain(str(tmp_path / "dev.crt"), str(tmp_path / "dev.key"))
    try:  # Go refuses a certificate of an unknown CA at the handshake (TLS 1.3: at the first read)
        with socket.create_connection(direct, 10) as raw, ctx.wrap_socket(raw) as s:
            s.sendall(b"GET /api/v1/namespaces/default/pods HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = s.recv(4096)
    except (ssl.SSLError, ConnectionResetError) as e:
        reply = f"refused: {e}".encode()
    assert reply.startswith(b"refused") or b" 401 " in reply.split(b"\r\n", 1)[0], reply[:200]

    # disabling the sub-user's AccessKey: its kubeconfig is refused by opencs from the next connection
    ram_call(ram, "UpdateAccessKey", UserName="dev", UserAccessKeyId=key["AccessKeyId"], Status="Inactive")
    gone = _kubectl(dev_kc, "get", "pods")
    assert gone.returncode != 0 and "must be logged in" in gone.stderr, gone.stderr

    # revoking the owner's certificate: kubectl and the client are refused on their next connection
    owner.revoke_cert(cid, serial)
    after = _kubectl(kc, "get", "nodes")
    assert after.returncode != 0 and "must be logged in" in after.stderr, after.stderr
    with pytest.raises(k8s.ApiException) as e:
        k8s.CoreV1Api(k8s_config.new_client_from_config(str(kc))).list_node()
    assert e.value.status == 401 and "revoked" in (e.value.body or "")
    fresh, _ = _kubectl_ok(owner, cid, tmp_path / "fresh")
    assert fresh

    # the 1-minute certificate has expired by now: refused at the handshake
    time.sleep(max(0.0, 62 - (time.monotonic() - t_short)))
    late = _kubectl(short, "get", "nodes")
    assert late.returncode != 0 and "certificate" in late.stderr, late.stdout + late.stderr
    trail = owner.request("GET", "/audit", query={"limit": "1000"})["entries"]
    assert any(e["action"] == "cs:RevokeClusterCert" and serial in e["resource"] for e in trail)


def _apiserver_address(server: ServerProcess, cid: str) -> tuple[str, int]:
    """The apiserver's own address (the master's)."""
    import sqlite3

    with sqlite3.connect(server.data_dir / "opencs.db") as db:
        (iid,) = db.execute("SELECT instance_id FROM instances WHERE cluster_id = ? AND role = 'manager'",
                            (cid,)).fetchone()
    return json.loads((server.data_dir / "nodes" / iid / "state.json").read_text())["ip"], 6443


def _kubectl_ok(client: Client, cid: str, path: Path) -> tuple[bool, str]:
    """A new kubeconfig after a revocation works at once (only the revoked serial is refused)."""
    kc, serial = _kubeconfig(client, cid, path)
    r = _kubectl(kc, "get", "nodes", "-o", "name")
    return r.returncode == 0, serial
