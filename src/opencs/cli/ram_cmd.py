"""`opencs ram ACTION [Key=Value ...]`: the RAM API (2015-05-01) served on `/` of the same port —
users, AccessKeys, policies of the caller's account (what `aliyun ram` does against Alibaba Cloud) —,
`opencs login-profile create|get|update|delete USER`: a user's console password (RAM's login
profile actions, the password read from stdin), and `opencs registry-password`: the caller's own
login to the bundled registry."""

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
        "DetachPolicyFromUser, ListPoliciesForUser, CreateLoginProfile, GetLoginProfile, UpdateLoginProfile, "
        "DeleteLoginProfile."), show_default=False)],
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


login_app = typer.Typer(help="A RAM user's console logon (<user>@<account> and a password): RAM's login profile.",
                        no_args_is_help=True)
UserArg = Annotated[str, typer.Argument(help="The RAM user's name (UserName).", show_default=False)]
ResetOpt = Annotated[bool | None, typer.Option("--password-reset-required/--no-password-reset-required",
                                               help="Whether the console asks for a new password at the next "
                                                    "sign-in.", show_default=False)]
PROFILE_COLUMNS = ("user_name", "password_reset_required", "mfa_bind_required", "create_date")


def _stdin_password(what: str) -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise typer.BadParameter(f"no password on stdin (echo \"$PW\" | opencs login-profile {what} USER)")
    return password


@login_app.command("create")
def create_login_profile(ctx: typer.Context, user: UserArg, reset: ResetOpt = None, output: OutputOpt = None) -> None:
    """CreateLoginProfile: USER signs in to the console as USER@<account name or id>.

    The password is read as one line from stdin (never an argument: ps would show it)."""
    password = _stdin_password("create")
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        emit(client.create_login_profile(user, password, password_reset_required=bool(reset)), fmt,
             columns=PROFILE_COLUMNS)


@login_app.command("get")
def get_login_profile(ctx: typer.Context, user: UserArg, output: OutputOpt = None) -> None:
    """GetLoginProfile: whether USER has a console logon, and its settings (never the password)."""
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        emit(client.get_login_profile(user), fmt, columns=PROFILE_COLUMNS)


@login_app.command("update")
def update_login_profile(
    ctx: typer.Context, user: UserArg, reset: ResetOpt = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Set a new password, read as one "
                                                 "line from stdin (the user's console sessions end).")] = False,
    output: OutputOpt = None,
) -> None:
    """UpdateLoginProfile: a new password (--password-stdin) and/or the reset flag."""
    password = _stdin_password("update --password-stdin") if password_stdin else None
    if password is None and reset is None:
        raise typer.BadParameter("nothing to change: give --password-stdin or --[no-]password-reset-required")
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        emit(client.update_login_profile(user, password=password, password_reset_required=reset), fmt)


@login_app.command("delete")
def delete_login_profile(ctx: typer.Context, user: UserArg, output: OutputOpt = None) -> None:
    """DeleteLoginProfile: USER can no longer sign in with a password (its console sessions end)."""
    fmt = output_format(ctx, output, default="json")
    with signed_client(ctx) as client:
        emit(client.delete_login_profile(user), fmt)


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
    app.add_typer(login_app, name="login-profile")
    app.command("registry-password")(registry_password)
