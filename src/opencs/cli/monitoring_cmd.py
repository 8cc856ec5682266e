"""`opencs monitoring enable|disable|status` and `opencs alerts create|list|delete`: the monitoring
stack of the control plane and the scaling rules on services (issue 12), over the signed API."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from opencs.cli.common import make_client, read_body
from opencs.cli.output import cli_errors, print_json

monitoring_app = typer.Typer(help="The control plane's Prometheus + Alertmanager (operator).", no_args_is_help=True)
alerts_app = typer.Typer(help="Scaling alert rules on a service (cpu > X% for D -> scale out).",
                         no_args_is_help=True)


def _call(ctx: typer.Context, method: str, path: str, body: Any = None) -> None:
    client = make_client(ctx)
    with client, cli_errors():
        print_json(client.request(method, path, body=body))


@monitoring_app.command("enable")
def enable(ctx: typer.Context,
           prometheus_port: Annotated[int | None, typer.Option(help="Loopback port (default: a free one).")] = None,
           alertmanager_port: Annotated[int | None, typer.Option(help="Loopback port (default: a free one).")] = None,
           ) -> None:
    """Run Prometheus and Alertmanager for this control plane (kept running across restarts)."""
    body = {k: v for k, v in (("prometheus_port", prometheus_port), ("alertmanager_port", alertmanager_port)) if v}
    _call(ctx, "POST", "/monitoring/enable", body)


@monitoring_app.command("disable")
def disable(ctx: typer.Context) -> None:
    _call(ctx, "POST", "/monitoring/disable", {})


@monitoring_app.command("status")
def status(ctx: typer.Context) -> None:
    _call(ctx, "GET", "/monitoring")


@alerts_app.command("create")
def create(ctx: typer.Context, cluster_id: Annotated[str, typer.Argument()],
           body: Annotated[str, typer.Option("--body", "-b", help="Rule: JSON, @file or @-.")]) -> None:
    """e.g. --body '{"project_id": "web", "service": "app", "scale_out": {"cpu_above": 50, "for": "20s",
    "step": 2}, "scale_in": {"cpu_below": 10, "for": "30s", "step": 1}, "min_replicas": 1}'"""
    _call(ctx, "POST", f"/clusters/{cluster_id}/alerts", read_body(body))


@alerts_app.command("list")
def list_rules(ctx: typer.Context, cluster_id: Annotated[str, typer.Argument()]) -> None:
    _call(ctx, "GET", f"/clusters/{cluster_id}/alerts")


@alerts_app.command("delete")
def delete(ctx: typer.Context, cluster_id: Annotated[str, typer.Argument()],
           rule_id: Annotated[str, typer.Argument()]) -> None:
    _call(ctx, "DELETE", f"/clusters/{cluster_id}/alerts/{rule_id}")


def events(ctx: typer.Context, cluster_id: Annotated[str, typer.Argument()],
           project: Annotated[str | None, typer.Option(help="One project's events.")] = None,
           kind: Annotated[str | None, typer.Option(help="task, node, container or scaling.")] = None,
           follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events.")] = False,
           ) -> None:
    """A cluster's events, one line each: time, kind, reason, message (GET /clusters/{id}/events)."""
    client = make_client(ctx)
    query = {k: v for k, v in (("project", project), ("kind", kind)) if v}
    after = 0
    with client, cli_errors():
        while True:
            page = client.request("GET", f"/clusters/{cluster_id}/events", query={**query, "after": str(after)}
                                  if after else query)["events"]
            for e in page:
                after = max(after, int(e["id"]))
                typer.echo(f"{e['time']}  {e['kind']:<9} {e['reason']:<18} {e['project'] or '-':<12} {e['message']}")
            if not follow:
                return
            time.sleep(1.0)


def register(app: typer.Typer) -> None:
    app.add_typer(monitoring_app, name="monitoring")
    app.add_typer(alerts_app, name="alerts")
    app.command("events")(events)
