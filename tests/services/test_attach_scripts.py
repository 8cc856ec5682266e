"""Attach scripts (opencs.services.attach_scripts) on a real store: the command, the script, the
machine found by its address, single use, expiry, and a clear refusal when nodes cannot reach the API."""

from __future__ import annotations

import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from opencs.errors import ApiError
from opencs.pki.ca import CertAuthority
from opencs.store.db import utcnow
from opencs.store.models import Cluster, InstanceRow
from opencs.store.tenancy import ROOT_ACCOUNT_ID

OTHER_ACCOUNT = "1000000000000002"


def _plane(tmp_path: Path, public_url: str) -> Any:
    from opencs.composition import build
    from opencs.config import Settings

    rt = build(Settings(data_dir=tmp_path / "d", workers=0, local_nodes=False, public_url=public_url))
    ca = CertAuthority.create("opencs cluster c1")
    now = utcnow()
    with rt.db.session() as s:
        s.add(Cluster(cluster_id="c1", name="one", state="running", size=1, spec={}, created=now, updated=now,
                      account_id=ROOT_ACCOUNT_ID, ca_cert_pem=ca.cert_pem, ca_key_enc=rt.box.encrypt(ca.key_pem)))
        for iid, ip, account in (("i-free0000000000000001", "10.9.0.7", ROOT_ACCOUNT_ID),
                                 ("i-other000000000000001", "10.9.0.8", OTHER_ACCOUNT)):
            s.add(InstanceRow(instance_id=iid, provider="local", account_id=account, private_ip=ip, state="running",
                              created=now, updated=now))
    return rt


@pytest.fixture
def plane(tmp_path: Path) -> Any:
    rt = _plane(tmp_path, "http://10.9.0.1:8990")
    try:
        yield rt
    finally:
        rt.close()


def _token(cmd: str) -> str:
    return cmd.split("/attach/")[1].split("/")[0]


def _code(fn: Any, *args: Any) -> str:
    with pytest.raises(ApiError) as e:
        fn(*args)
    return e.value.code


def test_the_script_joins_the_machine_it_runs_on_once(plane: Any) -> None:
    svc = plane.attach_scripts
    cmd = svc.issue("c1", {"nodeNameStrategy": "hostname"})
    assert cmd.startswith("curl -fsS http://10.9.0.1:8990/attach/") and cmd.endswith("/script | sh")
    token = _token(cmd)
    script = svc.script(token)
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)  # it parses as a shell script
    assert f"U=http://10.9.0.1:8990/attach/{token}" in script and '"assumeYes": true' in script
    assert svc.status(token)["state"] == "unused"

    # an address no machine of this account has: refused, and the token stays usable
    assert _code(svc.join, token, "10.9.0.99") == "ErrorInstanceNotFound"
    assert _code(svc.join, token, "10.9.0.8") == "ErrorInstanceNotFound"  # another account's machine
    out = svc.join(token, "10.9.0.7")
    assert out["instance_id"] == "i-free0000000000000001" and out["cluster_id"] == "c1"
    assert plane.instance_repo.get("i-free0000000000000001").cluster_id == "c1"  # reserved for the cluster
    st = svc.status(token)
    assert st["task_id"] == out["task_id"] and st["state"] in ("pending", "running")
    # run twice (from the same or any machine): refused, saying it was used
    assert _code(svc.join, token, "10.9.0.7") == "AttachTokenUsed"
    assert _code(svc.join, "x" * 43, "10.9.0.7") == "AttachTokenInvalid"


def test_an_expired_script_is_refused(plane: Any) -> None:
    token = _token(plane.attach_scripts.issue("c1", {}, None, timedelta(milliseconds=50)))
    time.sleep(0.2)
    assert _code(plane.attach_scripts.join, token, "10.9.0.7") == "AttachTokenExpired"
    assert _code(plane.attach_scripts.issue, "c1", {}, int(time.time()) - 1) == "InvalidParameter"
    assert _code(plane.attach_scripts.issue, "c1", '{"not json') == "InvalidParameter"
    assert _code(plane.attach_scripts.issue, "nope", '{"not json') == "ErrorClusterNotFound"  # the cluster first
    assert _code(plane.attach_scripts.script, token) == "AttachTokenExpired"


def test_no_script_when_nodes_cannot_reach_the_api(tmp_path: Path) -> None:
    rt = _plane(tmp_path, "")  # the default: listening on 127.0.0.1, no public URL
    try:
        assert _code(rt.attach_scripts.issue, "c1", {}) == "NodesCannotReachApi"
    finally:
        rt.close()


def test_the_https_pin_is_the_one_curl_computes(tmp_path: Path) -> None:
    """--pinnedpubkey sha256//<base64 of the SPKI digest>, as curl's documentation derives it with openssl."""
    from opencs.pki.ca import spki_pin

    cert = CertAuthority.create("opencs test").cert_pem
    pem = tmp_path / "c.pem"
    pem.write_text(cert)
    cmd = (f"openssl x509 -in {pem} -pubkey -noout | openssl pkey -pubin -outform der | "
           "openssl dgst -sha256 -binary | base64")
    openssl = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True)
    assert spki_pin(cert) == openssl.stdout.strip()
