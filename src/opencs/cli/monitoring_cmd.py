"""`opencs monitoring enable|disable|status`, `opencs alerts create|list|delete` and `opencs events`:
the monitoring stack of the control plane, the scaling rules on services and a cluster's events
(issue 12), over the signed API."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from opencs.cli.common import ClusterArg, JsonOpt, OutputOpt, output_format, read_object, signed_client
from opencs.cli.output import emit
from opencs.sdk.models import Event

monitoring_app = typer.Typer(help="The control plane's Prometheus + Alertmanager (operator).", no_args_is_help=True)
alerts_app = typer.Typer(help="Scaling alert rules on a service (cpu > X% for D -> scale out).",
                         no_args_is_help=True)

MONITORING_COLUMNS = ("enabled", "clusters", "alert_rules", "last_error")
RULE_COLUMNS = ("id", "project_id", "service", "scale_out", "scale_in", "min_replicas", "max_replicas", "created")


@monitoring_app.command("enable")
def enable(ctx: typer.Context,
           prometheus_port: Annotated[int | None, typer.Option(help="Loopback port (default: a free one).")] = None,
           alertmanager_port: Annotated[int | None, typer.Option(help="Loopback port (default: a free one).")] = None,
           output: OutputOpt = None) -> None:
    """Run Prometheus and Alertmanager for this control plane (kept running across restarts)."""
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        emit(client.enable_monitoring(prometheus_port, alertmanager_port), fmt, columns=MONITORING_COLUMNS)


@monitoring_app.command("disable")
def disable(ctx: typer.Context, output: OutputOpt = None) -> None:
    """Stop the stack (the alert rules stay, and act again once it is enabled)."""
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        emit(client.disable_monitoring(), fmt, columns=MONITORING_COLUMNS)


@monitoring_app.command("status")
def status(ctx: typer.Context, output: OutputOpt = None) -> None:
    """Whether the stack runs, its URLs, the clusters it watches and the number of rules."""
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        emit(client.monitoring_status(), fmt, columns=MONITORING_COLUMNS)


@alerts_app.command("create")
def create(ctx: typer.Context, cluster_id: ClusterArg,
           body: Annotated[str, typer.Option("--body", "-b", help="Rule: JSON, @file or @-.")],
           output: OutputOpt = None) -> None:
    """e.g. --body '{"project_id": "web", "service": "app", "scale_out": {"cpu_above": 50, "for": "20s",
    "step": 2}, "scale_in": {"cpu_below": 10, "for": "30s", "step": 1}, "min_replicas": 1}'"""
    rule = read_object(body, "alert rule")
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        emit(client.create_alert_rule(cluster_id, rule), fmt, columns=RULE_COLUMNS)


@alerts_app.command("list")
def list_rules(ctx: typer.Context, cluster_id: ClusterArg, as_json: JsonOpt = False, output: OutputOpt = None) -> None:
    """The cluster's scaling rules."""
    fmt = output_format(ctx, output, as_json)
    with signed_client(ctx) as client:
        emit(client.list_alert_rules(cluster_id), fmt, columns=RULE_COLUMNS, empty="No alert rules.")


@alerts_app.command("delete")
def delete(ctx: typer.Context, cluster_id: ClusterArg, rule_id: Annotated[str, typer.Argument()]) -> None:
    """Delete a rule and its trigger."""
    with signed_client(ctx) as client:
        client.delete_alert_rule(cluster_id, rule_id)
    typer.echo(f"Alert rule {rule_id}: deleted")


def _line(e: Event) -> str:
    return f"{e.time}  {e.kind:<9} {e.reason:<18} {e.project or '-':<12} {e.message}"


def events(ctx: typer.Context, cluster_id: ClusterArg,
           project: Annotated[str | None, typer.Option(help="One project's events.")] = None,
           kind: Annotated[str | None, typer.Option(help="task, node, container or scaling.")] = None,
           after: Annotated[int, typer.Option(min=0, help="Only the events after this event id.")] = 0,
           follow: Annotated[bool, typer.Option("--follow", "-f", help=(
               "Keep printing new events as they happen (the route's server-sent events; Ctrl-C ends)."))] = False,
           output: OutputOpt = None) -> None:
    """A cluster's events, oldest first: time, kind, reason, project, message (GET /clusters/{id}/events):
    the newest 100, or every one after --after; -o json|yaml: one document (--follow: a JSON object a line)."""
    fmt = output_format(ctx, output, default="table")
    with signed_client(ctx) as client:
        if follow:
            for e in client.follow_events(cluster_id, project=project, kind=kind, after=after):
                typer.echo(_line(e) if fmt == "table" else json.dumps(e))
            return
        got = list(client.iter_events(cluster_id, project=project, kind=kind, after=after))
    if fmt != "table":
        emit(got, fmt)
        return
    for e in got:
        typer.echo(_line(e))


def register(app: typer.Typer) -> None:
    app.add_typer(monitoring_app, name="monitoring")
    app.add_typer(alerts_app, name="alerts")
    app.command("events")(events)
