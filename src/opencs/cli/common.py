"""What every client command shares: the SDK clients of the selected profile, input files, the
output format, task waiting with progress, and shell completion of cluster ids."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from opencs.cli import profile as profiles
from opencs.cli.output import EXIT_USAGE, FORMATS, TaskProgress, cli_errors, emit, err
from opencs.sdk import AppClient, Client
from opencs.sdk.models import Task

# ---------------------------------------------------------------------- options

WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the task, showing its stages.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.0, help="Seconds to wait for the task.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Same as --output json.")]
OutputOpt = Annotated[str | None, typer.Option(
    "--output", "-o", help="table, json or yaml (default: a table for lists, JSON for one object; "
    "also `opencs --output` and OPENCS_OUTPUT).", show_default=False)]


def complete_cluster_ids(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    """Shell completion of a cluster id: the ids (and names) the profile's key can see."""
    try:
        with client_from_profile(None, 5.0, None) as client:
            return [(c.cluster_id, c.name) for c in client.list_clusters() if c.cluster_id.startswith(incomplete)]
    except Exception:  # completion never fails loudly: no profile, no server
        return []


ClusterArg = Annotated[str, typer.Argument(help="Cluster id.", autocompletion=complete_cluster_ids,
                                           show_default=False)]
ClusterOpt = Annotated[str, typer.Option("--cluster", "-c", envvar="OPENCS_CLUSTER", show_default=False,
                                         autocompletion=complete_cluster_ids,
                                         help="The cluster whose Application API is called (its master_url).")]


def output_format(ctx: typer.Context, output: str | None, as_json: bool = False, default: str = "table") -> str:
    """``--output`` > ``--json`` > ``opencs --output`` / ``OPENCS_OUTPUT`` > the command's default."""
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    chosen = output or ("json" if as_json else None) or obj.get("output") or default
    chosen = chosen.lower()
    if chosen not in FORMATS:
        raise typer.BadParameter(f"{chosen!r} is not one of {', '.join(FORMATS)}", param_hint="--output")
    return str(chosen)


# ---------------------------------------------------------------------- clients


def client_from_profile(profile: str | None, timeout: float, ca_file: str | None) -> Client:
    prof = profiles.resolve_profile(profile)
    missing = prof.missing()
    if missing:
        envs = ", ".join(profiles.ENV_OVERRIDES[m] for m in missing)
        raise profiles.ProfileError(f"profile {prof.name!r} has no {', '.join(missing)}; "
                                    f"run `opencs configure` or set {envs}.")
    return Client(prof.endpoint, prof.access_key_id, prof.access_key_secret, scheme=prof.scheme,
                  timeout=timeout, ca_file=ca_file or prof.ca_file or None)


def make_client(ctx: typer.Context) -> Client:
    """The SDK client for the selected profile (``ctx.obj["client_factory"]`` wins, for tests)."""
    obj = ctx.obj if isinstance(ctx.obj, dict) else {}
    factory: Callable[[], Client] | None = obj.get("client_factory")
    if factory is not None:
        return factory()
    try:
        with cli_errors():
            return client_from_profile(obj.get("profile"), float(obj.get("timeout") or 30.0), obj.get("ca_file"))
    except ValueError as e:
        err(f"Error: {e}")
        raise typer.Exit(EXIT_USAGE) from None


@contextmanager
def signed_client(ctx: typer.Context, source: str | None = None) -> Iterator[Client]:
    """The profile's control-plane client, its errors turned into exit codes."""
    client = make_client(ctx)
    with client, cli_errors(source):
        yield client


def task_command(ctx: typer.Context, output: str | None, wait: bool, timeout: float,
                 start: Callable[[Client], Any]) -> None:
    """A call that starts a task: print its reply (JSON by default); with --wait, follow the task."""
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        show_and_wait(client, start(client), wait, timeout, fmt)


def make_app(client: Client, cluster_id: str) -> AppClient:
    """The cluster's Application API client (master_url + the cluster's certificates)."""
    return client.app(cluster_id)


@contextmanager
def app_session(ctx: typer.Context, cluster_id: str, source: str | None = None) -> Iterator[tuple[Client, AppClient]]:
    """The control-plane client and the cluster's Application API client, errors handled
    (``source``: the input file a 400 reply is about)."""
    client = make_client(ctx)
    with client, cli_errors(source), make_app(client, cluster_id) as app:
        yield client, app


# ---------------------------------------------------------------------- input


def read_text(path: Path, option: str) -> str:
    """A file given to an option; unreadable: a usage error naming the file."""
    try:
        return sys.stdin.read() if str(path) == "-" else path.expanduser().read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise typer.BadParameter(f"cannot read {path}: {getattr(e, 'strerror', None) or e}",
                                 param_hint=option) from None


def write_file(path: Path, text: str, mode: int, force: bool = True) -> None:
    """``text`` into ``path`` with ``mode`` from the first byte (keys, kubeconfigs: 0600);
    ``force=False``: an existing file is an error (``FileExistsError``)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), mode)  # an existing file gets the mode too
        f.write(text)


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
        where = f"{value[1:]}: " if value.startswith("@") else ""
        raise typer.BadParameter(f"{where}not valid JSON: {e}", param_hint="--body") from None


def read_object(value: str | None, what: str) -> dict[str, Any]:
    payload = read_body(value) if value is not None else {}
    if not isinstance(payload, dict):
        raise typer.BadParameter(f"the {what} body must be a JSON object", param_hint="--body")
    return payload


def parse_pairs(values: list[str] | None, option: str) -> list[tuple[str, str]]:
    """``k=v`` option values as pairs (``k=`` keeps an empty value)."""
    out: list[tuple[str, str]] = []
    for item in values or []:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        out.append((k.strip(), v))
    return out


# ---------------------------------------------------------------------- tasks


def wait_for(client: Client, task_id: str, timeout: float, poll: float = 0.5) -> Task:
    """Wait for a task with the progress display; errors surface through ``cli_errors``."""
    started = time.monotonic()
    with TaskProgress(task_id) as progress:
        task = client.wait_task(task_id, timeout=timeout, poll=poll, on_update=progress.update)
    err(f"Task {task_id} succeeded in {time.monotonic() - started:.1f}s")
    return task


def show_and_wait(client: Client, reply: Any, wait: bool, timeout: float, fmt: str = "json") -> None:
    """Print an asynchronous call's reply; with --wait, follow the task it started."""
    emit(reply, fmt, columns=("cluster_id", "task_id", "request_id"))
    task_id = reply.get("task_id") if hasattr(reply, "get") else None
    if wait and task_id:
        wait_for(client, str(task_id), timeout)
