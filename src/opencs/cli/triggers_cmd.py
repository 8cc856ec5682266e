"""`opencs triggers …` (spec §11, on the signed API) and `opencs audit log` (GET /audit)."""

from __future__ import annotations

from typing import Annotated

import typer

from opencs.cli.accounts_cmd import audit_app
from opencs.cli.common import (
    ClusterOpt,
    JsonOpt,
    OutputOpt,
    TimeoutOpt,
    WaitOpt,
    output_format,
    signed_client,
    wait_for,
)
from opencs.cli.output import emit

triggers_app = typer.Typer(help="Triggers of a cluster's projects: create, list, delete, rotate, invoke.",
                           no_args_is_help=True)

TRIGGER_COLUMNS = ("id", "project_id", "action", "service", "image_update", "trigger_url", "last_invoked")
TriggerArg = Annotated[str, typer.Argument(help="Trigger id.", show_default=False)]


@triggers_app.command("create")
def triggers_create(
    ctx: typer.Context,
    cluster: ClusterOpt,
    project: Annotated[str, typer.Option("--project", "-P", help="The project it acts on.", show_default=False)],
    action: Annotated[str, typer.Option("--action", "-a", help="redeploy or scaling.")] = "redeploy",
    service: Annotated[str, typer.Option("--service", help="Scaling: the service (within the project).")] = "",
    image_update: Annotated[bool, typer.Option("--image-update", help=(
        "Redeploy when an image of the project is pushed to the bundled registry."))] = False,
    signed: Annotated[bool | None, typer.Option("--signed/--unsigned", help=(
        "Calls need a Standard Webhooks signature (default: the server's)."), show_default=False)] = None,
    output: OutputOpt = None,
) -> None:
    """Create a trigger; prints its URL and secret (and a signed one's signing secret), shown this once."""
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        trigger = client.create_trigger(cluster, project, action, service=service, image_update=image_update,
                                        signed=signed)
    emit(trigger, fmt, columns=("id", "trigger_url", "secret", "signing_secret", *TRIGGER_COLUMNS[1:5]))
    if trigger.signed:
        typer.echo(f"# call it: opencs triggers invoke '{trigger.trigger_url}' --signing-secret <signing_secret> "
                   "(not shown again)", err=True)
    else:
        typer.echo(f"# call it: curl '{trigger.trigger_url}&secret=<secret>' (the secret is not shown again)",
                   err=True)


@triggers_app.command("list")
def triggers_list(
    ctx: typer.Context,
    cluster: ClusterOpt,
    project: Annotated[str | None, typer.Option("--project", "-P", help="Only this project's.")] = None,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
) -> None:
    """List a cluster's triggers (without secrets)."""
    fmt = output_format(ctx, output, as_json)
    with signed_client(ctx) as client:
        emit(client.list_triggers(cluster, project), fmt, columns=TRIGGER_COLUMNS, empty="No triggers.")


@triggers_app.command("delete")
def triggers_delete(ctx: typer.Context, trigger_id: TriggerArg, cluster: ClusterOpt) -> None:
    """Delete a trigger: its URL stops working at once."""
    with signed_client(ctx) as client:
        client.delete_trigger(cluster, trigger_id)
    typer.echo(f"Trigger {trigger_id}: deleted")


@triggers_app.command("rotate")
def triggers_rotate(
    ctx: typer.Context,
    trigger_id: TriggerArg,
    cluster: ClusterOpt,
    grace: Annotated[int, typer.Option("--grace", min=0, max=7 * 24 * 3600, help=(
        "Seconds the old secret keeps working."))] = 3600,
    output: OutputOpt = None,
) -> None:
    """A new secret for the same URL (shown this once)."""
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        emit(client.rotate_trigger(cluster, trigger_id, grace), fmt, columns=("id", "secret", "trigger_url"))


@triggers_app.command("invoke")
def triggers_invoke(
    ctx: typer.Context,
    trigger_url: Annotated[str, typer.Argument(help="The trigger's URL.", show_default=False)],
    secret: Annotated[str, typer.Option("--secret", envvar="OPENCS_TRIGGER_SECRET", show_default=False,
                                        help="The trigger's secret (or OPENCS_TRIGGER_SECRET).")] = "",
    signing_secret: Annotated[str | None, typer.Option(
        "--signing-secret", envvar="OPENCS_TRIGGER_SIGNING_SECRET", show_default=False,
        help="A signed trigger's whsec_ secret: the call is signed (Standard Webhooks).")] = None,
    kind: Annotated[str | None, typer.Option("--type", help="Scaling: scale_out or scale_in.")] = None,
    step: Annotated[int | None, typer.Option("--step", min=1, help="Scaling: by how many containers.")] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 600.0,
    output: OutputOpt = None,
) -> None:
    """Call a trigger URL as a CI job would (no AccessKey: the secret, or the signature, is the credential)."""
    if not secret and not signing_secret:
        raise typer.BadParameter("give --secret (or --signing-secret for a signed trigger)", param_hint="--secret")
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        try:
            reply = client.invoke_trigger(trigger_url, secret, type=kind, step=step, signing_secret=signing_secret)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--signing-secret") from None
        emit(reply, fmt, columns=("trigger_id", "action", "task_id"))
        if wait and reply.task_id:
            wait_for(client, reply.task_id, timeout)


@audit_app.command("log")
def audit_log(
    ctx: typer.Context,
    action: Annotated[str | None, typer.Option("--action", help="e.g. cs:CreateCluster")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this RAM user name.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 time (UTC).")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
) -> None:
    """The audit trail of your account through the API (GET /audit; newest last)."""
    fmt = output_format(ctx, output, as_json)
    with signed_client(ctx) as client:
        emit(client.audit_log(action, user, since, limit), fmt,
             columns=("seq", "time", "user_name", "action", "resource", "outcome", "source"), empty="No entries.")


def register(app: typer.Typer) -> None:
    app.add_typer(triggers_app, name="triggers")
