"""The ``opencs`` command line: client commands plus ``server``/``keys`` administration.

Exit codes: 0 ok · 1 other API error · 2 usage · 3 connection error · 4 task failed · 5 wait timeout ·
6 not found · 7 not authenticated / not allowed · 8 conflict (``opencs.cli.output``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from typer._completion_shared import get_completion_script  # typer re-exports it untyped; pinned

from opencs import __version__
from opencs.cli import (
    accounts_cmd,
    backup_cmd,
    commands,
    configure_cmd,
    keys_cmd,
    monitoring_cmd,
    server_cmd,
    teardown_cmd,
)
from opencs.cli.output import FORMATS

app = typer.Typer(
    name="opencs",
    help="opencs: a self-hostable Container Service (Alibaba Cloud CS API 2015-12-15).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"opencs {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option("--profile", "-p", envvar="OPENCS_PROFILE", help="Configuration profile to use."),
    ] = None,
    timeout: Annotated[float, typer.Option("--http-timeout", min=1.0, help="HTTP timeout (s).")] = 30.0,
    ca_file: Annotated[str | None, typer.Option("--ca-file", help="CA to verify an https endpoint against "
                                                "(default: the profile's pinned CA, else the system's).")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", envvar="OPENCS_OUTPUT", help=(
        "Default output of every command: table, json or yaml."))] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """opencs: a self-hostable Container Service (Alibaba Cloud CS API 2015-12-15)."""
    obj = ctx.ensure_object(dict)
    if profile:
        obj["profile"] = profile
    obj.setdefault("timeout", timeout)
    if ca_file:
        obj["ca_file"] = ca_file
    if output:
        if output.lower() not in FORMATS:
            raise typer.BadParameter(f"{output!r} is not one of {', '.join(FORMATS)}", param_hint="--output")
        obj["output"] = output.lower()


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


@app.command("completion")
def completion(shell: Annotated[Shell, typer.Argument(help="The shell to print the script for.")]) -> None:
    """Print the completion script of SHELL (cluster ids included): eval "$(opencs completion bash)".

    ``--show-completion`` guesses the shell from the parent processes, which under a script, cron or
    CI is often ``sh`` and then fails; here the shell is named.
    """
    typer.echo(get_completion_script(prog_name="opencs", complete_var="_OPENCS_COMPLETE", shell=shell.value))


commands.register(app)
configure_cmd.register(app)
server_cmd.register(app)
keys_cmd.register(app)
accounts_cmd.register(app)
monitoring_cmd.register(app)
backup_cmd.register(app)
teardown_cmd.register(app)


def main() -> None:
    """Console-script entry point (``opencs = opencs.cli.main:main``)."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
