"""Terminal output for the opencs CLI: tables, JSON, YAML, error lines, exit codes, task progress.

Exit codes (one per error class; ``docs``: README "CLI"):

====  =====================================================================
0     success
1     any other API error (400 bad request, 412, 5xx ...)
2     usage: bad options or arguments, an unreadable or invalid input file, no profile
3     no connection: the endpoint cannot be reached, TLS not trusted, timeout
4     a task (or a waited-for project) failed
5     waiting timed out (task, project)
6     not found (404)
7     not authenticated or not allowed (401, 403)
8     conflict: the resource's state does not allow it now (409)
====  =====================================================================
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import typer
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from opencs.cli.profile import ProfileError
from opencs.sdk.errors import (
    AuthError,
    ConflictError,
    NotFoundError,
    OpencsError,
    ProjectFailed,
    TaskFailed,
    TransportError,
    WaitTimeout,
)
from opencs.sdk.models import Model

# Exit codes (2 is Typer's own for usage errors); the table is in the module docstring.
EXIT_OK = 0
EXIT_API = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_TASK_FAILED = 4
EXIT_TASK_TIMEOUT = 5
EXIT_NOT_FOUND = 6
EXIT_AUTH = 7
EXIT_CONFLICT = 8

FORMATS = ("table", "json", "yaml")


def plain(data: Any) -> Any:
    """SDK models (and lists/dicts of them) as the JSON the server sent."""
    if isinstance(data, Model):
        return data.to_dict()
    if isinstance(data, list | tuple):
        return [plain(x) for x in data]
    if isinstance(data, dict):
        return {k: plain(v) for k, v in data.items()}
    return data


def stdout_console() -> Console:
    """A console on the current ``sys.stdout``; wide and colourless when it is not a terminal."""
    console = Console(file=sys.stdout, highlight=False)
    if not console.is_terminal:
        console = Console(file=sys.stdout, highlight=False, width=200, no_color=True)
    return console


def print_json(data: Any) -> None:
    """Pretty JSON: highlighted on a terminal, plain indented text otherwise (pipe-friendly)."""
    if data is None:
        return
    if isinstance(data, str):
        typer.echo(data)
        return
    text = json.dumps(plain(data), indent=2, ensure_ascii=False)
    console = Console(file=sys.stdout)
    if console.is_terminal:
        console.print_json(text)
    else:
        typer.echo(text)


def err(message: str) -> None:
    """One plain line on stderr (no markup interpretation)."""
    typer.echo(message, err=True)


def format_api_error(e: OpencsError) -> str:
    line = f"Error {e.code}: {e.message}"
    if e.request_id:
        line += f" (RequestId {e.request_id})"
    return line


def exit_code(e: OpencsError) -> int:
    """The documented exit code of an SDK error."""
    if isinstance(e, WaitTimeout):
        return EXIT_TASK_TIMEOUT
    if isinstance(e, TaskFailed | ProjectFailed):
        return EXIT_TASK_FAILED
    if isinstance(e, TransportError):
        return EXIT_CONNECTION
    if isinstance(e, NotFoundError):
        return EXIT_NOT_FOUND
    if isinstance(e, AuthError):
        return EXIT_AUTH
    if isinstance(e, ConflictError):
        return EXIT_CONFLICT
    return EXIT_API


@contextmanager
def cli_errors(source: str | None = None) -> Iterator[None]:
    """Turn expected failures into one stderr line and the documented exit code. ``source`` (an
    input file) is named in the message of a 400 reply, which is about what the file says."""
    try:
        yield
    except WaitTimeout as e:
        err(f"Error {e.code}: {e.message}")
        raise typer.Exit(EXIT_TASK_TIMEOUT) from None
    except TaskFailed as e:
        err(f"Error {e.code}: {e.message} (task {e.task_id})")
        raise typer.Exit(EXIT_TASK_FAILED) from None
    except TransportError as e:
        err(f"Error: {e.message}")
        err(f"Is the opencs server running at {e.endpoint}? "
            "Check the endpoint with `opencs configure` or OPENCS_ENDPOINT.")
        raise typer.Exit(EXIT_CONNECTION) from None
    except OpencsError as e:
        if source and e.status == 400:
            e.message = f"{source}: {e.message}"
        err(format_api_error(e))
        raise typer.Exit(exit_code(e)) from None
    except ProfileError as e:
        err(f"Error: {e}")
        raise typer.Exit(EXIT_USAGE) from None


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list) and all(isinstance(x, str | int | float) for x in v):
        return ", ".join(str(x) for x in v)
    if isinstance(v, dict | list):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, empty: str = "(none)") -> None:
    """Rows of dicts as a table; ``columns`` are preferred keys (others appear if none match)."""
    console = stdout_console()
    if not rows:
        console.print(empty, style="dim")
        return
    present = [c for c in columns if any(c in r for r in rows)]
    if not present:
        seen: dict[str, None] = {}
        for r in rows:
            seen.update(dict.fromkeys(r))
        present = list(seen)[:8]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for c in present:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(_cell(r.get(c)) for c in present))
    console.print(table)


def print_object(data: Mapping[str, Any], fields: Sequence[str] = ()) -> None:
    """One object as FIELD/VALUE rows (``fields`` first, in order; all the others after)."""
    console = stdout_console()
    keys = [f for f in fields if f in data] + [k for k in data if k not in fields]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for k in keys:
        table.add_row(k, _cell(data[k]))
    console.print(table)


def emit(data: Any, fmt: str, *, columns: Sequence[str] = (), rows: Sequence[Mapping[str, Any]] | None = None,
         empty: str = "(none)") -> None:
    """Print a reply in the chosen format. ``table``: a list (or ``rows``, a list made for the
    table) as a table of ``columns``, an object as FIELD/VALUE rows."""
    if data is None and rows is None:
        return
    if fmt == "json":
        print_json(data)
    elif fmt == "yaml":
        import yaml

        typer.echo(yaml.safe_dump(plain(data), sort_keys=False, allow_unicode=True, width=1000).rstrip("\n"))
    elif rows is not None or isinstance(data, list):
        print_table(rows if rows is not None else [plain(x) for x in data], columns, empty=empty)
    elif isinstance(data, Mapping):
        print_object(plain(data), columns)
    else:
        typer.echo(str(data))


# ---------------------------------------------------------------------- task progress

_ICONS = {"success": "[green]✓[/]", "fail": "[red]✗[/]", "failed": "[red]✗[/]", "pending": "[dim]·[/]"}


def _parse_time(v: Any) -> datetime | None:
    if not isinstance(v, str) or not v:
        return None
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _stage_label(i: int, stage: dict[str, Any]) -> str:
    name = str(stage.get("name") or "")
    message = str(stage.get("message") or "")
    if name and message:
        return f"{name} — {message}"
    return name or message or f"stage {i + 1}"


def _stage_duration(stage: dict[str, Any]) -> str:
    start = _parse_time(stage.get("start_time"))
    if start is None:
        return ""
    end = _parse_time(stage.get("end_time")) or datetime.now(UTC)
    secs = max(0.0, (end - start).total_seconds())
    return f"{secs:.1f}s"


class TaskProgress:
    """Shows a task's stages while :meth:`opencs.sdk.Client.wait_task` polls it.

    On a terminal: a live Rich view with a spinner per running stage. Otherwise: one plain line
    for each change of the task state or of a stage's state/message. Both go to stderr, so that
    stdout holds only the reply (``-o json`` stays parseable with ``--wait``).
    """

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.console = Console(file=sys.stderr, highlight=False)
        self.live_mode = self.console.is_terminal
        self.started = time.monotonic()
        self._live: Live | None = None
        self._task: Mapping[str, Any] | None = None
        self._seen_state: str | None = None
        self._seen_stages: dict[int, tuple[str, str]] = {}

    def __enter__(self) -> TaskProgress:
        if self.live_mode:
            self._live = Live(self._render(), console=self.console, refresh_per_second=8)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self._render(final=True))
            self._live.__exit__(*exc)
            self._live = None

    def update(self, task: Mapping[str, Any]) -> None:
        """``on_update`` callback for ``wait_task``."""
        self._task = task
        if self._live is not None:
            self._live.update(self._render())
        else:
            self._print_changes(task)

    # plain lines

    def _print_changes(self, task: Mapping[str, Any]) -> None:
        stages = [s for s in (task.get("stages") or []) if isinstance(s, dict)]
        for i, stage in enumerate(stages):
            key = (str(stage.get("state", "")), str(stage.get("message", "")))
            if self._seen_stages.get(i) != key:
                self._seen_stages[i] = key
                err(f"[{i + 1}/{len(stages)}] {key[0] or '?'}: {_stage_label(i, stage)}")
        state = str(task.get("state", ""))
        if state != self._seen_state:
            self._seen_state = state
            kind = task.get("task_type")
            err(f"task {self.task_id}{f' ({kind})' if kind else ''}: {state or '?'}")

    # rich view

    def _render(self, final: bool = False) -> Group:
        task = self._task or {}
        state = str(task.get("state") or "waiting")
        elapsed = time.monotonic() - self.started
        kind = task.get("task_type")
        head = Text.assemble(
            ("Task ", "bold"), (self.task_id, "bold cyan"),
            (f" ({kind})" if kind else "", "dim"),
            "  ", (state, {"success": "green", "fail": "red"}.get(state, "yellow")),
            (f"  {elapsed:.0f}s", "dim"),
        )
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(width=2)
        table.add_column()
        table.add_column(justify="right", style="dim")
        stages = [s for s in (task.get("stages") or []) if isinstance(s, dict)]
        if not stages:
            table.add_row("" if final else Spinner("dots"), Text("waiting for the task to start", "dim"), "")
        for i, stage in enumerate(stages):
            st = str(stage.get("state", "pending"))
            icon: Any = _ICONS.get(st)
            if icon is None:
                icon = Spinner("dots") if not final else "[yellow]…[/]"
            table.add_row(icon, Text(_stage_label(i, stage)), _stage_duration(stage))
        err_obj = task.get("error")
        parts: list[Any] = [head, table]
        if isinstance(err_obj, dict) and err_obj:
            parts.append(Text(f"{err_obj.get('code', '')}: {err_obj.get('message', '')}", "red"))
        return Group(*parts)
