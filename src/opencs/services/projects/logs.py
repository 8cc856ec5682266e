"""Logs of a project or a service (issue 12 item 5): every container's output through its engine's
log API, each line prefixed by the container's name; without `follow` the lines of all containers
in time order, with `follow` as they come (one reader thread per container)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from opencs.engines.apps import AppEngine, AppEngineError, AppSnapshot, ContainerRef, LogStream

MAX_TAIL = 10000


@dataclass(frozen=True)
class LogOptions:
    follow: bool = False
    tail: int | None = None  # lines per container (None: all)
    since: float | None = None  # unix time
    timestamps: bool = False


def sources(snap: AppSnapshot, full_names: list[str]) -> list[tuple[str, ContainerRef]]:
    """(container name, where it runs) of every container of these services."""
    out: list[tuple[str, ContainerRef]] = []
    for full in full_names:
        svc = snap.service(full)
        if svc is None:
            continue
        names = {c.container_id: c.name for c in svc.containers}
        out += [(names.get(r.container_id, r.container_id[:12]), r) for r in svc.refs]
    return sorted(out, key=lambda x: x[0])


def _format(name: str, raw: bytes, width: int, timestamps: bool) -> tuple[str, str]:
    """(sort key, the line as shown) of `<time> <text>` from the engine."""
    text = raw.decode("utf-8", "replace").rstrip("\n")
    ts, _, rest = text.partition(" ")
    sec, _, frac = ts.rstrip("Z").partition(".")
    key = f"{sec}.{frac:0<9}"  # RFC 3339 with its fraction trimmed: pad to compare as text
    return key, f"{name:<{width}} | " + (f"{ts} {rest}" if timestamps else rest) + "\n"


def open_all(engine: AppEngine, found: list[tuple[str, ContainerRef]], opts: LogOptions) -> list[tuple[str, LogStream]]:
    """Every container's stream, opened before the reply starts (so that an engine error is the
    reply's status, not a cut stream)."""
    streams: list[tuple[str, LogStream]] = []
    try:
        for name, ref in found:
            try:
                streams.append((name, engine.open_logs(ref, follow=opts.follow, tail=opts.tail, since=opts.since)))
            except AppEngineError as e:
                if e.code != "ContainerNotFound":  # ended between the snapshot and now: nothing to show
                    raise
    except BaseException:
        for _, s in streams:
            s.close()
        raise
    return streams


def lines(streams: list[tuple[str, LogStream]], opts: LogOptions) -> Iterator[str]:
    width = max((len(n) for n, _ in streams), default=0)
    try:
        if not opts.follow:
            merged = sorted(_format(n, raw, width, opts.timestamps) for n, s in streams for raw in s)
            yield from (line for _, line in merged)
            return
        yield ""  # the reply's head goes out now, not with the first line (which may be long in coming)
        yield from _follow(streams, width, opts.timestamps)
    finally:
        for _, s in streams:
            s.close()


def _follow(streams: list[tuple[str, LogStream]], width: int, timestamps: bool) -> Iterator[str]:
    q: queue.Queue[str | None] = queue.Queue(maxsize=10000)

    def read(name: str, s: LogStream) -> None:
        try:
            for raw in s:
                q.put(_format(name, raw, width, timestamps)[1])
        finally:
            q.put(None)

    for name, s in streams:
        threading.Thread(target=read, args=(name, s), name=f"logs-{name}", daemon=True).start()
    open_ = len(streams)
    while open_:
        item = q.get()
        if item is None:
            open_ -= 1
        else:
            yield item
