"""The two thin transports: :class:`SyncRunner` (``httpx.Client``) and :class:`AsyncRunner`
(``httpx.AsyncClient``) execute the :mod:`~opencs.sdk.core` calls and drive its flows.

API methods are declared once, on mixins, with :func:`op` / :func:`pager`: on a sync client
``client.describe_cluster(id)`` returns a :class:`~opencs.sdk.models.Cluster`, on an async client it
returns a coroutine of one (mypy and IDEs see both signatures).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator
from typing import Any, Generic, ParamSpec, Self, TypeVar, overload

import httpx

from opencs.sdk.core import (
    Call,
    Emit,
    Endpoint,
    Flow,
    NextLine,
    Now,
    Paged,
    Primitive,
    Raw,
    RetryPolicy,
    Send,
    Sleep,
    expand,
    single,
    transport_error,
)
from opencs.sdk.errors import OpencsError

P = ParamSpec("P")
T = TypeVar("T")


_DONE = object()


def _advance(program: Generator[Primitive, Any, Any], value: Any, error: BaseException | None,
             result: list[Any] | None) -> Any:
    """The program's next primitive, ``value`` (or ``error``) being the answer to the last one;
    ``_DONE`` when it has ended (its value appended to ``result``)."""
    try:
        return program.throw(error) if error is not None else program.send(value)
    except StopIteration as stop:
        if result is not None:
            result.append(stop.value)
        return _DONE


class _Runner:
    """What both transports share: the endpoint, the retry policy, the clock; every step they take
    comes from :func:`~opencs.sdk.core.expand` (retries, waiters, pagers are written once there)."""

    _endpoint: Endpoint
    retry: RetryPolicy
    timeout: float

    def _configure(self, endpoint: Endpoint, timeout: float, retries: int, backoff: float) -> None:
        self._endpoint = endpoint
        self.timeout = timeout
        self.retry = RetryPolicy(max(0, int(retries)), backoff)

    @property
    def endpoint(self) -> str:
        return self._endpoint.endpoint

    @property
    def retries(self) -> int:
        return self.retry.retries

    def _program(self, step: Call[Any] | Generator[Any, Any, Any]) -> Generator[Primitive, Any, Any]:
        return expand(single(step) if isinstance(step, Call) else step, self._endpoint, self.retry, self.timeout)

    def _request(self, http: httpx.Client | httpx.AsyncClient, send: Send) -> httpx.Request:
        p = send.parts
        # a streamed body (logs, events that follow) may be silent for long: no read timeout
        timeout = httpx.Timeout(self.timeout, read=None) if send.stream else httpx.USE_CLIENT_DEFAULT
        return http.build_request(p.method, p.url, content=p.content or None, headers=p.headers, timeout=timeout)

    def _give_up(self, e: httpx.RequestError) -> OpencsError:
        return transport_error(e, self._endpoint.endpoint, self.timeout)


class SyncRunner(_Runner):
    _http: httpx.Client

    def __init__(self) -> None:
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic

    def _do(self, instr: Primitive, opened: list[httpx.Response]) -> Any:
        if isinstance(instr, Send):
            resp = self._http.send(self._request(self._http, instr), stream=True)
            if instr.stream and resp.status_code < 400:
                opened.append(resp)
                return Raw(resp.status_code, resp.headers, b"", resp.reason_phrase, resp.iter_lines())
            try:
                return Raw(resp.status_code, resp.headers, resp.read(), resp.reason_phrase)
            finally:
                resp.close()
        if isinstance(instr, NextLine):
            try:
                return next(instr.stream, None)
            except httpx.RequestError as e:
                raise self._give_up(e) from e
        if isinstance(instr, Sleep):
            self._sleep(instr.seconds)
            return None
        if isinstance(instr, Now):
            return self._clock()
        raise TypeError(f"not an instruction: {instr!r}")

    def _iterate(self, step: Any, result: list[Any] | None = None) -> Iterator[Any]:
        """Drive a call, flow or pager: yields what a pager emits, appends a flow's value to ``result``."""
        program, opened = self._program(step), list[httpx.Response]()
        value: Any = None
        error: BaseException | None = None
        try:
            while (instr := _advance(program, value, error, result)) is not _DONE:
                value, error = None, None
                if isinstance(instr, Emit):
                    yield instr.item
                    continue
                try:
                    value = self._do(instr, opened)
                except httpx.RequestError as e:  # the call's flow decides: retry or give up
                    error = e
        finally:
            program.close()
            for resp in opened:
                resp.close()

    def _run(self, step: Call[T] | Flow[T]) -> T:
        result: list[Any] = []
        for _ in self._iterate(step, result):
            pass
        return result[0]  # type: ignore[no-any-return]


class AsyncRunner(_Runner):
    _http: httpx.AsyncClient

    def __init__(self) -> None:
        self._sleep: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep
        self._clock: Callable[[], float] = time.monotonic

    async def _do(self, instr: Primitive, opened: list[httpx.Response]) -> Any:
        if isinstance(instr, Send):
            resp = await self._http.send(self._request(self._http, instr), stream=True)
            if instr.stream and resp.status_code < 400:
                opened.append(resp)
                return Raw(resp.status_code, resp.headers, b"", resp.reason_phrase, resp.aiter_lines())
            try:
                return Raw(resp.status_code, resp.headers, await resp.aread(), resp.reason_phrase)
            finally:
                await resp.aclose()
        if isinstance(instr, NextLine):
            try:
                return await anext(instr.stream, None)
            except httpx.RequestError as e:
                raise self._give_up(e) from e
        if isinstance(instr, Sleep):
            await self._sleep(instr.seconds)
            return None
        if isinstance(instr, Now):
            return self._clock()
        raise TypeError(f"not an instruction: {instr!r}")

    async def _iterate(self, step: Any, result: list[Any] | None = None) -> AsyncIterator[Any]:
        """As :meth:`SyncRunner._iterate`, awaiting each primitive."""
        program, opened = self._program(step), list[httpx.Response]()
        value: Any = None
        error: BaseException | None = None
        try:
            while (instr := _advance(program, value, error, result)) is not _DONE:
                value, error = None, None
                if isinstance(instr, Emit):
                    yield instr.item
                    continue
                try:
                    value = await self._do(instr, opened)
                except httpx.RequestError as e:
                    error = e
        finally:
            program.close()
            for resp in opened:
                await resp.aclose()

    async def _run(self, step: Call[T] | Flow[T]) -> T:
        result: list[Any] = []
        async for _ in self._iterate(step, result):
            pass
        return result[0]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------- declaring methods once


class _Op(Generic[P, T]):
    """A method declared once: the builder makes the call or flow, the client's runner executes it."""

    def __init__(self, build: Callable[P, Call[T]] | Callable[P, Flow[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, obj: None, owner: type) -> Self: ...
    @overload
    def __get__(self, obj: SyncRunner, owner: type) -> Callable[P, T]: ...
    @overload
    def __get__(self, obj: AsyncRunner, owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self
        build = self.build
        if isinstance(obj, AsyncRunner):
            @functools.wraps(build)
            async def run_async(*args: Any, **kw: Any) -> Any:
                return await obj._run(build(*args, **kw))
            return run_async

        @functools.wraps(build)
        def run(*args: Any, **kw: Any) -> Any:
            return obj._run(build(*args, **kw))
        return run


class _Pager(Generic[P, T]):
    """An iterator method declared once: a sync client gives an ``Iterator``, an async one an
    ``AsyncIterator`` (``async for``)."""

    def __init__(self, build: Callable[P, Paged[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, obj: None, owner: type) -> Self: ...
    @overload
    def __get__(self, obj: SyncRunner, owner: type) -> Callable[P, Iterator[T]]: ...
    @overload
    def __get__(self, obj: AsyncRunner, owner: type) -> Callable[P, AsyncIterator[T]]: ...

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self
        build = self.build

        @functools.wraps(build)
        def iterate(*args: Any, **kw: Any) -> Any:
            return obj._iterate(build(*args, **kw))
        return iterate


def op(build: Callable[P, Call[T]]) -> _Op[P, T]:
    """A method that makes one call."""
    return _Op(build)


def flow(build: Callable[P, Flow[T]]) -> _Op[P, T]:
    """A method that runs a flow (several calls, sleeps: waiters)."""
    return _Op(build)


def pager(build: Callable[P, Paged[T]]) -> _Pager[P, T]:
    """A method that iterates over pages."""
    return _Pager(build)
