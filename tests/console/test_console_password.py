"""The console's sign-in with a RAM user's logon name and password (its login profile), in-process:
the session acts as that user (policies, 403s, audit), failures say nothing about who exists, repeated
failures lock the name, PasswordResetRequired asks for a new password first, and a deleted profile, a
new password or a deleted user ends the session at its next request."""

from __future__ import annotations

import json
import re

from starlette.testclient import TestClient

from opencs.api.schemas import CreateCluster
from opencs.composition import ControlPlane
from opencs.console.routes_auth import LOCKED, WRONG_PASSWORD
from opencs.store.tenancy import ROOT_ACCOUNT_ID

PASSWORD = "Reader-pass1"


def reader(plane: ControlPlane, cluster_id: str, reset: bool = False) -> None:
    plane.accounts.create_user(ROOT_ACCOUNT_ID, "reader")
    policy = {"Version": "1", "Statement": [{
        "Effect": "Allow", "Action": ["cs:DescribeClusters", "cs:DescribeClusterDetail", "cs:DescribeClusterNodes"],
        "Resource": [f"acs:cs:*:*:cluster/{cluster_id}"]}]}
    plane.accounts.create_policy(ROOT_ACCOUNT_ID, "p-reader", json.dumps(policy))
    plane.accounts.attach(ROOT_ACCOUNT_ID, "reader", "p-reader")
    plane.login_profiles.create(ROOT_ACCOUNT_ID, "reader", PASSWORD, reset, False)


def password_sign_in(c: TestClient, login: str, password: str) -> tuple[int, str]:
    r = c.post("/console/signin", data={"login": login, "password": password}, follow_redirects=False)
    return r.status_code, r.headers.get("location", "") or r.text


def csrf_of(c: TestClient) -> str:
    m = re.search(r'X-CSRF-Token": "([^"]+)"', c.get("/console/clusters").text)
    assert m
    return m.group(1)


def test_a_user_signs_in_with_its_password_and_acts_as_itself(plane: ControlPlane, http: TestClient) -> None:
    mine, _ = plane.clusters.create(CreateCluster(name="visible", size=1))
    other, _ = plane.clusters.create(CreateCluster(name="invisible", size=1))
    reader(plane, mine)
    # a wrong password and an unknown name get the same answer, and no cookie
    for login, pw in (("reader@default", PASSWORD + "x"), ("nobody@default", PASSWORD), ("reader@nowhere", PASSWORD)):
        r = http.post("/console/signin", data={"login": login, "password": pw}, follow_redirects=False)
        assert r.status_code == 200 and WRONG_PASSWORD in r.text and "set-cookie" not in r.headers, login
    # the account by its id, and Alibaba's default domain suffix, name the same user
    assert password_sign_in(http, f"reader@{ROOT_ACCOUNT_ID}.onaliyun.com", PASSWORD) == (303, "/console/clusters")
    page = http.get("/console/clusters").text
    assert ">visible<" in page and "invisible" not in page and other not in page
    assert "Create a cluster" not in page and "Delete" not in page and ">reader<" in page
    # a refused call is refused and put on record as this user's API call would be
    r = http.post(f"/console/clusters/{mine}/delete", headers={"X-CSRF-Token": csrf_of(http)})
    assert "not authorized" in r.text and plane.clusters.get(mine)["state"] != "deleting"
    entries = plane.audit.query(ROOT_ACCOUNT_ID, user_name="reader")
    assert any(e.action == "cs:DeleteCluster" and e.outcome.startswith("403") for e in entries)
    signins = [e for e in entries if e.action == "ConsoleSignin"]
    assert [e.outcome for e in sorted(signins, key=lambda e: e.seq)] == ["401 InvalidCredentials", "200"]
    everything = json.dumps([vars(e) for e in plane.audit.query(None, limit=1000)], default=str)
    assert PASSWORD not in everything and "nobody" not in everything  # no password, no unknown name
    # the owner deletes the login profile: the session ends at its next request
    plane.login_profiles.delete(ROOT_ACCOUNT_ID, "reader")
    assert http.get("/console/clusters", follow_redirects=False).headers["location"] == "/console/signin"


def test_a_new_password_or_a_deleted_user_ends_the_session(plane: ControlPlane, http: TestClient) -> None:
    cid, _ = plane.clusters.create(CreateCluster(name="c", size=1))
    reader(plane, cid)
    assert password_sign_in(http, "reader@default", PASSWORD)[0] == 303
    plane.login_profiles.update(ROOT_ACCOUNT_ID, "reader", "Other-pass2", None, None)
    assert http.get("/console/clusters", follow_redirects=False).status_code == 303
    assert password_sign_in(http, "reader@default", PASSWORD)[0] == 200  # the old one is gone
    assert password_sign_in(http, "reader@default", "Other-pass2")[0] == 303
    assert http.get("/console/clusters").status_code == 200
    uid = plane.accounts.user(ROOT_ACCOUNT_ID, "reader").user_id
    plane.accounts.detach(ROOT_ACCOUNT_ID, "reader", "p-reader")
    plane.accounts.delete_user(ROOT_ACCOUNT_ID, "reader")  # its login profile goes with it
    assert http.get("/console/clusters", follow_redirects=False).status_code == 303
    assert plane.login_profiles.repo.get(uid) is None


def test_repeated_failures_lock_the_name_whether_it_exists_or_not(plane: ControlPlane,
                                                                 http: TestClient) -> None:
    cid, _ = plane.clusters.create(CreateCluster(name="c", size=1))
    reader(plane, cid)
    # the name's spellings add up (by account name, id, with the domain), known user or not
    for user in ("reader", "ghost"):
        for n in range(5):
            login = (f"{user}@default", f"{user}@{ROOT_ACCOUNT_ID}", f"{user}@default.onaliyun.com")[n % 3]
            assert WRONG_PASSWORD in password_sign_in(http, login, "Wrong-pass9")[1]
        status, text = password_sign_in(http, f"{user}@{ROOT_ACCOUNT_ID}", PASSWORD)  # even the right password now
        assert status == 200 and LOCKED in text, user
    assert any(e.outcome == "429 TooManyAttempts" for e in plane.audit.query(None, "ConsoleSignin"))


def test_password_reset_required_asks_for_a_new_password_first(plane: ControlPlane,
                                                              http: TestClient) -> None:
    cid, _ = plane.clusters.create(CreateCluster(name="c", size=1))
    reader(plane, cid, reset=True)
    assert password_sign_in(http, "reader@default", PASSWORD) == (303, "/console/password")
    assert http.get("/console/clusters", follow_redirects=False).headers["location"] == "/console/password"
    form = http.get("/console/password").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    # without the CSRF token: refused; the same password again, or two that differ: said so
    assert http.post("/console/password", data={"new_password": "New-pass3", "confirm_password": "New-pass3"},
                     follow_redirects=False).status_code == 403
    for new, again, says in ((PASSWORD, PASSWORD, "differ from the old"), ("New-pass3", "New-pass4", "differ."),
                             ("short", "short", "8-32")):
        r = http.post("/console/password", data={"csrf_token": csrf, "new_password": new, "confirm_password": again})
        assert says in r.text, new
    r = http.post("/console/password", data={"csrf_token": csrf, "new_password": "New-pass3",
                                             "confirm_password": "New-pass3"}, follow_redirects=False)
    assert r.headers["location"] == "/console/clusters"
    assert http.get("/console/clusters").status_code == 200
    _, rec = plane.login_profiles.get(ROOT_ACCOUNT_ID, "reader")
    assert not rec.password_reset_required
    assert password_sign_in(http, "reader@default", "New-pass3") == (303, "/console/clusters")


def test_the_owner_signs_in_as_owner_at_its_account(plane: ControlPlane, http: TestClient) -> None:
    plane.login_profiles.create(ROOT_ACCOUNT_ID, "owner", "Owner-pass1", False, False)
    assert password_sign_in(http, "owner@default", "Owner-pass1") == (303, "/console/clusters")
    assert "Create a cluster" in http.get("/console/clusters").text  # the owner's rights: everything
