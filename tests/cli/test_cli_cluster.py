"""Every client command of the CLI against a real `opencs server` that runs a real one-node Swarm
cluster (local nodes, prefix ``occ``): table, JSON and YAML output, the exit code of each error
class, a bad ``-f`` file named in the message, task progress, shell completion of cluster ids,
``eval "$(opencs clusters env ID)"; docker service ls`` and a docker context. The Application API
methods of the SDK run here too, sync and async (the control-plane methods: tests/sdk).

One server and one cluster serve the whole module (the tests run in file order and build on each
other: the cluster the first creates, the project the next deploys); teardown destroys every
instance the server made, by the ids in its data dir.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from typer.testing import CliRunner, Result

from opencs.cli.main import app
from opencs.sdk import AsyncClient, Client, ConflictError, NotFoundError
from tests.clusterkit import destroy_everything, node_env, require_local_nodes
from tests.conftest import ServerProcess
from tests.sdk.kit import both

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow]

PREFIX, SUBNET = "occ", "10.235.0.0/24"
CLEAR = ("OPENCS_PROFILE", "OPENCS_OUTPUT", "OPENCS_CLUSTER", "OPENCS_SCHEME", "OPENCS_CA_FILE",
         "DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT")


def template(tag: str) -> str:
    return f"""
services:
  web:
    image: busybox
    command: sh -c 'echo {tag} $${{NOTE:-none}}; exec sleep 3600'
    stop_grace_period: 1s
    environment:
      NOTE: ${{NOTE:-unset}}
    volumes: ['data:/data']
volumes:
  data: {{}}
"""


@dataclass
class Env:
    srv: ServerProcess
    tmp: Path
    environ: dict[str, str]
    cid: str = ""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    require_local_nodes()
    tmp = tmp_path_factory.mktemp("cli-cluster")
    data = tmp / "data"
    srv = ServerProcess(data, env={**node_env(PREFIX, SUBNET), "OPENCS_MONITOR_INTERVAL": "0"})
    mp = pytest.MonkeyPatch()
    environ = {"OPENCS_CONFIG": str(tmp / "home" / ".opencs" / "config.json"),
               "OPENCS_ENDPOINT": f"http://{srv.endpoint}", "OPENCS_ACCESS_KEY_ID": srv.ak,
               "OPENCS_ACCESS_KEY_SECRET": srv.secret, "DOCKER_CONFIG": str(tmp / "docker-config")}
    for k in CLEAR:
        mp.delenv(k, raising=False)
    for k, v in environ.items():
        mp.setenv(k, v)
    try:
        srv.start(timeout=90)
        yield Env(srv, tmp, environ)
    finally:
        mp.undo()
        srv.kill()
        destroy_everything(data, PREFIX, SUBNET)


def run(*args: str, code: int = 0, input: str | None = None) -> Result:
    res = CliRunner().invoke(app, list(args), input=input)
    assert "Traceback" not in res.output, res.output
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    assert res.exit_code == code, f"opencs {' '.join(args)} → {res.exit_code}\n{res.stdout}\n{res.stderr}"
    return res


def js(*args: str) -> Any:
    return json.loads(run(*args, "-o", "json").stdout)


def opencs_cmd() -> str:
    script = Path(sys.executable).with_name("opencs")
    assert script.exists(), script
    return str(script)


def shell(env: Env, script: str, **extra: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in CLEAR}
    environ.update(env.environ, PATH=f"{Path(opencs_cmd()).parent}:{os.environ['PATH']}", **extra)
    return subprocess.run(["bash", "-c", script], env=environ, capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------------- clusters


@pytest.fixture(scope="module")
def created(env: Env) -> Result:
    """The module's cluster, created through the CLI (the reply, then a line per stage change)."""
    res = run("clusters", "create", "--body", '{"name": "cli", "size": 1}', "--wait", "--timeout", "300")
    env.cid = json.loads(res.stdout)["cluster_id"]  # progress is on stderr
    return res


def test_cluster_create_with_progress_list_describe(env: Env, created: Result) -> None:
    reply = json.loads(created.stdout)
    assert reply["task_id"].startswith("T-") and reply["cluster_id"] == env.cid
    assert "[1/" in created.stderr and "success" in created.stderr  # a line per stage change
    assert f"Task {reply['task_id']} succeeded" in created.stderr

    table = run("clusters", "list").stdout
    assert env.cid in table and "running" in table and "cluster_id" in table
    listed = js("clusters", "list")
    assert [c["cluster_id"] for c in listed] == [env.cid]
    assert yaml.safe_load(run("clusters", "list", "-o", "yaml").stdout)[0]["name"] == "cli"
    assert "1 total" in run("clusters", "list", "--page", "1", "--page-size", "1").stdout
    assert yaml.safe_load(run("--output", "yaml", "clusters", "describe", env.cid).stdout)["cluster_id"] == env.cid
    described = js("clusters", "describe", env.cid)
    assert described["state"] == "running" and described["master_url"]
    assert "master_url" in run("clusters", "describe", env.cid, "-o", "table").stdout
    nodes = js("clusters", "nodes", env.cid)["nodes"]
    assert len(nodes) == 1 and nodes[0]["ip_address"][0] in run("clusters", "nodes", env.cid).stdout

    run("clusters", "describe", "c-nope", code=6)
    run("clusters", "scale", env.cid, "--body", '{"size": "two"}', code=1)  # the server's 400
    run("clusters", "scale", env.cid, code=2)  # no --size
    run("clusters", "list", "-o", "xml", code=2)


def test_certs_env_and_docker_context(env: Env, created: Result) -> None:
    d = env.tmp / "certs"
    run("clusters", "certs", env.cid, "--dir", str(d))
    assert stat.S_IMODE((d / "key.pem").stat().st_mode) == 0o600
    run("clusters", "certs", env.cid, "--dir", str(d), code=1)  # exists; --force replaces
    run("clusters", "certs", env.cid, "--dir", str(d), "--force")

    # per-user certificates: issue one with a lifetime, find it in the list, revoke it by serial
    run("clusters", "certs", env.cid, "--dir", str(env.tmp / "short"), "--minutes", "60")
    serial = format(x509.load_pem_x509_certificate((env.tmp / "short" / "cert.pem").read_bytes()).serial_number, "x")
    states = {c["serial"]: c for c in js("clusters", "certs-list", env.cid)}
    assert states[serial]["state"] == "valid" and serial in run("clusters", "certs-list", env.cid).stdout
    assert js("clusters", "certs-revoke", env.cid, serial)["state"] == "revoked"
    run("clusters", "certs-revoke", env.cid, code=2)  # a serial or --mine

    lines = run("clusters", "env", env.cid).stdout
    assert "export DOCKER_HOST=tcp://" in lines and "export DOCKER_TLS_VERIFY=1" in lines
    assert "unset DOCKER_HOST" in run("clusters", "env", env.cid, "--unset").stdout
    assert "set -gx DOCKER_HOST" in run("clusters", "env", env.cid, "--shell", "fish").stdout

    # what the seed's Docker Machine chapter gave its users
    p = shell(env, f'eval "$(opencs clusters env {env.cid})" && docker service ls && docker node ls')
    assert p.returncode == 0, p.stderr
    assert "ID" in p.stdout and "Leader" in p.stdout

    p = shell(env, f"opencs clusters docker-context {env.cid} --name cli-ctx && "
                   "docker --context cli-ctx node ls")
    assert p.returncode == 0, p.stderr
    assert "Created docker context cli-ctx" in p.stdout and "Leader" in p.stdout
    p = shell(env, f"opencs clusters docker-context {env.cid} --name cli-ctx")
    assert p.returncode == 1 and "--force" in p.stderr
    assert shell(env, f"opencs clusters docker-context {env.cid} --name cli-ctx --force").returncode == 0


def test_shell_completion_of_cluster_ids(env: Env, created: Result) -> None:
    p = shell(env, "opencs completion bash")
    assert p.returncode == 0 and "_OPENCS_COMPLETE" in p.stdout, p.stderr
    p = shell(env, "opencs", _OPENCS_COMPLETE="complete_bash", COMP_WORDS="opencs clusters describe ",
              COMP_CWORD="3")
    assert p.returncode == 0 and env.cid in p.stdout, (p.stdout, p.stderr)


# ---------------------------------------------------------------------- projects, services, volumes


@pytest.fixture(scope="module")
def sdk_checks(env: Env, created: Result) -> Iterator[list[Future[None]]]:
    """:func:`check_application_api` for Client/AppClient and for AsyncClient/AsyncAppClient, each
    on a project of its own, started with the first project test and left to run beside the CLI
    tests (all of them mostly wait for the engine to converge);
    test_sdk_application_api_sync_and_async collects the outcome."""
    srv = env.srv
    makers = {"sync": lambda: Client(srv.url, srv.ak, srv.secret),
              "async": lambda: AsyncClient(srv.url, srv.ak, srv.secret, scheme="acs3")}

    def one(kind: str) -> None:
        with closing(both(kind, makers["sync"], makers["async"])) as clients:
            for cs in clients:
                check_application_api(cs, env.cid, f"sdk{kind}")

    with ThreadPoolExecutor(2) as pool:
        yield [pool.submit(one, kind) for kind in makers]




def test_bad_compose_files_are_named(env: Env, created: Result) -> None:
    c = ("--cluster", env.cid)
    bad_yaml = env.tmp / "bad" / "compose.yml"
    bad_yaml.parent.mkdir()
    bad_yaml.write_text("services:\n  web:\n    image: busybox\n   command: [\n")
    res = run("projects", "create", *c, "-f", str(bad_yaml), "shop", code=2)
    assert str(bad_yaml) in res.stderr and "line 4" in res.stderr
    bad_compose = env.tmp / "bad" / "wrong.yml"
    bad_compose.write_text("services:\n  web:\n    image: busybox\n    ports: {nope: 1}\n")
    res = run("projects", "create", *c, "-f", str(bad_compose), "shop", code=1)
    assert str(bad_compose) in res.stderr and "RequestId" in res.stderr
    res = run("projects", "create", *c, "-f", str(env.tmp / "missing.yml"), "shop", code=2)
    assert "missing.yml" in res.stderr
    assert "shop" not in {p["name"] for p in js("projects", "list", *c)}


def test_project_lifecycle(env: Env, created: Result, sdk_checks: list[Future[None]]) -> None:
    c = ("--cluster", env.cid)
    f = env.tmp / "shop" / "compose.yml"
    f.parent.mkdir()
    f.write_text(template("v1"))
    res = run("projects", "create", *c, "-f", str(f), "-e", "NOTE=hello", "--wait")  # name: the directory
    assert "Project shop created" in res.stdout and "Project shop: running" in res.stdout
    run("projects", "create", *c, "-f", str(f), "shop", code=8)  # exists: a conflict
    assert "shop" in run("projects", "list", *c).stdout
    assert [p["name"] for p in js("projects", "list", *c, "--filter", "shop")] == ["shop"]
    project = js("projects", "get", "shop", *c)
    assert project["environment"]["NOTE"] == "hello" and project["current_state"] == "running"
    assert yaml.safe_load(run("projects", "get", "shop", *c, "-o", "yaml").stdout)["name"] == "shop"
    assert "current_state" in run("projects", "get", "shop", *c, "-o", "table").stdout
    run("projects", "get", "nope", *c, code=6)

    assert "shop_web" in run("services", "list", *c).stdout
    assert [s["id"] for s in js("services", "list", *c, "--filter", "shop")] == ["shop_web"]
    run("services", "scale", "shop_web", "2", *c)
    svc = js("services", "get", "shop_web", *c)
    assert sum(1 for x in svc["containers"].values() if x.get("running")) == 2
    assert "container" in run("services", "get", "shop_web", *c, "-o", "table").stdout
    run("services", "stop", "shop_web", *c, "-t", "0")
    run("services", "start", "shop_web", *c)
    run("services", "kill", "shop_web", *c, "--signal", "HUP")
    run("services", "get", "shop_nope", *c, code=6)

    run("projects", "stop", "shop", *c, "-t", "0")
    assert js("projects", "get", "shop", *c)["current_state"] == "stopped"
    run("projects", "start", "shop", *c)
    run("projects", "kill", "shop", *c, "--signal", "HUP")
    assert "Project shop: running" in run("projects", "redeploy", "shop", *c, "--wait").stdout
    run("projects", "wait", "shop", *c, "--timeout", "60")


def test_logs_events_alerts(env: Env, created: Result) -> None:
    c = ("--cluster", env.cid)
    line = wait_for_line(lambda: run("projects", "logs", "shop", *c).stdout, "v1 hello")
    assert " | " in line  # '<container> | <text>'
    assert "v1 hello" in run("services", "logs", "shop_web", *c, "--tail", "1", "--timestamps").stdout
    run("services", "logs", "shop_nope", *c, code=6)
    run("projects", "logs", "nope", *c, code=6)
    # followed: the lines so far arrive, then it waits for more until stopped
    p = shell(env, f"timeout 8 opencs services logs shop_web --cluster {env.cid} --follow")
    assert p.returncode == 124 and "v1 hello" in p.stdout, (p.stdout, p.stderr)

    events = js("events", env.cid)
    assert {"task"} <= {e["kind"] for e in events} and all(e["cluster_id"] == env.cid for e in events)
    assert {e["kind"] for e in js("events", env.cid, "--kind", "task", "--project", "shop")} == {"task"}
    assert "shop" in run("events", env.cid, "--project", "shop").stdout
    assert all(e["id"] > events[-2]["id"] for e in js("events", env.cid, "--after", str(events[-2]["id"])))
    p = shell(env, f"timeout 6 opencs events {env.cid} --follow -o json")  # the newest 100, then new ones
    first = json.loads(p.stdout.splitlines()[0])  # (the SDK checks beside this one add events meanwhile)
    assert p.returncode == 124 and first["cluster_id"] == env.cid and first["id"] >= events[0]["id"], p.stderr

    rule = js("alerts", "create", env.cid, "--body", json.dumps({
        "project_id": "shop", "service": "web", "max_replicas": 3,
        "scale_out": {"cpu_above": 90, "for": "60s", "step": 1}}))
    assert rule["id"].startswith("ar-") and rule["trigger_id"]
    assert rule["id"] in run("alerts", "list", env.cid).stdout
    run("alerts", "create", env.cid, "--body", '{"project_id": "shop"}', code=1)  # no service: a 400
    run("alerts", "delete", env.cid, rule["id"])
    assert js("alerts", "list", env.cid) == []
    run("alerts", "delete", env.cid, rule["id"], code=6)


def test_updates_blue_green_confirm_rollback(env: Env, created: Result) -> None:
    c = ("--cluster", env.cid)
    f = env.tmp / "shop" / "compose.yml"
    f.write_text(template("v2"))
    res = run("projects", "update", "shop", *c, "-f", str(f), "--version", "1.1", "--wait")
    assert "update accepted" in res.stdout and "succeeded" in res.stderr
    assert js("projects", "get", "shop", *c)["version"] == "1.1"
    run("projects", "update", "shop", *c, "-f", str(f), "--version", "1.1", code=8)  # same version

    f.write_text(template("v3"))
    run("projects", "update", "shop", *c, "-f", str(f), "--version", "1.2", "--blue-green", "--wait")
    assert js("projects", "get", "shop", *c)["blue_green"]["new_version"] == "1.2"
    run("projects", "update", "shop", *c, "--weight", "30", "--wait")
    assert js("projects", "get", "shop", *c)["blue_green"]["weights"] == {"old": 70, "new": 30}
    run("projects", "rollback", "shop", *c, "--wait")
    assert js("projects", "get", "shop", *c)["version"] == "1.1"
    run("projects", "confirm", "shop", *c, code=8)  # no release in progress

    run("projects", "update", "shop", *c, "-f", str(f), "--version", "1.3", "--blue-green", "--wait")
    run("projects", "confirm", "shop", *c, "--wait")
    assert js("projects", "get", "shop", *c)["version"] == "1.3"


def test_volumes(env: Env, created: Result) -> None:
    c = ("--cluster", env.cid)
    assert "shop_data" in run("volumes", "list", *c).stdout
    run("volumes", "delete", "shop_data", *c, code=8)  # the project's container uses it
    vol = js("volumes", "create", "scratch", *c, "--label", "team=cli")
    assert vol["Name"] == "scratch" and vol["Labels"] == {"team": "cli"}
    assert js("volumes", "get", "scratch", *c)["Driver"] == "local"
    assert {v["Name"] for v in js("volumes", "list", *c)} >= {"scratch", "shop_data"}
    run("volumes", "delete", "scratch", *c)
    run("volumes", "get", "scratch", *c, code=6)


def test_triggers(env: Env, created: Result) -> None:
    c = ("--cluster", env.cid)
    trig = js("triggers", "create", *c, "--project", "shop")
    assert trig["secret"] and trig["trigger_url"]
    assert trig["id"] in run("triggers", "list", *c).stdout
    assert trig["secret"] not in run("triggers", "list", *c, "-o", "json").stdout
    rotated = js("triggers", "rotate", trig["id"], *c, "--grace", "0")
    assert rotated["secret"] != trig["secret"]
    run("triggers", "invoke", trig["trigger_url"], "--secret", trig["secret"], code=7)  # rotated away
    res = run("triggers", "invoke", trig["trigger_url"], "--secret", rotated["secret"], "--wait")
    assert "succeeded" in res.stderr
    run("triggers", "delete", trig["id"], *c)
    assert js("triggers", "list", *c) == []
    run("triggers", "delete", trig["id"], *c, code=6)

    signed = js("triggers", "create", *c, "--project", "shop", "--signed")
    assert signed["signed"] and signed["signing_secret"].startswith("whsec_")
    run("triggers", "invoke", signed["trigger_url"], "--secret", signed["secret"], code=7)  # no signature
    res = run("triggers", "invoke", signed["trigger_url"], "--signing-secret", signed["signing_secret"], "--wait")
    assert "succeeded" in res.stderr
    run("triggers", "delete", signed["id"], *c)


def test_reads_tasks_instances_images_audit_metrics(env: Env, created: Result) -> None:
    task_id = js("projects", "get", "shop", "--cluster", env.cid)["task_id"]
    assert js("tasks", "describe", task_id)["state"] == "success"
    assert "succeeded" in run("tasks", "wait", task_id).stderr
    assert js("instances", "list")[0]["cluster_id"] == env.cid
    assert run("instances", "list", "--free").stdout.strip() == "No instances."
    run("instances", "delete", "i-" + "a" * 20, code=6)
    assert "busybox" not in run("images").stdout and "image" in run("images").stdout
    actions = {e["action"] for e in js("audit", "log", "--limit", "1000")}
    assert {"cs:CreateCluster", "cs:CreateTrigger"} <= actions
    assert "opencs_http_requests_total" in run("metrics").stdout
    run("metrics", "--containers")

    # the routes of spec §6 on a Swarm cluster: each answers with its error class
    assert "ErrorClusterTypeMismatch" in run("clusters", "kubeconfig", env.cid, code=1).stderr
    run("clusters", "scale-out", env.cid, "--count", "1", code=1)  # §6.7's required fields
    run("clusters", "remove-nodes", env.cid, "no-such-node", code=6)
    # a loopback server serves the attach paths on the nodes' bridge (loops/node_api.py): the script names it
    assert "/attach/" in run("clusters", "attach-script", env.cid).stdout
    assert json.loads(run("api", "GET", f"/clusters/{env.cid}").stdout)["cluster_id"] == env.cid


# ---------------------------------------------------------------------- the SDK's Application API


def check_application_api(cs: Any, cluster_id: str, name: str) -> None:
    """Every Application API method of the SDK (success paths; confirm/rollback of a release
    succeed in the CLI tests above, which run on the same sync methods)."""
    app = cs.app(cluster_id)
    assert app.create_project(name, template("v1"), version="1.0", environment={"NOTE": "x"}) == name
    with pytest.raises(ConflictError):
        app.create_project(name, template("v1"))
    project = app.wait_project(name, timeout=120)
    assert project.current_state == "running" and project.environment["NOTE"] == "x"
    assert [p.name for p in app.list_projects(name)] == [name]
    sid = f"{name}_web"
    assert wait_for_line(lambda: app.project_logs(name), "v1 x").startswith("/")  # '<container> | <line>'
    assert re.search(r" \| 20\d\d-\d\d-\d\dT[\d:.]+Z v1 x$", app.service_logs(sid, tail=5, timestamps=True), re.M)
    for lines in (app.follow_service_logs(sid), app.follow_project_logs(name)):  # followed: its first line
        assert next(iter(lines)).endswith("v1 x")
        lines.close()
    events = cs.cluster_events(cluster_id, project=name, kind="task")
    assert events and all(e.project == name and e.kind == "task" for e in events)
    stream = cs.follow_events(cluster_id, project=name, kind="task")  # starts with the events so far
    assert next(iter(stream)).id == events[0].id
    stream.close()
    assert app.get_project(name).services[0].id == sid
    assert [s.id for s in app.list_services(name)] == [sid]
    app.scale_service(sid, 2)
    assert len(app.wait_service(sid, containers=2, timeout=60).containers) == 2
    app.stop_service(sid, 0)
    app.start_service(sid)
    app.kill_service(sid, "HUP")
    assert app.get_service(sid).current_state == "running"
    app.stop_project(name, 0)
    assert app.get_project(name).current_state == "stopped"
    app.start_project(name)
    app.kill_project(name, "HUP")
    app.redeploy_project(name)
    app.wait_project(name, timeout=120)

    def settle(reply: Any) -> None:  # a rolling update's reply has no task_id: the project has it
        cs.wait_task(reply.task_id or app.get_project(name, services=False).task_id, timeout=120)

    settle(app.update_project(name, template("v2"), version="1.1"))
    assert app.get_project(name).version == "1.1"
    with pytest.raises(ConflictError) as e:
        app.confirm_update(name)
    assert e.value.code == "NoBlueGreenRelease"
    settle(app.update_project(name, template("v3"), version="1.2", blue_green=True, weights={"old": 50, "new": 50}))
    assert app.get_project(name).blue_green["weights"] == {"old": 50, "new": 50}
    settle(app.rollback_update(name))
    assert app.get_project(name).version == "1.1"

    vol = f"{name}-vol"
    assert app.create_volume(vol, labels={"k": "v"}).name == vol
    assert app.get_volume(vol).driver == "local" and vol in {v.name for v in app.list_volumes()}
    app.delete_volume(vol)
    with pytest.raises(NotFoundError):
        app.get_volume(vol)
    app.delete_project(name, volumes=True)
    with pytest.raises(NotFoundError):
        app.get_project(name)


def wait_for_line(read: Any, text: str, timeout: float = 30) -> str:
    """The log line holding ``text`` (a container's first output takes a moment to be read)."""
    end = time.monotonic() + timeout
    while True:
        line = next((ln for ln in read().splitlines() if text in ln), None)
        if line is not None or time.monotonic() > end:
            assert line is not None, f"no log line with {text!r}"
            return line
        time.sleep(0.5)


def test_sdk_application_api_sync_and_async(sdk_checks: list[Future[None]]) -> None:
    for f in sdk_checks:
        f.result(timeout=300)


# ---------------------------------------------------------------------- nodes, then the end


def test_scale_remove_attach_reset_delete(env: Env, created: Result) -> None:
    res = run("clusters", "scale", env.cid, "--size", "2", "--wait", "--timeout", "300")
    assert "succeeded" in res.stderr
    worker = next(n for n in js("clusters", "nodes", env.cid)["nodes"] if n["role"] != "manager")
    run("clusters", "remove-node", env.cid, worker["ip_address"][0], "--wait")
    free = js("instances", "list", "--free")
    assert [i["instance_id"] for i in free] == [worker["instance_id"]]
    run("clusters", "attach", env.cid, "--instance", worker["instance_id"], "--wait", "--timeout", "300")
    run("clusters", "reset", env.cid, worker["instance_id"], "--wait", "--timeout", "300")
    assert len(js("clusters", "nodes", env.cid)["nodes"]) == 2
    run("clusters", "remove-node", env.cid, "10.9.9.9", code=6)

    run("projects", "delete", "shop", "--cluster", env.cid, "--volumes")
    assert js("projects", "list", "--cluster", env.cid) == []  # the SDK's are gone too
    run("clusters", "delete", env.cid, "--wait", "--timeout", "300")
    run("clusters", "describe", env.cid, code=6)
