"""`opencs projects …` — the Application API's projects (spec §10.4–10.16), called at the cluster's
master_url with its certificates (fetched through the signed API of the profile).

Long operations (create, update, redeploy, confirm, roll back) answer at once; with ``--wait`` the
project's task is followed with its stages, then the project until it has settled."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from opencs.cli import services_cmd
from opencs.cli.common import (
    ClusterOpt,
    JsonOpt,
    OutputOpt,
    TimeoutOpt,
    WaitOpt,
    app_session,
    output_format,
    parse_pairs,
    read_text,
    wait_for,
)
from opencs.cli.lifecycle import add_lifecycle
from opencs.cli.output import emit
from opencs.sdk import AppClient, Client
from opencs.sdk.models import Project

projects_app = typer.Typer(help="Projects (applications from Compose files) of a cluster: create, list, get, "
                           "update, confirm, rollback, start, stop, kill, redeploy, delete, wait, logs.",
                           no_args_is_help=True)

PROJECT_COLUMNS = ("name", "version", "current_state", "desired_state", "services", "updated", "message")
NameArg = Annotated[str, typer.Argument(help="Project name.", show_default=False)]
FileOpt = Annotated[Path, typer.Option("--file", "-f", help="The Compose file (YAML); - for stdin.",
                                       show_default=False)]
EnvOpt = Annotated[list[str] | None, typer.Option("--env", "-e", help="Template variable K=V (repeat).")]
EnvFileOpt = Annotated[Path | None, typer.Option("--env-file", help="A file of K=V lines for the template.")]


def read_template(path: Path) -> str:
    """The Compose file's text; a file that cannot be read or is not YAML is a usage error naming
    the file (and the line). What the YAML means is the server's to check: its 400 names the path
    of the field, and the file."""
    text = read_text(path, "--file")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise typer.BadParameter(f"{path}:{where} not valid YAML: {problem}", param_hint="--file") from None
    if not isinstance(doc, dict):
        raise typer.BadParameter(f"{path}: a Compose file is a YAML mapping (services: ...)", param_hint="--file")
    return text


def environment(env: list[str] | None, env_file: Path | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if env_file is not None:
        for n, line in enumerate(read_text(env_file, "--env-file").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            k, sep, v = line.removeprefix("export ").partition("=")
            if not sep or not re.fullmatch(r"[_A-Za-z][_A-Za-z0-9]*", k.strip()):
                raise typer.BadParameter(f"{env_file}: line {n}: expected NAME=VALUE", param_hint="--env-file")
            out[k.strip()] = v.strip().strip("'\"")
    out.update(parse_pairs(env, "--env"))
    return out


def _row(p: Project) -> dict[str, Any]:
    return {**p.raw, "services": ", ".join(s.name for s in p.services)}


def follow(client: Client, app: AppClient, name: str, task_id: str, timeout: float,
           states: tuple[str, ...] = ("running",)) -> Project:
    """The project's task with its stages, then the project until it is in one of ``states``."""
    if not task_id:
        task_id = app.get_project(name, services=False).task_id
    if task_id:
        wait_for(client, task_id, timeout)
    project = app.wait_project(name, states, timeout=max(timeout, 1.0))
    typer.echo(f"Project {name}: {project.current_state}")
    return project


def accepted(client: Client, app: AppClient, name: str, what: str, task_id: str, wait: bool,
             timeout: float) -> None:
    """A long operation's answer: ``Project NAME<what> (task T-…)``; with --wait, follow it until the
    project has settled."""
    typer.echo(f"Project {name}{what}" + (f" (task {task_id})" if task_id else ""))
    if wait:
        follow(client, app, name, task_id, timeout)


# ---------------------------------------------------------------------- reads


@projects_app.command("list")
def projects_list(ctx: typer.Context, cluster: ClusterOpt,
                  q: Annotated[str | None, typer.Option("--filter", "-q", help="Only names containing this.")] = None,
                  as_json: JsonOpt = False, output: OutputOpt = None) -> None:
    """List the cluster's projects."""
    fmt = output_format(ctx, output, as_json)
    with app_session(ctx, cluster) as (_, app):
        projects = app.list_projects(q, containers=False)
    emit(projects, fmt, rows=[_row(p) for p in projects] if fmt == "table" else None,
         columns=PROJECT_COLUMNS, empty="No projects.")


@projects_app.command("get")
def projects_get(ctx: typer.Context, name: NameArg, cluster: ClusterOpt, output: OutputOpt = None) -> None:
    """Show a project with its services and containers."""
    fmt = output_format(ctx, output, default="json")
    with app_session(ctx, cluster) as (_, app):
        project = app.get_project(name)
    emit(project, fmt, columns=PROJECT_COLUMNS)


@projects_app.command("wait")
def projects_wait(ctx: typer.Context, name: NameArg, cluster: ClusterOpt,
                  state: Annotated[list[str] | None, typer.Option("--state", help="Wanted state (repeat); "
                                                                  "default running.")] = None,
                  timeout: TimeoutOpt = 300.0) -> None:
    """Wait until the project is in a state (exit 4 if it fails, 5 on timeout)."""
    with app_session(ctx, cluster) as (client, app):
        follow(client, app, name, "", timeout, tuple(state or ("running",)))


# ---------------------------------------------------------------------- create, update, blue-green


@projects_app.command("create")
def projects_create(
    ctx: typer.Context,
    cluster: ClusterOpt,
    file: FileOpt,
    name: Annotated[str | None, typer.Argument(help="Project name (default: the file's directory name).",
                                               show_default=False)] = None,
    version: Annotated[str | None, typer.Option("--version", help="Version (default 1.0).")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    env: EnvOpt = None,
    env_file: EnvFileOpt = None,
    latest_image: Annotated[bool, typer.Option("--latest-image", help="Pull the newest images first.")] = False,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 600.0,
) -> None:
    """Deploy a Compose file as a project (POST /projects/)."""
    template = read_template(file)
    if name is None:
        name = re.sub(r"[^A-Za-z0-9-]+", "-", file.resolve().parent.name).strip("-") or "app"
    variables = environment(env, env_file)
    with app_session(ctx, cluster, source=str(file)) as (client, app):
        app.create_project(name, template, version=version, description=description, environment=variables,
                           latest_image=latest_image)
        accepted(client, app, name, f" created on cluster {cluster}", "", wait, timeout)


@projects_app.command("update")
def projects_update(
    ctx: typer.Context,
    name: NameArg,
    cluster: ClusterOpt,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="The new Compose file (YAML).")] = None,
    version: Annotated[str | None, typer.Option("--version", help="New version (must differ).")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    env: EnvOpt = None,
    env_file: EnvFileOpt = None,
    latest_image: Annotated[bool, typer.Option("--latest-image", help="Pull the newest images first.")] = False,
    blue_green: Annotated[bool, typer.Option("--blue-green", help="Run the new version beside the old one.")] = False,
    weight: Annotated[int | None, typer.Option("--weight", min=0, max=100, help=(
        "Blue-green: percent of the requests the new version gets (alone: move the split)."))] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 600.0,
) -> None:
    """Update a project: rolling by default, or a blue-green release (POST /projects/NAME/update)."""
    template = read_template(file) if file is not None else None
    if template is None and weight is None:
        raise typer.BadParameter("give --file (a new template), or --weight during a blue-green release",
                                 param_hint="--file")
    variables = environment(env, env_file) if env or env_file else None
    weights = {"old": 100 - weight, "new": weight} if weight is not None else None
    with app_session(ctx, cluster, source=str(file) if file else None) as (client, app):
        reply = app.update_project(name, template, version=version, description=description, environment=variables,
                                   latest_image=latest_image, blue_green=blue_green or weight is not None,
                                   weights=weights)
        accepted(client, app, name, ": update accepted", reply.task_id, wait, timeout)


@projects_app.command("confirm")
def projects_confirm(ctx: typer.Context, name: NameArg, cluster: ClusterOpt,
                     force: Annotated[bool, typer.Option("--force/--no-force", help=(
                         "All traffic to the new version now (--no-force: only if the weights already "
                         "send it all)."))] = True,
                     wait: WaitOpt = False, timeout: TimeoutOpt = 600.0) -> None:
    """Finish a blue-green release: the new version stays, the old one goes."""
    with app_session(ctx, cluster) as (client, app):
        reply = app.confirm_update(name, force)
        accepted(client, app, name, ": confirming", reply.task_id, wait, timeout)


@projects_app.command("rollback")
def projects_rollback(ctx: typer.Context, name: NameArg, cluster: ClusterOpt, wait: WaitOpt = False,
                      timeout: TimeoutOpt = 600.0) -> None:
    """Roll a blue-green release back to the old version."""
    with app_session(ctx, cluster) as (client, app):
        reply = app.rollback_update(name, True)
        accepted(client, app, name, ": rolling back", reply.task_id, wait, timeout)


# ---------------------------------------------------------------------- lifecycle


@projects_app.command("redeploy")
def projects_redeploy(ctx: typer.Context, name: NameArg, cluster: ClusterOpt, wait: WaitOpt = False,
                      timeout: TimeoutOpt = 600.0) -> None:
    """New containers for every service, with the newest image of each tag."""
    with app_session(ctx, cluster) as (client, app):
        app.redeploy_project(name)
        accepted(client, app, name, ": redeploying", "", wait, timeout)


@projects_app.command("delete")
def projects_delete(ctx: typer.Context, name: NameArg, cluster: ClusterOpt,
                    force: Annotated[bool, typer.Option("--force", help="Even while a task runs.")] = False,
                    volumes: Annotated[bool, typer.Option("--volumes", "-v", help="Also its volumes.")] = False,
                    ) -> None:
    """Delete a project and its containers (answers when removed)."""
    with app_session(ctx, cluster) as (_, app):
        app.delete_project(name, force=force, volumes=volumes)
    typer.echo(f"Project {name}: deleted")


add_lifecycle(projects_app, "Project", NameArg, "project",
              "Start the project's services in dependency order (answers when started).")


def register(app: typer.Typer) -> None:
    app.add_typer(projects_app, name="projects")
    services_cmd.register(app)
