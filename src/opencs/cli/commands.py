"""Client-side CLI commands: api, clusters, tasks, instances, images (configure: configure_cmd)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from opencs.cli import profile as profiles
from opencs.cli.output import (
    EXIT_USAGE,
    TaskProgress,
    cli_errors,
    err,
    print_json,
    print_table,
)
from opencs.sdk import Client

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH")


# ---------------------------------------------------------------------- helpers


def make_client(ctx: typer.Context) -> Client:
    """The SDK client for the selected profile (``ctx.obj["client_factory"]`` wins, for tests)."""
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    factory: Callable[[], Client] | None = obj.get("client_factory")
    if factory is not None:
        return factory()
    with cli_errors():
        prof = profiles.resolve_profile(obj.get("profile"))
    missing = prof.missing()
    if missing:
        envs = ", ".join(profiles.ENV_OVERRIDES[m] for m in missing)
        err(f"Error: profile {prof.name!r} has no {', '.join(missing)}; "
            f"run `opencs configure` or set {envs}.")
        raise typer.Exit(EXIT_USAGE)
    try:
        return Client(prof.endpoint, prof.access_key_id, prof.access_key_secret, scheme=prof.scheme,
                      timeout=float(obj.get("timeout") or 30.0), ca_file=obj.get("ca_file") or prof.ca_file or None)
    except ValueError as e:
        err(f"Error: {e}")
        raise typer.Exit(EXIT_USAGE) from None


def read_body(value: str | None) -> Any:
    """``--body``: JSON text, ``@file`` or ``@-`` (stdin); must be valid JSON."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        src = value[1:]
        try:
            text = sys.stdin.read() if src == "-" else Path(src).expanduser().read_text()
        except OSError as e:
            raise typer.BadParameter(f"cannot read {src}: {e.strerror or e}", param_hint="--body") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise typer.BadParameter(f"not valid JSON: {e}", param_hint="--body") from None


def parse_pairs(values: list[str] | None, option: str) -> list[tuple[str, str]]:
    """``k=v`` option values as pairs (``k=`` keeps an empty value)."""
    out: list[tuple[str, str]] = []
    for item in values or []:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        out.append((k.strip(), v))
    return out


def show_and_wait(client: Client, reply: Any, wait: bool, timeout: float) -> None:
    """Print an asynchronous call's reply; with --wait, follow the task it started."""
    print_json(reply)
    if wait and isinstance(reply, dict) and reply.get("task_id"):
        wait_for(client, reply["task_id"], timeout)


def wait_for(client: Client, task_id: str, timeout: float, poll: float = 0.5) -> dict[str, Any]:
    """Wait for a task with the progress display; errors surface through ``cli_errors``."""
    started = time.monotonic()
    with TaskProgress(task_id) as progress:
        task = client.wait_task(task_id, timeout=timeout, poll=poll, on_update=progress.update)
    typer.echo(f"Task {task_id} succeeded in {time.monotonic() - started:.1f}s")
    return task


def _rows(reply: Any, key: str) -> list[dict[str, Any]]:
    """A list reply, or the list under ``key`` of an object reply."""
    if isinstance(reply, list):
        return [r for r in reply if isinstance(r, dict)]
    if isinstance(reply, dict):
        inner = reply.get(key)
        if isinstance(inner, list):
            return [r for r in inner if isinstance(r, dict)]
    return []


WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the task to finish.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.0, help="Seconds to wait for the task.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the raw JSON reply.")]


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
    client = make_client(ctx)
    with client, cli_errors():
        reply = client.request(verb, path if path.startswith("/") else "/" + path,
                               query=pairs, body=payload, headers=headers)
    print_json(reply)


# ---------------------------------------------------------------------- clusters

clusters_app = typer.Typer(help="Clusters: list, describe, create, scale, delete, certs.",
                           no_args_is_help=True)

CLUSTER_COLUMNS = ("cluster_id", "name", "cluster_type", "state", "size", "created", "master_url")


@clusters_app.command("list")
def clusters_list(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    page: Annotated[int | None, typer.Option(min=1, help="Page number (uses the paged API).")] = None,
    page_size: Annotated[int, typer.Option(min=1, help="Page size with --page.")] = 10,
) -> None:
    """List clusters."""
    client = make_client(ctx)
    with client, cli_errors():
        reply: Any = client.list_clusters_paged(page, page_size) if page else client.list_clusters()
    if as_json:
        print_json(reply)
        return
    print_table(_rows(reply, "clusters"), CLUSTER_COLUMNS, empty="No clusters.")
    if isinstance(reply, dict) and isinstance(reply.get("page_info"), dict):
        info = reply["page_info"]
        typer.echo(f"page {info.get('page_number')} · {info.get('page_size')} per page · "
                   f"{info.get('total_count')} total")


@clusters_app.command("describe")
def clusters_describe(ctx: typer.Context, cluster_id: Annotated[str, typer.Argument()]) -> None:
    """Show one cluster."""
    client = make_client(ctx)
    with client, cli_errors():
        print_json(client.describe_cluster(cluster_id))


@clusters_app.command("create")
def clusters_create(
    ctx: typer.Context,
    body: Annotated[str, typer.Option("--body", "-b", help="Create body: JSON, @file or @-.")],
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 1800.0,
) -> None:
    """Create a cluster (POST /clusters)."""
    payload = read_body(body)
    if not isinstance(payload, dict):
        raise typer.BadParameter("the create body must be a JSON object", param_hint="--body")
    client = make_client(ctx)
    with client, cli_errors():
        reply = client.create_cluster(payload)
        show_and_wait(client, reply, wait, timeout)


@clusters_app.command("scale")
def clusters_scale(
    ctx: typer.Context,
    cluster_id: Annotated[str, typer.Argument()],
    body: Annotated[str, typer.Option("--body", "-b", help="Scale body: JSON, @file or @-.")],
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 1800.0,
) -> None:
    """Scale a cluster (PUT /clusters/ID)."""
    payload = read_body(body)
    if not isinstance(payload, dict):
        raise typer.BadParameter("the scale body must be a JSON object", param_hint="--body")
    client = make_client(ctx)
    with client, cli_errors():
        reply = client.scale_cluster(cluster_id, payload)
        show_and_wait(client, reply, wait, timeout)


@clusters_app.command("delete")
def clusters_delete(
    ctx: typer.Context,
    cluster_id: Annotated[str, typer.Argument()],
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 1800.0,
) -> None:
    """Delete a cluster and its nodes."""
    client = make_client(ctx)
    with client, cli_errors():
        reply = client.delete_cluster(cluster_id)
        show_and_wait(client, reply, wait, timeout)


@clusters_app.command("nodes")
def clusters_nodes(ctx: typer.Context, cluster_id: Annotated[str, typer.Argument()],
                   as_json: JsonOpt = False) -> None:
    """List a cluster's nodes."""
    client = make_client(ctx)
    with client, cli_errors():
        reply = client.cluster_nodes(cluster_id)
    if as_json:
        print_json(reply)
        return
    print_table(_rows(reply, "nodes"),
                ("instance_id", "ip_address", "instance_role", "state", "health", "docker_endpoint"),
                empty="No nodes.")


def _write_file(path: Path, text: str, mode: int, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), mode)
        f.write(text)


@clusters_app.command("certs")
def clusters_certs(
    ctx: typer.Context,
    cluster_id: Annotated[str, typer.Argument()],
    directory: Annotated[Path, typer.Option("--dir", "-d", help="Where to write the .pem files.")] = Path(),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Save the cluster's TLS client certificates (key.pem gets mode 0600)."""
    client = make_client(ctx)
    with client, cli_errors():
        certs = client.cluster_certs(cluster_id)
    files = {"ca.pem": ("ca", 0o644), "cert.pem": ("cert", 0o644), "key.pem": ("key", 0o600)}
    missing = [k for k, _ in files.values() if not certs.get(k)]
    if missing:
        err(f"Error: the reply has no {', '.join(missing)}")
        raise typer.Exit(1)
    directory = directory.expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not force:
            existing = [n for n in files if (directory / n).exists()]
            if existing:
                err(f"Error: {', '.join(str(directory / n) for n in existing)} exist(s); use --force.")
                raise typer.Exit(1)
        for name, (key, mode) in files.items():
            _write_file(directory / name, str(certs[key]), mode, force)
    except OSError as e:
        err(f"Error: cannot write certificates to {directory}: {e.strerror or e}")
        raise typer.Exit(1) from None
    typer.echo(f"Wrote {directory / 'ca.pem'}, {directory / 'cert.pem'}, {directory / 'key.pem'}")
    d = directory
    typer.echo(f"Use: docker --tlsverify --tlscacert={d / 'ca.pem'} --tlscert={d / 'cert.pem'} "
               f"--tlskey={d / 'key.pem'} -H <master_url> info")


# ---------------------------------------------------------------------- tasks

tasks_app = typer.Typer(help="Asynchronous tasks (T-…): describe, wait.", no_args_is_help=True)


@tasks_app.command("describe")
def tasks_describe(ctx: typer.Context, task_id: Annotated[str, typer.Argument()]) -> None:
    """Show a task (DescribeTaskInfo)."""
    client = make_client(ctx)
    with client, cli_errors():
        print_json(client.describe_task(task_id))


@tasks_app.command("wait")
def tasks_wait(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument()],
    timeout: TimeoutOpt = 600.0,
    poll: Annotated[float, typer.Option(min=0.05, help="Seconds between polls.")] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final task as JSON.")] = False,
) -> None:
    """Wait for a task, showing its stages; exit 4 if it fails, 5 on timeout."""
    client = make_client(ctx)
    with client, cli_errors():
        task = wait_for(client, task_id, timeout, poll)
    if as_json:
        print_json(task)


# ---------------------------------------------------------------------- instances

instances_app = typer.Typer(help="Instances: nodes, free or in a cluster.", no_args_is_help=True)


@instances_app.command("list")
def instances_list(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    free: Annotated[bool, typer.Option("--free", help="Only instances in no cluster.")] = False,
) -> None:
    """List instances (nodes), with the cluster each belongs to."""
    client = make_client(ctx)
    with client, cli_errors():
        reply = client.list_instances(free_only=free)
    if as_json:
        print_json(reply)
        return
    print_table(_rows(reply, "instances"),
                ("instance_id", "ip_address", "state", "health", "cluster_id", "creation_time"),
                empty="No instances.")


@instances_app.command("create")
def instances_create(
    ctx: typer.Context,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="How many instances.")],
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 1800.0,
) -> None:
    """Create free instances."""
    client = make_client(ctx)
    with client, cli_errors():
        reply = client.create_instances(count)
        show_and_wait(client, reply, wait, timeout)


@instances_app.command("delete")
def instances_delete(
    ctx: typer.Context,
    instance_id: Annotated[str, typer.Argument()],
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 1800.0,
) -> None:
    """Delete a free instance."""
    client = make_client(ctx)
    with client, cli_errors():
        reply = client.delete_instance(instance_id)
        show_and_wait(client, reply, wait, timeout)


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
) -> None:
    """Register an existing Docker host reached by SSH as a free instance."""
    if password_stdin == (key_file is not None):
        raise typer.BadParameter("give exactly one of --password-stdin or --key-file")
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
    client = make_client(ctx)
    with client, cli_errors():
        print_json(client.request("POST", "/instances/register", body=body))


# ---------------------------------------------------------------------- images


def images(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the images nodes can be created from."""
    client = make_client(ctx)
    with client, cli_errors():
        reply = client.list_images()
    rows: list[dict[str, Any]] = []
    if isinstance(reply, dict):
        for region, val in reply.items():
            items = val.get("items") if isinstance(val, dict) else None
            if not isinstance(items, list):
                rows = []
                break
            for it in items:
                if isinstance(it, dict):
                    rows.append({"region": region, "image": it.get("value"), "description": it.get("text")})
    if as_json or not rows and reply:
        print_json(reply)
        return
    print_table(rows, ("region", "image", "description"), empty="No images.")


# ---------------------------------------------------------------------- registration


def register(app: typer.Typer) -> None:
    """Add the client commands to the top-level Typer app."""
    app.command("api")(api)
    app.add_typer(clusters_app, name="clusters")
    app.add_typer(tasks_app, name="tasks")
    app.add_typer(instances_app, name="instances")
    app.command("images")(images)
