"""RAM login profiles (CreateLoginProfile, GetLoginProfile, UpdateLoginProfile, DeleteLoginProfile)
against a real `opencs server`: through both official RAM SDKs (aliyun-python-sdk-ram, RPC signature;
alibabacloud-ram20150501, ACS3), opencs's SDK and CLI; each password then signs in to the server's
console, the reply never shows it and the server's log never holds it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from opencs.sdk import Client, OpencsError
from tests.api.test_accounts_ram import ram_tea
from tests.conftest import ServerProcess
from tests.sdks import ram_call, ram_client

pytestmark = pytest.mark.integration  # a real server process

PASSWORDS = ["Core-pass1", "Core-pass2", "Tea-pass-3", "Cli-pass-4", "Sdk-pass-5"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("login") / "data", env={"OPENCS_MONITOR_INTERVAL": "0"}, workers=0)
    s.start(timeout=90)
    try:
        yield s
    finally:
        s.kill()
    log = s.log.read_text(errors="replace")
    assert not [p for p in PASSWORDS if p in log]


def console_sign_in(srv: ServerProcess, login: str, password: str) -> bool:
    """Whether the server's console takes the logon name and password (a session cookie)."""
    with httpx.Client(base_url=srv.url, trust_env=False) as h:
        r = h.post("/console/signin", data={"login": login, "password": password})
        return r.status_code == 303 and "opencs_console" in r.headers.get("set-cookie", "")


def test_core_sdk_login_profile_lifecycle(srv: ServerProcess) -> None:
    from aliyunsdkcore.acs_exception.exceptions import ServerException

    c = ram_client(srv.endpoint, srv.ak, srv.secret)
    ram_call(c, "CreateUser", UserName="carol")
    made = ram_call(c, "CreateLoginProfile", UserName="carol", Password=PASSWORDS[0], PasswordResetRequired=False,
                    MFABindRequired=False)
    prof = made["LoginProfile"]
    assert (prof["UserName"], prof["PasswordResetRequired"], prof["MFABindRequired"]) == ("carol", False, False)
    assert prof["CreateDate"].endswith("Z") and made["RequestId"] and PASSWORDS[0] not in json.dumps(made)
    refusals = [
        ({"UserName": "carol", "Password": PASSWORDS[0]}, 409, "EntityAlreadyExists.User.LoginProfile"),
        ({"UserName": "nobody", "Password": PASSWORDS[0]}, 404, "EntityNotExist.User"),
        ({"UserName": "carol"}, 400, "MissingParameter.Password"),
    ]
    for params, status, code in refusals:
        with pytest.raises(ServerException) as e:
            ram_call(c, "CreateLoginProfile", **params)
        assert (e.value.get_http_status(), e.value.get_error_code()) == (status, code), params
    got = ram_call(c, "GetLoginProfile", UserName="carol")
    assert got["LoginProfile"] == prof and PASSWORDS[0] not in json.dumps(got) and "Hash" not in json.dumps(got)
    assert ram_call(c, "GetUser", UserName="carol")["User"]["LastLoginDate"] == ""  # never signed in
    assert not console_sign_in(srv, "carol@default", "Wrong-pass9")
    assert ram_call(c, "GetUser", UserName="carol")["User"]["LastLoginDate"] == ""  # a refused one is none
    assert console_sign_in(srv, "carol@default", PASSWORDS[0])
    last = ram_call(c, "GetUser", UserName="carol")["User"]["LastLoginDate"]
    assert last.endswith("Z") and last >= prof["CreateDate"]
    ram_call(c, "UpdateLoginProfile", UserName="carol", Password=PASSWORDS[1], PasswordResetRequired=True)
    assert ram_call(c, "GetLoginProfile", UserName="carol")["LoginProfile"]["PasswordResetRequired"] is True
    assert not console_sign_in(srv, "carol@default", PASSWORDS[0])
    for params, code in (({"Password": "weak"}, "InvalidParameter.Password.Length"),
                         ({"MFABindRequired": True}, "InvalidParameter.MFABindRequired")):
        with pytest.raises(ServerException) as e:
            ram_call(c, "UpdateLoginProfile", UserName="carol", **params)
        assert (e.value.get_http_status(), e.value.get_error_code()) == (400, code), params
    ram_call(c, "DeleteLoginProfile", UserName="carol")
    with pytest.raises(ServerException) as e:
        ram_call(c, "GetLoginProfile", UserName="carol")
    assert (e.value.get_http_status(), e.value.get_error_code()) == (404, "EntityNotExist.User.LoginProfile")
    assert not console_sign_in(srv, "carol@default", PASSWORDS[1])


def test_tea_sdk_login_profile_lifecycle(srv: ServerProcess) -> None:
    from alibabacloud_ram20150501 import models as m
    from Tea.exceptions import TeaException

    c = ram_tea(srv.endpoint, srv.ak, srv.secret)
    c.create_user(m.CreateUserRequest(user_name="dave"))
    made = c.create_login_profile(m.CreateLoginProfileRequest(user_name="dave", password=PASSWORDS[2],
                                                              password_reset_required=True)).body
    assert made.login_profile.user_name == "dave" and made.login_profile.password_reset_required is True
    assert made.login_profile.mfabind_required is False and made.request_id
    got = c.get_login_profile(m.GetLoginProfileRequest(user_name="dave")).body.login_profile
    assert got.create_date == made.login_profile.create_date
    assert console_sign_in(srv, f"dave@default{'.onaliyun.com'}", PASSWORDS[2])
    assert c.update_login_profile(m.UpdateLoginProfileRequest(user_name="dave",
                                                              password_reset_required=False)).body.request_id
    assert c.get_login_profile(m.GetLoginProfileRequest(user_name="dave")).body.login_profile \
        .password_reset_required is False
    assert c.delete_login_profile(m.DeleteLoginProfileRequest(user_name="dave")).body.request_id
    with pytest.raises(TeaException) as te:
        c.delete_login_profile(m.DeleteLoginProfileRequest(user_name="dave"))
    assert te.value.code == "EntityNotExist.User.LoginProfile"


def test_opencs_cli_and_sdk_and_a_sub_user_without_rights(srv: ServerProcess, tmp_path: Path) -> None:
    import os

    with Client(srv.url, srv.ak, srv.secret, retries=0) as sdk:
        sdk.ram("CreateUser", {"UserName": "erin"})
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("OPENCS_")},
               "OPENCS_ENDPOINT": srv.url, "OPENCS_ACCESS_KEY_ID": srv.ak, "OPENCS_ACCESS_KEY_SECRET": srv.secret}
        cli = subprocess.run([sys.executable, "-m", "opencs.cli.main", "login-profile", "create", "erin", "-o", "json"],
                             input=PASSWORDS[3] + "\n", capture_output=True, text=True, timeout=60, env=env)
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["UserName"] == "erin" and PASSWORDS[3] not in cli.stdout + cli.stderr
        assert console_sign_in(srv, "erin@default", PASSWORDS[3])
        prof = sdk.get_login_profile("erin")
        assert (prof.user_name, prof.password_reset_required, prof.mfa_bind_required) == ("erin", False, False)
        sdk.update_login_profile("erin", password=PASSWORDS[4])
        assert console_sign_in(srv, "erin@default", PASSWORDS[4])
        # erin's own AccessKey has no ram: rights: it may not give itself (or anyone) a login profile
        key = sdk.ram("CreateAccessKey", {"UserName": "erin"})["AccessKey"]
        with Client(srv.url, key["AccessKeyId"], key["AccessKeySecret"], retries=0) as erin:
            for call in (lambda: erin.update_login_profile("erin", password="Mine-pass6"),
                         lambda: erin.delete_login_profile("erin")):
                with pytest.raises(OpencsError) as e:
                    call()
                assert (e.value.status, e.value.code) == (403, "NoPermission")
        gone = subprocess.run([sys.executable, "-m", "opencs.cli.main", "login-profile", "delete", "erin"],
                              capture_output=True, text=True, timeout=60, env=env)
        assert gone.returncode == 0, gone.stderr
        with pytest.raises(OpencsError) as e:
            sdk.get_login_profile("erin")
        assert (e.value.status, e.value.code) == (404, "EntityNotExist.User.LoginProfile")
        actions = [x.action for x in sdk.audit_log(limit=200)]
    for a in ("ram:CreateLoginProfile", "ram:UpdateLoginProfile", "ram:DeleteLoginProfile", "ConsoleSignin"):
        assert a in actions, a
