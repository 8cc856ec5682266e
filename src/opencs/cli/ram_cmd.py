"""`opencs ram ACTION [Key=Value ...]`: the RAM API (2015-05-01) served on `/` of the same port —
users, AccessKeys, policies of the caller's account (what `aliyun ram` does against Alibaba Cloud) —
and `opencs registry-password`: the caller's own login to the bundled registry."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from opencs.cli.common import OutputOpt, output_format, parse_pairs, read_text, signed_client
from opencs.cli.output import emit


def ram(
    ctx: typer.Context,
    action: Annotated[str, typer.Argument(help=(
        "CreateUser, GetUser, ListUsers, DeleteUser, CreateAccessKey, ListAccessKeys, UpdateAccessKey, "
        "DeleteAccessKey, CreatePolicy, GetPolicy, ListPolicies, DeletePolicy, AttachPolicyToUser, "
        "DetachPolicyFromUser, ListPoliciesForUser."), show_default=False)],
    params: Annotated[list[str] | None, typer.Argument(help="Parameters Key=Value, e.g. UserName=dev.",
                                                       show_default=False)] = None,
    output: OutputOpt = None,
) -> None:
    """Call one RAM API action, e.g. `opencs ram CreateUser UserName=dev` or `opencs ram CreatePolicy
    PolicyName=ro PolicyDocument=@policy.json`; a value @FILE is the file's text."""
    fmt = output_format(ctx, output, default="json")
    values = {k: read_value(v) for k, v in parse_pairs(params, "PARAMS")}
    with signed_client(ctx) as client:
        emit(client.ram(action, values), fmt)


def read_value(value: str) -> str:
    """``@FILE``: the file's text (a policy document); anything else as it is."""
    return read_text(Path(value[1:]), "PARAMS") if value.startswith("@") else value


def registry_password(
    ctx: typer.Context,
    update: Annotated[bool, typer.Option("--update", help="UpdateUserInfo (POST /users) instead of "
                                         "CreateUserInfo (PUT /users); both set it.")] = False,
    output: OutputOpt = None,
) -> None:
    """Set your password for `docker login` to the bundled registry, read as one line from stdin (never an
    argument: ps would show it); prints the login name it goes with."""
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise typer.BadParameter("no password on stdin (echo \"$PW\" | opencs registry-password)")
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        login = client.set_registry_password(password, update=update)
    emit(login, fmt)
    typer.echo(f"# docker login -u {login.login_name} --password-stdin <registry>", err=True)


def register(app: typer.Typer) -> None:
    app.command("ram")(ram)
    app.command("registry-password")(registry_password)
