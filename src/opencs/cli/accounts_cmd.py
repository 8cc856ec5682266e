"""`opencs accounts create|list` and `opencs audit [verify]` — local administration on the data dir."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import typer

from opencs.cli.server_cmd import DATA_DIR_OPT, DB_OPT
from opencs.config import Settings

accounts_app = typer.Typer(help="Manage accounts (tenants); works on the data dir / database directly.",
                           no_args_is_help=True)
audit_app = typer.Typer(help="Read and verify the audit trail (data dir / database directly).",
                        invoke_without_command=True)


def _plane(data_dir: Path, database_url: str | None):  # type: ignore[no-untyped-def]
    from opencs.composition import build

    return build(Settings(data_dir=data_dir, database_url=database_url, workers=0, local_nodes=False))


@accounts_app.command("create")
def create(name: str, data_dir: Path = DATA_DIR_OPT, database_url: str | None = DB_OPT) -> None:
    """Create an account; prints its owner's AccessKey as JSON (the secret is shown this once)."""
    from opencs.errors import ApiError

    plane = _plane(data_dir, database_url)
    try:
        account_id, ak, secret = plane.accounts.create_account(name)
    except ApiError as e:
        typer.echo(f"Error {e.code}: {e.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        plane.close()
    typer.echo(json.dumps({"account_id": account_id, "access_key_id": ak, "access_key_secret": secret}))


@accounts_app.command("list")
def list_accounts(data_dir: Path = DATA_DIR_OPT, database_url: str | None = DB_OPT) -> None:
    plane = _plane(data_dir, database_url)
    rows = plane.accounts.accounts()
    plane.close()
    for account_id, name, created in rows:
        typer.echo(json.dumps({"account_id": account_id, "name": name,
                               "created": created.strftime("%Y-%m-%dT%H:%M:%SZ")}))


@audit_app.callback()
def audit(
    ctx: typer.Context,
    account: str | None = typer.Option(None, "--account", help="Only this account id."),
    action: str | None = typer.Option(None, "--action", help="e.g. cs:CreateCluster, ram:CreateUser"),
    user: str | None = typer.Option(None, "--user", help="Only this RAM user name."),
    since: str | None = typer.Option(None, "--since", help="ISO 8601 time (UTC)."),
    limit: int = typer.Option(100, "--limit", min=1, max=1000),
    data_dir: Path = DATA_DIR_OPT,
    database_url: str | None = DB_OPT,
) -> None:
    """Print audit entries as JSON lines, oldest first."""
    if ctx.invoked_subcommand is not None:
        return
    from opencs.services.audit import record_json

    plane = _plane(data_dir, database_url)
    rows = plane.audit.query(account, action, user, datetime.fromisoformat(since.replace("Z", "")) if since else None,
                             limit)
    plane.close()
    for r in rows:
        typer.echo(json.dumps(record_json(r)))


@audit_app.command("verify")
def verify(data_dir: Path = DATA_DIR_OPT, database_url: str | None = DB_OPT) -> None:
    """Check the hash chain; exit 1 naming the first entry that was edited or deleted."""
    plane = _plane(data_dir, database_url)
    res = plane.audit.verify()
    plane.close()
    if res.ok:
        typer.echo(f"audit log intact: {res.entries} entries")
        return
    typer.echo(f"audit log BROKEN at entry {res.seq}: {res.problem} ({res.entries} entries verified before it)",
               err=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(accounts_app, name="accounts")
    app.add_typer(audit_app, name="audit")
