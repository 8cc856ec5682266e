"""The `opencs` CLI: configure, list, raw api calls, exit codes, task waiting, certs.

Most tests drive a real `opencs server` subprocess (module fixture, killed in its finalizer);
task waiting runs in-process against the ASGI app with real task workers; certs/images use a
canned transport.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner, Result

from opencs.cli.main import app
from opencs.sdk import ACS3, ROA, Client
from tests.conftest import ServerProcess, free_port
from tests.plugins.sdk_tasks import FAIL, OK, SLOW, gate

pytestmark = pytest.mark.integration  # starts real server processes (not only in-process apps)

REPO = Path(__file__).resolve().parents[2]
ENV_VARS = ("OPENCS_ENDPOINT", "OPENCS_ACCESS_KEY_ID", "OPENCS_ACCESS_KEY_SECRET", "OPENCS_SCHEME",
            "OPENCS_PROFILE")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("cli-server") / "data", workers=0)
    try:
        yield srv.start(timeout=90)  # a loaded machine (CI runs everything at once) starts it slowly
    finally:
        srv.kill()


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private config path and no OPENCS_* credentials from the outer environment."""
    path = tmp_path / "home" / ".opencs" / "config.json"
    monkeypatch.setenv("OPENCS_CONFIG", str(path))
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    return path


def run(*args: str, input: str | None = None, obj: dict[str, Any] | None = None) -> Result:
    res = CliRunner().invoke(app, list(args), input=input, obj=obj)
    assert "Traceback" not in res.output, res.output
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res


def configure(server: ServerProcess, secret: str | None = None, scheme: str = "roa",
              profile: str | None = None) -> Result:
    args = ["configure", "--endpoint", f"http://{server.endpoint}", "--access-key-id", server.ak,
            "--access-key-secret", secret or server.secret, "--scheme", scheme]
    if profile:
        args += ["--profile", profile]
    return run(*args)


# ---------------------------------------------------------------------- against a real server


def test_configure_list_and_api(server: ServerProcess, cfg: Path) -> None:
    res = configure(server)
    assert res.exit_code == 0, res.output
    assert server.secret not in res.output
    assert "********" in res.output
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    saved = json.loads(cfg.read_text())
    assert saved["profiles"]["default"]["access_key_id"] == server.ak

    res = run("clusters", "list")
    assert res.exit_code == 0, res.output
    assert "No clusters" in res.stdout

    res = run("clusters", "list", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout) == []

    res = run("api", "GET", "/clusters")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == []

    res = run("api", "get", "/api/v1/clusters?page_number=1", "--query", "page_size=3")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["page_info"]["page_size"] == 3

    res = run("api", "GET", "/version")
    assert json.loads(res.stdout)["api_version"] == "2015-12-15"


def test_server_meta_ram_monitoring_attach_tokens(server: ServerProcess, cfg: Path, tmp_path: Path) -> None:
    """The commands of the routes added since, against the real server: table/JSON/YAML output and
    the exit code of each 4xx."""
    configure(server)
    assert json.loads(run("version").stdout)["api_version"] == "2015-12-15"
    assert "api_version" in run("version", "-o", "table").stdout
    assert run("health").exit_code == 0
    assert "/clusters/{cluster_id}" in json.loads(run("openapi").stdout)["paths"]

    status = json.loads(run("monitoring", "status").stdout)
    assert status["enabled"] is False and "alert_rules" in status
    assert "enabled" in run("monitoring", "status", "-o", "table").stdout

    token = "t" * 32
    for verb in ("status", "script", "join"):  # the token is the credential: unknown, a 403
        res = run("attach-token", verb, token)
        assert res.exit_code == 7 and "AttachTokenInvalid" in res.stderr

    res = run("ram", "CreateUser", "UserName=cli-dev", "DisplayName=CLI")
    assert res.exit_code == 0 and json.loads(res.stdout)["User"]["UserName"] == "cli-dev"
    assert run("ram", "CreateUser", "UserName=cli-dev").exit_code == 8  # exists
    users = run("ram", "ListUsers", "-o", "yaml").stdout
    assert "cli-dev" in users and "UserName" in users
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": ["cs:Describe*"], "Resource": ["*"]}]}))
    assert run("ram", "CreatePolicy", "PolicyName=cli-ro", f"PolicyDocument=@{policy}").exit_code == 0
    assert run("ram", "AttachPolicyToUser", "UserName=cli-dev", "PolicyName=cli-ro", "PolicyType=Custom").exit_code == 0
    assert "cli-ro" in run("ram", "ListPoliciesForUser", "UserName=cli-dev").stdout
    assert run("ram", "CreatePolicy", "PolicyName=x", f"PolicyDocument=@{tmp_path / 'none.json'}").exit_code == 2
    assert run("ram", "CreateUser", "nonsense").exit_code == 2  # not Key=Value
    assert run("ram", "DetachPolicyFromUser", "UserName=cli-dev", "PolicyName=cli-ro", "PolicyType=Custom"
               ).exit_code == 0
    assert run("ram", "DeletePolicy", "PolicyName=cli-ro").exit_code == 0
    assert run("ram", "DeleteUser", "UserName=cli-dev").exit_code == 0
    assert run("ram", "GetUser", "UserName=cli-dev").exit_code == 6
    assert run("ram", "NoSuchAction").exit_code == 6  # InvalidAction.NotFound

    # the registry password (issue 10): served once that lands; until then the route is unknown (404)
    served = "/users" in json.loads(run("openapi").stdout)["paths"]
    res = run("registry-password", input="Reg1stry-pw\n")
    assert res.exit_code == (0 if served else 6), res.output
    if served:
        assert json.loads(res.stdout)["data"]["loginName"] and "Reg1stry-pw" not in res.output
    assert run("registry-password", input="\n").exit_code == 2  # nothing on stdin

    assert run("events", "c-nope").exit_code == 6
    assert run("alerts", "list", "c-nope").exit_code == 6


def test_interactive_configure(server: ServerProcess, cfg: Path) -> None:
    res = run("configure", input=f"http://{server.endpoint}\n{server.ak}\n{server.secret}\nacs3\n")
    assert res.exit_code == 0, res.output
    assert server.secret not in res.output
    assert json.loads(cfg.read_text())["profiles"]["default"]["scheme"] == "acs3"
    res = run("clusters", "list", "--json")
    assert res.exit_code == 0, res.output
    # re-running with empty answers keeps the stored values
    res = run("configure", input="\n\n\n\n")
    assert res.exit_code == 0 and server.secret not in res.output
    assert json.loads(cfg.read_text())["profiles"]["default"]["access_key_secret"] == server.secret


@pytest.mark.parametrize("scheme", ["roa", "acs3"])
def test_wrong_secret_exit_7(server: ServerProcess, cfg: Path, scheme: str) -> None:
    configure(server, secret=server.secret + "x", scheme=scheme)
    res = run("clusters", "list")
    assert res.exit_code == 7, res.output
    assert res.stderr.startswith("Error SignatureDoesNotMatch: ")
    assert "(RequestId " in res.stderr
    assert server.secret not in res.output


def test_not_found_exit_6(server: ServerProcess, cfg: Path) -> None:
    configure(server)
    res = run("clusters", "describe", "c-nope")
    assert res.exit_code == 6
    assert "Error ErrorClusterNotFound:" in res.stderr and "RequestId" in res.stderr
    res = run("tasks", "describe", "T-nope")
    assert res.exit_code == 6


def test_closed_port_exit_3(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("OPENCS_ENDPOINT", endpoint)
    monkeypatch.setenv("OPENCS_ACCESS_KEY_ID", "AK")
    monkeypatch.setenv("OPENCS_ACCESS_KEY_SECRET", "S")
    for args in (["clusters", "list"], ["api", "GET", "/clusters"], ["tasks", "wait", "T-1"]):
        res = run(*args)
        assert res.exit_code == 3, res.output
        assert endpoint in res.stderr and "cannot connect" in res.stderr


def test_env_only_and_profiles(server: ServerProcess, cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCS_ENDPOINT", f"http://{server.endpoint}")
    monkeypatch.setenv("OPENCS_ACCESS_KEY_ID", server.ak)
    monkeypatch.setenv("OPENCS_ACCESS_KEY_SECRET", server.secret)
    assert not cfg.exists()
    assert run("clusters", "list").exit_code == 0
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    configure(server, profile="good")
    configure(server, secret="bad", profile="bad")  # now current
    assert run("clusters", "list").exit_code == 7
    assert run("--profile", "good", "clusters", "list").exit_code == 0
    assert run("--profile", "missing", "clusters", "list").exit_code == 2


def test_usage_errors_exit_2(cfg: Path, tmp_path: Path) -> None:
    assert run("clusters", "list").exit_code == 2  # nothing configured
    assert "opencs configure" in run("clusters", "list").stderr
    assert run("api", "FETCH", "/clusters").exit_code == 2
    assert run("api", "GET", "/clusters", "--query", "novalue").exit_code == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert run("clusters", "create", "--body", f"@{bad}").exit_code == 2
    assert run("clusters", "create", "--body", "@/does/not/exist").exit_code == 2
    assert run("clusters", "frobnicate").exit_code == 2
    assert run("configure", "--endpoint", "x", "--access-key-id", "a", "--access-key-secret", "b",
               "--scheme", "md5").exit_code == 2


def _opencs_cmd() -> list[str]:
    script = Path(sys.executable).with_name("opencs")
    return [str(script)] if script.exists() else [sys.executable, "-m", "opencs.cli.main"]


def test_console_script_subprocess(server: ServerProcess, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env["OPENCS_CONFIG"] = str(tmp_path / "config.json")

    def opencs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*_opencs_cmd(), *args], env=env, capture_output=True, text=True, timeout=60)

    p = opencs("configure", "--endpoint", server.endpoint, "--access-key-id", server.ak,
               "--access-key-secret", server.secret)
    assert p.returncode == 0, p.stderr
    assert server.secret not in p.stdout + p.stderr
    p = opencs("clusters", "list")
    assert p.returncode == 0, p.stderr
    p = opencs("api", "GET", "/clusters")
    assert p.returncode == 0 and json.loads(p.stdout) == []
    p = opencs("--version")
    assert p.returncode == 0 and p.stdout.startswith("opencs ")

    env["OPENCS_ACCESS_KEY_SECRET"] = "wrong"
    p = opencs("clusters", "list")
    assert p.returncode == 7 and p.stderr.startswith("Error SignatureDoesNotMatch")
    assert "Traceback" not in p.stderr

    env["OPENCS_ENDPOINT"] = f"127.0.0.1:{free_port()}"
    p = opencs("api", "GET", "/clusters")
    assert p.returncode == 3 and env["OPENCS_ENDPOINT"] in p.stderr and "Traceback" not in p.stderr


# ---------------------------------------------------------------------- tasks wait, in-process


@pytest.fixture
def inproc(runtime: Any, creds: tuple[str, str], cfg: Path) -> Iterator[Callable[..., Result]]:
    from opencs.api.app import create_app

    runtime.tasks.start(1)
    with TestClient(create_app(runtime), raise_server_exceptions=False) as http:
        def factory() -> Client:
            return Client("http://testserver", *creds, scheme=ROA, http_client=http)

        def invoke(*args: str) -> Result:
            return run(*args, obj={"client_factory": factory})

        invoke.runtime = runtime  # type: ignore[attr-defined]
        yield invoke
    gate.set()


def test_tasks_wait_success(inproc: Any) -> None:
    task_id = inproc.runtime.tasks.submit(OK, {})
    res = inproc("tasks", "wait", task_id, "--poll", "0.05", "--timeout", "15")
    assert res.exit_code == 0, res.output
    assert f"Task {task_id} succeeded" in res.stderr  # progress on stderr: stdout is the reply
    assert "prepare" in res.stderr and "finish" in res.stderr  # plain stage lines (not a TTY)
    assert "\x1b[" not in res.stderr and res.stdout == ""
    res = inproc("tasks", "describe", task_id)
    assert json.loads(res.stdout)["state"] == "success"


def test_tasks_wait_failure_exit_4(inproc: Any) -> None:
    task_id = inproc.runtime.tasks.submit(FAIL, {})
    res = inproc("tasks", "wait", task_id, "--poll", "0.05", "--timeout", "15")
    assert res.exit_code == 4, res.output
    assert "Error NodeBootFailed: the node did not come up" in res.stderr


def test_tasks_wait_timeout_exit_5(inproc: Any) -> None:
    gate.clear()
    task_id = inproc.runtime.tasks.submit(SLOW, {})
    try:
        res = inproc("tasks", "wait", task_id, "--poll", "0.05", "--timeout", "0.3")
        assert res.exit_code == 5, res.output
        assert "TaskTimeout" in res.stderr and task_id in res.stderr
    finally:
        gate.set()


# ---------------------------------------------------------------------- canned replies


def canned(routes: dict[tuple[str, str], Any]) -> dict[str, Any]:
    def handler(req: httpx.Request) -> httpx.Response:
        key = (req.method, req.url.path)
        if key not in routes:
            return httpx.Response(404, json={"Code": "NotFound", "Message": "no", "RequestId": "R"})
        status, body = routes[key] if isinstance(routes[key], tuple) else (200, routes[key])
        return httpx.Response(status, json=body, headers={"x-acs-request-id": "R-1"})

    def factory() -> Client:
        return Client("http://x", "AK", "S", scheme=ACS3, transport=httpx.MockTransport(handler))

    return {"client_factory": factory}


def test_certs_written_with_modes(tmp_path: Path, cfg: Path) -> None:
    obj = canned({("GET", "/clusters/c1/certs"): {"ca": "CA", "cert": "CERT", "key": "KEY"}})
    d = tmp_path / "certs"
    res = run("clusters", "certs", "c1", "--dir", str(d), obj=obj)
    assert res.exit_code == 0, res.output
    assert (d / "ca.pem").read_text() == "CA" and (d / "cert.pem").read_text() == "CERT"
    assert (d / "key.pem").read_text() == "KEY"
    assert stat.S_IMODE((d / "key.pem").stat().st_mode) == 0o600
    assert "KEY" not in res.stdout
    res = run("clusters", "certs", "c1", "--dir", str(d), obj=obj)
    assert res.exit_code == 1 and "--force" in res.stderr
    assert run("clusters", "certs", "c1", "--dir", str(d), "--force", obj=obj).exit_code == 0


def test_kubeconfig_written_private(tmp_path: Path, cfg: Path) -> None:
    # a Kubernetes cluster's success path (a real one: tests/engines/kubernetes); the CLI's part is the file
    obj = canned({("GET", "/k8s/c1/user_config"): {"config": "apiVersion: v1\nkind: Config\n", "expiration": "x"}})
    f = tmp_path / "kubeconfig"
    res = run("clusters", "kubeconfig", "c1", "-f", str(f), obj=obj)
    assert res.exit_code == 0, res.output
    assert f.read_text().startswith("apiVersion: v1") and stat.S_IMODE(f.stat().st_mode) == 0o600
    assert run("clusters", "kubeconfig", "c1", obj=obj).stdout == "apiVersion: v1\nkind: Config\n"


def test_tables_and_create_wait(cfg: Path) -> None:
    obj = canned({
        ("GET", "/clusters"): [{"cluster_id": "c1", "name": "web", "state": "running", "size": 2}],
        ("GET", "/images"): {"local": {"items": [{"text": "Debian busybox", "value": "opencs/base"}]}},
        ("GET", "/instances"): [{"instance_id": "i-1", "state": "free"}],
        ("POST", "/clusters"): (202, {"cluster_id": "c2", "request_id": "r", "task_id": "T-9"}),
        ("GET", "/tasks/T-9"): {"task_id": "T-9", "state": "fail",
                                "stages": [{"name": "nodes", "state": "fail", "message": "boom"}],
                                "error": {"code": "NodeFailed", "message": "boom"}},
        ("DELETE", "/instances/i-1"): {"instance_id": "i-1"},
    })
    res = run("clusters", "list", obj=obj)
    assert res.exit_code == 0 and "c1" in res.stdout and "web" in res.stdout and "running" in res.stdout
    res = run("images", obj=obj)
    assert res.exit_code == 0 and "opencs/base" in res.stdout
    res = run("instances", "list", obj=obj)
    assert res.exit_code == 0 and "i-1" in res.stdout
    res = run("instances", "delete", "i-1", obj=obj)
    assert res.exit_code == 0 and json.loads(res.stdout) == {"instance_id": "i-1"}
    res = run("clusters", "create", "--body", '{"name": "x"}', "--wait", obj=obj)
    assert res.exit_code == 4
    assert json.loads(res.stdout)["task_id"] == "T-9" and "nodes" in res.stderr
    assert "Error NodeFailed: boom (task T-9)" in res.stderr


def test_api_sends_body_headers_and_query(tmp_path: Path, cfg: Path) -> None:
    from opencs.auth import signature as sig

    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return httpx.Response(202, json={"task_id": "T-1"})

    def factory() -> Client:
        return Client("http://x:1", "AK", "S", transport=httpx.MockTransport(handler))

    body = tmp_path / "attach.json"
    body.write_text('{"instances": ["i-1"], "password": "p"}')
    res = run("api", "POST", "/clusters/c1/attach?dry=1", "--body", f"@{body}",
              "--header", "Content-Type=application/json", "--header", "x-acs-region-id=local",
              "--query", "b=", obj={"client_factory": factory})
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"task_id": "T-1"}
    req = seen[-1]
    assert json.loads(req.content) == {"instances": ["i-1"], "password": "p"}
    assert req.headers["x-acs-region-id"] == "local"
    assert req.url.path == "/clusters/c1/attach" and req.url.params == httpx.QueryParams("dry=1&b=")
    h = {k.lower(): v for k, v in req.headers.items()}
    sts = sig.roa_string_to_sign("POST", h, sig.roa_canonical_resource("/clusters/c1/attach",
                                                                        [("dry", "1"), ("b", "")]))
    assert h["authorization"] == f"acs AK:{sig.roa_signature('S', sts)}"

    res = run("api", "POST", "/x", "--header", "Content-Type=text/plain", "--body", "hello",
              obj={"client_factory": factory})
    assert res.exit_code == 0 and seen[-1].content == b"hello"
    assert seen[-1].headers["content-type"] == "text/plain"


def test_form_body_rejected_by_server(server: ServerProcess, cfg: Path) -> None:
    configure(server)
    res = run("api", "POST", "/clusters", "--header", "Content-Type=application/x-www-form-urlencoded",
              "--body", "name=x")
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith("Error ") and "RequestId" in res.stderr


def test_create_cluster_no_workers(server: ServerProcess, cfg: Path, tmp_path: Path) -> None:
    """The server runs without task workers: the create task stays pending, nothing is built."""
    configure(server)
    body = tmp_path / "create.json"
    body.write_text(json.dumps({"name": "cli-c1", "size": 1}))
    res = run("clusters", "create", "--body", f"@{body}")
    assert res.exit_code == 0, res.output
    reply = json.loads(res.stdout)
    assert reply["cluster_id"] and reply["task_id"].startswith("T-")
    res = run("clusters", "list")
    assert res.exit_code == 0 and reply["cluster_id"] in res.stdout and "cli-c1" in res.stdout
    res = run("clusters", "describe", reply["cluster_id"])
    assert json.loads(res.stdout)["name"] == "cli-c1"
    res = run("tasks", "describe", reply["task_id"])
    assert json.loads(res.stdout)["state"] == "pending"
    res = run("tasks", "wait", reply["task_id"], "--timeout", "0.2", "--poll", "0.05")
    assert res.exit_code == 5, res.output
    res = run("clusters", "create", "--body", '{"name": "-bad", "size": 0}')
    assert res.exit_code == 1 and res.stderr.startswith("Error ")

    cid = reply["cluster_id"]  # the caller's certificates: issue two, revoke them all (--mine)
    assert run("clusters", "certs", cid, "--dir", str(tmp_path / "a")).exit_code == 0
    assert run("clusters", "certs", cid, "--dir", str(tmp_path / "b"), "--minutes", "30").exit_code == 0
    states = json.loads(run("clusters", "certs-list", cid, "-o", "json").stdout)
    assert len(states) == 2 and {c["state"] for c in states} == {"valid"}
    res = run("clusters", "certs-revoke", cid, "--mine")
    assert res.exit_code == 0 and res.stdout.startswith("Revoked 2 certificate(s): ")
    assert {c["state"] for c in json.loads(run("clusters", "certs-list", cid, "-o", "json").stdout)} == {"revoked"}

    # the node routes on a cluster without nodes: each answers with its error class
    for extra in ((), ("--delete-nodes",)):  # RemoveClusterNodes, or DeleteClusterNodes
        res = run("clusters", "remove-nodes", cid, "no-such-node", *extra)
        assert res.exit_code == 6 and "ErrorNodeNotFound" in res.stderr, res.output

    # the machine pool: a create task starts (no workers run it); a host that is not user@host: 400
    res = run("instances", "create", "--count", "1")
    assert res.exit_code == 0 and json.loads(res.stdout)["task_id"].startswith("T-"), res.output
    res = run("instances", "register", "--ssh", "nobody", "--password-stdin", input="pw\n")
    assert res.exit_code == 1 and "InvalidTarget" in res.stderr, res.output
    res = run("monitoring", "disable")
    assert res.exit_code == 0 and json.loads(res.stdout)["enabled"] is False, res.output
