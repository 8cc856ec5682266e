"""What a project and a service both have on the Application API: ``start``, ``stop``, ``kill``
(spec §10.9–10.11, §10.19–10.21) and ``logs`` (issue 12 item 5), written once for both groups.

No ``from __future__ import annotations`` here: the commands are made in a function, and Typer reads
their (local) annotations from the signature, which must hold the types themselves."""

from typing import Annotated, Any

import typer

from opencs.cli.common import ClusterOpt, app_session

StopTime = Annotated[int | None, typer.Option("--time", "-t", min=0, max=3600,
                                              help="Seconds the containers get to stop.")]
Signal = Annotated[str | None, typer.Option("--signal", "-s", help="Default KILL.")]
Follow = Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C ends).")]
Tail = Annotated[int | None, typer.Option("--tail", "-n", min=0, help="Only the last N lines of each container.")]
Since = Annotated[str | None, typer.Option("--since", help="Unix seconds, or a duration back such as 10m.")]
Timestamps = Annotated[bool, typer.Option("--timestamps", help="Each line with its time.")]


def add_lifecycle(group: typer.Typer, noun: str, target: Any, kind: str, start_help: str) -> None:
    """``start|stop|kill|logs TARGET --cluster C`` on ``group``, calling the Application API client's
    ``start_<kind>``, ``stop_<kind>``, ``kill_<kind>``, ``<kind>_logs`` and ``follow_<kind>_logs``."""

    def start(ctx: typer.Context, name: target, cluster: ClusterOpt) -> None:
        with app_session(ctx, cluster) as (_, app):
            getattr(app, f"start_{kind}")(name)
        typer.echo(f"{noun} {name}: started")

    def stop(ctx: typer.Context, name: target, cluster: ClusterOpt, t: StopTime = None) -> None:
        with app_session(ctx, cluster) as (_, app):
            getattr(app, f"stop_{kind}")(name, t)
        typer.echo(f"{noun} {name}: stopped")

    def kill(ctx: typer.Context, name: target, cluster: ClusterOpt, signal: Signal = None) -> None:
        with app_session(ctx, cluster) as (_, app):
            getattr(app, f"kill_{kind}")(name, signal)
        typer.echo(f"{noun} {name}: signalled {signal or 'KILL'}")

    def logs(ctx: typer.Context, name: target, cluster: ClusterOpt, follow: Follow = False, tail: Tail = None,
             since: Since = None, timestamps: Timestamps = False) -> None:
        opts: dict[str, Any] = {"tail": tail, "since": since, "timestamps": timestamps}
        with app_session(ctx, cluster) as (_, app):
            if not follow:
                typer.echo(getattr(app, f"{kind}_logs")(name, **opts), nl=False)
                return
            for line in getattr(app, f"follow_{kind}_logs")(name, **opts):
                typer.echo(line)

    what = f"the {noun.lower()}'s containers"
    start.__doc__ = start_help
    stop.__doc__ = f"Stop {what} (answers when stopped)."
    kill.__doc__ = f"Send a signal to {what}."
    logs.__doc__ = f"The output of {what}, '<container> | <line>' in time order (GET …/logs)."
    for fn in (start, stop, kill, logs):
        group.command(fn.__name__)(fn)
