"""Driving the sync and the async SDK clients with the same test code.

``Blocking(async_client, loop)`` runs each coroutine the async client returns to completion on one
event loop (and turns async iterators into iterators), so a check written against the sync API
runs unchanged against the async implementation — nothing of it is re-implemented here."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

from opencs.sdk import AppClient, AsyncAppClient, AsyncClient, Client


def _items(it: AsyncIterator[Any], loop: asyncio.AbstractEventLoop) -> Iterator[Any]:
    """An async iterator as an iterator, one item at a time (a stream that never ends, a log
    that is followed, can be read and left)."""
    try:
        while True:
            try:
                yield loop.run_until_complete(anext(it))
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            loop.run_until_complete(aclose())


class Blocking:
    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target, self._loop = target, loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            out = attr(*args, **kw)
            if inspect.iscoroutine(out):
                out = self._loop.run_until_complete(out)
            elif inspect.isasyncgen(out):
                return _items(out, self._loop)
            return Blocking(out, self._loop) if isinstance(out, AsyncAppClient | AsyncClient) else out
        return call

    def close(self) -> None:
        self._loop.run_until_complete(self._target.aclose())

    def __enter__(self) -> Blocking:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def both(kind: str, make_sync: Any, make_async: Any) -> Iterator[Any]:
    """A fixture body: the sync client, or the async one behind :class:`Blocking`."""
    if kind == "sync":
        with make_sync() as c:
            yield c
        return
    loop = asyncio.new_event_loop()
    try:
        with Blocking(make_async(), loop) as c:
            yield c
    finally:
        loop.close()


__all__ = ["AppClient", "AsyncAppClient", "AsyncClient", "Blocking", "Client", "both"]
