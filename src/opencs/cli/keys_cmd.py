"""`opencs keys create|list|disable|enable|delete` — local administration of AccessKeys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from opencs.cli.server_cmd import DATA_DIR_OPT, DB_OPT
from opencs.config import Settings

if TYPE_CHECKING:
    from opencs.composition import ControlPlane

T = TypeVar("T")

keys_app = typer.Typer(help="Manage AccessKeys (works on the data dir / database directly).", no_args_is_help=True)
console = Console()


def _runtime(data_dir: Path, database_url: str | None) -> ControlPlane:
    from opencs.composition import build

    return build(Settings(data_dir=data_dir, database_url=database_url, workers=0))


def _run(fn: Callable[[], T]) -> T:
    from opencs.errors import ApiError

    try:
        return fn()
    except ApiError as e:
        typer.echo(f"Error {e.code}: {e.message}", err=True)
        raise typer.Exit(1) from None


@keys_app.command("create")
def create(
    description: str = typer.Option("", "--description"),
    data_dir: Path = DATA_DIR_OPT,
    database_url: str | None = DB_OPT,
) -> None:
    """Create an admin AccessKey; the secret is printed once and never again."""
    rt = _runtime(data_dir, database_url)
    ak, secret = rt.keys.create(description)
    rt.close()
    typer.echo(f"AccessKeyId:     {ak}\nAccessKeySecret: {secret}\n(store the secret now: it is not shown again)")


@keys_app.command("list")
def list_keys(data_dir: Path = DATA_DIR_OPT, database_url: str | None = DB_OPT) -> None:
    rt = _runtime(data_dir, database_url)
    rows = rt.keys.list()
    rt.close()
    t = Table("AccessKeyId", "Status", "Admin", "Created", "Description")
    for k in rows:
        t.add_row(k.access_key_id, k.status, "yes" if k.is_admin else "no", f"{k.created:%Y-%m-%dT%H:%M:%SZ}",
                  k.description)
    console.print(t)


def _status_cmd(name: str, status: str) -> None:
    @keys_app.command(name)
    def _cmd(access_key_id: str, data_dir: Path = DATA_DIR_OPT, database_url: str | None = DB_OPT) -> None:
        rt = _runtime(data_dir, database_url)
        _run(lambda: rt.keys.set_status(access_key_id, status))
        rt.close()
        typer.echo(f"{access_key_id} {status}")

    _cmd.__doc__ = f"Mark an AccessKey {status}."


_status_cmd("disable", "disabled")
_status_cmd("enable", "active")


@keys_app.command("delete")
def delete(access_key_id: str, data_dir: Path = DATA_DIR_OPT, database_url: str | None = DB_OPT) -> None:
    rt = _runtime(data_dir, database_url)
    _run(lambda: rt.keys.delete(access_key_id))
    rt.close()
    typer.echo(f"{access_key_id} deleted")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
