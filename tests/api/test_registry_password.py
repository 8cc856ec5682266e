"""A registry password a user sets (issue 10 item 4): Container Registry's CreateUserInfo
(`PUT /users`) / UpdateUserInfo (`POST /users`) with `{"User": {"Password": …}}`, signed, under the
`cr:` RAM actions, audited without the password, kept as an Argon2id hash; the realm then takes
`<user>@<account>` (an owner also its account name) with it. The docker CLI logs in with it against
the bundled registry in tests/api/test_secret_leaks.py, a push with it in tests/registry."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from opencs.errors import BadRequest
from opencs.services.passwords import check_password
from opencs.store.tenancy import ROOT_ACCOUNT_ID
from tests.conftest import ServerProcess, Signer

PASSWORD = "Reg1stry-Pass"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _set(client: Any, signer: Signer, password: Any, method: str = "POST") -> Any:
    body = json.dumps({"User": {"Password": password}}).encode()
    return client.request(method, "/users", content=body, headers=signer.headers(method, "/users", body=body))


@pytest.mark.parametrize("bad", ["short1A", "a" * 33, "alllowercase", "12345678", "with space1", "ünïcode12", 12345678])
def test_password_rules(bad: Any) -> None:
    with pytest.raises(BadRequest):
        check_password(bad)
    assert check_password("abcdefg1") == "abcdefg1" and check_password("ABCDEFGH-") == "ABCDEFGH-"


def test_set_verify_refuse_and_audit(runtime: Any, client: Any, signer: Signer) -> None:
    r = _set(client, signer, PASSWORD, "PUT")
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"loginName": "owner@default"} and PASSWORD not in r.text
    access = runtime.registry_access
    for login in ("owner@default", "default"):  # an owner: its account name alone too
        caller = access.authenticate(_basic(login, PASSWORD))
        assert caller is not None and caller.principal is not None and caller.principal.is_owner
        assert caller.account_id == ROOT_ACCOUNT_ID and caller.subject.startswith("user:")
        assert access.pusher(caller.subject) == caller.principal  # an image-update trigger sees who pushed
    for login, password in (("owner@default", "Wrong-pass1"), ("nobody@default", PASSWORD), ("owner@nowhere", PASSWORD),
                            ("nowhere", PASSWORD), ("owner", PASSWORD)):
        assert access.authenticate(_basic(login, password)) is None, login
    # changed: the old password stops working at once
    assert _set(client, signer, "Second-pass2").status_code == 200
    assert access.authenticate(_basic("owner@default", PASSWORD)) is None
    assert access.authenticate(_basic("owner@default", "Second-pass2")) is not None

    # bad bodies: clear 400s (415 for a form body), nothing set
    for body, ctype in ((b'{"User": {}}', "application/json"), (b'{"Password": "x"}', "application/json"),
                        (b"User.Password=abc", "application/x-www-form-urlencoded"),
                        (json.dumps({"User": {"Password": "weakweak"}}).encode(), "application/json")):
        h = signer.headers("POST", "/users", body=body, content_type=ctype)
        r = client.post("/users", content=body, headers=h)
        assert r.status_code in (400, 415) and r.json()["RequestId"], (body, r.text)
    assert access.authenticate(_basic("owner@default", "Second-pass2")) is not None

    # a sub-user needs cr:UpdateUserInfo (or CreateUserInfo) on itself
    accounts = runtime.accounts
    accounts.create_user(ROOT_ACCOUNT_ID, "ci")
    key, secret = accounts.create_key(ROOT_ACCOUNT_ID, "ci")
    ci = Signer(key.access_key_id, secret, signer.scheme)
    r = _set(client, ci, PASSWORD)
    assert r.status_code == 403 and r.json()["Code"] == "Forbidden.RAM" and "cr:UpdateUserInfo" in r.json()["Message"]
    accounts.create_policy(ROOT_ACCOUNT_ID, "own-login", json.dumps({"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "cr:UpdateUserInfo", "Resource": "acs:cr:*:*:user/ci"}]}))
    accounts.attach(ROOT_ACCOUNT_ID, "ci", "own-login")
    r = _set(client, ci, PASSWORD)
    assert r.status_code == 200 and r.json()["data"]["loginName"] == "ci@default", r.text
    sub = access.authenticate(_basic("ci@default", PASSWORD))
    assert sub is not None and sub.principal is not None and not sub.principal.is_owner
    assert access.allowed(sub, "default/app") == set()  # its policies decide, as with its AccessKey

    # on record without the password; only its Argon2id hash is stored
    trail = [e for e in runtime.audit.query(None, limit=1000) if e.action.startswith("cr:")]
    assert [(e.action, e.outcome) for e in trail][:2] == [("cr:CreateUserInfo", "200"), ("cr:UpdateUserInfo", "200")]
    assert any(e.outcome.startswith("403") and e.user_name == "ci" for e in trail)
    assert all(PASSWORD not in json.dumps(e.__dict__, default=str) for e in trail)
    stored = [runtime.accounts.repo.registry_login("default", name) for name in ("owner", "ci")]
    hashes = [got[1] for got in stored if got is not None]
    assert len(hashes) == 2 and all(h.startswith("$argon2id$") and PASSWORD not in h for h in hashes)
    # a user deleted takes its password with it
    accounts.delete_key(ROOT_ACCOUNT_ID, "ci", key.access_key_id)
    accounts.detach(ROOT_ACCOUNT_ID, "ci", "own-login")
    accounts.delete_user(ROOT_ACCOUNT_ID, "ci")
    assert access.authenticate(_basic("ci@default", PASSWORD)) is None


@pytest.mark.integration
def test_official_cr_sdk_the_cli_and_the_sdk(tmp_path: Path) -> None:
    """aliyun-python-sdk-cr's CreateUserInfo/UpdateUserInfo, `opencs registry password` and
    opencs.sdk's set_registry_password against a real server; the realm of the same data dir then
    takes each password."""
    from aliyunsdkcore.client import AcsClient
    from aliyunsdkcr.request.v20160607.CreateUserInfoRequest import CreateUserInfoRequest
    from aliyunsdkcr.request.v20160607.UpdateUserInfoRequest import UpdateUserInfoRequest

    from opencs.composition import build
    from opencs.config import Settings
    from opencs.sdk import Client

    srv = ServerProcess(tmp_path / "data", env={"OPENCS_MONITOR_INTERVAL": "0"})
    srv.start(timeout=90)  # a loaded machine (a build beside) starts it slowly
    try:
        acs = AcsClient(srv.ak, srv.secret, "cn-hangzhou", auto_retry=False, timeout=30)
        for req, password in ((CreateUserInfoRequest(), "Sdk-create1"), (UpdateUserInfoRequest(), "Sdk-update2")):
            req.set_endpoint(srv.endpoint)
            req.set_protocol_type("http")
            req.set_content_type("application/json")
            req.set_content(json.dumps({"User": {"Password": password}}).encode())
            reply = json.loads(acs.do_action_with_exception(req))
            assert reply["data"]["loginName"] == "owner@default" and password not in json.dumps(reply)
        plane = build(Settings(data_dir=srv.data_dir, workers=0))
        try:
            access = plane.registry_access
            assert access.authenticate(_basic("default", "Sdk-update2")) is not None
            assert access.authenticate(_basic("default", "Sdk-create1")) is None

            env = {"OPENCS_ENDPOINT": srv.url, "OPENCS_ACCESS_KEY_ID": srv.ak, "OPENCS_ACCESS_KEY_SECRET": srv.secret}
            cli = subprocess.run([sys.executable, "-m", "opencs.cli.main", "registry-password"],
                                 input="Cli-passw0rd\n", capture_output=True, text=True, timeout=60,
                                 env={**_clean_env(), **env})
            assert cli.returncode == 0, cli.stderr
            assert "owner@default" in cli.stdout and "Cli-passw0rd" not in cli.stdout + cli.stderr
            assert access.authenticate(_basic("owner@default", "Cli-passw0rd")) is not None

            with Client(srv.url, srv.ak, srv.secret, retries=0) as sdk:
                assert sdk.set_registry_password("Sdk-method3").login_name == "owner@default"
            assert access.authenticate(_basic("owner@default", "Sdk-method3")) is not None
            assert access.authenticate(_basic("owner@default", "Cli-passw0rd")) is None
        finally:
            plane.close()
    finally:
        srv.kill()
    log = srv.log.read_text(errors="replace")
    assert not [p for p in ("Sdk-create1", "Sdk-update2", "Cli-passw0rd", "Sdk-method3") if p in log]


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("OPENCS_")}


def test_the_documented_pattern_is_the_rule() -> None:
    import re

    from opencs.services.passwords import PATTERN

    for pw in ("abcdefg1", "ABCDEFGH-", "Reg1stry-Pass", "~0000000", "alllowercase", "12345678", "--------",
               "with space1", "short1A", "a" * 33, "ünïcode12"):
        try:
            check_password(pw)
            ok = True
        except BadRequest:
            ok = False
        assert ok == bool(re.fullmatch(PATTERN, pw)), pw
