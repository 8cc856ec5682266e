"""`opencs clusters …`: the cluster routes of spec §5 and the docker environment of a cluster
(`env` prints what `docker-machine env` printed; `docker-context` makes a docker context)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from opencs.cli import profile as profiles
from opencs.cli.common import (
    ClusterArg,
    JsonOpt,
    OutputOpt,
    TimeoutOpt,
    WaitOpt,
    output_format,
    read_object,
    signed_client,
    task_command,
    write_file,
)
from opencs.cli.output import EXIT_API, EXIT_USAGE, emit, err
from opencs.sdk import Client

clusters_app = typer.Typer(help="Clusters: list, describe, create, scale, attach, remove-node, reset, delete, "
                           "nodes, certs, env, docker-context; Kubernetes: kubeconfig, scale-out, remove-nodes, "
                           "attach-script; certs-list, certs-revoke.", no_args_is_help=True)

CLUSTER_COLUMNS = ("cluster_id", "name", "cluster_type", "state", "size", "created", "master_url")
NODE_COLUMNS = ("instance_id", "ip_address", "role", "state", "health", "docker_endpoint")
BodyOpt = Annotated[str | None, typer.Option("--body", "-b", help="The JSON body: text, @file or @-.")]


@clusters_app.command("list")
def clusters_list(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    output: OutputOpt = None,
    page: Annotated[int | None, typer.Option(min=1, help="Page number (uses the paged API).")] = None,
    page_size: Annotated[int, typer.Option(min=1, help="Page size with --page.")] = 10,
) -> None:
    """List clusters."""
    fmt = output_format(ctx, output, as_json)
    with signed_client(ctx) as client:
        if page is None:
            emit(client.list_clusters(), fmt, columns=CLUSTER_COLUMNS, empty="No clusters.")
            return
        reply = client.list_clusters_paged(page, page_size)
    if fmt != "table":
        emit(reply, fmt)
        return
    emit(reply.clusters, fmt, columns=CLUSTER_COLUMNS, empty="No clusters.")
    info = reply.page_info
    typer.echo(f"page {info.page_number} · {info.page_size} per page · {info.total_count} total")


@clusters_app.command("describe")
def clusters_describe(ctx: typer.Context, cluster_id: ClusterArg, output: OutputOpt = None) -> None:
    """Show one cluster."""
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        emit(client.describe_cluster(cluster_id), fmt, columns=CLUSTER_COLUMNS)


@clusters_app.command("create")
def clusters_create(ctx: typer.Context, body: Annotated[str, typer.Option("--body", "-b", help=(
                        "Create body (spec §5.4): JSON, @file or @-."))],
                    wait: WaitOpt = False, timeout: TimeoutOpt = 1800.0, output: OutputOpt = None) -> None:
    """Create a cluster (POST /clusters)."""
    payload = read_object(body, "create")
    task_command(ctx, output, wait, timeout, lambda client: client.create_cluster(payload))


@clusters_app.command("scale")
def clusters_scale(
    ctx: typer.Context,
    cluster_id: ClusterArg,
    size: Annotated[int | None, typer.Option("--size", min=1, help="The new total number of nodes.")] = None,
    body: BodyOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 1800.0,
    output: OutputOpt = None,
) -> None:
    """Scale a cluster to a total size (PUT /clusters/ID)."""
    payload = read_object(body, "scale")
    if size is not None:
        payload["size"] = size
    if "size" not in payload:
        raise typer.BadParameter("give --size N (or a --body with \"size\")", param_hint="--size")
    task_command(ctx, output, wait, timeout, lambda client: client.scale_cluster(cluster_id, payload))


@clusters_app.command("attach")
def clusters_attach(
    ctx: typer.Context,
    cluster_id: ClusterArg,
    instance: Annotated[list[str] | None, typer.Option("--instance", "-i", help="A free instance id (repeat).")] = None,
    body: BodyOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 1800.0,
    output: OutputOpt = None,
) -> None:
    """Attach free instances to a cluster (POST /clusters/ID/attach)."""
    payload = read_object(body, "attach")
    if instance:
        payload["instances"] = list(instance)
    if not payload.get("instances"):
        raise typer.BadParameter("give --instance ID (see `opencs instances list --free`)", param_hint="--instance")
    task_command(ctx, output, wait, timeout, lambda client: client.attach_instances(cluster_id, payload))


@clusters_app.command("remove-node")
def clusters_remove_node(
    ctx: typer.Context,
    cluster_id: ClusterArg,
    ip: Annotated[str, typer.Argument(help="The node's IP (see `opencs clusters nodes`).")],
    release_instance: Annotated[bool, typer.Option("--release-instance", help=(
        "Destroy the machine too (default: it goes back to the free pool)."))] = False,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 1800.0,
    output: OutputOpt = None,
) -> None:
    """Remove a node from a cluster by its IP (DELETE /clusters/ID/ip/IP)."""
    task_command(ctx, output, wait, timeout, lambda client: client.remove_node(cluster_id, ip, release_instance))


@clusters_app.command("reset")
def clusters_reset(
    ctx: typer.Context,
    cluster_id: ClusterArg,
    instance_id: Annotated[str, typer.Argument(help="The node's instance id.")],
    body: BodyOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 1800.0,
    output: OutputOpt = None,
) -> None:
    """Reset a node: a fresh engine, re-joined (POST /clusters/ID/instances/INSTANCE/reset)."""
    payload = read_object(body, "reset")
    task_command(ctx, output, wait, timeout, lambda client: client.reset_node(cluster_id, instance_id, payload))


@clusters_app.command("delete")
def clusters_delete(ctx: typer.Context, cluster_id: ClusterArg, wait: WaitOpt = False,
                    timeout: TimeoutOpt = 1800.0, output: OutputOpt = None) -> None:
    """Delete a cluster and its nodes."""
    task_command(ctx, output, wait, timeout, lambda client: client.delete_cluster(cluster_id))


@clusters_app.command("nodes")
def clusters_nodes(ctx: typer.Context, cluster_id: ClusterArg, as_json: JsonOpt = False,
                   output: OutputOpt = None) -> None:
    """List a cluster's nodes (every page)."""
    fmt = output_format(ctx, output, as_json)
    with signed_client(ctx) as client:
        if fmt != "table":
            emit(client.cluster_nodes(cluster_id), fmt)
            return
        emit(list(client.iter_nodes(cluster_id)), fmt, columns=NODE_COLUMNS, empty="No nodes.")


# ---------------------------------------------------------------------- certificates and docker


CERT_FILES = {"ca.pem": ("ca", 0o644), "cert.pem": ("cert", 0o644), "key.pem": ("key", 0o600)}


def write_certs(directory: Path, certs: Mapping[str, Any], force: bool) -> None:
    """ca.pem, cert.pem and key.pem (0600) in ``directory``; exit 1 naming what went wrong."""
    missing = [k for k, _ in CERT_FILES.values() if not certs.get(k)]
    if missing:
        err(f"Error: the reply has no {', '.join(missing)}")
        raise typer.Exit(EXIT_API)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not force:
            existing = [n for n in CERT_FILES if (directory / n).exists()]
            if existing:
                err(f"Error: {', '.join(str(directory / n) for n in existing)} exist(s); use --force.")
                raise typer.Exit(EXIT_API)
        for name, (key, mode) in CERT_FILES.items():
            write_file(directory / name, str(certs[key]), mode, force)
    except OSError as e:
        err(f"Error: cannot write certificates to {directory}: {e.strerror or e}")
        raise typer.Exit(EXIT_API) from None


@clusters_app.command("certs")
def clusters_certs(
    ctx: typer.Context,
    cluster_id: ClusterArg,
    directory: Annotated[Path, typer.Option("--dir", "-d", help="Where to write the .pem files.")] = Path(),
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    minutes: Annotated[int | None, typer.Option("--minutes", min=1, help=(
        "Lifetime of the certificate in minutes (default: the server's)."))] = None,
) -> None:
    """Save a new TLS client certificate of yours for the cluster (key.pem gets mode 0600)."""
    with signed_client(ctx) as client:
        certs = client.cluster_certs(cluster_id, minutes)
    d = directory.expanduser()
    write_certs(d, certs, force)
    typer.echo(f"Wrote {d / 'ca.pem'}, {d / 'cert.pem'}, {d / 'key.pem'}")
    typer.echo(f"Use: docker --tlsverify --tlscacert={d / 'ca.pem'} --tlscert={d / 'cert.pem'} "
               f"--tlskey={d / 'key.pem'} -H <master_url> info   (or: eval \"$(opencs clusters env {cluster_id})\")")


def certs_dir(cluster_id: str) -> Path:
    """``~/.opencs/certs/<cluster id>`` (beside the config file; ``OPENCS_CONFIG`` moves both)."""
    return profiles.config_path().parent / "certs" / cluster_id


def _docker_env(client: Client, cluster_id: str) -> tuple[str, Path, str]:
    """(``tcp://`` host of master_url, the certificate directory, the cluster's name): the
    certificates written to ``certs_dir`` (directory 0700, key 0600)."""
    cluster = client.describe_cluster(cluster_id)
    if not cluster.master_url:
        err(f"Error: cluster {cluster_id} has no master_url (state {cluster.state}); "
            "the Application API endpoint is off or the cluster is not running")
        raise typer.Exit(EXIT_API)
    certs = client.cluster_certs(cluster_id)
    d = certs_dir(cluster_id)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)
    write_certs(d, certs, force=True)
    host = "tcp://" + cluster.master_url.split("://", 1)[-1].rstrip("/")
    return host, d, cluster.name


SHELLS = ("sh", "fish", "powershell")


@clusters_app.command("env")
def clusters_env(
    ctx: typer.Context,
    cluster_id: ClusterArg,
    shell: Annotated[str, typer.Option("--shell", help="sh (bash, zsh), fish or powershell.")] = "sh",
    unset: Annotated[bool, typer.Option("--unset", "-u", help="Print the lines that undo it.")] = False,
) -> None:
    """Print the DOCKER_HOST/DOCKER_TLS_VERIFY/DOCKER_CERT_PATH exports for the cluster's
    master_url: eval "$(opencs clusters env ID)"; docker service ls."""
    if shell not in SHELLS:
        raise typer.BadParameter(f"{shell!r} is not one of {', '.join(SHELLS)}", param_hint="--shell")
    names = ("DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")
    if unset:
        for n in names:
            typer.echo({"sh": f"unset {n}", "fish": f"set -e {n};",
                        "powershell": f"Remove-Item Env:\\{n}"}[shell])
        return
    with signed_client(ctx) as client:
        host, d, _ = _docker_env(client, cluster_id)
    for n, v in zip(names, (host, "1", str(d)), strict=True):
        typer.echo({"sh": f"export {n}={shlex.quote(v)}", "fish": f"set -gx {n} {shlex.quote(v)};",
                    "powershell": f"$Env:{n} = \"{v}\""}[shell])
    typer.echo(f"# Run this command to configure your shell:\n# eval \"$(opencs clusters env {cluster_id})\"")


@clusters_app.command("docker-context")
def clusters_docker_context(
    ctx: typer.Context,
    cluster_id: ClusterArg,
    name: Annotated[str | None, typer.Option("--name", help="Context name (default: opencs-<cluster name>).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a context of that name.")] = False,
) -> None:
    """Create a docker context for the cluster's master_url (docker --context NAME service ls)."""
    docker = shutil.which("docker")
    if docker is None:
        err("Error: the docker CLI is not installed (a docker context lives in its configuration); "
            "`opencs clusters env` needs no docker CLI to print the environment")
        raise typer.Exit(EXIT_USAGE)
    with signed_client(ctx) as client:
        host, d, cluster_name = _docker_env(client, cluster_id)
    context = name or f"opencs-{cluster_name or cluster_id}"
    endpoint = f"host={host},ca={d / 'ca.pem'},cert={d / 'cert.pem'},key={d / 'key.pem'}"
    if force:
        subprocess.run([docker, "context", "rm", "--force", context], capture_output=True, text=True, timeout=60)
    out = subprocess.run([docker, "context", "create", context, "--description",
                          f"opencs cluster {cluster_name} ({cluster_id})", "--docker", endpoint],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        hint = " (use --force to replace it)" if "already exists" in out.stderr else ""
        err(f"Error: docker context create {context} failed: {out.stderr.strip()}{hint}")
        raise typer.Exit(EXIT_API)
    typer.echo(f"Created docker context {context} for {host}")
    typer.echo(f"Use: docker --context {context} service ls   (or: docker context use {context})")
