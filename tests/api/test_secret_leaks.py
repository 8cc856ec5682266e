"""No secret in any log line or in any reply but the one that creates it (issue 10 check).

A real `opencs server` with a real one-node swarm goes through a representative flow: a RAM user
and its AccessKey (the official RAM SDK), a cluster and its certificates, a project through
master_url, a signed trigger invoked with its secret and signature, `docker login` to the bundled
registry with the user's AccessKey (and once with a wrong secret), then with a registry password the
owner sets through the official Container Registry SDK (UpdateUserInfo; and once a wrong one).
Every reply is kept; then the server's whole log and the registry's are searched for each secret,
in the forms a leak would take (as is, base64 in a Basic header, a line of a PEM body)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from opencs.auth import signature as sig
from opencs.providers.localnet import socket_path
from tests.clusterkit import destroy_everything, node_env, require_local_nodes
from tests.conftest import ServerProcess, Signer
from tests.sdks import ram_call, ram_client

PREFIX, SUBNET = "ocz", "10.243.0.0/24"
REGISTRY = "10.243.0.1:5000"


class Recorder:
    """Signed calls over real HTTP; every reply body and header kept with the name of its call."""

    def __init__(self, srv: ServerProcess) -> None:
        self.srv = srv
        self.signer = Signer(srv.ak, srv.secret, sig.ROA)
        self.http = httpx.Client(base_url=f"http://{srv.endpoint}", timeout=60, trust_env=False)
        self.replies: list[tuple[str, str]] = []

    def keep(self, name: str, text: str, headers: Any = ()) -> None:
        self.replies.append((name, text + "\n" + "\n".join(f"{k}: {v}" for k, v in dict(headers).items())))

    def call(self, name: str, method: str, path: str, body: Any = None, query: dict[str, str] | None = None) -> Any:
        raw = json.dumps(body).encode() if body is not None else b""
        h = self.signer.headers(method, path, query or {}, raw, host=self.srv.endpoint)
        r = self.http.request(method, path, params=query, content=raw or None, headers=h)
        self.keep(name, r.text, r.headers)
        assert r.status_code < 300, (name, r.status_code, r.text)
        return r.json() if r.content else None

    def wait(self, task_id: str, timeout: float = 180) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.call("task", "GET", f"/tasks/{task_id}")["state"] in ("success", "fail"):
                return
            time.sleep(0.5)
        raise AssertionError(f"task {task_id} did not end")


def leak_forms(secret: str) -> list[str]:
    if "PRIVATE KEY" in secret:  # a PEM: its body lines would leak it just as well
        lines = [ln for ln in secret.splitlines() if ln and "-----" not in ln]
        return [secret, *lines[1:-1]]
    return [secret]


@pytest.fixture
def env(tmp_path: Path) -> Any:
    require_local_nodes()
    data = tmp_path / "data"
    srv = ServerProcess(data, env={**node_env(PREFIX, SUBNET), "OPENCS_MONITOR_INTERVAL": "0"})
    try:
        srv.start(timeout=90)  # slow on a loaded machine
        yield srv, tmp_path
    finally:
        srv.kill()
        destroy_everything(data, PREFIX, SUBNET)


def _docker(sock: str, config: Path, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_CONFIG": str(config)}
    return subprocess.run(["docker", "-H", sock, *args], input=stdin, capture_output=True, text=True, timeout=120,
                          env=env)


def _set_registry_password(srv: ServerProcess, password: str) -> str:
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcr.request.v20160607.UpdateUserInfoRequest import UpdateUserInfoRequest

    req = UpdateUserInfoRequest()
    req.set_endpoint(srv.endpoint)
    req.set_protocol_type("http")
    req.set_content_type("application/json")
    req.set_content(json.dumps({"User": {"Password": password}}).encode())
    reply = AcsClient(srv.ak, srv.secret, "cn-hangzhou", auto_retry=False, timeout=30).do_action_with_exception(req)
    return reply.decode()


@pytest.mark.docker
def test_no_secret_in_logs_or_later_replies(env: Any) -> None:
    from standardwebhooks.webhooks import Webhook

    srv, tmp = env
    rec = Recorder(srv)
    secrets: dict[str, str] = {"bootstrap AccessKey secret": srv.secret}
    creators: dict[str, str] = {}  # secret name -> the reply that may carry it

    ram = ram_client(srv.endpoint, srv.ak, srv.secret)
    rec.keep("CreateUser", json.dumps(ram_call(ram, "CreateUser", UserName="dev")))
    key = ram_call(ram, "CreateAccessKey", UserName="dev")
    rec.keep("CreateAccessKey", json.dumps(key))
    secrets["user AccessKey secret"], creators["user AccessKey secret"] = key["AccessKey"]["AccessKeySecret"], \
        "CreateAccessKey"
    rec.keep("ListAccessKeys", json.dumps(ram_call(ram, "ListAccessKeys", UserName="dev")))

    out = rec.call("create cluster", "POST", "/clusters", {"name": "leaks", "size": 1})
    cid = out["cluster_id"]
    rec.wait(out["task_id"])
    certs = rec.call("certs", "GET", f"/clusters/{cid}/certs")
    secrets["client private key"], creators["client private key"] = certs["key"], "certs"
    rec.call("cert states", "GET", f"/clusters/{cid}/certs/states")
    cluster = rec.call("cluster", "GET", f"/clusters/{cid}")

    d = tmp / "certs"
    d.mkdir()
    for k in ("ca", "cert", "key"):
        (d / f"{k}.pem").write_text(certs[k])
    app = requests.Session()
    app.trust_env, app.cert, app.verify = False, (str(d / "cert.pem"), str(d / "key.pem")), str(d / "ca.pem")
    template = "version: '3'\nservices:\n  web:\n    image: busybox\n    command: sleep 3600\n"
    r = app.post(f"{cluster['master_url']}/projects/", json={"name": "web", "template": template, "version": "1"},
                 timeout=120)
    rec.keep("create project", r.text, r.headers)
    assert r.status_code == 201, r.text
    end = time.time() + 120
    while (state := app.get(f"{cluster['master_url']}/projects/web", timeout=60).json()["current_state"]) != "running":
        assert state != "failed" and time.time() < end, state
        time.sleep(0.5)

    trig = rec.call("create trigger", "POST", f"/clusters/{cid}/triggers",
                    {"project_id": "web", "action": "redeploy", "signed": True})
    for name in ("secret", "signing_secret"):
        secrets[f"trigger {name}"], creators[f"trigger {name}"] = trig[name], "create trigger"
    rec.call("list triggers", "GET", f"/clusters/{cid}/triggers")
    when, body = dt.datetime.now(dt.UTC), '{"ref": "main"}'
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(when.timestamp())),
               "webhook-signature": Webhook(trig["signing_secret"]).sign("msg_1", when, body)}
    r2 = rec.http.post("/hook/trigger", params={"triggerUrl": trig["token"]}, content=body, headers=headers)
    rec.keep("invoke trigger", r2.text, r2.headers)
    assert r2.status_code == 202, r2.text
    r3 = rec.http.get("/hook/trigger", params={"triggerUrl": trig["token"], "secret": "0" * 64})
    rec.keep("invoke trigger wrongly", r3.text, r3.headers)
    assert r3.status_code in (401, 403)

    node = rec.call("nodes", "GET", f"/clusters/{cid}/nodes")["nodes"][0]
    sock = f"unix://{socket_path(srv.data_dir / 'nodes', node['instance_id'])}"
    user_ak, user_sk = key["AccessKey"]["AccessKeyId"], secrets["user AccessKey secret"]
    login = _docker(sock, tmp / "docker", "login", REGISTRY, "-u", user_ak, "--password-stdin", stdin=user_sk)
    assert login.returncode == 0, login.stderr
    wrong = _docker(sock, tmp / "docker", "login", REGISTRY, "-u", user_ak, "--password-stdin", stdin="wrong-secret")
    assert wrong.returncode != 0
    # a registry password the owner sets (Container Registry's UpdateUserInfo, the official SDK)
    secrets["registry password"] = "Reg1stry-" + os.urandom(6).hex()
    rec.keep("UpdateUserInfo", _set_registry_password(srv, secrets["registry password"]))
    for login_name in ("owner@default", "default"):
        login = _docker(sock, tmp / "docker", "login", REGISTRY, "-u", login_name, "--password-stdin",
                        stdin=secrets["registry password"])
        assert login.returncode == 0, login.stderr
    wrong = _docker(sock, tmp / "docker", "login", REGISTRY, "-u", "default", "--password-stdin", stdin="Wrong-pass1")
    assert wrong.returncode != 0 and "unauthorized" in wrong.stderr.lower(), wrong.stderr
    rec.call("audit", "GET", "/audit", query={"limit": "1000"})
    rec.call("clusters", "GET", "/clusters")

    srv.kill()
    logs = {p.name: p.read_text(errors="replace") for p in [srv.log, *srv.data_dir.glob("**/*.log")] if p.is_file()}
    assert srv.log.name in logs and "registry.log" in logs and len(logs[srv.log.name]) > 1000
    basic = base64.b64encode(f"{user_ak}:{user_sk}".encode()).decode()
    found = []
    for name, secret in secrets.items():
        for form in [*leak_forms(secret), *([basic] if secret == user_sk else [])]:
            found += [f"{name} in log {log}" for log, text in logs.items() if form in text]
            found += [f"{name} in the reply of {call}" for call, text in rec.replies
                      if form in text and call != creators.get(name)]
    assert not found, found
    assert any(secret in text for secret in secrets.values() for _, text in rec.replies)  # the search can find
