"""Client commands: api, tasks, instances, images, metrics (clusters: clusters_cmd; projects,
services, volumes: apps_cmd; triggers and the audit log: triggers_cmd)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from opencs.cli import apps_cmd, cluster_access_cmd, clusters_cmd, ram_cmd, triggers_cmd
from opencs.cli.common import (
    JsonOpt,
    OutputOpt,
    TimeoutOpt,
    WaitOpt,
    output_format,
    parse_pairs,
    read_body,
    signed_client,
    task_command,
    wait_for,
)
from opencs.cli.output import emit, print_json

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH")


# ---------------------------------------------------------------------- api


def api(
    ctx: typer.Context,
    method: Annotated[str, typer.Argument(help="HTTP method: GET, POST, PUT, DELETE ...")],
    path: Annotated[str, typer.Argument(help="Request path, may include ?k=v, e.g. /clusters.")],
    body: Annotated[str | None, typer.Option("--body", "-b", help="JSON body, @file or @- (stdin).")] = None,
    query: Annotated[list[str] | None, typer.Option("--query", "-q", help="Query parameter k=v.")] = None,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="Extra header K=V.")] = None,
) -> None:
    """Sign and send any API call and print the JSON reply (like `aliyun cs GET /clusters`)."""
    verb = method.upper()
    if verb not in HTTP_METHODS:
        raise typer.BadParameter(f"unknown method {method!r}", param_hint="METHOD")
    headers = dict(parse_pairs(header, "--header"))
    pairs = parse_pairs(query, "--query")
    ctype = next((v for k, v in headers.items() if k.lower() == "content-type"), "application/json")
    payload: Any
    if "json" in ctype.lower():
        payload = read_body(body)
    elif body is not None and body.startswith("@"):
        src = body[1:]
        try:
            payload = sys.stdin.buffer.read() if src == "-" else Path(src).expanduser().read_bytes()
        except OSError as e:
            raise typer.BadParameter(f"cannot read {src}: {e.strerror or e}", param_hint="--body") from None
    else:
        payload = body
    with signed_client(ctx) as client:
        reply = client.request(verb, path if path.startswith("/") else "/" + path,
                               query=pairs, body=payload, headers=headers)
    print_json(reply)


# ---------------------------------------------------------------------- tasks

tasks_app = typer.Typer(help="Asynchronous tasks (T-…): describe, wait.", no_args_is_help=True)


@tasks_app.command("describe")
def tasks_describe(ctx: typer.Context, task_id: Annotated[str, typer.Argument()], output: OutputOpt = None) -> None:
    """Show a task (DescribeTaskInfo)."""
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        emit(client.describe_task(task_id), fmt, columns=("task_id", "task_type", "state", "current_stage"))


@tasks_app.command("wait")
def tasks_wait(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument()],
    timeout: TimeoutOpt = 600.0,
    poll: Annotated[float, typer.Option(min=0.05, help="Seconds between polls.")] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final task as JSON.")] = False,
    output: OutputOpt = None,
) -> None:
    """Wait for a task, showing its stages; exit 4 if it fails, 5 on timeout."""
    with signed_client(ctx) as client:
        task = wait_for(client, task_id, timeout, poll)
    if as_json or output:
        emit(task, output_format(ctx, output, as_json))


# ---------------------------------------------------------------------- instances

instances_app = typer.Typer(help="Instances: nodes, free or in a cluster.", no_args_is_help=True)

INSTANCE_COLUMNS = ("instance_id", "ip_address", "state", "health", "cluster_id", "creation_time")


@instances_app.command("list")
def instances_list(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    free: Annotated[bool, typer.Option("--free", help="Only instances in no cluster.")] = False,
) -> None:
    """List instances (nodes), with the cluster each belongs to."""
    fmt = output_format(ctx, output, as_json)
    with signed_client(ctx) as client:
        reply = client.list_instances(free_only=free)
    emit(reply, fmt, columns=INSTANCE_COLUMNS, empty="No instances.")


@instances_app.command("create")
def instances_create(
    ctx: typer.Context,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="How many instances.")],
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 1800.0,
    output: OutputOpt = None,
) -> None:
    """Create free instances."""
    task_command(ctx, output, wait, timeout, lambda client: client.create_instances(count))


@instances_app.command("delete")
def instances_delete(
    ctx: typer.Context,
    instance_id: Annotated[str, typer.Argument()],
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 1800.0,
    output: OutputOpt = None,
) -> None:
    """Delete a free instance."""
    task_command(ctx, output, wait, timeout, lambda client: client.delete_instance(instance_id))


@instances_app.command("register")
def instances_register(
    ctx: typer.Context,
    ssh: Annotated[str, typer.Option("--ssh", help="The host to register: user@host[:port].")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the SSH password from stdin.")] = False,
    key_file: Annotated[Path | None, typer.Option("--key-file", help="SSH private key file (PEM/OpenSSH).")] = None,
    host_key: Annotated[str | None, typer.Option("--host-key", help="Expected host public key "
                                                 "(default: trust and pin the key seen now).")] = None,
    docker_socket: Annotated[str | None, typer.Option("--docker-socket", help="Docker socket on the host "
                                                      "(default /var/run/docker.sock).")] = None,
    output: OutputOpt = None,
) -> None:
    """Register an existing Docker host reached by SSH as a free instance."""
    if password_stdin == (key_file is not None):
        raise typer.BadParameter("give exactly one of --password-stdin or --key-file")
    fmt = output_format(ctx, output, default="json")
    body: dict[str, Any] = {"ssh": ssh}
    if password_stdin:
        # one line, like `docker login --password-stdin`; never an argv value (ps would show it)
        body["password"] = sys.stdin.readline().rstrip("\r\n")
        if not body["password"]:
            raise typer.BadParameter("no password on stdin", param_hint="--password-stdin")
    else:
        assert key_file is not None
        try:
            body["private_key"] = key_file.expanduser().read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise typer.BadParameter(f"cannot read {key_file}: {getattr(e, 'strerror', None) or e}",
                                     param_hint="--key-file") from None
    if host_key:
        body["known_host_key"] = host_key
    if docker_socket:
        body["remote_socket"] = docker_socket
    with signed_client(ctx) as client:
        emit(client.register_instance(body), fmt, columns=INSTANCE_COLUMNS)


# ---------------------------------------------------------------------- images, metrics


def images(ctx: typer.Context, as_json: JsonOpt = False, output: OutputOpt = None) -> None:
    """List the images nodes can be created from."""
    fmt = output_format(ctx, output, as_json)
    with signed_client(ctx) as client:
        reply = client.list_images()
    rows = [{"region": i.region, "image": i.value, "description": i.text} for i in reply.images]
    if fmt != "table" or not rows and reply:
        emit(reply, "json" if fmt == "table" else fmt)
        return
    emit(reply, fmt, rows=rows, columns=("region", "image", "description"), empty="No images.")


def metrics(
    ctx: typer.Context,
    token: Annotated[str | None, typer.Option("--token", envvar="OPENCS_METRICS_TOKEN",
                                              help="Bearer token (needed beyond loopback).")] = None,
    containers: Annotated[bool, typer.Option("--containers", help=(
        "The containers' and nodes' usage instead (GET /metrics/containers).")) ] = False,
) -> None:
    """Print the control plane's Prometheus metrics (GET /metrics)."""
    with signed_client(ctx) as client:
        text = client.container_metrics(token) if containers else client.metrics(token)
    typer.echo(text.rstrip("\n"))


# ---------------------------------------------------------------------- the server itself


def server_version(ctx: typer.Context, output: OutputOpt = None) -> None:
    """The server's version and API version (GET /version; `opencs --version` is this CLI's)."""
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        emit(client.version(), fmt, columns=("version", "api_version"))


def health(ctx: typer.Context) -> None:
    """Whether the server answers (GET /healthz, unsigned): exit 0 and its reply, else 3."""
    with signed_client(ctx) as client:
        print_json(client.healthz())


def openapi(ctx: typer.Context) -> None:
    """Print the control-plane API's OpenAPI document (GET /openapi.json)."""
    with signed_client(ctx) as client:
        print_json(client.openapi())


# ---------------------------------------------------------------------- registration


def register(app: typer.Typer) -> None:
    """Add the client commands to the top-level Typer app."""
    app.command("api")(api)
    app.command("version")(server_version)
    app.command("health")(health)
    app.command("openapi")(openapi)
    cluster_access_cmd.register(clusters_cmd.clusters_app)
    app.add_typer(clusters_cmd.clusters_app, name="clusters")
    app.add_typer(cluster_access_cmd.attach_token_app, name="attach-token")
    app.add_typer(tasks_app, name="tasks")
    app.add_typer(instances_app, name="instances")
    app.command("images")(images)
    app.command("metrics")(metrics)
    apps_cmd.register(app)
    triggers_cmd.register(app)
    ram_cmd.register(app)
