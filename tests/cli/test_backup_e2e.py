"""Issue 13, item 8 on a real server and a real one-node swarm: `opencs backup` while the server runs
(and issues certificates meanwhile), `opencs restore` into another data dir, a server started on it:
the cluster's CA, its recorded client certificates and its triggers come back byte for byte, the old
client certificate still opens master_url and both triggers (secret, signing secret) still fire."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from opencs.sdk import Client
from tests.clusterkit import destroy_everything, master_session, node_env, require_local_nodes
from tests.conftest import ServerProcess

PREFIX, SUBNET = "ocf", "10.238.0.0/24"
PREFIX_B, SUBNET_B = "ocv", "10.239.0.0/24"  # the restored server's own (it creates no node)
TEMPLATE = "version: '3'\nservices:\n  app:\n    image: busybox\n    command: sleep 3600\n    stop_grace_period: 1s\n"
# what the PKI and the triggers are, column by column (not the times a server updates as it runs)
TABLES = {
    "clusters": "SELECT cluster_id, ca_cert_pem, ca_key_enc, client_cert_pem, user_ca_cert_pem, user_ca_key_enc "
                "FROM clusters",
    "cluster_certs": "SELECT * FROM cluster_certs",
    "triggers": "SELECT trigger_id, cluster_id, project, action, token, secret_hash, signed, signing_secret_enc, "
                "created FROM triggers",
    "access_keys": "SELECT access_key_id, user_id, secret_enc, status FROM access_keys",
}


def rows(db: Path, table: str) -> set[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return set(c.execute(TABLES[table]).fetchall())


def opencs(*args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "opencs.cli.main", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def servers(tmp_path: Path) -> Any:
    require_local_nodes()
    a = ServerProcess(tmp_path / "a", env={**node_env(PREFIX, SUBNET), "OPENCS_MONITOR_INTERVAL": "0"})
    b = ServerProcess(tmp_path / "b", env={**node_env(PREFIX_B, SUBNET_B), "OPENCS_MONITOR_INTERVAL": "0"})
    b.ak, b.secret = a.ak, a.secret  # the restored store holds a's key
    b.env.update(OPENCS_BOOTSTRAP_ACCESS_KEY_ID=a.ak, OPENCS_BOOTSTRAP_ACCESS_KEY_SECRET=a.secret)
    try:
        yield a.start(), b
    finally:
        b.kill()
        a.kill()
        destroy_everything(b.data_dir, PREFIX_B, SUBNET_B)
        destroy_everything(a.data_dir, PREFIX, SUBNET)


def fire_signed(srv: ServerProcess, t: dict[str, Any]) -> int:
    from standardwebhooks.webhooks import Webhook

    now, msg = dt.datetime.now(dt.UTC), f"msg_{dt.datetime.now().timestamp()}"
    headers = {"webhook-id": msg, "webhook-timestamp": str(int(now.timestamp())),
               "webhook-signature": Webhook(t["signing_secret"]).sign(msg, now, "{}")}
    return requests.post(f"{srv.url}/hook/trigger", params={"triggerUrl": t["token"]}, data=b"{}", headers=headers,
                         timeout=30).status_code


@pytest.mark.docker
@pytest.mark.slow
def test_backup_while_running_restores_certificates_and_triggers(servers: Any, tmp_path: Path) -> None:
    a, b = servers
    c = Client(a.url, a.ak, a.secret)
    out = c.create_cluster({"name": "bk", "size": 1})
    c.wait_task(out["task_id"], timeout=180)
    cid = out["cluster_id"]
    certs = c.request("GET", f"/clusters/{cid}/certs")
    murl = c.describe_cluster(cid)["master_url"]
    app = master_session(murl, certs, tmp_path / "certs")
    assert app.post(f"{murl}/projects/", json={"name": "web", "template": TEMPLATE}, timeout=120).status_code == 201
    end = time.time() + 60
    while app.get(f"{murl}/projects/web", timeout=30).json()["current_state"] != "running":
        assert time.time() < end
        time.sleep(0.3)
    plain = c.request("POST", f"/clusters/{cid}/triggers", body={"project_id": "web", "action": "redeploy"})
    signed = c.request("POST", f"/clusters/{cid}/triggers", body={"project_id": "web", "action": "redeploy",
                                                                   "signed": True})
    triggers = c.request("GET", f"/clusters/{cid}/triggers")
    before = {t: rows(a.data_dir / "opencs.db", t) for t in TABLES}

    stop = threading.Event()
    issued: list[str] = []

    def issue() -> None:  # the server keeps writing while the backup copies the store
        while not stop.is_set():
            issued.append(Client(a.url, a.ak, a.secret).request("GET", f"/clusters/{cid}/certs")["cert"])

    writer = threading.Thread(target=issue)
    writer.start()
    try:
        made = opencs("backup", "--data-dir", str(a.data_dir), "-o", str(tmp_path / "bk.tar.gz"))
    finally:
        stop.set()
        writer.join()
    print(f"backup: {made['bytes']} bytes, {made['files']}, {len(issued)} certificates issued meanwhile")
    assert {"secret.key", "store.sqlite"} <= set(made["files"])
    assert (tmp_path / "bk.tar.gz").stat().st_mode & 0o077 == 0
    a.stop()  # the nodes keep running; master_url moves to the restored server

    restored = opencs("restore", str(tmp_path / "bk.tar.gz"), "--data-dir", str(b.data_dir))
    assert restored["store"]["kind"] == "sqlite"
    assert (b.data_dir / "secret.key").read_bytes() == (a.data_dir / "secret.key").read_bytes()
    after = {t: rows(b.data_dir / "opencs.db", t) for t in TABLES}
    for t in TABLES:  # byte for byte: every row as it was, none invented (later ones may be missing)
        assert before[t] <= after[t] <= rows(a.data_dir / "opencs.db", t), t
    print(f"restored {len(after['cluster_certs'])} certificate records ({len(before['cluster_certs'])} before the "
          f"backup began, {len(rows(a.data_dir / 'opencs.db', 'cluster_certs'))} when the server stopped)")

    b.start()
    cb = Client(b.url, a.ak, a.secret)  # the AccessKey secret decrypts with the restored key
    assert cb.request("GET", f"/clusters/{cid}/certs")["ca"] == certs["ca"]
    def same(ts: list[dict[str, Any]]) -> list[dict[str, Any]]:  # trigger URLs name the server answering
        return [{**t, "trigger_url": t["trigger_url"].split("/hook/", 1)[1]} for t in ts]

    assert same(cb.request("GET", f"/clusters/{cid}/triggers")) == same(triggers)
    murl_b = cb.describe_cluster(cid)["master_url"]
    r = app.get(f"{murl_b}/projects/web", timeout=60)  # the certificate issued before the backup
    assert r.status_code == 200 and r.json()["name"] == "web", r.text
    hook = requests.get(f"{b.url}/hook/trigger", timeout=150,  # the restored server redeploys on the swarm
                        params={"triggerUrl": plain["token"], "secret": plain["secret"], "wait": "true"})
    assert hook.status_code == 200 and hook.json()["state"] == "success", hook.text
    assert fire_signed(b, signed) == 202
