"""A hot route's store read: inline on the event loop on SQLite, in a worker thread on PostgreSQL.

On SQLite (WAL mode) a read never waits for a writer, and reading a row by its key costs this
process well under a millisecond; the hop to a worker thread cost a signed read 15-30 ms of waiting
under bench/load.py (the GIL handed from the loop to the thread and back, each time up to the 5 ms
switch interval while the other one is busy). On PostgreSQL a read is a round trip to another
process: a worker thread waits for it, the loop never does. Only reads belong here: no write, no
engine or provider call, nothing that can wait on another process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from anyio import to_thread
from starlette.requests import Request

from opencs.api.deps import ApiServices, services

P = ParamSpec("P")
T = TypeVar("T")


async def store_read(request: Request, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    if inline_reads(request):
        return fn(*args, **kwargs)
    return await to_thread.run_sync(lambda: fn(*args, **kwargs))


def inline_reads(request: Request) -> bool:
    """Whether this app's store reads run on the loop (its database is SQLite)."""
    state = request.app.state
    inline = getattr(state, "opencs_inline_reads", None)
    if inline is None:
        inline = state.opencs_inline_reads = inline_for(services(request))
    return bool(inline)


def inline_for(plane: ApiServices) -> bool:
    return plane.settings.resolved_database_url.startswith("sqlite")
