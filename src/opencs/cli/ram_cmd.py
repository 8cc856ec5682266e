"""`opencs ram ACTION [Key=Value ...]`: the RAM API (2015-05-01) served on `/` of the same port —
users, AccessKeys, policies of the caller's account (what `aliyun ram` does against Alibaba Cloud)."""

from __future__ import annotations

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


def register(app: typer.Typer) -> None:
    app.command("ram")(ram)
