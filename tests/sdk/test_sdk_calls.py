"""Every SDK method, sync and async, writes the same request for its route; models parse replies;
waiters and pagers (one implementation, two transports) behave the same on both clients."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from opencs.sdk import (
    AppClient,
    AsyncAppClient,
    AsyncClient,
    Client,
    ConflictError,
    NotFoundError,
    ProjectFailed,
    ServerError,
    TaskFailed,
    WaitTimeout,
)
from opencs.sdk.api import ApplicationAPI, ControlPlaneAPI
from opencs.sdk.models import Cluster, ClusterCerts, Project, Trigger, Volume
from tests.sdk.kit import Blocking

# (method, args, kwargs) -> (HTTP method, path, query subset, JSON body or None)
CONTROL: list[tuple[str, tuple[Any, ...], dict[str, Any], str, str, dict[str, str], Any]] = [
    ("version", (), {}, "GET", "/version", {}, None),
    ("healthz", (), {}, "GET", "/healthz", {}, None),
    ("openapi", (), {}, "GET", "/openapi.json", {}, None),
    ("list_clusters", (), {}, "GET", "/clusters", {}, None),
    ("list_clusters_paged", (2, 5), {}, "GET", "/api/v1/clusters", {"page_number": "2", "page_size": "5"}, None),
    ("describe_cluster", ("c/1",), {}, "GET", "/clusters/c%2F1", {}, None),
    ("create_cluster", ({"name": "a", "size": 1},), {}, "POST", "/clusters", {}, {"name": "a", "size": 1}),
    ("scale_cluster", ("c1", {"size": 3}), {}, "PUT", "/clusters/c1", {}, {"size": 3}),
    ("delete_cluster", ("c1",), {}, "DELETE", "/clusters/c1", {}, None),
    ("attach_instances", ("c1", {"instances": ["i-1"]}), {}, "POST", "/clusters/c1/attach", {},
     {"instances": ["i-1"]}),
    ("remove_node", ("c1", "10.0.0.2", True), {}, "DELETE", "/clusters/c1/ip/10.0.0.2",
     {"releaseInstance": "true"}, None),
    ("reset_node", ("c1", "i-1"), {}, "POST", "/clusters/c1/instances/i-1/reset", {}, {}),
    ("cluster_certs", ("c1", 90), {}, "GET", "/clusters/c1/certs", {"TemporaryDurationMinutes": "90"}, None),
    ("cert_states", ("c1",), {}, "GET", "/clusters/c1/certs/states", {}, None),
    ("revoke_cert", ("c1", "5a3f"), {}, "DELETE", "/clusters/c1/certs/5a3f", {}, None),
    ("revoke_my_certs", ("c1",), {}, "DELETE", "/clusters/c1/certs", {}, None),
    ("kubeconfig", ("c1",), {"private_ip": True, "minutes": 60}, "GET", "/k8s/c1/user_config",
     {"PrivateIpAddress": "true", "TemporaryDurationMinutes": "60"}, None),
    ("attach_script", ("c1", {"role": "worker"}), {"expired": 99}, "POST", "/clusters/c1/attachscript", {},
     {"options": {"role": "worker"}, "expired": 99}),
    ("scale_out", ("c1", {"count": 2}), {}, "POST", "/api/v2/clusters/c1", {}, {"count": 2}),
    ("remove_nodes", ("c1", ["n1"]), {"release_node": True}, "POST", "/api/v2/clusters/c1/nodes/remove", {},
     {"nodes": ["n1"], "release_node": True, "drain_node": True}),
    ("delete_cluster_nodes", ("c1", ["n1"]), {}, "POST", "/clusters/c1/nodes", {},
     {"nodes": ["n1"], "release_node": False, "drain_node": True}),
    ("cluster_nodes", ("c1",), {}, "GET", "/clusters/c1/nodes", {}, None),
    ("list_images", (), {}, "GET", "/images", {}, None),
    ("describe_task", ("T-1",), {}, "GET", "/tasks/T-1", {}, None),
    ("list_instances", (True,), {}, "GET", "/instances", {"free": "true"}, None),
    ("create_instances", (2,), {}, "POST", "/instances", {}, {"count": 2}),
    ("delete_instance", ("i-1",), {}, "DELETE", "/instances/i-1", {}, None),
    ("register_instance", ({"ssh": "root@h"},), {}, "POST", "/instances/register", {}, {"ssh": "root@h"}),
    ("create_trigger", ("c1", "web", "scaling"), {"service": "db"}, "POST", "/clusters/c1/triggers", {},
     {"project_id": "web", "action": "scaling", "image_update": False, "service": "db"}),
    ("list_triggers", ("c1", "web"), {}, "GET", "/clusters/c1/triggers", {"project_id": "web"}, None),
    ("delete_trigger", ("c1", "t1"), {}, "DELETE", "/clusters/c1/triggers/t1", {}, None),
    ("rotate_trigger", ("c1", "t1", 60), {}, "POST", "/clusters/c1/triggers/t1/rotate", {}, {"grace_seconds": 60}),
    ("invoke_trigger", ("http://x:1/hook/trigger?triggerUrl=tok", "s3"), {"type": "scale_out", "step": 2},
     "GET", "/hook/trigger", {"triggerUrl": "tok", "secret": "s3", "type": "scale_out", "step": "2"}, None),
    ("audit_log", ("cs:CreateCluster",), {"limit": 5}, "GET", "/audit", {"action": "cs:CreateCluster", "limit": "5"},
     None),
    ("metrics", (), {}, "GET", "/metrics", {}, None),
    ("container_metrics", (), {}, "GET", "/metrics/containers", {}, None),
    ("request", ("PUT", "/clusters/c1?x=1"), {"query": {"y": 2}, "body": {"size": 4}}, "PUT", "/clusters/c1",
     {"x": "1", "y": "2"}, {"size": 4}),
    ("attach_status", ("tok",), {}, "GET", "/attach/tok", {}, None),
    ("attach_node_script", ("tok",), {}, "GET", "/attach/tok/script", {}, None),
    ("attach_join", ("tok",), {}, "POST", "/attach/tok", {}, None),
    ("cluster_events", ("c1",), {"kind": "task", "after": 7, "limit": 5}, "GET", "/clusters/c1/events",
     {"kind": "task", "after": "7", "limit": "5"}, None),
    ("monitoring_status", (), {}, "GET", "/monitoring", {}, None),
    ("enable_monitoring", (9090,), {}, "POST", "/monitoring/enable", {}, {"prometheus_port": 9090}),
    ("disable_monitoring", (), {}, "POST", "/monitoring/disable", {}, {}),
    ("create_alert_rule", ("c1", {"project_id": "web", "service": "app"}), {}, "POST", "/clusters/c1/alerts", {},
     {"project_id": "web", "service": "app"}),
    ("list_alert_rules", ("c1",), {}, "GET", "/clusters/c1/alerts", {}, None),
    ("delete_alert_rule", ("c1", "ar-1"), {}, "DELETE", "/clusters/c1/alerts/ar-1", {}, None),
    ("ram", ("CreateUser", {"UserName": "dev"}), {}, "POST", "/", {"UserName": "dev"}, None),
    ("create_login_profile", ("dev", "Pw-12345"), {"password_reset_required": True}, "POST", "/",
     {"UserName": "dev", "Password": "Pw-12345", "PasswordResetRequired": "true", "MFABindRequired": "false"}, None),
    ("get_login_profile", ("dev",), {}, "POST", "/", {"UserName": "dev"}, None),
    ("update_login_profile", ("dev",), {"password_reset_required": False}, "POST", "/",
     {"UserName": "dev", "PasswordResetRequired": "false", "Password": None}, None),
    ("delete_login_profile", ("dev",), {}, "POST", "/", {"UserName": "dev"}, None),
    ("set_registry_password", ("Pw-12345",), {}, "PUT", "/users", {}, {"User": {"Password": "Pw-12345"}}),
]
UNSIGNED = {"healthz", "openapi", "invoke_trigger", "metrics", "container_metrics", "attach_status",
            "attach_node_script", "attach_join"}
APPLICATION: list[tuple[str, tuple[Any, ...], dict[str, Any], str, str, dict[str, str], Any]] = [
    ("list_projects", ("we",), {"containers": False}, "GET", "/projects/", {"q": "we", "containers": "false"}, None),
    ("create_project", ("web", "services: {}"), {"version": "2", "environment": {"A": "1"}}, "POST", "/projects/",
     {}, {"name": "web", "template": "services: {}", "version": "2", "environment": {"A": "1"}}),
    ("get_project", ("web",), {}, "GET", "/projects/web", {"services": "true"}, None),
    ("update_project", ("web", "t2"), {"version": "2", "blue_green": True, "weights": {"old": 80, "new": 20}},
     "POST", "/projects/web/update", {},
     {"template": "t2", "version": "2", "update_method": "blue-green", "weights": {"old": 80, "new": 20}}),
    ("confirm_update", ("web", False), {}, "POST", "/projects/web/confirm-update", {"force": "false"}, None),
    ("rollback_update", ("web",), {}, "POST", "/projects/web/rollback-update", {"force": "true"}, None),
    ("start_project", ("web",), {}, "POST", "/projects/web/start", {}, None),
    ("stop_project", ("web", 3), {}, "POST", "/projects/web/stop", {"t": "3"}, None),
    ("kill_project", ("web", "TERM"), {}, "POST", "/projects/web/kill", {"signal": "TERM"}, None),
    ("redeploy_project", ("web",), {}, "POST", "/projects/web/redeploy", {}, None),
    ("delete_project", ("web",), {"volumes": True}, "DELETE", "/projects/web", {"force": "false", "v": "true"}, None),
    ("list_services", (), {}, "GET", "/services/", {"containers": "true"}, None),
    ("get_service", ("web_db",), {}, "GET", "/services/web_db", {}, None),
    ("start_service", ("web_db",), {}, "POST", "/services/web_db/start", {}, None),
    ("stop_service", ("web_db", 1), {}, "POST", "/services/web_db/stop", {"t": "1"}, None),
    ("kill_service", ("web_db",), {}, "POST", "/services/web_db/kill", {}, None),
    ("scale_service", ("web_db", 3), {}, "POST", "/services/web_db/scale", {}, {"type": "scale_to", "value": 3}),
    ("create_volume", ("v1",), {"labels": {"a": "b"}}, "POST", "/volumes/create", {},
     {"name": "v1", "driver": "local", "labels": {"a": "b"}}),
    ("list_volumes", (), {}, "GET", "/volumes", {}, None),
    ("get_volume", ("v1",), {}, "GET", "/volumes/v1", {}, None),
    ("delete_volume", ("v1",), {}, "DELETE", "/volumes/v1", {}, None),
    ("project_logs", ("web",), {"tail": 10, "since": "10m"}, "GET", "/projects/web/logs",
     {"tail": "10", "since": "10m"}, None),
    ("service_logs", ("web_db",), {"timestamps": True}, "GET", "/services/web_db/logs", {"timestamps": "true"}, None),
]
FLOWS = {"wait_task", "wait_cluster", "iter_clusters", "iter_nodes", "wait_project", "wait_service", "iter_events",
         "follow_events", "follow_project_logs", "follow_service_logs"}


def public(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if not n.startswith("_") and not isinstance(v, property)}


def test_every_method_is_in_the_tables() -> None:
    assert public(ControlPlaneAPI) - FLOWS == {row[0] for row in CONTROL}
    assert public(ApplicationAPI) - FLOWS == {row[0] for row in APPLICATION}


@pytest.mark.parametrize(("sync", "async_"), [(Client, AsyncClient), (AppClient, AsyncAppClient)])
def test_sync_and_async_have_the_same_methods_and_signatures(sync: type, async_: type) -> None:
    names = {n for n in dir(sync) if not n.startswith("_")} - {"close", "prepare_request"}
    assert names <= {n for n in dir(async_) if not n.startswith("_")} | {"__enter__"}
    for name in sorted(public(ControlPlaneAPI if sync is Client else ApplicationAPI)):
        s, a = getattr(sync, name).build, getattr(async_, name).build
        assert s is a  # declared once: the same builder


def recorder(replies: Callable[[httpx.Request], Any] | None = None) -> tuple[list[httpx.Request], Any]:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        body = replies(req) if replies else {}
        return body if isinstance(body, httpx.Response) else httpx.Response(200, json=body)
    return seen, handler


def clients(kind: str, app: bool, handler: Any) -> tuple[Any, Any]:
    """(client, closer) of the kind asked for, on a mock transport."""
    if kind == "sync":
        t: Any = httpx.MockTransport(handler)
        c: Any = AppClient("https://m:1", {}, http_client=httpx.Client(transport=t)) if app else \
            Client("http://cs:1", "AK", "S", transport=t)
        c._sleep = lambda s: None
        return c, c.close
    loop = asyncio.new_event_loop()
    t = httpx.MockTransport(handler)
    c = AsyncAppClient("https://m:1", {}, http_client=httpx.AsyncClient(transport=t)) if app else \
        AsyncClient("http://cs:1", "AK", "S", transport=t)

    async def no_sleep(s: float) -> None:
        return None
    c._sleep = no_sleep
    b = Blocking(c, loop)
    return b, lambda: (loop.run_until_complete(c._http.aclose()), loop.close())


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("app", [False, True], ids=["control", "application"])
def test_each_route_request(kind: str, app: bool) -> None:
    seen, handler = recorder()
    c, close = clients(kind, app, handler)
    try:
        for name, args, kw, method, path, query, body in APPLICATION if app else CONTROL:
            getattr(c, name)(*args, **kw)
            req = seen[-1]
            assert (req.method, req.url.raw_path.decode().split("?")[0]) == (method, path), name
            got = dict(httpx.QueryParams(req.url.query))
            assert {k: got.get(k) for k in query} == query, name
            assert (json.loads(req.content) if req.content else None) == body, name
            signed = "authorization" in req.headers
            assert signed == (not app and name not in UNSIGNED), name
    finally:
        close()


def test_models_are_the_reply_and_typed() -> None:
    c = Cluster.from_json({"cluster_id": "c1", "size": "3", "new_field": [1]})
    assert c.size == 3 and c["size"] == "3" and c["new_field"] == [1] and isinstance(c, dict)
    assert json.loads(json.dumps(c)) == {"cluster_id": "c1", "size": "3", "new_field": [1]}
    p = Project.from_json({"name": "w", "services": [{"id": "w_a", "containers": {"x": {"running": True}}}]})
    assert p.services[0].containers["x"].running and p["services"][0]["id"] == "w_a"
    v = Volume.from_json({"Name": "v", "Driver": "local", "Refs": None})
    assert (v.name, v.driver, v.refs) == ("v", "local", [])
    # secrets never in repr (logs, tracebacks)
    assert "PRIVATE" not in repr(ClusterCerts.from_json({"ca": "A", "cert": "B", "key": "PRIVATE"}))
    assert "S3CRET" not in repr(Trigger.from_json({"id": "t", "secret": "S3CRET"}))
    assert Cluster.from_json(None) == {} and Project.from_json({"services": "junk"}).services == []


def task(state: str, **kw: Any) -> dict[str, Any]:
    return {"task_id": "T-1", "state": state, "stages": [{"name": "a", "state": state}], **kw}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_waiters_and_pagers(kind: str) -> None:
    states = iter(["creating", "creating", "running", "updating", "failed"])
    pages = {"1": [{"cluster_id": "a"}, {"cluster_id": "b"}], "2": [{"cluster_id": "c"}]}

    def replies(req: httpx.Request) -> Any:
        if req.url.path == "/api/v1/clusters":
            n = req.url.params["page_number"]
            return {"clusters": pages[n], "page_info": {"page_number": int(n), "page_size": 2, "total_count": 3}}
        if req.url.path == "/tasks/T-1":
            return task("fail", error={"code": "Boom", "message": "it broke"})
        if req.url.path == "/projects/web":
            return {"name": "web", "current_state": next(states), "message": "image missing"}
        if req.url.path == "/services/web_a":
            return {"id": "web_a", "current_state": "running", "containers": {"x": {"running": True}}}
        return httpx.Response(404, json={"Code": "NotFound", "Message": "no"})

    seen, handler = recorder(replies)
    cs, close_cs = clients(kind, False, handler)
    app, close_app = clients(kind, True, handler)
    try:
        assert [c.cluster_id for c in cs.iter_clusters(page_size=2)] == ["a", "b", "c"]
        with pytest.raises(TaskFailed) as tf:
            cs.wait_task("T-1", poll=0)
        assert tf.value.code == "Boom" and tf.value.task_id == "T-1"
        with pytest.raises(NotFoundError):
            cs.describe_cluster("nope")
        updates: list[str] = []
        p = app.wait_project("web", poll=0, on_update=lambda p: updates.append(p.current_state))
        assert p.current_state == "running" and updates == ["creating", "creating", "running"]
        with pytest.raises(ProjectFailed) as pf:
            app.wait_project("web", poll=0)
        assert pf.value.message == "image missing"
        assert app.wait_service("web_a", containers=1, poll=0).id == "web_a"
        with pytest.raises(WaitTimeout):
            app.wait_service("web_a", containers=5, timeout=0, poll=0)
    finally:
        close_cs()
        close_app()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_retries_only_safe_methods(kind: str) -> None:
    def replies(req: httpx.Request) -> Any:
        return httpx.Response(503, json={"Code": "Busy", "Message": "later"})
    seen, handler = recorder(replies)
    cs, close = clients(kind, False, handler)
    try:
        with pytest.raises(ServerError) as e:
            cs.list_clusters()
        assert e.value.status == 503 and e.value.code == "Busy" and len(seen) == 3
        with pytest.raises(ServerError):
            cs.create_cluster({"name": "x"})
        assert len(seen) == 4
    finally:
        close()


def test_app_client_needs_https_and_certs(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="https"):
        AppClient("http://127.0.0.1:1", {}, http_client=httpx.Client())
    with pytest.raises(ValueError, match="ca, cert and key"):
        AppClient("https://127.0.0.1:1", {"ca": "x"})
    with pytest.raises(ValueError, match="cannot read"):
        AppClient("https://127.0.0.1:1", tmp_path / "none")
    assert AppClient("tcp://127.0.0.1:9", {}, http_client=httpx.Client()).master_url == "https://127.0.0.1:9"


def test_no_master_url_is_a_conflict() -> None:
    seen, handler = recorder(lambda r: {"cluster_id": "c1", "state": "initial", "master_url": ""})
    c = Client("http://cs:1", "AK", "S", transport=httpx.MockTransport(handler))
    with pytest.raises(ConflictError, match="no master_url"):
        c.app("c1")
    assert inspect.iscoroutinefunction(AsyncClient.app)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_streams_and_event_pages(kind: str) -> None:
    """Followed logs and events are read line by line (one implementation, both transports); the
    event pager asks for the events after the last one it got."""
    sse = b": following\n\nid: 3\nevent: task\ndata: {\"id\": 3, \"kind\": \"task\", \"reason\": \"Stage\"}\n\n"

    def replies(req: httpx.Request) -> Any:
        if req.url.path.endswith("/logs") and "nope" not in req.url.path:
            if req.url.params.get("follow") != "true":  # text, even where a line would parse as JSON
                return httpx.Response(200, content=b"42\n", headers={"content-type": "text/plain"})
            return httpx.Response(200, content=b"web_1 | one\nweb_2 | 2\n", headers={"content-type": "text/plain"})
        if req.url.path == "/clusters/c1/events" and req.url.params.get("follow") == "true":
            return httpx.Response(200, content=sse, headers={"content-type": "text/event-stream"})
        if req.url.path == "/clusters/c1/events":
            after = int(req.url.params.get("after", "0"))
            return {"events": [{"id": i} for i in range(after + 1, min(after + 2, 4) + 1)]}
        return httpx.Response(404, json={"Code": "NotFound", "Message": "no"})

    seen, handler = recorder(replies)
    cs, close_cs = clients(kind, False, handler)
    app, close_app = clients(kind, True, handler)
    try:
        assert list(app.follow_service_logs("web_db", tail=5)) == ["web_1 | one", "web_2 | 2"]
        assert list(app.follow_project_logs("web")) == ["web_1 | one", "web_2 | 2"]
        events = list(cs.follow_events("c1"))
        assert [(e.id, e.reason) for e in events] == [(3, "Stage")]
        assert [e.id for e in cs.iter_events("c1", page_size=2)] == [1, 2, 3, 4]
        assert [r.url.params.get("after") for r in seen[-3:]] == [None, "2", "4"]
        assert app.project_logs("web") == "42\n"
        with pytest.raises(NotFoundError):
            list(app.follow_service_logs("nope"))
    finally:
        close_cs()
        close_app()


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_options_are_shared_and_checked(cls: type) -> None:
    c = cls("http://cs:1", "AK", "S", scheme="acs3", timeout=5, retries=0, user_agent="ua/1")
    assert (c.scheme, c.timeout, c.retries, c.user_agent, c.access_key_id) == ("ACS3-HMAC-SHA256", 5, 0, "ua/1", "AK")
    with pytest.raises(TypeError, match="retry"):
        cls("http://cs:1", "AK", "S", retry=3)  # a misspelt option is not silently ignored
