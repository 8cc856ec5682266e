"""A RAM user signs in to the console with its logon name and password, in Debian's Chromium driven by
Playwright against a real `opencs server`: the owner makes the user, its login profile and a policy
allowing only the describe actions on one cluster through the RAM API (the official aliyun-python-sdk-ram);
the user's browser shows just that cluster and no button its policy refuses, a wrong password is
refused with the generic message, and sign-out ends the session. The clusters are store rows (no
nodes: authorization runs before any engine work), so the test needs no dockerd."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_accounts_ram import A1, A2, B1, seed
from tests.conftest import ServerProcess
from tests.sdks import ram_call, ram_client

pytestmark = pytest.mark.integration  # a real server process and a browser

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "Viewer-pass1"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    if not Path(CHROMIUM).exists():
        pytest.skip("no Debian chromium (apt-get install chromium; scripts/bootstrap.sh does)")
    data = tmp_path / "data"
    seed(data)  # clusters A1, A2 of the first account, B1 of another
    srv = ServerProcess(data, env={"OPENCS_MONITOR_INTERVAL": "0"}, workers=0)
    try:
        yield srv.start(timeout=90)
    finally:
        srv.kill()


@pytest.fixture
def page() -> Iterator[tuple[Any, list[str]]]:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            pg = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            pg.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            pg.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            pg.set_default_timeout(15_000)
            yield pg, errors
        finally:
            browser.close()


def owner_makes_the_viewer(srv: ServerProcess) -> None:
    c = ram_client(srv.endpoint, srv.ak, srv.secret)
    ram_call(c, "CreateUser", UserName="viewer")
    ram_call(c, "CreateLoginProfile", UserName="viewer", Password=PASSWORD)
    # not cs:Describe*: that takes in DescribeClusterCerts, GetClusterCerts' other name (a credential)
    doc = {"Version": "1", "Statement": [{
        "Effect": "Allow", "Action": ["cs:DescribeClusters", "cs:DescribeClusterDetail", "cs:DescribeClusterNodes"],
        "Resource": f"acs:cs:*:*:cluster/{A1}"}]}
    ram_call(c, "CreatePolicy", PolicyName="describe-a1", PolicyDocument=json.dumps(doc))
    ram_call(c, "AttachPolicyToUser", UserName="viewer", PolicyName="describe-a1", PolicyType="Custom")


def test_a_user_signs_in_with_its_password_and_sees_only_what_its_policy_allows(
        server: ServerProcess, page: tuple[Any, list[str]]) -> None:
    pg, errors = page
    owner_makes_the_viewer(server)
    base = f"{server.url}/console"
    pg.goto(base + "/clusters")
    assert pg.url.endswith("/console/signin")
    pg.set_viewport_size({"width": 390, "height": 844})  # both forms fit a phone's width
    assert pg.evaluate("document.documentElement.scrollWidth - window.innerWidth") <= 1
    pg.set_viewport_size({"width": 1280, "height": 800})
    pg.fill("#signin-password input[name=login]", "viewer@default")
    pg.fill("#signin-password input[name=password]", PASSWORD + "x")
    pg.click("#signin-password button[type=submit]")
    assert pg.inner_text("#signin-error") == "The logon name or password is wrong."
    assert pg.url.endswith("/console/signin") and not pg.context.cookies()

    pg.fill("#signin-password input[name=password]", PASSWORD)
    pg.click("#signin-password button[type=submit]")
    pg.wait_for_url("**/console/clusters")
    cookie = next(c for c in pg.context.cookies() if c["name"] == "opencs_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert pg.inner_text("header .who") == "viewer"
    rows = pg.locator("tr[data-cluster]")
    assert rows.evaluate_all("els => els.map(e => e.dataset.cluster)") == [A1]  # not A2, nor B1 of account B
    body = pg.inner_text("main")
    assert A2 not in body and B1 not in body and "Create a cluster" not in body
    assert pg.locator("main button, main form[hx-post], main [hx-delete]").count() == 0  # no action offered

    pg.locator(f"tr[data-cluster='{A1}'] a").first.click()
    pg.wait_for_url(f"**/console/clusters/{A1}")
    detail = pg.inner_text("main")
    assert A1 in detail
    for refused in ("Scale", "Delete cluster", "Download certificates", "Reset", "Remove"):
        assert pg.locator("main button", has_text=refused).count() == 0, refused
    assert pg.locator("text=Download certificates").count() == 0 and pg.locator("#attach-form").count() == 0
    assert not errors, errors
    # another cluster of the same account: the policy refuses it (the API's 403, as a page; Chromium
    # logs any 4xx navigation as a console error, which is this check's expected answer)
    assert pg.goto(f"{base}/clusters/{A2}").status == 403
    errors.clear()

    pg.goto(base + "/clusters")
    pg.click("header form button[type=submit]")  # sign out
    pg.wait_for_url("**/console/signin")
    pg.goto(base + "/clusters")
    assert pg.url.endswith("/console/signin")
    assert not errors, errors
