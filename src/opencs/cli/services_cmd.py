"""`opencs services …` (spec §10.17–10.23) and `opencs volumes …` (§10.24–10.28) of a cluster's
Application API."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from opencs.cli.common import ClusterOpt, JsonOpt, OutputOpt, app_session, output_format, parse_pairs
from opencs.cli.lifecycle import add_lifecycle
from opencs.cli.output import emit
from opencs.sdk.models import Service

services_app = typer.Typer(help="Services of a cluster's projects (id <project>_<service>): list, get, start, "
                           "stop, kill, scale, logs.", no_args_is_help=True)
volumes_app = typer.Typer(help="Data volumes of a cluster: create, list, get, delete.", no_args_is_help=True)

SERVICE_COLUMNS = ("id", "project", "current_state", "desired_state", "scale", "containers", "image")
VOLUME_COLUMNS = ("Name", "Driver", "Scope", "Node", "Mountpoint", "Refs")
ServiceArg = Annotated[str, typer.Argument(help="Service id: <project>_<service>.", show_default=False)]
VolumeArg = Annotated[str, typer.Argument(help="Volume name.", show_default=False)]


def _row(s: Service) -> dict[str, Any]:
    running = sum(1 for c in s.containers.values() if c.running)
    return {**s.raw, "scale": s.extensions.get("scale", ""), "containers": f"{running}/{len(s.containers)}",
            "image": s.definition.get("image", "")}


# ---------------------------------------------------------------------- services


@services_app.command("list")
def services_list(ctx: typer.Context, cluster: ClusterOpt,
                  q: Annotated[str | None, typer.Option("--filter", "-q", help="Only ids containing this.")] = None,
                  as_json: JsonOpt = False, output: OutputOpt = None) -> None:
    """List the services of every project of the cluster."""
    fmt = output_format(ctx, output, as_json)
    with app_session(ctx, cluster) as (_, app):
        services = app.list_services(q)
    emit(services, fmt, rows=[_row(s) for s in services] if fmt == "table" else None,
         columns=SERVICE_COLUMNS, empty="No services.")


@services_app.command("get")
def services_get(ctx: typer.Context, service_id: ServiceArg, cluster: ClusterOpt, output: OutputOpt = None) -> None:
    """Show a service with its containers (node, IP, state, health)."""
    fmt = output_format(ctx, output, default="json")
    with app_session(ctx, cluster) as (_, app):
        svc = app.get_service(service_id)
    if fmt == "table":
        emit(svc, fmt, columns=("id", "project", "current_state", "desired_state"))
        rows = [{"container": cid[:12], **c.raw} for cid, c in svc.containers.items()]
        emit(None, fmt, rows=rows, columns=("container", "name", "node", "ip", "status", "health"),
             empty="No containers.")
        return
    emit(svc, fmt)


@services_app.command("scale")
def services_scale(ctx: typer.Context, service_id: ServiceArg,
                   replicas: Annotated[int, typer.Argument(min=0, help="The number of containers.")],
                   cluster: ClusterOpt) -> None:
    """Scale a service to N containers (answers when they run)."""
    with app_session(ctx, cluster) as (_, app):
        app.scale_service(service_id, replicas)
    typer.echo(f"Service {service_id}: scaled to {replicas}")


add_lifecycle(services_app, "Service", ServiceArg, "service", "Start the service's containers.")


# ---------------------------------------------------------------------- volumes


@volumes_app.command("create")
def volumes_create(
    ctx: typer.Context,
    name: VolumeArg,
    cluster: ClusterOpt,
    driver: Annotated[str, typer.Option("--driver", "-d", help="local, nas or ossfs.")] = "local",
    opt: Annotated[list[str] | None, typer.Option("--opt", help="Driver option K=V (repeat).")] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="Label K=V (repeat).")] = None,
    output: OutputOpt = None,
) -> None:
    """Create a data volume (POST /volumes/create)."""
    fmt = output_format(ctx, output, default="json")
    with app_session(ctx, cluster) as (_, app):
        vol = app.create_volume(name, driver, dict(parse_pairs(opt, "--opt")), dict(parse_pairs(label, "--label")))
    emit(vol, fmt, columns=VOLUME_COLUMNS)


@volumes_app.command("list")
def volumes_list(ctx: typer.Context, cluster: ClusterOpt, as_json: JsonOpt = False, output: OutputOpt = None) -> None:
    """List the cluster's volumes."""
    fmt = output_format(ctx, output, as_json)
    with app_session(ctx, cluster) as (_, app):
        emit(app.list_volumes(), fmt, columns=VOLUME_COLUMNS, empty="No volumes.")


@volumes_app.command("get")
def volumes_get(ctx: typer.Context, name: VolumeArg, cluster: ClusterOpt, output: OutputOpt = None) -> None:
    """Show a volume (driver, node, mount point, containers using it)."""
    fmt = output_format(ctx, output, default="json")
    with app_session(ctx, cluster) as (_, app):
        emit(app.get_volume(name), fmt, columns=VOLUME_COLUMNS)


@volumes_app.command("delete")
def volumes_delete(ctx: typer.Context, name: VolumeArg, cluster: ClusterOpt) -> None:
    """Delete a volume (409 while a container uses it)."""
    with app_session(ctx, cluster) as (_, app):
        app.delete_volume(name)
    typer.echo(f"Volume {name}: deleted")


def register(app: typer.Typer) -> None:
    app.add_typer(services_app, name="services")
    app.add_typer(volumes_app, name="volumes")
