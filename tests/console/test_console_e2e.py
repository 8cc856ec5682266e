"""The console end to end (issue 11's check): Debian's Chromium driven by Playwright against a real
`opencs server` that makes a real 2-node swarm. Sign in, create the cluster and watch its stages
live, open its page, download its certificates, ... delete everything; a screenshot of each page at
1280x800 and 390x844, and no console error on any page."""

from __future__ import annotations

import os
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clusterkit import destroy_everything, node_env, require_local_nodes
from tests.conftest import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]

PREFIX, SUBNET = "oco", "10.245.0.0/24"
CHROMIUM = "/usr/bin/chromium"
SIZES = {"wide": (1280, 800), "narrow": (390, 844)}


class Shots:
    """Screenshots of every page at both sizes, into a directory the test names at its end."""

    def __init__(self, page: Any, out: Path) -> None:
        self.page, self.out, self.n = page, out, 0
        out.mkdir(parents=True, exist_ok=True)

    def take(self, name: str) -> None:
        self.n += 1
        for label, (w, h) in SIZES.items():
            self.page.set_viewport_size({"width": w, "height": h})
            self.page.screenshot(path=str(self.out / f"{self.n:02d}-{name}-{label}.png"), full_page=True)
            # nothing may stick out sideways in a narrow window
            overflow = self.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"{name} is {overflow}px wider than a {w}px window"
        self.page.set_viewport_size({"width": 1280, "height": 800})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    require_local_nodes()
    if not Path(CHROMIUM).exists():
        pytest.skip("no Debian chromium (apt-get install chromium; scripts/bootstrap.sh does)")
    from opencs.console.web import HERE

    if not (HERE / "static" / "htmx.min.js").is_file():
        pytest.fail("the console's htmx is missing: scripts/console-assets.sh (scripts/bootstrap.sh runs it)")
    data = tmp_path / "data"
    srv = ServerProcess(data, env={**node_env(PREFIX, SUBNET), "OPENCS_MONITOR_INTERVAL": "2"})
    try:
        yield srv.start()
    finally:
        srv.kill()
        destroy_everything(data, PREFIX, SUBNET)


@pytest.fixture
def browser_page() -> Iterator[tuple[Any, list[str]]]:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            ctx = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
            page = ctx.new_page()
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("dialog", lambda d: d.accept())  # hx-confirm
            page.set_default_timeout(15_000)
            yield page, errors
        finally:
            browser.close()


BAD = """version: '3'
services:
  web:
    image: busybox
    portz: [8080]
"""


def template(version: str) -> str:
    return f"""version: '3'
services:
  web:
    image: busybox
    command: sh -c "echo serving {version}; mkdir -p /w; echo {version} > /w/index.html; exec httpd -f -p 8080 -h /w"
    stop_grace_period: 1s
    labels:
      aliyun.routing.port_8080: http://web.test
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/"]
      interval: 1s
      timeout: 2s
      retries: 2
"""


def running_containers(page: Any, service: str) -> int:
    n: int = page.locator(f".service[data-service='{service}'] tr[data-running=true]").count()
    return n


def wait_for(cond: Any, timeout_s: float, what: str) -> None:
    end = time.time() + timeout_s
    while time.time() < end:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def projects_and_triggers(page: Any, shots: Shots, base: str, cid: str) -> None:
    # the compose editor: the server's error at its line, then fixed and deployed
    page.click("text=Projects")
    page.wait_for_url(f"**/clusters/{cid}/projects")
    page.fill("#editor input[name=name]", "web")
    page.fill("#editor textarea[name=template]", BAD)
    page.click("#editor button[type=submit]")
    page.locator("#error-line[data-line='5']").wait_for()
    assert "portz" in page.inner_text("#editor-error")
    shots.take("editor-error")
    page.fill("#editor textarea[name=template]", template("v1"))
    page.click("#editor button[type=submit]")
    page.wait_for_url(f"**/clusters/{cid}/projects/web")
    page.locator("#project-state[data-state=running]").wait_for(timeout=150_000)
    shots.take("project")

    # scale to 3: three running containers
    page.fill("#scale-form input[name=value]", "3")
    page.click("#scale-form button[type=submit]")
    wait_for(lambda: running_containers(page, "web_web") == 3, 120, "3 running containers")
    shots.take("project-scaled")

    # a container's logs
    page.locator(".service[data-service='web_web'] tr[data-running=true] a").first.click()
    page.wait_for_url("**/logs")
    page.locator("#logs", has_text="serving v1").wait_for(timeout=10_000)
    shots.take("logs")
    page.go_back()
    page.locator("#project-state[data-state=running]").wait_for()

    # blue-green: version 2 beside 1, the weight slider moved, then rolled back
    page.fill("#update-form input[name=version]", "2")
    page.select_option("#update-form select[name=method]", "blue-green")
    page.fill("#update-form textarea[name=template]", template("v2"))
    assert run_task(page, "#update-form button[type=submit]", 180) == "success"
    page.locator("#blue-green").wait_for()
    slider = page.locator("#weight-slider")
    slider.fill("80")  # a range input takes its value like a text field does
    assert page.inner_text("#weight-out") == "80 / 20"
    assert run_task(page, "#weights-form button[type=submit]", 60) == "success"
    page.locator("#blue-green", has_text="new 80%").wait_for(timeout=10_000)
    shots.take("blue-green")
    assert run_task(page, "#blue-green button.danger", 120) == "success"  # roll back
    page.locator("#project-state[data-state=running]").wait_for(timeout=60_000)
    page.locator("#weights-form").wait_for(state="detached", timeout=10_000)
    shots.take("rolled-back")

    # a trigger: created with its secret shown once, its URL called with curl
    page.goto(f"{base}/clusters/{cid}/triggers")
    page.fill("#trigger-form input[name=project_id]", "web")
    page.click("#trigger-form button[type=submit]")
    url = page.inner_text("#trigger-url").strip()
    shots.take("triggers")
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url + "&wait=true"],
                         capture_output=True, text=True, timeout=200)
    assert out.stdout == "200", out
    page.reload()
    assert "never" not in page.inner_text("#triggers tr[data-trigger]")
    assert page.locator("#triggers .calls li").count() >= 1  # its call, from the audit trail
    page.click("#triggers button.danger")
    page.locator("#triggers tr[data-trigger]").wait_for(state="detached")

    # the project deleted
    page.goto(f"{base}/clusters/{cid}/projects/web")
    page.click(".buttons button.danger")
    page.wait_for_url(f"**/clusters/{cid}/projects")

    def gone() -> bool:
        page.reload()
        return page.locator("#projects tr[data-project]").count() == 0

    wait_for(gone, 60, "the project deleted")


def run_task(page: Any, selector: str, timeout_s: float = 180) -> str:
    """Click `selector` and follow the task panel it opens (not an older one) to its end state."""
    def ids() -> set[str]:
        return set(page.locator("section.task").evaluate_all("els => els.map(e => e.dataset.task)"))

    before = ids()
    page.click(selector)
    new: list[str] = []
    wait_for(lambda: bool(new.extend(ids() - before) or new), 30, f"the task panel of {selector}")
    panel = page.locator(f"section.task[data-task='{new[0]}']")
    panel.locator(".task-state[data-state=success], .task-state[data-state=fail]").wait_for(
        timeout=int(timeout_s * 1000))
    state: str = panel.locator(".task-state").get_attribute("data-state")
    return state


def test_console_end_to_end(server: ServerProcess, browser_page: tuple[Any, list[str]], tmp_path: Path) -> None:
    page, errors = browser_page
    shots_dir = Path(os.environ.get("OPENCS_CONSOLE_SHOTS") or tmp_path / "shots")
    shots = Shots(page, shots_dir)
    base = f"{server.url}/console"

    # sign in
    page.goto(base + "/")
    assert page.url.endswith("/console/signin")
    shots.take("signin")
    page.fill("input[name=access_key_id]", server.ak)
    page.fill("input[name=access_key_secret]", server.secret + "x")
    page.click("#signin button[type=submit]")
    assert "wrong" in page.inner_text("#signin-error")
    page.fill("input[name=access_key_secret]", server.secret)
    page.click("#signin button[type=submit]")
    page.wait_for_url("**/console/clusters")
    shots.take("clusters-empty")

    # create: first refused by the API's validation (shown at the field), then a real 2-node swarm
    page.evaluate("window.__sameDocument = true")
    page.fill("#create-form input[name=name]", "-bad")
    page.click("#create-form button[type=submit]")
    page.locator("#error-name").wait_for()
    shots.take("create-invalid")
    page.fill("#create-form input[name=name]", "webui")
    page.fill("#create-form input[name=size]", "2")
    page.click("#create-form button[type=submit]")
    page.locator("section.task .stage").first.wait_for(timeout=30_000)
    shots.take("create-task")
    seen: list[str] = []  # the stages as the page showed them, pushed by the server while it ran

    def finished() -> bool:
        now = page.locator("section.task").first.locator(".stage").evaluate_all(
            "els => els.map(e => e.dataset.stage + ':' + e.className).join(' ')")
        if not seen or seen[-1] != now:
            seen.append(now)
        return page.locator("section.task .task-state[data-state=success]").count() > 0

    wait_for(finished, 180, "the cluster's task")
    assert len(seen) >= 2, seen  # the stages changed on the page while the task ran (no reload)
    stages = page.locator("section.task").first.locator(".stage").count()
    assert stages >= 2
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    row = page.locator("tr[data-cluster]", has_text="webui")
    row.locator("[data-label=State] .state-running").wait_for(timeout=10_000)  # the live list caught up
    cid = row.get_attribute("data-cluster")
    shots.take("clusters")

    # the cluster's page: nodes with health, certificates, docker env lines
    row.locator("a", has_text="webui").click()
    page.wait_for_url(f"**/console/clusters/{cid}")
    assert page.locator("#nodes tr[data-node]").count() == 2
    assert "DOCKER_HOST=tcp://" in page.inner_text("#docker-env")
    shots.take("cluster")
    with page.expect_download() as dl:
        page.click("text=Download certificates")
    zpath = tmp_path / "certs.zip"
    dl.value.save_as(zpath)
    with zipfile.ZipFile(zpath) as z:
        assert sorted(n.rsplit("/", 1)[1] for n in z.namelist()) == ["ca.pem", "cert.pem", "key.pem"]
        z.extractall(tmp_path)
    # the page's docker lines, as a user pastes them next to the unzipped certificates
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    out = subprocess.run(["bash", "-c", page.inner_text("#docker-env")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.count("Ready") == 2, out

    projects_and_triggers(page, shots, base, cid)

    # delete everything
    page.goto(f"{base}/clusters/{cid}")
    assert run_task(page, "text=Delete cluster") == "success"
    page.goto(base + "/clusters")
    assert page.locator("tr[data-cluster]").count() == 0
    shots.take("clusters-after")

    print(f"console screenshots: {shots_dir}")
    assert not errors, errors
