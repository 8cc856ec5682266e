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
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Generic, ParamSpec, Self, TypeVar, overload

import httpx

from opencs.sdk.core import Call, Emit, Endpoint, Flow, Now, Paged, RetryPolicy, Sleep, decode, transport_error
from opencs.sdk.errors import OpencsError

P = ParamSpec("P")
T = TypeVar("T")


class _Runner:
    """What both transports share: the endpoint, the retry policy, the clock."""

    _endpoint: Endpoint
    retry: RetryPolicy
    timeout: float

    @property
    def endpoint(self) -> str:
        return self._endpoint.endpoint

    @property
    def retries(self) -> int:
        return self.retry.retries

    def _give_up(self, e: httpx.RequestError) -> OpencsError:
        return transport_error(e, self._endpoint.endpoint, self.timeout)


class SyncRunner(_Runner):
    _http: httpx.Client

    def __init__(self) -> None:
        self._sleep: Callable[[float], None] = time.sleep
        self._clock: Callable[[], float] = time.monotonic

    def _build(self, call: Call[Any]) -> httpx.Request:
        p = self._endpoint.parts(call)
        return self._http.build_request(p.method, p.url, content=p.content or None, headers=p.headers)

    def _execute(self, call: Call[T]) -> T:
        attempts = self.retry.attempts(call.method)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            req = self._build(call)  # re-signed per attempt
            try:
                resp = self._http.send(req)
            except httpx.RequestError as e:
                delay = None if last else self.retry.after_error(e, attempt)
                if delay is None:
                    raise self._give_up(e) from e
                self._sleep(delay)
                continue
            try:
                delay = None if last else self.retry.after_status(resp.status_code, resp.headers, attempt)
                if delay is not None:
                    self._sleep(delay)
                    continue
                return call.parse(decode(resp.status_code, resp.headers, resp.read(), resp.reason_phrase))
            finally:
                resp.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _step(self, instr: Any) -> Any:
        if isinstance(instr, Call):
            return self._execute(instr)
        if isinstance(instr, Sleep):
            self._sleep(instr.seconds)
            return None
        if isinstance(instr, Now):
            return self._clock()
        raise TypeError(f"not an instruction: {instr!r}")

    def _run(self, step: Call[T] | Flow[T]) -> T:
        if isinstance(step, Call):
            return self._execute(step)
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                instr = step.throw(error) if error is not None else step.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            error = None
            try:
                value = self._step(instr)
            except OpencsError as e:  # the flow may handle it (a waiter ignoring one failed poll)
                error = e

    def _iterate(self, paged: Paged[T]) -> Iterator[T]:
        value: Any = None
        while True:
            try:
                instr = paged.send(value)
            except StopIteration:
                return
            if isinstance(instr, Emit):
                value = None
                yield instr.item
            else:
                value = self._step(instr)


class AsyncRunner(_Runner):
    _http: httpx.AsyncClient

    def __init__(self) -> None:
        self._sleep: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep
        self._clock: Callable[[], float] = time.monotonic

    def _build(self, call: Call[Any]) -> httpx.Request:
        p = self._endpoint.parts(call)
        return self._http.build_request(p.method, p.url, content=p.content or None, headers=p.headers)

    async def _execute(self, call: Call[T]) -> T:
        attempts = self.retry.attempts(call.method)
        for attempt in range(attempts):
            last = attempt == attempts - 1
            req = self._build(call)
            try:
                resp = await self._http.send(req)
            except httpx.RequestError as e:
                delay = None if last else self.retry.after_error(e, attempt)
                if delay is None:
                    raise self._give_up(e) from e
                await self._sleep(delay)
                continue
            try:
                delay = None if last else self.retry.after_status(resp.status_code, resp.headers, attempt)
                if delay is not None:
                    await self._sleep(delay)
                    continue
                content = await resp.aread()
                return call.parse(decode(resp.status_code, resp.headers, content, resp.reason_phrase))
            finally:
                await resp.aclose()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _step(self, instr: Any) -> Any:
        if isinstance(instr, Call):
            return await self._execute(instr)
        if isinstance(instr, Sleep):
            await self._sleep(instr.seconds)
            return None
        if isinstance(instr, Now):
            return self._clock()
        raise TypeError(f"not an instruction: {instr!r}")

    async def _run(self, step: Call[T] | Flow[T]) -> T:
        if isinstance(step, Call):
            return await self._execute(step)
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                instr = step.throw(error) if error is not None else step.send(value)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            error = None
            try:
                value = await self._step(instr)
            except OpencsError as e:
                error = e

    async def _iterate(self, paged: Paged[T]) -> AsyncIterator[T]:
        value: Any = None
        while True:
            try:
                instr = paged.send(value)
            except StopIteration:
                return
            if isinstance(instr, Emit):
                value = None
                yield instr.item
            else:
                value = await self._step(instr)


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
