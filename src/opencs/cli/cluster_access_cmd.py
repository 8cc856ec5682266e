"""`opencs clusters …` for the routes of spec §6 and the per-user certificates: kubeconfig,
scale-out, remove-nodes, attach-script, certs-list, certs-revoke (the §5 routes: clusters_cmd)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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

CERT_COLUMNS = ("serial", "user_name", "access_key_id", "state", "created", "expiration", "revoked")
MinutesOpt = Annotated[int | None, typer.Option("--minutes", min=1, help=(
    "Lifetime of the issued certificate in minutes (default: the server's)."))]


def kubeconfig(
    ctx: typer.Context,
    cluster_id: ClusterArg,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Write it here (mode 0600), not to stdout.")]
    = None,
    minutes: Annotated[int | None, typer.Option("--minutes", min=15, max=4320, help=(
        "Lifetime of its client certificate (TemporaryDurationMinutes, 15-4320)."))] = None,
    private_ip: Annotated[bool, typer.Option("--private-ip", help="PrivateIpAddress=true (one address here).")] = False,
) -> None:
    """A Kubernetes cluster's kubeconfig with a certificate of your own (GET /k8s/ID/user_config):
    opencs clusters kubeconfig ID -f kubeconfig && kubectl --kubeconfig kubeconfig get nodes."""
    with signed_client(ctx) as client:
        config = client.kubeconfig(cluster_id, private_ip=private_ip, minutes=minutes).config
    if file is None:
        typer.echo(config.rstrip("\n"))
        return
    try:
        path = file.expanduser()
        write_file(path, config, 0o600)  # it holds a private key
    except OSError as e:
        err(f"Error: cannot write {file}: {e.strerror or e}")
        raise typer.Exit(EXIT_API) from None
    typer.echo(f"Wrote {path}; use: kubectl --kubeconfig {path} get nodes")


def scale_out(
    ctx: typer.Context,
    cluster_id: ClusterArg,
    count: Annotated[int | None, typer.Option("--count", "-n", min=1, help="How many workers to add.")] = None,
    instance_type: Annotated[list[str] | None, typer.Option("--instance-type", help="worker_instance_types (repeat).")]
    = None,
    vswitch: Annotated[list[str] | None, typer.Option("--vswitch", help="vswitch_ids (repeat; recorded).")] = None,
    body: Annotated[str | None, typer.Option("--body", "-b", help="The rest of the body (spec §6.7): JSON, @file.")]
    = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 1800.0,
    output: OutputOpt = None,
) -> None:
    """Add workers to a Kubernetes cluster (ScaleOutCluster, POST /api/v2/clusters/ID)."""
    payload = read_object(body, "scale-out")
    if count is not None:
        payload["count"] = count
    if instance_type:
        payload["worker_instance_types"] = list(instance_type)
    if vswitch:
        payload["vswitch_ids"] = list(vswitch)
    payload.setdefault("worker_data_disk", False)
    if "count" not in payload:
        raise typer.BadParameter("give --count N (or a --body with \"count\")", param_hint="--count")
    task_command(ctx, output, wait, timeout, lambda client: client.scale_out(cluster_id, payload))


def remove_nodes(
    ctx: typer.Context,
    cluster_id: ClusterArg,
    nodes: Annotated[list[str], typer.Argument(help="Worker node names, instance ids or IPs.", show_default=False)],
    release: Annotated[bool, typer.Option("--release", help="Release the machines too (release_node).")] = False,
    drain: Annotated[bool, typer.Option("--drain/--no-drain", help="Drain the nodes first (drain_node).")] = True,
    delete_nodes: Annotated[bool, typer.Option("--delete-nodes", help=(
        "Call DeleteClusterNodes (POST /clusters/ID/nodes), the older route, instead."))] = False,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 1800.0,
    output: OutputOpt = None,
) -> None:
    """Remove worker nodes of a Kubernetes cluster (RemoveClusterNodes, POST /api/v2/clusters/ID/nodes/remove;
    the same as DeleteClusterNodes, POST /clusters/ID/nodes)."""
    task_command(ctx, output, wait, timeout, lambda client: (
        client.delete_cluster_nodes if delete_nodes else client.remove_nodes)(
            cluster_id, list(nodes), release_node=release, drain_node=drain))


def attach_script(
    ctx: typer.Context,
    cluster_id: ClusterArg,
    options: Annotated[str | None, typer.Option("--options", help="Node join options (spec §6.10): JSON, @file.")]
    = None,
    expired: Annotated[int | None, typer.Option("--expired", min=0, help="When the token expires (Unix time).")]
    = None,
) -> None:
    """Print the shell line that joins the machine it runs on (DescribeClusterAttachScripts); its
    token works once."""
    with signed_client(ctx) as client:
        typer.echo(client.attach_script(cluster_id, read_object(options, "options"), expired=expired))


def certs_list(ctx: typer.Context, cluster_id: ClusterArg, as_json: JsonOpt = False, output: OutputOpt = None) -> None:
    """The certificates issued for the cluster (yours, for a RAM user) and their state."""
    fmt = output_format(ctx, output, as_json)
    with signed_client(ctx) as client:
        emit(client.cert_states(cluster_id), fmt, columns=CERT_COLUMNS, empty="No certificates.")


def certs_revoke(
    ctx: typer.Context,
    cluster_id: ClusterArg,
    serial: Annotated[str | None, typer.Argument(help="The certificate's serial (see certs-list).")] = None,
    mine: Annotated[bool, typer.Option("--mine", help="Every certificate of yours on the cluster.")] = False,
    output: OutputOpt = None,
) -> None:
    """Revoke a certificate (DELETE /clusters/ID/certs/SERIAL), or all of yours (--mine): master_url
    refuses it from its next connection on."""
    if (serial is None) == (not mine):
        err("Error: give a SERIAL or --mine")
        raise typer.Exit(EXIT_USAGE)
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        if mine:
            revoked = client.revoke_my_certs(cluster_id)
            typer.echo(f"Revoked {len(revoked)} certificate(s){': ' if revoked else ''}{', '.join(revoked)}")
            return
        assert serial is not None
        emit(client.revoke_cert(cluster_id, serial), fmt, columns=CERT_COLUMNS)


# ---------------------------------------------------------------------- what the attach line runs on the machine

attach_token_app = typer.Typer(help="The calls an attach script makes from the machine that joins (its token is "
                               "the credential): status, script, join.", no_args_is_help=True)
TokenArg = Annotated[str, typer.Argument(help="The token in the attach line's URL (…/attach/TOKEN/script).",
                                         show_default=False)]


@attach_token_app.command("status")
def attach_status(ctx: typer.Context, token: TokenArg, output: OutputOpt = None) -> None:
    """Whether the token was used, and the join's task and state (GET /attach/TOKEN)."""
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        emit(client.attach_status(token), fmt, columns=("cluster_id", "instance_id", "task_id", "state", "stage"))


@attach_token_app.command("script")
def attach_node_script(ctx: typer.Context, token: TokenArg) -> None:
    """Print the shell script the attach line fetches (GET /attach/TOKEN/script)."""
    with signed_client(ctx) as client:
        typer.echo(client.attach_node_script(token), nl=False)


@attach_token_app.command("join")
def attach_join(ctx: typer.Context, token: TokenArg, wait: WaitOpt = False, timeout: TimeoutOpt = 1800.0,
                output: OutputOpt = None) -> None:
    """Join the machine this runs on to the token's cluster, once (POST /attach/TOKEN)."""
    task_command(ctx, output, wait, timeout, lambda client: client.attach_join(token))


def register(clusters_app: typer.Typer) -> None:
    clusters_app.command("kubeconfig")(kubeconfig)
    clusters_app.command("scale-out")(scale_out)
    clusters_app.command("remove-nodes")(remove_nodes)
    clusters_app.command("attach-script")(attach_script)
    clusters_app.command("certs-list")(certs_list)
    clusters_app.command("certs-revoke")(certs_revoke)
