"""The inventory of issue 11: every route of both APIs has a named CLI command and an SDK method.

The routes are read from the applications themselves (the signed control-plane API as FastAPI
serves it, checked against its /openapi.json; the Application API master_url serves), so a route
added without a command or a method fails here, and so does a mapping entry whose route, command
or method is gone. Each SDK method is also checked to call its route: its row in
tests/sdk/test_sdk_calls.py (the request each method writes) must match the route's template.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import pytest
import typer

from opencs.api.app import create_app
from opencs.api.http_metrics import _flatten
from opencs.appapi.app import create_appapi_app
from opencs.cli.main import app as cli_app
from opencs.sdk import AppClient, AsyncAppClient, AsyncClient, Client
from tests.sdk.test_sdk_calls import APPLICATION, CONTROL

# route -> (CLI command, SDK method); the signed control-plane API (and what shares its port)
CONTROL_PLANE: dict[str, tuple[str, str]] = {
    "GET /version": ("version", "version"),
    "GET /healthz": ("health", "healthz"),
    "GET /openapi.json": ("openapi", "openapi"),
    "GET /clusters": ("clusters list", "list_clusters"),
    "GET /api/v1/clusters": ("clusters list --page", "list_clusters_paged"),
    "GET /clusters/{cluster_id}": ("clusters describe", "describe_cluster"),
    "POST /clusters": ("clusters create", "create_cluster"),
    "PUT /clusters/{cluster_id}": ("clusters scale", "scale_cluster"),
    "DELETE /clusters/{cluster_id}": ("clusters delete", "delete_cluster"),
    "POST /clusters/{cluster_id}/attach": ("clusters attach", "attach_instances"),
    "DELETE /clusters/{cluster_id}/ip/{ip}": ("clusters remove-node", "remove_node"),
    "POST /clusters/{cluster_id}/instances/{instance_id}/reset": ("clusters reset", "reset_node"),
    "GET /clusters/{cluster_id}/nodes": ("clusters nodes", "cluster_nodes"),
    "GET /clusters/{cluster_id}/certs": ("clusters certs", "cluster_certs"),
    "GET /clusters/{cluster_id}/certs/states": ("clusters certs-list", "cert_states"),
    "DELETE /clusters/{cluster_id}/certs/{serial}": ("clusters certs-revoke", "revoke_cert"),
    "DELETE /clusters/{cluster_id}/certs": ("clusters certs-revoke --mine", "revoke_my_certs"),
    "GET /k8s/{cluster_id}/user_config": ("clusters kubeconfig", "kubeconfig"),
    "POST /api/v2/clusters/{cluster_id}": ("clusters scale-out", "scale_out"),
    "POST /api/v2/clusters/{cluster_id}/nodes/remove": ("clusters remove-nodes", "remove_nodes"),
    "POST /clusters/{cluster_id}/nodes": ("clusters remove-nodes --delete-nodes", "delete_cluster_nodes"),
    "POST /clusters/{cluster_id}/attachscript": ("clusters attach-script", "attach_script"),
    "GET /attach/{token}/script": ("attach-token script", "attach_node_script"),
    "POST /attach/{token}": ("attach-token join", "attach_join"),
    "GET /attach/{token}": ("attach-token status", "attach_status"),
    "GET /tasks/{task_id}": ("tasks describe", "describe_task"),
    "GET /instances": ("instances list", "list_instances"),
    "POST /instances": ("instances create", "create_instances"),
    "DELETE /instances/{instance_id}": ("instances delete", "delete_instance"),
    "POST /instances/register": ("instances register", "register_instance"),
    "GET /images": ("images", "list_images"),
    "POST /clusters/{cluster_id}/triggers": ("triggers create", "create_trigger"),
    "GET /clusters/{cluster_id}/triggers": ("triggers list", "list_triggers"),
    "DELETE /clusters/{cluster_id}/triggers/{trigger_id}": ("triggers delete", "delete_trigger"),
    "POST /clusters/{cluster_id}/triggers/{trigger_id}/rotate": ("triggers rotate", "rotate_trigger"),
    "GET /hook/trigger": ("triggers invoke", "invoke_trigger"),
    "POST /hook/trigger": ("triggers invoke", "invoke_trigger"),  # the same call; CI tools may POST
    "GET /metrics": ("metrics", "metrics"),
    "GET /metrics/containers": ("metrics --containers", "container_metrics"),
    "GET /monitoring": ("monitoring status", "monitoring_status"),
    "POST /monitoring/enable": ("monitoring enable", "enable_monitoring"),
    "POST /monitoring/disable": ("monitoring disable", "disable_monitoring"),
    "POST /clusters/{cluster_id}/alerts": ("alerts create", "create_alert_rule"),
    "GET /clusters/{cluster_id}/alerts": ("alerts list", "list_alert_rules"),
    "DELETE /clusters/{cluster_id}/alerts/{rule_id}": ("alerts delete", "delete_alert_rule"),
    "GET /clusters/{cluster_id}/events": ("events", "cluster_events"),
    "GET /audit": ("audit log", "audit_log"),
    "PUT /users": ("registry-password", "set_registry_password"),
    "POST /users": ("registry-password --update", "set_registry_password"),
    "GET /": ("ram", "ram"),  # the RAM API (2015-05-01): one RPC route, the action in a header or the query
    "POST /": ("ram", "ram"),
}
# issue 10's registry passwords (CreateUserInfo/UpdateUserInfo), on their way to main (branch acct): their
# command and method are here already; once the server serves them they are checked like the rest
AWAITED = {"PUT /users", "POST /users"}
# served on the port but not an API: the browsable viewers of /openapi.json, and the bundled
# registry's notification webhook (called by docker-registry with its own bearer token)
NOT_AN_API = {"GET /docs", "GET /docs/oauth2-redirect", "GET /redoc", "POST /hook/registry"}

APPLICATION_API: dict[str, tuple[str, str]] = {
    "GET /projects": ("projects list", "list_projects"),
    "POST /projects": ("projects create", "create_project"),
    "GET /projects/{name}": ("projects get", "get_project"),
    "POST /projects/{name}/start": ("projects start", "start_project"),
    "POST /projects/{name}/stop": ("projects stop", "stop_project"),
    "POST /projects/{name}/kill": ("projects kill", "kill_project"),
    "POST /projects/{name}/redeploy": ("projects redeploy", "redeploy_project"),
    "POST /projects/{name}/update": ("projects update", "update_project"),
    "POST /projects/{name}/confirm-update": ("projects confirm", "confirm_update"),
    "POST /projects/{name}/rollback-update": ("projects rollback", "rollback_update"),
    "DELETE /projects/{name}": ("projects delete", "delete_project"),
    "GET /projects/{name}/logs": ("projects logs", "project_logs"),
    "GET /services": ("services list", "list_services"),
    "GET /services/{service_id}": ("services get", "get_service"),
    "POST /services/{service_id}/start": ("services start", "start_service"),
    "POST /services/{service_id}/stop": ("services stop", "stop_service"),
    "POST /services/{service_id}/kill": ("services kill", "kill_service"),
    "POST /services/{service_id}/scale": ("services scale", "scale_service"),
    "GET /services/{service_id}/logs": ("services logs", "service_logs"),
    "POST /volumes/create": ("volumes create", "create_volume"),
    "GET /volumes": ("volumes list", "list_volumes"),
    "GET /volumes/{name}": ("volumes get", "get_volume"),
    "DELETE /volumes/{name}": ("volumes delete", "delete_volume"),
}


class _NoServices:
    verifier = authorizer = None


def routes(asgi: Any) -> set[str]:
    """``METHOD path`` of every route (a trailing slash is the same route: FastAPI serves both)."""
    out = set()
    for r in _flatten(asgi.routes):
        for method in set(getattr(r, "methods", None) or ()) - {"HEAD"}:
            out.add(f"{method} {r.path.rstrip('/') or '/'}")
    return out


def control_routes() -> set[str]:
    return routes(create_app(_NoServices()))  # type: ignore[arg-type]


def test_the_routes_are_those_the_openapi_document_lists() -> None:
    """/openapi.json (what official tooling reads) lists every route the inventory covers, except
    the unsigned meta routes and the RAM API (a separate RPC API on "/")."""
    doc = create_app(_NoServices()).openapi()  # type: ignore[arg-type]
    documented = {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops}
    assert documented <= set(CONTROL_PLANE)
    undocumented = set(CONTROL_PLANE) - documented
    assert undocumented - AWAITED == {"GET /healthz", "GET /openapi.json", "GET /", "POST /"}


def test_every_route_of_both_apis_is_in_the_inventory() -> None:
    served = control_routes()
    assert served - NOT_AN_API == set(CONTROL_PLANE) - (AWAITED - served)
    assert routes(create_appapi_app(None)) == set(APPLICATION_API)  # type: ignore[arg-type]


@functools.cache
def cli_root() -> Any:
    return typer.main.get_command(cli_app)


def cli_command(path: str) -> Any:
    """The (Typer's own click) command ``opencs <path>`` names; its options must exist too."""
    cmd: Any = cli_root()
    for word in path.split():
        if word.startswith("-"):
            assert cmd is not None and any(word in p.opts for p in cmd.params), f"{path}: no option {word}"
            continue
        cmd = cmd.commands.get(word) if hasattr(cmd, "commands") else None
    return cmd


@pytest.mark.parametrize(("route", "names"), sorted({**CONTROL_PLANE, **APPLICATION_API}.items()))
def test_each_route_has_a_command_and_a_method_of_both_clients(route: str, names: tuple[str, str]) -> None:
    command, method = names
    cmd = cli_command(command)
    assert cmd is not None and not hasattr(cmd, "commands"), f"{route}: no command `opencs {command}`"
    assert cmd.help, f"`opencs {command}` has no help"
    sync, async_ = (AppClient, AsyncAppClient) if route in APPLICATION_API else (Client, AsyncClient)
    assert hasattr(sync, method) and hasattr(async_, method), f"{route}: no SDK method {method}"


def template(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(path.rstrip("/"))) + "/?$")


@pytest.mark.parametrize(("table", "inventory"), [(CONTROL, CONTROL_PLANE), (APPLICATION, APPLICATION_API)],
                         ids=["control", "application"])
def test_each_method_calls_its_route(table: list[Any], inventory: dict[str, tuple[str, str]]) -> None:
    """The request each method writes (the tables of test_sdk_calls) is its route's."""
    written = {row[0]: (row[3], row[4]) for row in table}
    for route, (_, method) in inventory.items():
        verb, path = route.split(" ", 1)
        if method == "ram" or (method, route) in (("invoke_trigger", "POST /hook/trigger"),
                                                  ("set_registry_password", "POST /users")):
            continue  # one route of two verbs (RAM); GET for a trigger URL; update=True for POST /users
        assert method in written, f"{method} has no row in tests/sdk/test_sdk_calls.py"
        got_verb, got_path = written[method]
        assert got_verb == verb and template(path).match(got_path.replace("%2F", "x")), (route, method, written[method])
