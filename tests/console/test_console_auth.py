"""The console in-process: sign-in into a session cookie, CSRF refusal, sign-out, and a user's RAM
rights applied to what the pages show and do (the same decision as the signed API's)."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.testclient import TestClient

from opencs.api.app import create_app
from opencs.api.schemas import CreateCluster
from opencs.composition import ControlPlane
from opencs.console.app import mount
from opencs.store.tenancy import ROOT_ACCOUNT_ID


def sign_in(c: TestClient, ak: str, secret: str) -> str:
    r = c.post("/console/signin", data={"access_key_id": ak, "access_key_secret": secret}, follow_redirects=False)
    assert r.status_code == 303, r.text
    page = c.get("/console/clusters")
    assert page.status_code == 200
    m = re.search(r'X-CSRF-Token": "([^"]+)"', page.text)
    assert m
    return m.group(1)


def user(plane: ControlPlane, name: str, policy: dict[str, Any] | None = None) -> tuple[str, str]:
    plane.accounts.create_user(ROOT_ACCOUNT_ID, name)
    if policy is not None:
        plane.accounts.create_policy(ROOT_ACCOUNT_ID, f"p-{name}", json.dumps(policy))
        plane.accounts.attach(ROOT_ACCOUNT_ID, name, f"p-{name}")
    info, secret = plane.accounts.create_key(ROOT_ACCOUNT_ID, name)
    return info.access_key_id, secret


def test_sign_in_sets_a_strict_http_only_cookie_and_sign_out_ends_the_session(plane: ControlPlane,
                                                                             http: TestClient) -> None:
    ak, secret = plane.keys.create("console")
    assert http.get("/console/clusters", follow_redirects=False).headers["location"] == "/console/signin"
    bad = http.post("/console/signin", data={"access_key_id": ak, "access_key_secret": secret + "x"})
    assert "wrong" in bad.text and "set-cookie" not in bad.headers
    r = http.post("/console/signin", data={"access_key_id": ak, "access_key_secret": secret}, follow_redirects=False)
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/console" in cookie
    assert secret not in r.headers["set-cookie"] and ak not in r.headers["set-cookie"]
    page = http.get("/console/clusters")
    assert page.status_code == 200 and "Create a cluster" in page.text
    op, _ = plane.clusters.create(CreateCluster(name="op", size=1))
    assert 'id="attach-form"' in http.get(f"/console/clusters/{op}").text  # the operator attaches instances
    assert "default-src 'self'" in page.headers["content-security-policy"]
    csrf = re.search(r'X-CSRF-Token": "([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert http.post("/console/signout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    assert http.get("/console/clusters", follow_redirects=False).status_code == 303
    # htmx requests are sent to the sign-in page by a header, not a redirect body
    rows = http.get("/console/clusters/rows", headers={"HX-Request": "true"})
    assert rows.headers["hx-redirect"] == "/console/signin"


def test_a_forged_post_without_the_csrf_token_is_refused_before_anything_runs(plane: ControlPlane,
                                                                             http: TestClient) -> None:
    csrf = sign_in(http, *plane.keys.create("console"))
    for headers, data in (({}, {"name": "forged", "size": "1"}),
                          ({"X-CSRF-Token": "nope"}, {"name": "forged", "size": "1"}),
                          ({}, {"name": "forged", "size": "1", "csrf_token": csrf[:-1]})):
        r = http.post("/console/clusters", data=data, headers=headers)
        assert r.status_code == 403 and "CSRF" in r.text
    assert plane.clusters.list_json() == b"[]"
    ok = http.post("/console/clusters", data={"name": "real", "size": "1"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200 and "Create cluster real" in ok.text
    # the API's own field validation, shown at the field
    bad = http.post("/console/clusters", data={"name": "-bad", "size": "0"}, headers={"X-CSRF-Token": csrf})
    assert bad.status_code == 422 and 'id="error-name"' in bad.text


def test_a_sign_in_from_another_site_is_refused(plane: ControlPlane, http: TestClient) -> None:
    ak, secret = plane.keys.create("console")
    r = http.post("/console/signin", data={"access_key_id": ak, "access_key_secret": secret},
                  headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert r.status_code == 403 and "set-cookie" not in r.headers


def test_a_user_without_rights_sees_neither_resources_nor_buttons(plane: ControlPlane, http: TestClient) -> None:
    cid, _ = plane.clusters.create(CreateCluster(name="secret-one", size=1))
    csrf = sign_in(http, *user(plane, "nobody"))
    page = http.get("/console/clusters").text
    assert "secret-one" not in page and cid not in page
    assert "Create a cluster" not in page and "Delete" not in page
    detail = http.get(f"/console/clusters/{cid}")
    assert detail.status_code == 403 and "Download certificates" not in detail.text
    # pressing a button the page does not show: the API's decision refuses it
    r = http.post(f"/console/clusters/{cid}/delete", headers={"X-CSRF-Token": csrf})
    assert "not authorized" in r.text
    assert plane.clusters.get(cid)["state"] != "deleting"
    assert http.get(f"/console/clusters/{cid}/certs.zip").status_code == 403
    for sub in ("projects", "triggers", "volumes"):
        r = http.get(f"/console/clusters/{cid}/{sub}")
        assert r.status_code == 403 and "secret-one" not in r.text and "hx-post" not in r.text, sub
    r = http.post(f"/console/clusters/{cid}/projects", data={"name": "x", "template": "services: {}"},
                  headers={"X-CSRF-Token": csrf})
    assert r.status_code == 422 and "not authorized" in r.text
    keys = http.get("/console/keys").text  # RAM rights on oneself: none
    assert "Create an AccessKey" not in keys and "Disable" not in keys


def test_a_read_only_user_sees_its_cluster_without_the_buttons(plane: ControlPlane, http: TestClient) -> None:
    mine, _ = plane.clusters.create(CreateCluster(name="visible", size=1))
    other, _ = plane.clusters.create(CreateCluster(name="invisible", size=1))
    policy = {"Version": "1", "Statement": [{
        "Effect": "Allow", "Action": ["cs:DescribeClusters", "cs:DescribeClusterDetail", "cs:DescribeClusterNodes"],
        "Resource": [f"acs:cs:*:*:cluster/{mine}"]}]}
    sign_in(http, *user(plane, "reader", policy))
    page = http.get("/console/clusters").text
    assert ">visible<" in page and "invisible" not in page and other not in page
    assert "Create a cluster" not in page and "Delete" not in page
    detail = http.get(f"/console/clusters/{mine}").text
    assert "visible" in detail and "Scale" not in detail and "Download certificates" not in detail
    assert "Delete cluster" not in detail and "Projects" not in detail and "attach-form" not in detail


def test_a_disabled_key_ends_its_session(plane: ControlPlane, http: TestClient) -> None:
    ak, secret = user(plane, "temp")
    sign_in(http, ak, secret)
    plane.accounts.set_key_status(ROOT_ACCOUNT_ID, "temp", ak, active=False)
    plane.keys._cache.clear()  # the 2 s verification cache of this process
    assert http.get("/console/clusters", follow_redirects=False).status_code == 303


def test_compose_errors_point_at_their_line() -> None:
    from opencs.console.forms import template_line

    t = "version: '3'\nservices:\n  web:\n    image: busybox\n    portz: [80]\n"
    assert template_line(t, "Invalid template: services.web.portz: unsupported key 'portz'") == 5
    assert template_line(t, "Invalid template: services.web: bad") == 3
    assert template_line(t, "invalid YAML (line 6, column 1): while parsing") == 6
    assert template_line(t, "cluster is launching") is None


def test_application_api_rights_decide_the_project_buttons(plane: ControlPlane, http: TestClient) -> None:
    cid, _ = plane.clusters.create(CreateCluster(name="apps", size=1))
    policy = {"Version": "1", "Statement": [{
        "Effect": "Allow", "Action": ["cs:DescribeClusterDetail", "cs:DescribeClusterNodes", "cs:DescribeProjects"],
        "Resource": [f"acs:cs:*:*:cluster/{cid}"]}]}
    csrf = sign_in(http, *user(plane, "viewer", policy))
    assert "/projects" in http.get(f"/console/clusters/{cid}").text
    page = http.get(f"/console/clusters/{cid}/projects")
    assert page.status_code == 200 and "Deploy a project" not in page.text
    # the Application API's own decision refuses what the page does not offer (and puts it on record)
    r = http.post(f"/console/clusters/{cid}/projects", data={"name": "x", "template": "services: {}"},
                  headers={"X-CSRF-Token": csrf})
    assert "not authorized" in r.text and "cs:CreateProject" in r.text
    assert any(e.outcome.startswith("403") and e.user_name == "viewer"
               for e in plane.audit.query(ROOT_ACCOUNT_ID, "cs:CreateProject"))


def test_access_keys_page_creates_shows_the_secret_once_and_disabling_ones_own_key_signs_out(
        plane: ControlPlane, http: TestClient) -> None:
    ak, secret = user(plane, "keyholder", {"Version": "1", "Statement": [{
        "Effect": "Allow", "Action": ["ram:ListAccessKeys", "ram:CreateAccessKey", "ram:UpdateAccessKey",
                                      "ram:DeleteAccessKey"], "Resource": ["acs:ram:*:*:user/keyholder"]}]})
    csrf = sign_in(http, ak, secret)
    page = http.post("/console/keys", data={"csrf_token": csrf}).text
    m = re.search(r"AccessKeyId: (\S+)\nAccessKeySecret: ([^\s<]+)", page)
    assert m and "Shown once" in page
    new_ak, new_secret = m.groups()
    assert plane.keys.active_secret(new_ak) == new_secret
    listing = http.get("/console/keys").text
    assert new_ak in listing and new_secret not in listing  # shown once
    http.post(f"/console/keys/{new_ak}/delete", data={"csrf_token": csrf})
    assert plane.keys.get(new_ak) is None
    http.post(f"/console/keys/{ak}/status", data={"csrf_token": csrf, "status": "Inactive"})
    assert http.get("/console/keys", follow_redirects=False).status_code == 303


def test_beyond_loopback_the_console_is_https_only(plane: ControlPlane) -> None:
    app = create_app(plane)
    mount(app, plane)
    ak, secret = plane.keys.create("console")
    with TestClient(app, client=("10.0.0.9", 40000)) as far:
        r = far.post("/console/signin", data={"access_key_id": ak, "access_key_secret": secret},
                     follow_redirects=False)
        assert r.status_code == 403 and "HTTPS" in r.text and "set-cookie" not in r.headers
    with TestClient(app, base_url="https://testserver", client=("10.0.0.9", 40000)) as tls:
        r = tls.post("/console/signin", data={"access_key_id": ak, "access_key_secret": secret},
                     follow_redirects=False)
        assert r.status_code == 303 and "secure" in r.headers["set-cookie"].lower()


def test_a_log_stream_sends_only_the_lines_after_the_last_stamp() -> None:
    from opencs.console.routes_projects import _new_lines

    tail = "2026-12-03T08:00:01.100Z one\n2026-12-03T08:00:02.100Z two\n"
    fresh, last = _new_lines(tail, "")
    assert [ln.split()[1] for ln in fresh] == ["one", "two"]
    fresh, last = _new_lines(tail + "2026-12-03T08:00:03.100Z three\n", last)
    assert [ln.split()[1] for ln in fresh] == ["three"] and last.startswith("2026-12-03T08:00:03")
    assert _new_lines(tail, last) == ([], last)
